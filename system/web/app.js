// The ChatSDK web client: sign in (demo), channels with unread counts, history paged by seq,
// sending, threads, reactions, polls, uploads with progress, and live updates over the realtime
// WebSocket with reconnect and backfill. Plain ES modules, no build step, no inline code.

import { Api, ApiError, clearSession, demoAvailable, demoSignIn, loadSession } from "./api.js";
import { $, clear, h, randomId, show } from "./dom.js";
import { Realtime } from "./realtime.js";
import { channelItem, fillMessage, messageItem } from "./views.js";

const PAGE = 50;
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOW_MS = 4000;
const NEAR_TOP_PX = 120;
const NEAR_BOTTOM_PX = 120;
const WIDE = window.matchMedia("(min-width: 701px)");
const STATUS_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };

const ui = {
  signin: $("#signin"),
  signinForm: $("#signin-form"),
  signinName: $("#signin-name"),
  signinNote: $("#signin-note"),
  signinError: $("#signin-error"),
  chat: $("#chat"),
  status: $("#status"),
  me: $("#me"),
  whoami: $("#whoami"),
  sidebar: $("#sidebar"),
  toggleChannels: $("#toggle-channels"),
  channelList: $("#channel-list"),
  channelTitle: $("#channel-title"),
  channelMeta: $("#channel-meta"),
  messages: $("#messages"),
  messageList: $("#message-list"),
  historyStatus: $("#history-status"),
  typing: $("#typing"),
  composer: $("#composer"),
  composerText: $("#composer-text"),
  send: $("#send"),
  fileInput: $("#file-input"),
  upload: $("#upload"),
  uploadName: $("#upload-name"),
  uploadProgress: $("#upload-progress"),
  uploadPercent: $("#upload-percent"),
  thread: $("#thread"),
  threadRoot: $("#thread-root"),
  threadList: $("#thread-list"),
  threadComposer: $("#thread-composer"),
  threadText: $("#thread-text"),
  pollDialog: $("#poll-dialog"),
  pollForm: $("#poll-form"),
  pollOptions: $("#poll-options"),
  pollError: $("#poll-error"),
  channelDialog: $("#channel-dialog"),
  channelForm: $("#channel-form"),
  channelError: $("#channel-error"),
  toast: $("#toast"),
};

const state = {
  api: null,
  rt: null,
  channels: new Map(), // channel_id -> channel (with unread, last_seq)
  active: null, // the open channel's id
  conv: null, // the open channel's loaded history
  names: new Map(), // user_id -> display name (or a promise of it)
  polls: new Map(), // poll_id -> poll
  mineReactions: new Set(), // `${message_id} ${emoji}` this user added
  thread: null, // {parent, items: Map seq -> message}
  typing: new Map(), // user_id -> timer
  lastTypingSent: 0,
  upload: null, // {file, task, uploadId, promise}
  readTimer: null,
};

// -- little things ----------------------------------------------------------------------------

let toastTimer = null;
function toast(text) {
  ui.toast.textContent = text;
  show(ui.toast);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(ui.toast, false), 5000);
}

function failed(what, error) {
  const detail = error instanceof ApiError ? error.message : "network error";
  toast(`${what} failed: ${detail}`);
}

function setStatus(connection) {
  ui.status.dataset.state = connection;
  ui.status.textContent = STATUS_TEXT[connection] || connection;
}

function nameOf(userId) {
  if (userId === state.api.userId) return state.api.session.name || userId;
  const known = state.names.get(userId);
  if (typeof known === "string") return known;
  if (!known) {
    const lookup = state.api
      .get(`/v1/users/${encodeURIComponent(userId)}`)
      .then((user) => {
        state.names.set(userId, user.name || userId);
        for (const el of document.querySelectorAll(".message")) {
          if (el.dataset.userId === userId) el.querySelector(".author").textContent = user.name || userId;
        }
        renderTyping();
      })
      .catch(() => state.names.set(userId, userId));
    state.names.set(userId, lookup);
  }
  return userId;
}

