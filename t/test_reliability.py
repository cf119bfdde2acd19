"""The short reliability run: t/reliability/run.sh --short under a hard
time bound.

20 C clients (t/reliability/imrel.c) start offline, log in at random,
send 5,000 1:1 messages to each other while one nginx worker is SIGKILLed,
nginx reloads once, Redis restarts once (AOF) and client connections are
dropped; they catch up by GetNewestSeq + pulls.  The verdict (exactly
once per acked message, failed sends never stored, gap-free seqs per
conversation) comes from the files the clients stored.  The full,
seed-sized run is t/reliability/run.sh without --short.
"""

import os
import shutil
import signal
import subprocess

import pytest

from conftest import MODULE, ROOT, free_port

TIME_BOUND = 110


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_reliability_short(tmp_path):
    base = str(tmp_path / "reliability")
    env = dict(os.environ, IMR_BASE=base, IM_MODULE=MODULE,
               IMR_PORT=str(free_port()), IMR_REDIS_PORT=str(free_port()))
    script = os.path.join(ROOT, "t/reliability/run.sh")
    proc = subprocess.Popen([script, "--short", "--", "--seed", "7"],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIME_BOUND)
    except subprocess.TimeoutExpired:
        # run.sh stops its servers on TERM
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail("reliability run exceeded %d s:\n%s"
                    % (TIME_BOUND, out[-4000:]))
    finally:
        # normally run.sh has stopped them already
        stack = dict(env, IMB_BASE=os.path.join(base, "stack"))
        tool = os.path.join(ROOT, "bench/stack.sh")
        subprocess.run([tool, "nginx-stop", "im"], env=stack,
                       capture_output=True, timeout=30)
        subprocess.run([tool, "redis-stop", "redis", env["IMR_REDIS_PORT"]],
                       env=stack, capture_output=True, timeout=30)

    assert proc.returncode == 0, out[-6000:]
    assert "VERDICT: PASS" in out, out[-6000:]
    assert "SIGKILL nginx worker" in out, out[-6000:]
    assert "nginx reload" in out, out[-6000:]
