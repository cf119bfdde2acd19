// The ngx_im chat page: the official OpenIM JS SDK (@openim/client-sdk,
// unmodified, bundled by esbuild: ./build.sh web) pointed at ngx_im.
// README.md "The chat page"; tested in Chromium by t/test_browser.py,
// which reads the data-* attributes set here.
import { getSDK, CbEvents } from "@openim/client-sdk";

const PLATFORM_WEB = 5;
const SINGLE = 1;
const GROUP = 3;
const PAGE = 20;               // messages per history pull
const TYPING_IDLE_MS = 3000;   // "stopped typing" after a pause this long
const SDK_LOG_ERROR = 4;       // the SDK's log levels: 1 debug .. 5 silent
const SDK_LOG_DEBUG = 1;

const TERMINAL = ["signed-out", "kicked", "token-expired", "token-invalid"];
const LABELS = {
  "signed-out": "signed out",
  connecting: "connecting…",
  syncing: "syncing…",
  online: "online",
  offline: "offline: the SDK retries every 5 s",
  reconnecting: "reconnecting…",
  failed: "sync failed",
  kicked: "logged out: the token was kicked",
  "token-expired": "the token expired",
  "token-invalid": "the token is not valid",
};
const NOTES = {
  1501: "group created", 1502: "group info changed", 1504: "a member left",
  1508: "a member was removed", 1509: "members were invited",
  1510: "a member joined", 1511: "group dismissed",
};

let sdk = null;
let me = "";
let state = "signed-out";
let syncs = 0;                 // syncs finished: 1 the login, then reconnects
const convs = new Map();       // conversationID -> the SDK's ConversationItem
let open = null;               // the ConversationItem shown
let msgs = [];                 // its messages loaded, oldest first
let isEnd = false;             // nothing older to pull
let pulling = null;            // the conversation a history pull is for
const typers = new Map();      // conversationID -> Set of userIDs typing
const receiptIDs = new Map();  // conversationID -> clientMsgIDs the peer read
const RECEIPT_IDS_MAX = 200;   // per conversation, the newest
let typing = false;            // we told the peer we are typing
let typingTimer = null;
let readChain = Promise.resolve();

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null && v !== false) n.setAttribute(k, v);
  }
  n.append(...kids.filter((k) => k !== undefined && k !== null && k !== false));
  return n;
}

function setState(s) {
  state = s;
  $("state").dataset.state = s;
  $("state").textContent = LABELS[s] || s;
}

function showError(what, e) {
  const code = e && e.errCode !== undefined ? ` (${e.errCode})` : "";
  $("error").textContent = `${what}: ${(e && (e.errMsg || e.message)) || e}${code}`;
}

// The SDK reports a lost connection only when it tries again, 5 s later;
// its WebSocket, made from this subclass, tells the page at once.
const NativeWebSocket = window.WebSocket;
let socket = null;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    socket = this;
    this.addEventListener("close", () => {
      if (socket === this && !TERMINAL.includes(state)) setState("offline");
    });
  }
};

// ---- log in and the SDK's events

function settings() {
  const p = new URLSearchParams(location.hash.slice(1));
  const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/im/ws";
  return {
    user: p.get("user") || "", token: p.get("token") || "",
    api: p.get("api") || location.origin + "/im/api", ws: p.get("ws") || ws,
    debug: p.has("debug"),
  };
}

const handlers = {
  [CbEvents.OnConnecting]: () => setState(syncs ? "reconnecting" : "connecting"),
  [CbEvents.OnConnectSuccess]: () => setState("syncing"),
  [CbEvents.OnConnectFailed]: () => {
    if (!TERMINAL.includes(state)) setState("offline");
  },
  [CbEvents.OnSyncServerStart]: () => setState("syncing"),
  [CbEvents.OnSyncServerFinish]: () => {
    syncs++;
    setState("online");
    refreshConversations();
    // catch-up: what came while the page was away.  The SDK's own
    // (OnRecvNewMessages for the missed messages) throws inside
    // @openim/client-sdk 0.0.14 (docs/protocol.md, "Clients"); its
    // history is right, and both merge by clientMsgID.
    if (syncs > 1 && open) pull(true);
  },
  [CbEvents.OnSyncServerFailed]: (e) => {
    setState("failed");
    showError("sync", e);
  },
  [CbEvents.OnKickedOffline]: () => end("kicked"),
  [CbEvents.OnUserTokenExpired]: () => end("token-expired"),
  [CbEvents.OnUserTokenInvalid]: () => end("token-invalid"),
  [CbEvents.OnNewConversation]: (e) => mergeConversations(e.data),
  [CbEvents.OnConversationChanged]: (e) => mergeConversations(e.data),
  [CbEvents.OnTotalUnreadMessageCountChanged]: (e) => {
    document.title = e.data > 0 ? `(${e.data}) ngx_im chat` : "ngx_im chat";
  },
  [CbEvents.OnRecvNewMessages]: (e) => received(e.data || []),
  [CbEvents.OnRecvC2CReadReceipt]: (e) => receipts(e.data || []),
  [CbEvents.OnConversationUserInputStatusChanged]: (e) => typingChanged(e.data),
};