const actions = {
  me: () => state.api.userId,
  nameOf,
  openChannel: (channelId) => openChannel(channelId),
  openThread: (message) => openThread(message),
  download: (uploadId, button) => download(uploadId, button),
  reacted: (messageId, emoji) => state.mineReactions.has(`${messageId} ${emoji}`),
  toggleReaction: (message, emoji, add) => toggleReaction(message, emoji, add),
  vote: (poll, optionId) => vote(poll, optionId),
  pollOf: (message) => (message.poll_id ? state.polls.get(message.poll_id) || loadPoll(message.poll_id) : null),
};

// -- sign-in ----------------------------------------------------------------------------------

async function showSignIn() {
  show(ui.chat, false);
  show(ui.signin);
  const available = await demoAvailable();
  ui.signinForm.querySelector("button").disabled = !available;
  if (!available) {
    ui.signinNote.textContent =
      "This deployment offers no demo sign-in: the app that embeds this client signs its users in.";
  }
  ui.signinName.focus();
}

ui.signinForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  show(ui.signinError, false);
  const name = ui.signinName.value.trim();
  if (!name) return;
  try {
    start(await demoSignIn(name));
  } catch (error) {
    ui.signinError.textContent = error instanceof ApiError ? error.message : "The server cannot be reached.";
    show(ui.signinError);
  }
});

$("#signout").addEventListener("click", () => signOut());

function signOut() {
  if (state.rt) state.rt.stop();
  clearSession();
  location.reload();
}

// -- start ------------------------------------------------------------------------------------

function start(session) {
  state.api = new Api(session, { onSignedOut: signOut });
  show(ui.signin, false);
  show(ui.chat);
  ui.me.textContent = session.name || session.user_id;
  ui.whoami.textContent = `Signed in as ${session.name || session.user_id} (user id ${session.user_id})`;
  state.rt = new Realtime({
    token: () => state.api.accessToken,
    refresh: () => state.api.refresh(),
    lastSeq: (channelId) => lastSeqOf(channelId),
    onEvent: onEvent,
    onState: setStatus,
  });
  loadChannels().then(() => {
    state.rt.start();
    const first = state.channels.values().next().value;
    if (first) openChannel(first.channel_id);
  });
}

/** The highest seq this client has of a channel: the realtime backfill starts after it. */
function lastSeqOf(channelId) {
  const channel = state.channels.get(channelId);
  const seen = channel ? channel.last_seq : 0;
  const loaded = state.conv && state.conv.channelId === channelId ? state.conv.newest : 0;
  return Math.max(seen, loaded);
}

async function loadChannels() {
  try {
    const page = await state.api.get("/v1/channels?limit=200");
    for (const channel of page.channels) {
      const known = state.channels.get(channel.channel_id);
      if (known) {
        Object.assign(known, { name: channel.name, unread: channel.unread });
        known.last_seq = Math.max(known.last_seq, channel.last_seq);
      } else {
        state.channels.set(channel.channel_id, channel);
        if (state.rt) state.rt.subscribe(channel.channel_id);
      }
    }
  } catch (error) {
    failed("Loading your channels", error);
  } finally {
    state.channelsLoadedAt = Date.now();
    renderChannels();
    if (state.conv) markRead(); // the server's count may predate this tab's read position
  }
}

function renderChannels() {
  clear(ui.channelList);
  const sorted = [...state.channels.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const channel of sorted) ui.channelList.append(channelItem(channel, channel.channel_id === state.active, actions));
}

// -- a channel and its history ----------------------------------------------------------------

