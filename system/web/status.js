// The status page (status.html): reads the API's public /v1/status (the URL the page names in
// data-status-source) every 15 s and shows each component's state. When the API itself does not
// answer, the API is shown down and the rest unknown: this page cannot see past it.

import { $ } from "./dom.js";

const EVERY_MS = 15000;
const TEXT = { up: "Operational", degraded: "Degraded", down: "Down", unknown: "Unknown" };
const SUMMARY = {
  up: "All systems operational",
  degraded: "Some features are degraded",
  down: "Major outage",
  unknown: "The API does not answer",
};

const main = $("[data-status-source]");
const source = main.dataset.statusSource;

function show(el, state) {
  el.dataset.state = state;
  el.textContent = TEXT[state] || TEXT.unknown;
}

function render(report) {
  for (const item of main.querySelectorAll("[data-component]")) {
    const state = report ? report.components[item.dataset.component] : item.dataset.component === "api" ? "down" : "unknown";
    show($(".status-state", item), state || "unknown");
  }
  const overall = report ? report.status : "unknown";
  const summary = $("#status-summary");
  summary.dataset.state = overall;
  summary.textContent = SUMMARY[overall] || SUMMARY.unknown;
  $("#status-checked").textContent = report
    ? `Checked ${new Date(report.checked_at).toLocaleString()}.`
    : `The API did not answer at ${new Date().toLocaleString()}.`;
}

async function refresh() {
  try {
    const response = await fetch(source, { headers: { Accept: "application/json" } });
    render(response.ok ? await response.json() : null);
  } catch {
    render(null);
  }
}

refresh();
setInterval(refresh, EVERY_MS);