async function login(s) {
  me = s.user;
  sdk = getSDK();
  for (const [ev, fn] of Object.entries(handlers)) sdk.on(ev, fn);
  $("login").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("me").textContent = me;
  setState("connecting");
  try {
    await sdk.login({ userID: s.user, token: s.token, platformID: PLATFORM_WEB,
                      apiAddr: s.api, wsAddr: s.ws,
                      logLevel: s.debug ? SDK_LOG_DEBUG : SDK_LOG_ERROR });
  } catch (e) {
    // the SDK gave up (no WebSocket at all): back to the form
    setState("signed-out");
    $("login").hidden = false;
    $("chat").hidden = true;
    $("login-error").textContent = `cannot connect: ${e.errMsg || e.message || e}`;
  }
}

// A refused or kicked token: the SDK would retry a refused one every 5 s
// for ever (its logout refuses once it has seen the refusal), so a fresh
// page, with the form and the reason, stops it.
function end(s) {
  setState(s);
  location.replace("#" + new URLSearchParams({ user: me, error: s }));
  location.reload();
}

// ---- the conversation list

function title(c) {
  return c.showName || c.userID || c.groupID;
}

function text(m) {
  if (!m) return "";
  if (m.textElem) return m.textElem.content;
  if (m.atTextElem) return m.atTextElem.text;
  if (m.quoteElem) return m.quoteElem.text;
  if (m.contentType >= 1000) return `[${NOTES[m.contentType] || "notification " + m.contentType}]`;
  return `[message type ${m.contentType}]`;
}

async function refreshConversations() {
  try {
    const r = await sdk.getConversationListSplit({ offset: 0, count: 200 });
    convs.clear();
    mergeConversations(r.data || []);
  } catch (e) {
    showError("conversation list", e);
  }
}

function mergeConversations(list) {
  for (const c of list) {
    const merged = { ...convs.get(c.conversationID), ...c };
    convs.set(c.conversationID, merged);
    if (open && open.conversationID === c.conversationID) {
      open = merged;
      if (merged.unreadCount > 0) markRead();
    }
  }
  renderList();
}

function renderList() {
  const list = [...convs.values()].sort((a, b) =>
    (b.isPinned - a.isPinned) || (b.latestMsgSendTime - a.latestMsgSendTime));
  $("conversations").replaceChildren(...list.map((c) => {
    let last = null;
    try {
      last = c.latestMsg ? JSON.parse(c.latestMsg) : null;
    } catch (e) { /* an empty or foreign latestMsg */ }
    const who = typers.get(c.conversationID);
    const preview = who && who.size ? "typing…" : text(last);
    const li = el("li", { "data-conv": c.conversationID, "data-unread": c.unreadCount || 0,
                          class: open && open.conversationID === c.conversationID ? "active" : null },
      c.unreadCount > 0 ? el("span", { class: "badge" }, String(c.unreadCount)) : null,
      el("span", { class: "name" }, title(c)),
      el("span", { class: "preview" }, preview));
    li.addEventListener("click", () => openConversation(c.conversationID));
    return li;
  }));
}

// ---- one conversation

async function openConversation(id) {
  stopTyping();
  open = convs.get(id);
  msgs = [];
  isEnd = false;
  $("title").textContent = title(open) + (open.conversationType === GROUP ? " (group)" : "");
  $("send").hidden = false;
  $("error").textContent = "";
  renderList();
  renderTyping();
  renderMessages("bottom");
  await pull(true);
  markRead();
}