async function openChannel(channelId) {
  const channel = state.channels.get(channelId);
  if (!channel) return;
  state.active = channelId;
  state.conv = { channelId, bySeq: new Map(), elements: new Map(), oldest: null, newest: 0, hasMore: false, loading: false };
  closeThread();
  clearTyping();
  ui.channelTitle.textContent = `# ${channel.name}`;
  ui.channelMeta.textContent = "";
  clear(ui.messageList);
  ui.historyStatus.textContent = "Loading…";
  setDrawer(false);
  renderChannels();
  try {
    const page = await state.api.get(`/v1/channels/${encodeURIComponent(channelId)}/messages?limit=${PAGE}`);
    if (state.active !== channelId) return;
    state.conv.hasMore = page.has_more;
    addMessages(page.messages);
    scrollToBottom();
  } catch (error) {
    failed("Loading the history", error);
  }
  updateHistoryStatus();
  markRead();
  if (WIDE.matches) ui.composerText.focus({ preventScroll: true }); // no keyboard pop-up on phones
}

function updateHistoryStatus() {
  const conv = state.conv;
  if (!conv) return;
  ui.historyStatus.textContent = conv.loading
    ? "Loading earlier messages…"
    : conv.hasMore
      ? "Scroll up for earlier messages"
      : "This is the beginning of the channel.";
}

/** Put messages (any order, duplicates dropped by seq) into the open channel's list. */
function addMessages(messages) {
  const conv = state.conv;
  for (const message of messages) {
    if (message.channel_id !== conv.channelId) continue;
    if (message.poll) rememberPoll({ ...message.poll, my_votes: [] }, true);
    const known = conv.bySeq.get(message.seq);
    conv.bySeq.set(message.seq, message);
    conv.oldest = conv.oldest === null ? message.seq : Math.min(conv.oldest, message.seq);
    conv.newest = Math.max(conv.newest, message.seq);
    if (message.parent_id) {
      bumpReplies(message.parent_id, message);
      continue;
    }
    if (known) {
      const el = conv.elements.get(message.message_id);
      if (el) fillMessage(el, message, actions);
      continue;
    }
    const el = messageItem(message, actions);
    conv.elements.set(message.message_id, el);
    insertInOrder(ui.messageList, el, message.seq);
  }
}

function insertInOrder(list, el, seq) {
  let after = list.lastElementChild;
  while (after && Number(after.dataset.seq) > seq) after = after.previousElementSibling;
  if (after) after.after(el);
  else list.prepend(el);
}

function bumpReplies(parentId, reply) {
  const conv = state.conv;
  for (const message of conv.bySeq.values()) {
    if (message.message_id !== parentId) continue;
    const seen = (message.seen_replies ||= new Set());
    if (!seen.has(reply.seq)) {
      seen.add(reply.seq);
      if (reply.live) message.reply_count = (message.reply_count || 0) + 1;
    }
    const el = conv.elements.get(parentId);
    if (el) fillMessage(el, message, actions);
  }
  if (state.thread && state.thread.parent.message_id === parentId) addReplies([reply]);
}

async function loadOlder() {
  const conv = state.conv;
  if (!conv || conv.loading || !conv.hasMore || conv.oldest === null) return;
  conv.loading = true;
  updateHistoryStatus();
  const channelId = conv.channelId;
  try {
    const page = await state.api.get(
      `/v1/channels/${encodeURIComponent(channelId)}/messages?before_seq=${conv.oldest}&limit=${PAGE}`,
    );
    if (state.conv !== conv) return;
    const fromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
    conv.hasMore = page.has_more;
    addMessages(page.messages);
    ui.messages.scrollTop = ui.messages.scrollHeight - fromBottom; // keep what the reader sees
  } catch (error) {
    failed("Loading earlier messages", error);
  } finally {
    conv.loading = false;
    updateHistoryStatus();
  }
  if (ui.messages.scrollTop < NEAR_TOP_PX) loadOlder();
}

ui.messages.addEventListener("scroll", () => {
  if (ui.messages.scrollTop < NEAR_TOP_PX) loadOlder();
});

