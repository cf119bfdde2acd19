"""Helpers for the tests that run a node script against the stack
(test_sdk.py: the official JS SDK in node; test_browser.py: the chat page
in Chromium).

- node's flags, and the npm packages of web/package-lock.json
  (`./build.sh web`: npm ci into build/web, a no-op when the lockfile is
  unchanged, and the chat page's bundle);
- running a scenario script: it writes a summary {"ok", "steps": [{name,
  ok, error, skipped}], ...}; each step is one test, so a report names
  the first step that broke and why, with the tail of the script's log.
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

NODE_MODULES = os.path.join(ROOT, "build/web/node_modules")


def node_flags():
    """node's flags for a scenario, or None when node or npm are
    missing: --experimental-websocket where node knows it (20.10+; 22 has
    WebSocket anyway), else none (t/sdk/scenario.js then takes the ws
    package's WebSocket)."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    out = subprocess.run(["node", "--experimental-websocket", "-e", "0"],
                         capture_output=True, text=True, timeout=30)
    return ["--experimental-websocket"] if out.returncode == 0 else []


def npm_modules():
    """build/web/node_modules (and the page's bundle) from `./build.sh
    web`; skips the test without node or npm."""
    if node_flags() is None:
        pytest.skip("node or npm is not installed (./build.sh deps "
                    "installs them)")
    out = subprocess.run([os.path.join(ROOT, "build.sh"), "web"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, "./build.sh web failed:\n" + out.stderr[-3000:]
    return NODE_MODULES


def log_tail(path, lines=60):
    with open(path, errors="replace") as f:
        text = f.read().splitlines()
    return "\n".join(line[:400] for line in text[-lines:])


def run_scenario(script, cfg, work, timeout):
    """Runs `node script CONFIG` with cfg (its "summary" set here):
    {"summary", "log", "returncode"}."""
    cfg = dict(cfg, summary=str(work / "summary.json"))
    cfg_path = work / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    log = str(work / "node.log")
    with open(log, "w") as f:
        proc = subprocess.run(
            ["node"] + node_flags() + [script, str(cfg_path)],
            stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
            env=dict(os.environ, NODE_PATH=NODE_MODULES))
    try:
        with open(cfg["summary"]) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        pytest.fail("%s wrote no summary (exit %d):\n%s"
                    % (script, proc.returncode, log_tail(log)))
    return {"summary": summary, "log": log, "returncode": proc.returncode}


def check_step(run, names, name):
    """Step `name` of a scenario's run passed; names: all its steps."""
    steps = {s["name"]: s for s in run["summary"]["steps"]}
    extra = [s for s in steps.values() if s["name"] not in names]
    assert not extra, "the scenario broke: %s\n%s" % (
        extra, log_tail(run["log"]))
    s = steps.get(name)
    assert s is not None, "step %s did not run" % name
    if s.get("skipped"):
        pytest.fail("step %s not run: %s" % (name, s["error"]), pytrace=False)
    assert s["ok"], "step %s: %s\nlog (%s), tail:\n%s" % (
        name, s["error"], run["log"], log_tail(run["log"]))
