// The chat page (web/, served by nginx at /im/demo/) in Chromium: Debian's
// chromium driven by puppeteer-core, two browser contexts, users A and B.
// Run by t/test_browser.py:
//   node t/browser/scenario.js CONFIG.json
// CONFIG: {"base", "chromium", "artifacts": dir, "summary": path,
//          "debug": the SDK's debug log in the pages' console (optional),
//          "users": {"a":{"userID","token"}, "b":…, "c":…}}
// B's browser reaches nginx through a TCP forwarder of this script, which
// "offline" cuts (every connection reset, new ones refused) and "back"
// restores. Writes {"ok", "steps":[{name, ok, ms, detail | error}],
// "pageErrors", "knownSdkErrors", "consoleErrors"} to CONFIG.summary (and as the last
// stdout line, after "SUMMARY "), and screenshots to CONFIG.artifacts.
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const puppeteer = require("puppeteer-core");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const STEP_TIMEOUT = 15000;
// the SDK retries a lost connection every 5 s
const RECONNECT_TIMEOUT = 20000;
const steps = [];
const pageErrors = [];
// @openim/client-sdk 0.0.14's catch-up after a reconnect throws inside
// the SDK, an unhandled TypeError: its pullMsgBySeqRange spreads a Map
// with [].concat(map.entries()). The conversation list and the history
// are right all the same (the page pulls what it shows; docs/protocol.md
// "Clients"), so that one is recorded apart.
const KNOWN_SDK_ERROR = /\bpullMsgBySeqRange\b/;
const knownSdkErrors = [];
const consoleErrors = {};   // per window: what the page logged as errors

// A TCP forwarder to nginx that can be cut and restored.
class Forwarder {
  constructor(port) {
    this.target = port;
    this.socks = new Set();
    this.down = false;
  }