function nearBottom() {
  return ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function markRead() {
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(async () => {
    const conv = state.conv;
    const channel = conv && state.channels.get(conv.channelId);
    if (!channel || document.visibilityState !== "visible" || conv.newest <= (channel.last_read_seq || 0)) {
      if (channel && channel.unread) {
        channel.unread = 0;
        renderChannels();
      }
      return;
    }
    channel.unread = 0;
    channel.last_read_seq = conv.newest;
    renderChannels();
    try {
      await state.api.post(`/v1/channels/${encodeURIComponent(channel.channel_id)}/read`, { seq: conv.newest });
    } catch {
      // the server keeps the older read position; the next read moves it
    }
  }, 300);
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") markRead();
});

// -- live events ------------------------------------------------------------------------------

function onEvent(frame) {
  const channelId = frame.channel_id;
  const data = frame.data || {};
  switch (frame.type) {
    case "message.new":
      return onMessage(channelId, { ...data, live: true });
    case "message.updated":
    case "message.deleted":
      return onMessageChanged(channelId, data);
    case "reaction.added":
    case "reaction.removed":
      return onReaction(channelId, data);
    case "poll.updated":
      return rememberPoll(data, true);
    case "typing":
      return onTyping(channelId, data.user_id);
    case "member.joined":
      if (data.user_id === state.api.userId && !state.channels.has(channelId)) loadChannels();
      return undefined;
    case "member.left":
      if (data.user_id === state.api.userId) dropChannel(channelId);
      return undefined;
    case "unsubscribed":
      if (frame.reason === "not_member") dropChannel(channelId);
      return undefined;
    default:
      return undefined;
  }
}

function onMessage(channelId, message) {
  const channel = state.channels.get(channelId);
  if (!channel) {
    loadChannels();
    return;
  }
  const isNew = message.seq > channel.last_seq;
  channel.last_seq = Math.max(channel.last_seq, message.seq);
  const open = state.conv && state.conv.channelId === channelId;
  if (message.user_id !== state.api.userId) clearTypingOf(message.user_id);
  if (open) {
    const gap = state.conv.newest > 0 && message.seq > state.conv.newest + 1;
    const follow = nearBottom();
    if (gap) fillGap(state.conv, message.seq);
    addMessages([message]);
    if (follow) scrollToBottom();
    markRead();
  } else if (isNew && message.user_id !== state.api.userId) {
    channel.unread = (channel.unread || 0) + 1;
    renderChannels();
  }
}

/** A message arrived beyond the next seq: fetch what lies between (the server guarantees no gaps
 * on one subscription, but a history page and the socket can cross). */
async function fillGap(conv, seq) {
  try {
    const page = await state.api.get(
      `/v1/channels/${encodeURIComponent(conv.channelId)}/messages?after_seq=${conv.newest}&limit=200`,
    );
    if (state.conv === conv) addMessages(page.messages.filter((m) => m.seq < seq));
  } catch {
    // the next reload shows them
  }
}

function onMessageChanged(channelId, message) {
  const conv = state.conv;
  if (!conv || conv.channelId !== channelId) return;
  const known = conv.bySeq.get(message.seq);
  if (!known) return;
  Object.assign(known, message);
  const el = conv.elements.get(message.message_id);
  if (el) fillMessage(el, known, actions);
}

function onReaction(channelId, data) {
  const conv = state.conv;
  if (!conv || conv.channelId !== channelId) return;
  for (const message of conv.bySeq.values()) {
    if (message.message_id !== data.message_id) continue;
    message.reactions = { ...(message.reactions || {}) };
    if (data.count > 0) message.reactions[data.emoji] = data.count;
    else delete message.reactions[data.emoji];
    rerender(message);
  }
}

function rerender(message) {
  const el = state.conv && state.conv.elements.get(message.message_id);
  if (el) fillMessage(el, message, actions);
  const threadEl = state.thread && state.thread.elements.get(message.message_id);
  if (threadEl) fillMessage(threadEl, message, actions, { inThread: true });
}

function dropChannel(channelId) {
  state.channels.delete(channelId);
  if (state.active === channelId) {
    state.active = null;
    state.conv = null;
    clear(ui.messageList);
    ui.channelTitle.textContent = "Pick a channel";
  }
  renderChannels();
}

