// The official OpenIM JS SDK (@openim/client-sdk, unmodified) against
// ngx_im: two users chat, a group of three, a friend application, a kick.
// Run by t/test_sdk.py:
//   node --experimental-websocket t/sdk/scenario.js CONFIG.json
// CONFIG: {"apiAddr","wsAddr","adminToken","platformID","logLevel",
//          "summary": path, "users": {"a":{"userID","token"},"b":…,"c":…}}
// Writes {"ok", "steps":[{name, ok, ms, detail | error}]} to CONFIG.summary
// (and as the last stdout line, after "SUMMARY "). The SDK logs to stdout.
"use strict";

const fs = require("fs");
const { getSDK, CbEvents } = require("@openim/client-sdk");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const STEP_TIMEOUT = 15000;
const steps = [];

// The SDK uses the global WebSocket: node 22 has it, node 20.10+ with
// --experimental-websocket; older node (Debian 12 packages 18) gets the
// ws package's, delivering binary frames as ArrayBuffer as a browser can
if (typeof WebSocket === "undefined") {
  const WS = require("ws");
  globalThis.WebSocket = class extends WS {
    constructor(url, protocols) {
      super(url, protocols);
      this.binaryType = "arraybuffer";
    }
  };
  console.log("no global WebSocket in node " + process.version + ": using the ws package");
}

// Every REST call the SDK makes, with its answer, in the log: what a
// failure needs to be understood ("REST /path {body} -> {answer}")
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, opts = {}) => {
  const body = opts.body instanceof Uint8Array
    ? `<protobuf ${opts.body.length} bytes>` : String(opts.body);
  const path = String(url).replace(cfg.apiAddr, "");
  try {
    const r = await realFetch(url, opts);
    const text = await r.clone().text();
    console.log(`REST ${path} ${body.slice(0, 300)} -> ${r.status} ${text.slice(0, 1200)}`);
    return r;
  } catch (e) {
    console.log(`REST ${path} ${body.slice(0, 300)} -> ${e}`);
    throw e;
  }
};

// The SDK's own failures (a promise it drops, e.g. a TypeError on an
// answer it cannot read) would end node: each is recorded instead, and
// fails the run (test_sdk_no_internal_errors)
const sdkErrors = [];
process.on("unhandledRejection", (e) => {
  console.log("UNHANDLED " + (e && e.stack || e));
  sdkErrors.push(String(e && e.message || e));
});

// One logged-in SDK instance, with every event it emits recorded in order.
class User {
  constructor(name, { userID, token }) {
    this.name = name;
    this.userID = userID;
    this.token = token;
    this.sdk = getSDK();
    this.events = [];
    this.waiters = [];
    for (const ev of Object.values(CbEvents)) {
      this.sdk.on(ev, (e) => this.record(ev, e));
    }
  }

  record(ev, e) {
    const item = { ev, data: e && e.data, errCode: e && e.errCode,
                   errMsg: e && e.errMsg, at: Date.now() };
    this.events.push(item);
    this.waiters = this.waiters.filter((w) => !w.check(item));
  }

  seen(ev) {
    return this.events.filter((x) => x.ev === ev);
  }

