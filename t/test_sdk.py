"""The official OpenIM JS SDK (@openim/client-sdk 0.0.14, unmodified,
pinned by web/package-lock.json) against the shared stack, in node 20
(--experimental-websocket; an older node gets the ws package's
WebSocket): t/sdk/scenario.js logs three users in, A and B chat (B's
read receipt reaches A), a group of three talks, a friend application is
accepted and A is kicked.  The script runs once; each of its steps is
one test here, so a report names the first step that broke and why (the
SDK's own log, at debug level, is in the tmp dir and its tail in the
failure).

The npm packages come from `./build.sh web` (npm ci of web/'s lockfile
into build/web, a no-op when the lockfile is unchanged; the chat page
bundles the same SDK); node and npm from `./build.sh deps`.  Without
node the tests are skipped, saying so.
"""

import os

import pytest

from conftest import ROOT, uids
from helpers_node import check_step, npm_modules, run_scenario

SCRIPT = os.path.join(ROOT, "t/sdk/scenario.js")
PLATFORM_WEB = 5
STEPS = ["login", "send", "send_seq", "receive", "conversation_list",
         "mark_read", "group", "friend", "relogin", "kick"]


@pytest.fixture(scope="module")
def sdk_run(stack, tmp_path_factory):
    """Runs the scenario once: {"summary", "log", "returncode"} (log: the
    SDK's output)."""
    from conftest import Api
    npm_modules()
    api = Api(stack)
    names = uids(3, "sdk")
    api.register(*names)
    cfg = {
        "apiAddr": "http://127.0.0.1:%d/im/api" % stack.port,
        "wsAddr": "ws://127.0.0.1:%d/im/ws" % stack.port,
        "adminToken": api.admin_token(),
        "platformID": PLATFORM_WEB,
        "logLevel": 1,  # the SDK's debug level: every frame and call
        "users": {k: {"userID": u, "token": api.user_token(u, PLATFORM_WEB)}
                  for k, u in zip("abc", names)},
    }
    return run_scenario(SCRIPT, cfg, tmp_path_factory.mktemp("sdk"), 300)


@pytest.mark.parametrize("name", STEPS)
def test_sdk_step(sdk_run, name):
    check_step(sdk_run, STEPS, name)


def test_sdk_no_internal_errors(sdk_run):
    """No promise the SDK dropped failed: such a failure (a REST answer it
    cannot read, a call refused) ends node in an app, so it fails here
    even when every step got what it waited for."""
    errors = sdk_run["summary"].get("sdkErrors")
    assert errors == [], "the SDK failed inside: %s\nSDK log (%s)" % (
        errors, sdk_run["log"])


def test_sdk_exit_status(sdk_run):
    """The summary and the exit status agree (a step that broke, or an
    SDK failure, fails the script), so the harness itself cannot pass by
    accident."""
    summary = sdk_run["summary"]
    ok = (all(s["ok"] for s in summary["steps"])
          and summary.get("sdkErrors") == [])
    assert summary["ok"] == ok
    assert (sdk_run["returncode"] == 0) == ok