// latest: the newest page (opening, catching up); else the page before
// the oldest message loaded (scrolling up)
async function pull(latest) {
  if (!open || pulling === open.conversationID
      || (!latest && (isEnd || !msgs.length))) return;
  const id = open.conversationID;
  pulling = id;
  try {
    const r = await sdk.getAdvancedHistoryMessageList({
      conversationID: id, count: PAGE,
      startClientMsgID: latest ? "" : msgs[0].clientMsgID });
    if (!open || open.conversationID !== id) return;
    if (!latest || !msgs.length) isEnd = r.data.isEnd;
    merge(r.data.messageList || [], latest ? null : "older");
  } catch (e) {
    showError("history", e);
  } finally {
    if (pulling === id) pulling = null;
  }
  // a page too short to scroll cannot ask for more: pull on
  const box = $("messages");
  if (!isEnd && box.scrollHeight <= box.clientHeight) pull(false);
}

function belongs(m, c) {
  if (c.conversationType === GROUP) return m.groupID === c.groupID;
  return m.sessionType === SINGLE
    && ((m.sendID === c.userID && m.recvID === me) || (m.sendID === me && m.recvID === c.userID));
}

function merge(list, keep) {
  for (const m of list) {
    const i = msgs.findIndex((x) => x.clientMsgID === m.clientMsgID);
    if (i >= 0) msgs[i] = { ...msgs[i], ...m };
    else msgs.push(m);
  }
  const at = (m) => m.sendTime || m.createTime;
  msgs.sort((a, b) => (at(a) - at(b)) || ((a.seq || 0) - (b.seq || 0)));
  renderMessages(keep);
}

function status(m, read) {
  if (m.status === 3) return ["failed", "not sent"];
  if (read) return ["read", "✓✓ read"];
  if (m.status === 1 || !m.serverMsgID) return ["sending", "…"];
  return ["sent", "✓"];
}

function messageNode(m, read) {
  const mine = m.sendID === me;
  const note = m.contentType >= 1000;
  const group = open.conversationType === GROUP;
  const node = el("div", { class: `msg ${note ? "note" : mine ? "mine" : "theirs"}`,
                           "data-id": m.clientMsgID, "data-seq": m.seq || 0 },
    group && !mine && !note ? el("span", { class: "from" }, m.senderNickname || m.sendID) : null,
    el("span", { class: "text" }, text(m)));
  const when = new Date(m.sendTime || m.createTime).toLocaleTimeString();
  const meta = el("span", { class: "meta" }, when);
  if (mine && !note) {
    // read receipts: single chats only (the SDK has none for groups)
    const [s, label] = status(m, read);
    node.dataset.status = s;
    meta.append(" " + label);
  }
  node.append(meta);
  return node;
}

// keep: "older" holds the view on what was on screen, "bottom" scrolls
// down, none follows the bottom only when the reader was there
function renderMessages(keep) {
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  const atBottom = fromBottom - box.clientHeight < 40;
  const upTo = readIndex();
  const nodes = open ? msgs.map((m, i) => messageNode(m, i <= upTo)) : [];
  if (open && isEnd) {
    nodes.unshift(el("div", { class: "start", "data-start": "" }, "the beginning of the conversation"));
  }
  box.replaceChildren(...nodes);
  if (keep === "older") box.scrollTop = box.scrollHeight - fromBottom;
  else if (keep === "bottom" || atBottom) box.scrollTop = box.scrollHeight;
}

function received(list) {
  let unread = false;
  for (const m of list) {
    // a message ends its sender's typing
    for (const who of typers.values()) who.delete(m.sendID);
    if (open && belongs(m, open)) {
      merge([m]);
      unread = unread || m.sendID !== me;
    }
  }
  renderTyping();
  if (unread) markRead();
}

// everything shown is read once it is on screen
function markRead() {
  if (!open || document.hidden) return;
  const id = open.conversationID;
  // the SDK refuses a conversation with nothing unread: no harm
  readChain = readChain.then(() => sdk.markConversationMessageAsRead(id)).catch(() => {});
}

