// Rendering: one function per thing on screen, each building elements from data (text as text).
// The controller (app.js) owns the state and calls these; `actions` carries its callbacks.

import { h, clear, when } from "./dom.js";

export const REACTIONS = ["👍", "❤️", "😄", "🎉", "👀", "🙏"];

export function channelItem(channel, active, actions) {
  const unread = channel.unread || 0;
  return h(
    "li",
    { class: "channel" + (active ? " active" : ""), dataset: { channelId: channel.channel_id } },
    h(
      "button",
      {
        type: "button",
        class: "channel-button",
        "aria-current": active ? "true" : false,
        onclick: () => actions.openChannel(channel.channel_id),
      },
      h("span", { class: "channel-name" }, channel.kind === "direct" ? "@ " : "# ", channel.name),
      unread > 0
        ? h("span", { class: "badge", "aria-label": `${unread} unread` }, unread > 99 ? "99+" : String(unread))
        : null,
    ),
  );
}

function authorOf(message, actions) {
  return actions.nameOf(message.user_id);
}

function attachmentList(message, actions) {
  if (!message.upload_ids || message.upload_ids.length === 0) return null;
  return h(
    "div",
    { class: "attachments" },
    message.upload_ids.map((uploadId, i) =>
      h(
        "button",
        {
          type: "button",
          class: "attachment",
          dataset: { uploadId },
          onclick: (event) => actions.download(uploadId, event.currentTarget),
        },
        message.upload_ids.length > 1 ? `Download file ${i + 1}` : "Download file",
      ),
    ),
  );
}

function reactionBar(message, actions) {
  const chips = Object.entries(message.reactions || {})
    .filter(([, count]) => count > 0)
    .map(([emoji, count]) =>
      h(
        "button",
        {
          type: "button",
          class: "reaction" + (actions.reacted(message.message_id, emoji) ? " mine" : ""),
          dataset: { emoji },
          "aria-pressed": actions.reacted(message.message_id, emoji) ? "true" : "false",
          "aria-label": `${emoji} ${count}`,
          onclick: () => actions.toggleReaction(message, emoji),
        },
        `${emoji} ${count}`,
      ),
    );
  const palette = h(
    "div",
    { class: "palette", hidden: true, role: "group", "aria-label": "Pick a reaction" },
    REACTIONS.map((emoji) =>
      h(
        "button",
        {
          type: "button",
          class: "palette-emoji",
          "aria-label": `React with ${emoji}`,
          onclick: () => {
            palette.hidden = true;
            actions.toggleReaction(message, emoji, true);
          },
        },
        emoji,
      ),
    ),
  );
  const add = h(
    "button",
    {
      type: "button",
      class: "small-button react-button",
      "aria-label": "Add a reaction",
      onclick: () => {
        palette.hidden = !palette.hidden;
      },
    },
    "React",
  );
  return h("div", { class: "reactions" }, chips, add, palette);
}

export function pollCard(poll, actions) {
  const total = poll.options.reduce((sum, option) => sum + option.votes, 0);
  const mine = new Set(poll.my_votes || []);
  return h(
    "div",
    { class: "poll", dataset: { pollId: poll.poll_id } },
    h("p", { class: "poll-question" }, poll.question),
    h(
      "ul",
      { class: "poll-options" },
      poll.options.map((option) =>
        h(
          "li",
          { class: "poll-option", dataset: { optionId: option.option_id } },
          h(
            "button",
            {
              type: "button",
              class: "vote" + (mine.has(option.option_id) ? " chosen" : ""),
              "aria-pressed": mine.has(option.option_id) ? "true" : "false",
              disabled: poll.closed ? true : false,
              onclick: () => actions.vote(poll, option.option_id),
            },
            option.text,
          ),
          h("meter", { min: 0, max: Math.max(total, 1), value: option.votes, "aria-hidden": "true" }),
          h("span", { class: "votes", dataset: { votes: option.votes } }, `${option.votes} vote${option.votes === 1 ? "" : "s"}`),
        ),
      ),
    ),
    h(
      "p",
      { class: "poll-meta muted" },
      `${total} vote${total === 1 ? "" : "s"} · ${poll.multiple ? "several choices" : "one choice"}`,
      poll.closed ? " · closed" : "",
    ),
  );
}

export function messageItem(message, actions, { inThread = false } = {}) {
  const mine = message.user_id === actions.me();
  const li = h("li", {
    class: "message" + (mine ? " mine" : "") + (message.deleted ? " deleted" : ""),
    dataset: { seq: message.seq, messageId: message.message_id, userId: message.user_id },
  });
  fillMessage(li, message, actions, { inThread });
  return li;
}

export function fillMessage(li, message, actions, { inThread = false } = {}) {
  clear(li);
  li.classList.toggle("deleted", Boolean(message.deleted));
  li.append(
    h(
      "div",
      { class: "message-head" },
      h("span", { class: "author" }, authorOf(message, actions)),
      h("time", { datetime: message.created_at }, when(message.created_at)),
      message.edited_at ? h("span", { class: "muted" }, " (edited)") : null,
    ),
  );
  if (message.deleted) {
    li.append(h("p", { class: "text muted" }, "This message was deleted."));
    return li;
  }
  if (message.kind === "poll") {
    const poll = actions.pollOf(message);
    li.append(poll ? pollCard(poll, actions) : h("p", { class: "text" }, `Poll: ${message.text}`));
  } else {
    li.append(h("p", { class: "text" }, message.text));
  }
  const attachments = attachmentList(message, actions);
  if (attachments) li.append(attachments);
  const footer = h("div", { class: "message-actions" }, reactionBar(message, actions));
  if (!inThread && !message.parent_id) {
    const replies = message.reply_count || 0;
    footer.append(
      h(
        "button",
        { type: "button", class: "small-button reply-button", onclick: () => actions.openThread(message) },
        replies > 0 ? `${replies} repl${replies === 1 ? "y" : "ies"}` : "Reply",
      ),
    );
  }
  li.append(footer);
  return li;
}
