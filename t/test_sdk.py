"""The official OpenIM JS SDK (@openim/client-sdk 0.0.14, unmodified,
pinned by t/sdk/package-lock.json) against the shared stack, in node 20
(--experimental-websocket; an older node gets the ws package's WebSocket): t/sdk/scenario.js logs three users in, A and
B chat, a group of three talks, a friend application is accepted and A
is kicked.  The script runs once; each of its steps is one test here, so
a report names the first step that broke and why (the SDK's own log, at
debug level, is in the tmp dir and its tail in the failure).

The npm packages come from `./build.sh sdk` (npm ci into build/sdk, a
no-op when the lockfile is unchanged); node and npm from `./build.sh
deps`.  Without node the tests are skipped, saying so.
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, uids

SDK_DIR = os.path.join(ROOT, "build/sdk")
SCRIPT = os.path.join(ROOT, "t/sdk/scenario.js")
PLATFORM_WEB = 5
STEPS = ["login", "send", "send_seq", "receive", "conversation_list",
         "mark_read", "group", "friend", "relogin", "kick"]


def node_flags():
    """node's flags for the scenario, or None when node or npm are
    missing: --experimental-websocket where node knows it (20.10+; 22 has
    WebSocket anyway), else none (the scenario then takes the ws
    package's WebSocket)."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    out = subprocess.run(["node", "--experimental-websocket", "-e", "0"],
                         capture_output=True, text=True, timeout=30)
    return ["--experimental-websocket"] if out.returncode == 0 else []


@pytest.fixture(scope="module")
def sdk_modules():
    if node_flags() is None:
        pytest.skip("node or npm is not installed (./build.sh deps "
                    "installs them)")
    out = subprocess.run([os.path.join(ROOT, "build.sh"), "sdk"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, "./build.sh sdk failed:\n" + out.stderr[-3000:]
    return os.path.join(SDK_DIR, "node_modules")


def log_tail(path, lines=60):
    with open(path, errors="replace") as f:
        text = f.read().splitlines()
    return "\n".join(line[:400] for line in text[-lines:])


@pytest.fixture(scope="module")
def sdk_run(stack, sdk_modules, tmp_path_factory):
    """Runs the scenario once: {"summary", "log"} (log: the SDK's output)."""
    from conftest import Api
    api = Api(stack)
    names = uids(3, "sdk")
    api.register(*names)
    work = tmp_path_factory.mktemp("sdk")
    cfg = {
        "apiAddr": "http://127.0.0.1:%d/im/api" % stack.port,
        "wsAddr": "ws://127.0.0.1:%d/im/ws" % stack.port,
        "adminToken": api.admin_token(),
        "platformID": PLATFORM_WEB,
        "logLevel": 1,  # the SDK's debug level: every frame and call
        "summary": str(work / "summary.json"),
        "users": {k: {"userID": u, "token": api.user_token(u, PLATFORM_WEB)}
                  for k, u in zip("abc", names)},
    }
    cfg_path = work / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    log = str(work / "sdk.log")
    with open(log, "w") as f:
        proc = subprocess.run(
            ["node"] + node_flags() + [SCRIPT, str(cfg_path)],
            stdout=f, stderr=subprocess.STDOUT, timeout=300,
            env=dict(os.environ, NODE_PATH=sdk_modules))
    try:
        with open(cfg["summary"]) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        pytest.fail("the scenario wrote no summary (exit %d):\n%s"
                    % (proc.returncode, log_tail(log)))
    return {"summary": summary, "log": log, "returncode": proc.returncode}


@pytest.mark.parametrize("name", STEPS)
def test_sdk_step(sdk_run, name):
    steps = {s["name"]: s for s in sdk_run["summary"]["steps"]}
    names = STEPS
    extra = [s for s in steps.values() if s["name"] not in names]
    assert not extra, "the scenario broke: %s\n%s" % (
        extra, log_tail(sdk_run["log"]))
    s = steps.get(name)
    assert s is not None, "step %s did not run" % name
    if s.get("skipped"):
        pytest.fail("step %s not run: %s" % (name, s["error"]), pytrace=False)
    assert s["ok"], "step %s: %s\nSDK log (%s), tail:\n%s" % (
        name, s["error"], sdk_run["log"], log_tail(sdk_run["log"]))


def test_sdk_no_internal_errors(sdk_run):
    """No promise the SDK dropped failed: such a failure (a REST answer it
    cannot read, a call refused) ends node in an app, so it fails here
    even when every step got what it waited for."""
    errors = sdk_run["summary"].get("sdkErrors")
    assert errors == [], "the SDK failed inside: %s\nSDK log (%s), tail:\n%s" % (
        errors, sdk_run["log"], log_tail(sdk_run["log"]))


def test_sdk_exit_status(sdk_run):
    """The summary and the exit status agree (a step that broke, or an
    SDK failure, fails the script), so the harness itself cannot pass by
    accident."""
    summary = sdk_run["summary"]
    ok = (all(s["ok"] for s in summary["steps"])
          and summary.get("sdkErrors") == [])
    assert summary["ok"] == ok
    assert (sdk_run["returncode"] == 0) == ok