// -- typing -----------------------------------------------------------------------------------

function onTyping(channelId, userId) {
  if (!state.conv || state.conv.channelId !== channelId || userId === state.api.userId) return;
  clearTimeout(state.typing.get(userId));
  state.typing.set(userId, setTimeout(() => clearTypingOf(userId), TYPING_SHOW_MS));
  renderTyping();
}

function clearTypingOf(userId) {
  if (!state.typing.has(userId)) return;
  clearTimeout(state.typing.get(userId));
  state.typing.delete(userId);
  renderTyping();
}

function clearTyping() {
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()].map(nameOf);
  ui.typing.textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

ui.composerText.addEventListener("input", () => {
  const now = Date.now();
  if (state.active && ui.composerText.value && now - state.lastTypingSent > TYPING_SEND_EVERY_MS) {
    state.lastTypingSent = now;
    state.rt.typing(state.active);
  }
});

// -- sending ----------------------------------------------------------------------------------

function submitOnEnter(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}
submitOnEnter(ui.composerText, ui.composer);
submitOnEnter(ui.threadText, ui.threadComposer);

async function post(channelId, body) {
  // client_msg_id: a retried send returns the original message, never a duplicate.
  const message = await state.api.post(`/v1/channels/${encodeURIComponent(channelId)}/messages`, {
    ...body,
    client_msg_id: randomId("web-"),
  });
  const channel = state.channels.get(channelId);
  if (channel) channel.last_seq = Math.max(channel.last_seq, message.seq);
  if (state.conv && state.conv.channelId === channelId) {
    addMessages([{ ...message, live: true }]);
    scrollToBottom();
    markRead();
  }
  return message;
}

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const channelId = state.active;
  const text = ui.composerText.value.trim();
  const upload = state.upload;
  if (!channelId || (!text && !upload)) return;
  ui.send.disabled = true;
  try {
    const body = { text: text || `Attached ${upload.file.name}` };
    if (upload) body.upload_ids = [(await upload.promise).upload_id];
    await post(channelId, body);
    ui.composerText.value = "";
    clearUpload();
  } catch (error) {
    failed("Sending", error);
  } finally {
    ui.send.disabled = false;
    ui.composerText.focus({ preventScroll: true });
  }
});

// -- uploads ----------------------------------------------------------------------------------

ui.fileInput.addEventListener("change", () => {
  const file = ui.fileInput.files[0];
  ui.fileInput.value = "";
  if (file) startUpload(file);
});

function startUpload(file) {
  clearUpload();
  const task = state.api.upload(file, (fraction) => {
    const percent = Math.round(fraction * 100);
    ui.uploadProgress.value = percent;
    ui.uploadPercent.textContent = percent === 100 ? "uploaded" : `${percent} %`;
  });
  const upload = { file, task, promise: task.promise };
  state.upload = upload;
  ui.uploadName.textContent = file.name;
  ui.uploadProgress.value = 0;
  ui.uploadPercent.textContent = "0 %";
  ui.upload.dataset.state = "uploading";
  show(ui.upload);
  task.promise.then(
    () => {
      if (state.upload === upload) ui.upload.dataset.state = "done";
    },
    (error) => {
      if (state.upload !== upload) return;
      clearUpload();
      if (error.code !== "aborted") failed("The upload", error);
    },
  );
}

function clearUpload() {
  if (state.upload) state.upload.task.abort();
  state.upload = null;
  show(ui.upload, false);
  delete ui.upload.dataset.state;
}

$("#upload-cancel").addEventListener("click", clearUpload);

async function download(uploadId, button) {
  button.disabled = true;
  try {
    const { blob, filename } = await state.api.download(uploadId);
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: filename, class: "visually-hidden" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    failed("The download", error);
  } finally {
    button.disabled = false;
  }
}

// -- reactions --------------------------------------------------------------------------------

