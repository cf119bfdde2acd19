"""The chat page (web/, README.md "The chat page") in a real browser:
Debian's chromium driven by puppeteer-core (pinned by
web/package-lock.json), t/browser/scenario.js.  The shared stack serves
the page at /im/demo/ (conf/nginx.conf; `./build.sh web` bundles it with
the official OpenIM JS SDK).  Two browser contexts, users A and B:

- served: the page, its script and style, with their content types;
- login: both reach "online"; B's list shows the 30 messages C sent
  before with unread 30;
- history: opening that conversation shows the newest 20 and clears the
  badge; scrolling up pulls the 10 before, and the start;
- chat: A starts a chat with B and sends; B sees unread 1, opens it;
- read_receipt: A's message shows read;
- typing: B typing shows on A's page, and B's message ends it;
- group: A creates a group with B and C; both talk, with sender names,
  and typing in the group gives no error (typing is for single chats);
- offline: B's connection to nginx (through a forwarder of the script)
  is cut while B reads the group; B's page says offline; A sends 3;
- back: the forwarder is restored; B's page (the SDK retries every 5 s)
  is online again, shows the chat with A with unread 3 and the messages;
  A's show read;
- refused_token: a page given a token the server refuses shows its form
  again with the reason (and so stops the SDK's retries).

Screenshots of both windows when B is back (back-a.png, back-b.png: B's
unread badge) and at the end (end-a.png, end-b.png) are saved in
build/browser/.  Each step is one test; the script's log (the pages'
console errors included) is in the tmp dir.  Without node, npm or
chromium the tests are skipped, saying so (`./build.sh deps` installs
them).
"""

import json
import os
import shutil

import pytest

from conftest import ROOT, uids
from helpers_node import check_step, npm_modules, run_scenario

SCRIPT = os.path.join(ROOT, "t/browser/scenario.js")
ARTIFACTS = os.path.join(ROOT, "build/browser")
PLATFORM_WEB = 5
SEEDED = 30
STEPS = ["served", "login", "history", "chat", "read_receipt", "typing",
         "group", "offline", "back", "refused_token"]


def chromium():
    path = os.environ.get("IM_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.skip("chromium is not installed (./build.sh deps installs "
                    "Debian's)")
    return path


@pytest.fixture(scope="module")
def browser_run(stack, tmp_path_factory):
    """Runs the scenario once: {"summary", "log", "returncode"}."""
    from conftest import Api
    exe = chromium()
    npm_modules()
    api = Api(stack)
    a, b, c = uids(3, "web")
    api.register(a, b, c)
    for i in range(SEEDED):
        r = api.post("/msg/send_msg", {
            "sendID": c, "recvID": b, "senderPlatformID": PLATFORM_WEB,
            "content": {"content": "seed %d" % (i + 1)}, "contentType": 101,
            "sessionType": 1}, token=api.admin_token())
        assert r["errCode"] == 0, r
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    cfg = {
        "base": "http://127.0.0.1:%d" % stack.port,
        "chromium": exe,
        "artifacts": ARTIFACTS,
        "debug": bool(os.environ.get("IM_BROWSER_DEBUG")),
        "users": {k: {"userID": u, "token": api.user_token(u, PLATFORM_WEB)}
                  for k, u in (("a", a), ("b", b), ("c", c))},
    }
    return run_scenario(SCRIPT, cfg, tmp_path_factory.mktemp("browser"), 240)


@pytest.mark.parametrize("name", STEPS)
def test_browser_step(browser_run, name):
    check_step(browser_run, STEPS, name)


def test_browser_no_page_errors(browser_run):
    """No exception escaped the page's script (or the SDK's) in either
    window, the connection cut included."""
    summary = browser_run["summary"]
    assert summary.get("pageErrors") == [], "page errors: %s\nconsole: %s" % (
        summary.get("pageErrors"), json.dumps(summary.get("consoleErrors")))


def test_browser_screenshots(browser_run):
    """The windows' pictures are there for a look at what the test saw."""
    if not all(s["ok"] for s in browser_run["summary"]["steps"]):
        pytest.skip("a step failed: its pictures may be missing")
    for name in ("back-a", "back-b", "end-a", "end-b"):
        path = os.path.join(ARTIFACTS, name + ".png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_browser_exit_status(browser_run):
    """The summary and the exit status agree, so the harness cannot pass
    by accident."""
    summary = browser_run["summary"]
    ok = (all(s["ok"] for s in summary["steps"])
          and summary.get("pageErrors") == [])
    assert summary["ok"] == ok
    assert (browser_run["returncode"] == 0) == ok