// a receipt names the messages the peer just read, in any conversation
// (the SDK marks only the last of them read in its cache)
function receipts(list) {
  for (const r of list) {
    if (r.groupID || !r.userID) continue;
    const id = "si_" + [me, r.userID].sort().join("_");
    const ids = receiptIDs.get(id) || new Set();
    for (const x of r.msgIDList || []) ids.add(x);
    while (ids.size > RECEIPT_IDS_MAX) ids.delete(ids.values().next().value);
    receiptIDs.set(id, ids);
  }
  if (open) renderMessages();
}

// the index in msgs of our last message the peer read: the ones before
// it were read too
function readIndex() {
  if (!open || open.conversationType !== SINGLE) return -1;
  const ids = receiptIDs.get(open.conversationID);
  for (let i = msgs.length - 1; i >= 0; i--) {
    const m = msgs[i];
    if (m.sendID === me && (m.isRead || (ids && ids.has(m.clientMsgID)))) return i;
  }
  return -1;
}

async function send(body) {
  const c = open;
  stopTyping();
  let msg;
  try {
    msg = (await sdk.createTextMessage(body)).data;
    merge([msg], "bottom");
    const sent = await sdk.sendMessage({
      recvID: c.conversationType === SINGLE ? c.userID : "",
      groupID: c.conversationType === GROUP ? c.groupID : "", message: msg });
    if (open === c || (open && open.conversationID === c.conversationID)) {
      merge([{ ...msg, ...sent.data, status: 2 }]);
    }
  } catch (e) {
    if (msg) merge([{ ...msg, status: 3 }]);
    showError("send", e);
  }
}

// ---- typing: sent in single chats only (ngx_im refuses typing, 113,
// in groups, as OpenIM's clients send it there only)

function startTyping() {
  if (!open || open.conversationType !== SINGLE) return;
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  if (typing) return;
  typing = true;
  sdk.changeInputStates({ conversationID: open.conversationID, focus: true }).catch(() => {});
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (!typing || !open) return;
  typing = false;
  sdk.changeInputStates({ conversationID: open.conversationID, focus: false }).catch(() => {});
}

function typingChanged(d) {
  if (!d) return;
  let who = typers.get(d.conversationID);
  if (!who) typers.set(d.conversationID, (who = new Set()));
  if (d.platformIDs && d.platformIDs.length) who.add(d.userID);
  else who.delete(d.userID);
  renderTyping();
  renderList();
}

function renderTyping() {
  const who = open ? [...(typers.get(open.conversationID) || [])] : [];
  $("typing").textContent = who.length ? `${who.join(", ")} is typing…` : "";
  $("typing").dataset.typing = who.join(",");
}

// ---- the forms

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  login({ ...settings(), user: f.get("user").trim(), token: f.get("token").trim(),
          api: f.get("api").trim(), ws: f.get("ws").trim() });
});

$("logout").addEventListener("click", async () => {
  await sdk.logout().catch(() => {});
  location.hash = "";
  location.reload();
});

$("new-chat").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = new FormData(ev.target).get("user").trim();
  try {
    const c = (await sdk.getOneConversation({ sourceID: user, sessionType: SINGLE })).data;
    mergeConversations([c]);
    ev.target.reset();
    openConversation(c.conversationID);
  } catch (e) {
    showError("new chat", e);
  }
});

$("new-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const members = f.get("members").split(",").map((s) => s.trim()).filter(Boolean);
  try {
    const g = (await sdk.createGroup({ memberUserIDs: members,
                                       groupInfo: { groupName: f.get("name").trim() } })).data;
    const c = (await sdk.getOneConversation({ sourceID: g.groupID, sessionType: GROUP })).data;
    mergeConversations([c]);
    ev.target.reset();
    openConversation(c.conversationID);
  } catch (e) {
    showError("new group", e);
  }
});

$("send").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = ev.target.elements.text;
  const body = input.value.trim();
  if (!body || !open) return;
  input.value = "";
  send(body);
});

$("send").elements.text.addEventListener("input", (ev) => {
  if (ev.target.value) startTyping();
  else stopTyping();
});

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 40) pull(false);
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) markRead();
});

const start = settings();
$("login-error").textContent = LABELS[new URLSearchParams(location.hash.slice(1)).get("error")] || "";
$("login").elements.user.value = start.user;
$("login").elements.api.value = start.api;
$("login").elements.ws.value = start.ws;
if (start.user && start.token) login(start);