async function toggleReaction(message, emoji, add = false) {
  const key = `${message.message_id} ${emoji}`;
  const removing = !add && state.mineReactions.has(key);
  const path =
    `/v1/channels/${encodeURIComponent(message.channel_id)}/messages/` +
    `${encodeURIComponent(message.message_id)}/reactions/${encodeURIComponent(emoji)}`;
  try {
    if (removing) {
      await state.api.delete(path);
      state.mineReactions.delete(key);
    } else {
      const result = await state.api.put(path);
      state.mineReactions.add(key);
      message.reactions = result.reactions;
    }
    rerender(message);
  } catch (error) {
    failed("Reacting", error);
  }
}

// -- polls ------------------------------------------------------------------------------------

const pollLoads = new Map();
function loadPoll(pollId) {
  if (!pollLoads.has(pollId)) {
    pollLoads.set(
      pollId,
      state.api.get(`/v1/polls/${encodeURIComponent(pollId)}`).then(
        (poll) => rememberPoll(poll, false),
        () => pollLoads.delete(pollId),
      ),
    );
  }
  return null;
}

/** Store a poll and redraw its card; `counts` only (poll.updated) keeps this user's own votes. */
function rememberPoll(poll, countsOnly) {
  const known = state.polls.get(poll.poll_id);
  const merged = countsOnly && known ? { ...known, ...poll, my_votes: known.my_votes } : { ...known, ...poll };
  if (!merged.my_votes) merged.my_votes = [];
  state.polls.set(poll.poll_id, merged);
  for (const el of document.querySelectorAll(".message")) {
    const conv = state.conv;
    const message = conv && conv.bySeq.get(Number(el.dataset.seq));
    if (message && message.poll_id === poll.poll_id && message.message_id === el.dataset.messageId) {
      fillMessage(el, message, actions);
    }
  }
  return merged;
}

async function vote(poll, optionId) {
  let choice;
  if (poll.multiple) {
    const mine = new Set(poll.my_votes);
    if (mine.has(optionId)) mine.delete(optionId);
    else mine.add(optionId);
    if (mine.size === 0) return;
    choice = [...mine];
  } else {
    choice = [optionId];
  }
  try {
    const result = await state.api.post(`/v1/polls/${encodeURIComponent(poll.poll_id)}/votes`, { option_ids: choice });
    rememberPoll(result, false);
  } catch (error) {
    failed("Voting", error);
  }
}

function pollOptionInput(index) {
  const id = `poll-option-${index}`;
  return h(
    "div",
    { class: "poll-option-input" },
    h("label", { for: id }, `Option ${index + 1}`),
    h("input", { id, class: "poll-option-text", maxlength: 200 }),
  );
}

$("#new-poll").addEventListener("click", () => {
  if (!state.active) return;
  ui.pollForm.reset();
  show(ui.pollError, false);
  clear(ui.pollOptions).append(h("legend", {}, "Options"), pollOptionInput(0), pollOptionInput(1));
  ui.pollDialog.showModal();
  $("#poll-question").focus();
});

$("#poll-add-option").addEventListener("click", () => {
  const count = ui.pollOptions.querySelectorAll(".poll-option-text").length;
  if (count < 10) {
    const row = pollOptionInput(count);
    ui.pollOptions.append(row);
    row.querySelector("input").focus();
  }
});

$("#poll-cancel").addEventListener("click", () => ui.pollDialog.close());