  listen() {
    this.server = net.createServer((c) => this.accept(c));
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => {
      this.port = this.server.address().port;
      resolve(this);
    }));
  }

  accept(c) {
    if (this.down) {
      c.destroy();
      return;
    }
    const s = net.connect(this.target, "127.0.0.1");
    const drop = () => {
      c.destroy();
      s.destroy();
      this.socks.delete(c);
      this.socks.delete(s);
    };
    for (const x of [c, s]) {
      this.socks.add(x);
      x.on("error", drop);
      x.on("close", drop);
    }
    c.pipe(s);
    s.pipe(c);
  }

  cut() {
    this.down = true;
    for (const x of this.socks) x.resetAndDestroy();
    this.socks.clear();
  }

  restore() {
    this.down = false;
  }

  close() {
    this.cut();
    this.server.close();
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no end within ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
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

// One user's window: a page in its own browser context.
class Window {
  constructor(name, user, page) {
    this.name = name;
    this.userID = user.userID;
    this.token = user.token;
    this.page = page;
    page.on("pageerror", (e) => {
      const known = KNOWN_SDK_ERROR.test(e.stack || "");
      (known ? knownSdkErrors : pageErrors).push(`${name}: ${e.message}`);
      console.log(`${name} pageerror${known ? " (the SDK's known one)" : ""}: ${e.stack}`);
    });
    // the pages' console and refused requests go to the log
    page.on("console", (m) => {
      console.log(`${name} console.${m.type()}: ${m.text().slice(0, 2000)}`);
      if (m.type() === "error") this.consoleErrors.push(m.text());
    });
    page.on("response", (r) => {
      if (r.status() >= 400) console.log(`${name} HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    });
    page.on("requestfailed", (r) => {
      console.log(`${name} failed ${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`);
    });
    this.consoleErrors = [];
  }

  async open(base) {
    const hash = new URLSearchParams({ user: this.userID, token: this.token });
    if (cfg.debug) hash.set("debug", "1");   // the SDK's debug log
    await this.page.goto(`${base}/im/demo/#${hash}`, { waitUntil: "load" });
  }

  // what the page shows, for a failure's message
  async dump() {
    try {
      return await this.page.evaluate(() => JSON.stringify({
        state: document.getElementById("state").dataset.state,
        title: document.getElementById("title").textContent,
        error: document.getElementById("error").textContent,
        loginError: document.getElementById("login-error").textContent,
        list: [...document.querySelectorAll("#conversations li")].map((li) =>
          `${li.dataset.conv} unread ${li.dataset.unread}: ${li.querySelector(".preview").textContent}`),
        messages: [...document.querySelectorAll("#messages .msg")].slice(-8).map((m) =>
          `${m.querySelector(".text").textContent} [${m.dataset.status || ""}]`),
        typing: document.getElementById("typing").dataset.typing,
      }));
    } catch (e) {
      return `(no dump: ${e.message})`;
    }
  }

  // until fn(arg) is true in the page
  async until(what, fn, arg, ms = STEP_TIMEOUT) {
    try {
      await this.page.waitForFunction(fn, { timeout: ms, polling: 100 }, arg);
    } catch (e) {
      throw new Error(`${this.name} (${this.userID}): ${what} not within ${ms} ms; `
                      + `the page: ${await this.dump()}`);
    }
  }

  state(s, ms) {
    return this.until(`state ${s}`, (x) =>
      document.getElementById("state").dataset.state === x, s, ms);
  }

  unread(conv, n, ms) {
    return this.until(`${conv} with unread ${n}`, ([c, k]) => {
      const li = document.querySelector(`#conversations li[data-conv="${c}"]`);
      return li && li.dataset.unread === String(k)
        && (k === 0) === !li.querySelector(".badge");
    }, [conv, n], ms);
  }

  async click(conv) {
    await this.until(`${conv} in the list`, (c) =>
      document.querySelector(`#conversations li[data-conv="${c}"]`), conv);
    // The list re-renders whenever a message or receipt arrives, so the
    // element found may be replaced before the mouse reaches it: try again
    // (a bounded number of times) and then check that it really opened.
    const sel = `#conversations li[data-conv="${conv}"]`;
    for (let i = 0; ; i++) {
      try {
        await this.page.click(sel);
        break;
      } catch (e) {
        if (i >= 9 || !/detached|not clickable|No node/i.test(e.message)) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    await this.until(`${conv} open`, (c) =>
      (document.querySelector("#conversations li.active") || {}).dataset?.conv === c, conv);
  }

  // the texts of the messages shown, oldest first
  texts() {
    return this.page.evaluate(() =>
      [...document.querySelectorAll("#messages .msg .text")].map((n) => n.textContent));
  }

  shows(texts, ms) {
    return this.until(`messages ${JSON.stringify(texts)}`, (want) => {
      const have = [...document.querySelectorAll("#messages .msg .text")].map((n) => n.textContent);
      return want.every((t) => have.includes(t));
    }, texts, ms);
  }

  async send(text) {
    await this.page.type("#send input[name=text]", text);
    await this.page.keyboard.press("Enter");
  }

  async form(id, values) {
    for (const [name, v] of Object.entries(values)) {
      await this.page.type(`#${id} input[name=${name}]`, v);
    }
    await this.page.click(`#${id} button`);
  }

  status(text) {
    return this.page.evaluate((t) => {
      const m = [...document.querySelectorAll("#messages .msg")]
        .find((n) => n.querySelector(".text").textContent === t);
      return m ? m.dataset.status : null;
    }, text);
  }

  read(texts) {
    return this.until(`read receipts of ${JSON.stringify(texts)}`, (want) => want.every((t) => {
      const m = [...document.querySelectorAll("#messages .msg")]
        .find((n) => n.querySelector(".text").textContent === t);
      return m && m.dataset.status === "read";
    }), texts);
  }

  shot(file) {
    return this.page.screenshot({ path: path.join(cfg.artifacts, file) });
  }
}

const AWAY = ["while away 1", "while away 2", "while away 3"];

function single(x, y) {
  return "si_" + [x, y].sort().join("_");
}

async function main() {
  const { a: ua, b: ub, c: uc } = cfg.users;
  const fwd = await new Forwarder(Number(new URL(cfg.base).port)).listen();
  const fwdBase = `http://127.0.0.1:${fwd.port}`;
  const browser = await puppeteer.launch({
    executablePath: cfg.chromium,
    headless: true,
    // root in a container: no sandbox; pages in the background keep
    // their timers (the SDK's retries and heartbeats)
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-background-timer-throttling",
           "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"],
    defaultViewport: { width: 900, height: 640 },
    protocolTimeout: 60000,
  });
  const windows = [];
  try {
    const make = async (name, user) => {
      const ctx = await browser.createBrowserContext();
      const w = new Window(name, user, await ctx.newPage());
      windows.push(w);
      return w;
    };
    const a = await make("a", ua);
    const b = await make("b", ub);
    const ab = single(ua.userID, ub.userID);
    const bc = single(ub.userID, uc.userID);
    let group = "";

    await step("served", [], async () => {
      const got = {};
      for (const f of ["", "app.js", "style.css"]) {
        const r = await fetch(`${cfg.base}/im/demo/${f}`);
        got[f || "index"] = `${r.status} ${r.headers.get("content-type")}`;
        if (r.status !== 200) throw new Error(`/im/demo/${f}: ${got[f || "index"]}`);
      }
      if (!got.index.startsWith("text/html", 4) || !got["app.js"].includes("javascript")) {
        throw new Error(`content types ${JSON.stringify(got)}`);
      }
      return got;
    });

    await step("login", ["served"], async () => {
      await a.open(cfg.base);
      await b.open(fwdBase);
      await Promise.all([a.state("online"), b.state("online")]);
      // the 30 messages C sent B before B's login
      await b.unread(bc, 30);
      const visible = await Promise.all(windows.map((w) =>
        w.page.evaluate(() => document.visibilityState)));
      return { visible };
    });

    await step("history", ["login"], async () => {
      await b.click(bc);
      await b.until("20 messages", () =>
        document.querySelectorAll("#messages .msg").length >= 20);
      await b.unread(bc, 0);
      const first = await b.texts();
      if (first.length !== 20 || first[19] !== "seed 30" || first[0] !== "seed 11") {
        throw new Error(`the first page: ${JSON.stringify(first)}`);
      }
      if (await b.page.$("#messages [data-start]")) {
        throw new Error("the start is shown with 10 messages left");
      }
      // scrolling up pulls the 10 before
      await b.page.evaluate(() => { document.getElementById("messages").scrollTop = 0; });
      await b.until("30 messages and the start", () =>
        document.querySelectorAll("#messages .msg").length === 30
        && document.querySelector("#messages [data-start]"));
      const all = await b.texts();
      const want = Array.from({ length: 30 }, (_, i) => `seed ${i + 1}`);
      if (JSON.stringify(all) !== JSON.stringify(want)) {
        throw new Error(`after the scroll: ${JSON.stringify(all)}`);
      }
      return { first: first.length, all: all.length };
    });

    await step("chat", ["login"], async () => {
      await a.form("new-chat", { user: ub.userID });
      await a.until("the chat with b open", (c) =>
        document.querySelector(`#conversations li.active[data-conv="${c}"]`), ab);
      await a.send("hello B");
      await b.unread(ab, 1);
      await b.click(ab);
      await b.shows(["hello B"]);
      await b.unread(ab, 0);
      return {};
    });

    await step("read_receipt", ["chat"], async () => {
      await a.read(["hello B"]);
      return {};
    });

    await step("typing", ["chat"], async () => {
      await b.page.type("#send input[name=text]", "hi A");
      await a.until("b typing", (u) =>
        document.getElementById("typing").dataset.typing === u, ub.userID);
      await b.page.keyboard.press("Enter");
      await a.shows(["hi A"]);
      // the message ends the indicator
      await a.until("b no longer typing", () =>
        document.getElementById("typing").dataset.typing === "");
      return {};
    });

    await step("group", ["login"], async () => {
      await a.form("new-group", { name: "team", members: `${ub.userID}, ${uc.userID}` });
      await a.until("the group open", () =>
        /^sg_/.test((document.querySelector("#conversations li.active") || {}).dataset?.conv || ""));
      group = await a.page.evaluate(() =>
        document.querySelector("#conversations li.active").dataset.conv);
      await a.send("hello team");
      await b.click(group);
      await b.shows(["hello team"]);
      // typing is not sent in a group: no error either
      await b.page.type("#send input[name=text]", "hi team");
      await b.page.keyboard.press("Enter");
      await a.shows(["hi team"]);
      const from = await a.page.evaluate(() => {
        const m = [...document.querySelectorAll("#messages .msg.theirs")].pop();
        return m && m.querySelector(".from") && m.querySelector(".from").textContent;
      });
      if (from !== ub.userID) throw new Error(`a sees "hi team" from ${from}`);
      const err = await b.page.evaluate(() => document.getElementById("error").textContent);
      if (err) throw new Error(`b shows the error ${err}`);
      return { group };
    });

    // B reads the group while A writes to B: B's connection is cut
    await step("offline", ["chat", "group"], async () => {
      fwd.cut();
      await b.state("offline");
      await a.click(ab);
      for (const t of AWAY) await a.send(t);
      await a.until("three sent", (want) => want.every((t) =>
        [...document.querySelectorAll("#messages .msg.mine")].some((m) =>
          m.querySelector(".text").textContent === t && m.dataset.status === "sent")), AWAY);
      await a.click(group);
      await a.send("team while away");
      return {};
    });

    await step("back", ["offline"], async () => {
      const t0 = Date.now();
      fwd.restore();
      await b.state("online", RECONNECT_TIMEOUT);
      const reconnected = Date.now() - t0;
      // the conversation open catches up by itself, the other one counts
      await b.shows(["team while away"]);
      await b.unread(ab, AWAY.length);
      await Promise.all([a.shot("back-a.png"), b.shot("back-b.png")]);
      await b.click(ab);
      await b.shows(AWAY);
      await b.unread(ab, 0);
      await a.click(ab);
      await a.read(AWAY);
      await Promise.all([a.shot("end-a.png"), b.shot("end-b.png")]);
      return { reconnectedMs: reconnected };
    });
    // a token the server refuses: the page stops the SDK's retries and
    // shows its form again, with the reason
    await step("refused_token", ["served"], async () => {
      const c = await make("c", { userID: uc.userID, token: "not.a.token" });
      await c.open(cfg.base);
      await c.until("the form with the reason", () =>
        !document.getElementById("login").hidden
        && document.getElementById("chat").hidden
        && /token/.test(document.getElementById("login-error").textContent)
        && /error=token-/.test(location.hash), undefined);
      return { error: await c.page.evaluate(() => document.getElementById("login-error").textContent) };
    });
  } finally {
    for (const w of windows) consoleErrors[w.name] = w.consoleErrors.slice(0, 30);
    await browser.close().catch(() => {});
    fwd.close();
  }
}

function finish(code) {
  const summary = { ok: steps.length > 0 && steps.every((s) => s.ok) && !pageErrors.length,
                    steps, pageErrors, knownSdkErrors, consoleErrors };
  const text = JSON.stringify(summary);
  if (cfg.summary) fs.writeFileSync(cfg.summary, text);
  console.log("SUMMARY " + text);
  process.exit(code === undefined ? (summary.ok ? 0 : 1) : code);
}

setTimeout(() => {
  steps.push({ name: "watchdog", ok: false, error: "the scenario took over 150 s" });
  finish(1);
}, 150000).unref();

main().then(() => finish(), (e) => {
  steps.push({ name: "scenario", ok: false, error: String(e && e.stack || e) });
  finish(1);
});
