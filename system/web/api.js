// The chat API over HTTPS on this same origin: bearer tokens refreshed (rotated) when they expire,
// 429 and 503 waited out as Retry-After says, uploads with progress, downloads as files.

import { sleep } from "./dom.js";

const SESSION_KEY = "chatsdk.session";
const MAX_RETRY_WAIT_MS = 5000;
const RETRIES = 3;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "http_" + status;
  }
}

// The session lives in this tab's sessionStorage: a reload keeps it, closing the tab ends it.
export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return session && session.access_token && session.refresh_token ? session : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, null, `The server answered ${response.status}.`);
}

function retryAfterMs(response, attempt) {
  const seconds = Number(response.headers.get("Retry-After"));
  const wait = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 500 * 2 ** attempt;
  return Math.min(wait, MAX_RETRY_WAIT_MS);
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Whether this deployment offers the demo sign-in (GET /v1/demo answers 200). */
export async function demoAvailable() {
  try {
    const response = await fetch("/v1/demo");
    return response.ok;
  } catch {
    return false;
  }
}

export async function demoSignIn(name) {
  const pair = await postJson("/v1/demo/session", { name });
  const session = {
    access_token: pair.access_token,
    refresh_token: pair.refresh_token,
    user_id: pair.user_id,
    name: pair.name,
  };
  saveSession(session);
  return session;
}

export class Api {
  constructor(session, { onSignedOut }) {
    this.session = session;
    this.onSignedOut = onSignedOut;
    this.refreshing = null;
  }

  get userId() {
    return this.session.user_id;
  }

  get accessToken() {
    return this.session.access_token;
  }

  /** A new token pair (single flight: concurrent callers share one refresh). */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = postJson("/v1/tokens/refresh", { refresh_token: this.session.refresh_token })
        .then((pair) => {
          this.session = { ...this.session, access_token: pair.access_token, refresh_token: pair.refresh_token };
          saveSession(this.session);
        })
        .catch((error) => {
          if (error instanceof ApiError && error.status === 401) this.onSignedOut();
          throw error;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  async request(method, path, body) {
    let refreshed = false;
    for (let attempt = 0; ; attempt += 1) {
      const headers = { Authorization: `Bearer ${this.session.access_token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && !refreshed) {
        refreshed = true;
        await this.refresh();
        continue;
      }
      if ((response.status === 429 || response.status === 503) && attempt < RETRIES) {
        await sleep(retryAfterMs(response, attempt));
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      return response.status === 204 ? null : response.json();
    }
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  put(path) {
    return this.request("PUT", path);
  }

  delete(path) {
    return this.request("DELETE", path);
  }

  /** POST /v1/uploads with the file as the raw body; `onProgress(fraction)` as bytes leave.
   * Returns {promise, abort}. */
  upload(file, onProgress) {
    let xhr = null;
    let aborted = false;
    const send = () =>
      new Promise((resolve, reject) => {
        xhr = new XMLHttpRequest();
        const name = encodeURIComponent(file.name || "file");
        xhr.open("POST", `/v1/uploads?filename=${name}`);
        xhr.setRequestHeader("Authorization", `Bearer ${this.session.access_token}`);
        xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
        xhr.responseType = "json";
        xhr.upload.onprogress = (event) => {
          if (event.lengthComputable) onProgress(event.loaded / event.total);
        };
        xhr.onload = () => resolve(xhr);
        xhr.onerror = () => reject(new ApiError(0, "network", "The upload failed: network error."));
        xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
        xhr.send(file);
      });
    const promise = (async () => {
      let done = await send();
      if (done.status === 401 && !aborted) {
        await this.refresh();
        done = await send();
      }
      if (done.status !== 201) {
        const error = done.response && done.response.error;
        throw new ApiError(done.status, error && error.code, error ? error.message : `Upload failed (${done.status}).`);
      }
      onProgress(1);
      return done.response;
    })();
    return {
      promise,
      abort: () => {
        aborted = true;
        if (xhr) xhr.abort();
      },
    };
  }

  /** The bytes of an upload and the name the server gives it. */
  async download(uploadId) {
    const path = `/v1/uploads/${encodeURIComponent(uploadId)}`;
    let response = await fetch(path, { headers: { Authorization: `Bearer ${this.session.access_token}` } });
    if (response.status === 401) {
      await this.refresh();
      response = await fetch(path, { headers: { Authorization: `Bearer ${this.session.access_token}` } });
    }
    if (!response.ok) throw await errorOf(response);
    return { blob: await response.blob(), filename: filenameOf(response.headers.get("Content-Disposition")) };
  }
}

function filenameOf(disposition) {
  if (!disposition) return "download";
  const extended = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  if (extended) {
    try {
      return decodeURIComponent(extended[1]);
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename="([^"]+)"/i.exec(disposition);
  return plain ? plain[1] : "download";
}