ui.pollForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("#poll-question").value.trim();
  const options = [...ui.pollOptions.querySelectorAll(".poll-option-text")].map((i) => i.value.trim()).filter(Boolean);
  if (!question || options.length < 2) {
    ui.pollError.textContent = "A poll needs a question and at least two options.";
    show(ui.pollError);
    return;
  }
  const channelId = state.active;
  try {
    const poll = await state.api.post(`/v1/channels/${encodeURIComponent(channelId)}/polls`, {
      question,
      options,
      multiple: $("#poll-multiple").checked,
    });
    rememberPoll(poll, false);
    ui.pollDialog.close();
    // The poll's message arrives over the socket; fetch it now in case the socket is down.
    if (state.conv && state.conv.channelId === channelId && !state.conv.bySeq.has(poll.seq)) {
      const page = await state.api.get(
        `/v1/channels/${encodeURIComponent(channelId)}/messages?after_seq=${poll.seq - 1}&limit=1`,
      );
      if (state.conv && state.conv.channelId === channelId) addMessages(page.messages);
      scrollToBottom();
    }
  } catch (error) {
    ui.pollError.textContent = error instanceof ApiError ? error.message : "The server cannot be reached.";
    show(ui.pollError);
  }
});

// -- threads ----------------------------------------------------------------------------------

async function openThread(message) {
  state.thread = { parent: message, items: new Map(), elements: new Map() };
  clear(ui.threadRoot).append(messageItem(message, actions, { inThread: true }));
  clear(ui.threadList);
  show(ui.thread);
  ui.chat.classList.add("with-thread");
  try {
    const page = await state.api.get(
      `/v1/channels/${encodeURIComponent(message.channel_id)}/messages/${encodeURIComponent(message.message_id)}/replies?limit=200`,
    );
    addReplies(page.messages);
  } catch (error) {
    failed("Loading the thread", error);
  }
  ui.threadText.focus({ preventScroll: true });
}

function addReplies(replies) {
  const thread = state.thread;
  for (const reply of replies) {
    if (thread.items.has(reply.seq)) continue;
    thread.items.set(reply.seq, reply);
    const el = messageItem(reply, actions, { inThread: true });
    thread.elements.set(reply.message_id, el);
    insertInOrder(ui.threadList, el, reply.seq);
  }
}

function closeThread() {
  state.thread = null;
  show(ui.thread, false);
  ui.chat.classList.remove("with-thread");
}

$("#thread-close").addEventListener("click", closeThread);

ui.threadComposer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const thread = state.thread;
  const text = ui.threadText.value.trim();
  if (!thread || !text) return;
  try {
    const reply = await post(thread.parent.channel_id, { text, parent_id: thread.parent.message_id });
    ui.threadText.value = "";
    if (state.thread === thread) addReplies([reply]);
  } catch (error) {
    failed("Replying", error);
  }
});

// -- new channels -----------------------------------------------------------------------------

$("#new-channel").addEventListener("click", () => {
  ui.channelForm.reset();
  show(ui.channelError, false);
  ui.channelDialog.showModal();
  $("#channel-name").focus();
});

$("#channel-cancel").addEventListener("click", () => ui.channelDialog.close());

ui.channelForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("#channel-name").value.trim();
  const members = $("#channel-members")
    .value.split(",")
    .map((m) => m.trim())
    .filter(Boolean);
  try {
    const channel = await state.api.post("/v1/channels", { name, kind: "public", member_ids: members });
    state.channels.set(channel.channel_id, channel);
    state.rt.subscribe(channel.channel_id);
    ui.channelDialog.close();
    openChannel(channel.channel_id);
  } catch (error) {
    ui.channelError.textContent = error instanceof ApiError ? error.message : "The server cannot be reached.";
    show(ui.channelError);
  }
});

// -- the narrow layout's drawer ---------------------------------------------------------------

function setDrawer(open) {
  ui.chat.classList.toggle("drawer-open", open);
  ui.toggleChannels.setAttribute("aria-expanded", String(open));
}

ui.toggleChannels.addEventListener("click", () => setDrawer(!ui.chat.classList.contains("drawer-open")));

// Channels someone else added this user to: picked up when the tab is focused again.
window.addEventListener("focus", () => {
  if (state.api && Date.now() - (state.channelsLoadedAt || 0) > 10000) loadChannels();
});

// -- go ---------------------------------------------------------------------------------------

const session = loadSession();
if (session) start(session);
else showSignIn();