  // the first event `ev` (past or future) for which pred(data) holds
  waitEvent(ev, pred = () => true, ms = STEP_TIMEOUT) {
    const hit = this.events.find((x) => x.ev === ev && pred(x.data));
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = {
        check: (item) => {
          if (item.ev !== ev || !pred(item.data)) return false;
          clearTimeout(w.timer);
          resolve(item);
          return true;
        },
      };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.name} (${this.userID}): no ${ev} within ${ms} ms`
                         + `; events seen: ${this.eventNames()}`));
      }, ms);
      this.waiters.push(w);
    });
  }

  eventNames() {
    return this.events.map((x) => x.ev + (x.errCode ? `(${x.errCode} ${x.errMsg})` : ""))
      .join(", ") || "none";
  }

  // an SDK call: resolves with its data, throws with the SDK's errCode
  async call(method, ...args) {
    try {
      const r = await this.sdk[method](...args);
      return r.data;
    } catch (e) {
      throw new Error(`${this.name}.${method} failed: errCode ${e && e.errCode}`
                      + ` ${e && e.errMsg ? e.errMsg : e}`);
    }
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// retry fn until it returns a truthy value, or throw its last complaint
async function until(fn, ms, what) {
  const end = Date.now() + ms;
  let last = "";
  for (;;) {
    const v = await fn();
    if (v && v.ok) return v.value;
    last = v && v.why;
    if (Date.now() > end) throw new Error(`${what}: ${last}`);
    await sleep(200);
  }
}

// step(name, needs, fn): runs fn unless a step it needs failed
async function step(name, needs, fn) {
  const failed = needs.filter((n) => !steps.find((s) => s.name === n && s.ok));
  if (failed.length) {
    steps.push({ name, ok: false, skipped: true, error: `needs ${failed.join(", ")}` });
    return;
  }
  const t0 = Date.now();
  try {
    const detail = await withTimeout(Promise.resolve().then(fn), 4 * STEP_TIMEOUT, name);
    steps.push({ name, ok: true, ms: Date.now() - t0, detail: detail || {} });
  } catch (e) {
    steps.push({ name, ok: false, ms: Date.now() - t0, error: String(e && e.message || e) });
  }
}

function conversationID(a, b) {
  return "si_" + [a, b].sort().join("_");
}

function hasMsg(clientMsgID) {
  return (list) => Array.isArray(list) && list.some((m) => m.clientMsgID === clientMsgID);
}

async function login(u) {
  const failed = u.waitEvent(CbEvents.OnSyncServerFailed, () => true, 4 * STEP_TIMEOUT)
    .then((x) => { throw new Error(`${u.name}: OnSyncServerFailed errCode ${x.errCode} ${x.errMsg}`); },
          () => new Promise(() => {}));
  await u.call("login", { userID: u.userID, token: u.token, wsAddr: cfg.wsAddr,
                          apiAddr: cfg.apiAddr, platformID: cfg.platformID,
                          logLevel: cfg.logLevel });
  await Promise.race([u.waitEvent(CbEvents.OnConnectSuccess), failed]);
  await Promise.race([u.waitEvent(CbEvents.OnSyncServerFinish), failed]);
  if (u.seen(CbEvents.OnSyncServerFailed).length) {
    throw new Error(`${u.name}: OnSyncServerFailed ${u.eventNames()}`);
  }
}

// the message with clientMsgID in u's history of conversation cid
async function historyMsg(u, cid, clientMsgID) {
  const h = await u.call("getAdvancedHistoryMessageList",
                         { conversationID: cid, count: 20, startClientMsgID: "", lastMinSeq: 0 });
  return (h.messageList || []).find((m) => m.clientMsgID === clientMsgID);
}

async function sendText(from, text, recvID, groupID) {
  const msg = await from.call("createTextMessage", text);
  const sent = await from.call("sendMessage", { recvID, groupID, message: msg });
  if (sent.clientMsgID !== msg.clientMsgID || !sent.serverMsgID) {
    throw new Error(`sendMessage resolved with ${JSON.stringify(sent)}`);
  }
  return sent;
}

async function main() {
  const a = new User("a", cfg.users.a);
  const b = new User("b", cfg.users.b);
  const c = new User("c", cfg.users.c);
  const single = conversationID(a.userID, b.userID);
  let sent = null;
  let groupID = "";

  await step("login", [], async () => {
    await Promise.all([login(a), login(b), login(c)]);
    return { events: { a: a.eventNames(), b: b.eventNames(), c: c.eventNames() } };
  });

  await step("send", ["login"], async () => {
    sent = await sendText(a, "hello from the SDK", b.userID, "");
    return { clientMsgID: sent.clientMsgID, serverMsgID: sent.serverMsgID };
  });

  await step("send_seq", ["send"], async () => {
    // the SDK learns the seq from the server's echo of its own message
    const seq = await until(async () => {
      const m = await historyMsg(a, single, sent.clientMsgID);
      return m && m.seq > 0 ? { ok: true, value: m.seq }
        : { why: `a's history holds ${m ? "the message with seq " + m.seq : "no such message"}` };
    }, STEP_TIMEOUT, "the sent message's seq never became > 0");
    return { seq };
  });

  await step("receive", ["send"], async () => {
    const e = await b.waitEvent(CbEvents.OnRecvNewMessages, hasMsg(sent.clientMsgID));
    const m = e.data.find((x) => x.clientMsgID === sent.clientMsgID);
    if (m.sendID !== a.userID || !m.textElem || m.textElem.content !== "hello from the SDK") {
      throw new Error(`b got ${JSON.stringify(m)}`);
    }
    return { seq: m.seq };
  });

  await step("conversation_list", ["receive"], async () => {
    return until(async () => {
      const list = await b.call("getConversationListSplit", { offset: 0, count: 20 });
      const conv = list.find((x) => x.conversationID === single);
      if (!conv) return { why: `b's list lacks ${single}: ${JSON.stringify(list)}` };
      if (conv.unreadCount !== 1) return { why: `unreadCount ${conv.unreadCount}, not 1` };
      return { ok: true, value: { conversationID: single, unreadCount: 1, showName: conv.showName } };
    }, STEP_TIMEOUT, "conversation list");
  });

  await step("mark_read", ["receive"], async () => {
    await b.call("markConversationMessageAsRead", single);
    const e = await a.waitEvent(CbEvents.OnRecvC2CReadReceipt,
      (d) => Array.isArray(d) && d.some((r) => r.userID === b.userID
                                         && (r.msgIDList || []).includes(sent.clientMsgID)));
    return { receipt: e.data };
  });

  await step("group", ["login"], async () => {
    const info = await a.call("createGroup", { memberUserIDs: [b.userID, c.userID],
                                               groupInfo: { groupName: "sdk test group" } });
    groupID = info && info.groupID;
    if (!groupID) throw new Error(`createGroup resolved with ${JSON.stringify(info)}`);
    const g1 = await sendText(a, "hello group", "", groupID);
    await Promise.all([b, c].map((u) => u.waitEvent(CbEvents.OnRecvNewMessages, hasMsg(g1.clientMsgID))));
    const g2 = await sendText(c, "hello from c", "", groupID);
    await Promise.all([a, b].map((u) => u.waitEvent(CbEvents.OnRecvNewMessages, hasMsg(g2.clientMsgID))));
    return { groupID, messages: [g1.clientMsgID, g2.clientMsgID] };
  });

  await step("friend", ["login"], async () => {
    await b.call("addFriend", { toUserID: c.userID, reqMsg: "be my friend" });
    await c.waitEvent(CbEvents.OnFriendApplicationAdded, (d) => d && d.fromUserID === b.userID);
    await c.call("acceptFriendApplication", { toUserID: b.userID, handleMsg: "ok" });
    await b.waitEvent(CbEvents.OnFriendApplicationAccepted, (d) => d && d.toUserID === c.userID);
    await b.waitEvent(CbEvents.OnFriendAdded, (d) => d && d.userID === c.userID);
    const friends = await c.call("getFriendListPage", { offset: 0, count: 20 });
    if (!friends.some((f) => f.userID === b.userID)) {
      throw new Error(`c's friend list lacks b: ${JSON.stringify(friends)}`);
    }
    return { friends: friends.map((f) => f.userID) };
  });

  await step("relogin", ["group"], async () => {
    // a user already in a group syncs its groups' members at login
    await b.call("logout");
    const b2 = new User("b2", cfg.users.b);
    await login(b2);
    const groups = await b2.call("getJoinedGroupListPage", { offset: 0, count: 20 });
    if (!groups.some((g) => g.groupID === groupID)) {
      throw new Error(`b's joined groups after a new login lack ${groupID}: ${JSON.stringify(groups)}`);
    }
    return { events: b2.eventNames() };
  });

  await step("kick", ["login"], async () => {
    const r = await fetch(cfg.apiAddr + "/auth/force_logout", {
      method: "POST",
      headers: { "Content-Type": "application/json", token: cfg.adminToken, operationID: "sdk-kick" },
      body: JSON.stringify({ userID: a.userID, platformID: cfg.platformID }),
    });
    const j = await r.json();
    if (j.errCode !== 0) throw new Error(`force_logout answered ${JSON.stringify(j)}`);
    await a.waitEvent(CbEvents.OnKickedOffline);
    return {};
  });
}

function finish(code) {
  const summary = { ok: steps.length > 0 && steps.every((s) => s.ok) && !sdkErrors.length,
                    steps, sdkErrors };
  const text = JSON.stringify(summary);
  if (cfg.summary) fs.writeFileSync(cfg.summary, text);
  console.log("SUMMARY " + text);
  process.exit(code === undefined ? (summary.ok ? 0 : 1) : code);
}

setTimeout(() => {
  steps.push({ name: "watchdog", ok: false, error: "the scenario took over 180 s" });
  finish(1);
}, 180000).unref();

main().then(() => finish(), (e) => {
  steps.push({ name: "scenario", ok: false, error: String(e && e.stack || e) });
  finish(1);
});
