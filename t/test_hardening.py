"""Hardening (issue 13): the defects an adversarial review found, each
as a regression test, and the mechanisms that keep each class out:

- every Redis script returns within milliseconds whatever its
  arguments (0, negative, 2^53+1, 2^63-1, long lists);
- a pull's Redis work and answer size are bounded before it starts:
  a conversation named twice is refused, the messages and bytes of one
  call are shared among its ranges, and unrelated users keep being
  served while one client floods pulls.
"""

import asyncio
import json
import os
import time

import pytest
import redis as redis_py

from conftest import ROOT, Api, Redis, run, single_conv, uids
from helpers_mongo import make_stack, teardown_stack
from helpers_msg import Pool, pipeline, run_clients, text_msg

HUGE = 9223372036854775807
EXTREMES = ["0", "-1", "-9223372036854775808", "9007199254740993",
            str(HUGE), "1e308", "nan", "", "x"]


def script(name):
    with open(os.path.join(ROOT, "ngx_im_module/lua/%s.lua" % name)) as f:
        return f.read()


def timed_eval(r, body, keys, args):
    """Runs a script; returns (seconds, result or the error)."""
    t = time.time()
    try:
        out = r.eval(body, len(keys), *(list(keys) + list(args)))
    except redis_py.exceptions.ResponseError as e:
        out = e
    return time.time() - t, out


@pytest.fixture(scope="module")
def bare_redis(base_dir):
    r = Redis(base_dir).start()
    yield redis_py.Redis(port=r.port)
    r.stop()


# ---------------------------------------------------------------------------
# defect 1: one 1002 frame hung Redis


def test_pull_script_bounded_for_any_arguments(bare_redis):
    """pull.lua with every extreme begin/end/num, with and without a seq
    key and in MongoDB mode: each call returns within 50 ms and never
    names more than 1000 seqs."""
    body = script("pull")
    conv = "im:{c:si_a_b}"
    bare_redis.delete(conv + ":seq", conv + ":msgs")
    for with_seq in (False, True):
        if with_seq:
            bare_redis.set(conv + ":seq", 5)
        for mongo in ("0", "1"):
            for b in EXTREMES + ["1"]:
                for e in EXTREMES:
                    for num in ("0", "100", str(HUGE), "-5"):
                        took, out = timed_eval(
                            bare_redis, body,
                            [conv + ":msgs", conv + ":seq"],
                            [b, e, num, mongo, "1000000"])
                        assert took < 0.05, (b, e, num, mongo, took)
                        if isinstance(out, list):
                            assert len(out) <= 1003


def test_pull_seqs_script_bounded(bare_redis):
    body = script("pull_seqs")
    key = "im:{c:si_a_b}:msgs"
    bare_redis.hset(key, mapping={str(i): "m" * 100 for i in range(1, 6)})
    took, out = timed_eval(bare_redis, body, [key],
                           ["1000"] + [str(HUGE)] * 5000)
    assert took < 0.05 and len(out) == 1000
    # budget: the first message always, then only what fits
    took, out = timed_eval(bare_redis, body, [key],
                           ["250", "1", "2", "3", "4", "9"])
    assert out == [b"m" * 100, b"m" * 100, 0, 0, None]
    took, out = timed_eval(bare_redis, body, [key], ["-1", "1", "2"])
    assert out == [b"m" * 100, 0]


def test_pull_huge_end_without_seq_key_mongo(base_dir):
    """The review's repro: with MongoDB on, a conversation whose seq key
    is missing and end = 2^63-1.  The answer comes quickly, Redis stays
    responsive, and other users keep sending."""
    st = make_stack(base_dir)
    try:
        (a, b), toks = st.users(2)

        async def scenario(pool):
            ca = await pool.connect(st.ngx, a, toks[a])
            cb = await pool.connect(st.ngx, b, toks[b])
            t = time.time()
            r = await ca.request(1002, {"seqRanges": [
                {"conversationID": "si_%s_zzzz" % a, "begin": 1,
                 "end": HUGE}]}, timeout=10)
            assert time.time() - t < 5
            assert r["errCode"] in (0, 90004), r
            assert st.cli("PING") == "PONG"
            r = await cb.send_text(a, "still served")
            assert r["errCode"] == 0, r
            r = await ca.request(1002, {"seqRanges": [
                {"conversationID": "si_%s_zzzz" % a, "begin": -HUGE,
                 "end": HUGE, "num": HUGE}]}, timeout=10)
            assert r["errCode"] in (0, 90004), r

        run_clients(scenario, timeout=60)
        assert st.unexpected_log_lines() == []
    finally:
        teardown_stack(st)


# ---------------------------------------------------------------------------
# defect 2: 1002 amplification


def test_pull_conversation_listed_twice_refused(stack, api):
    a, b = uids(2)
    api.register(a, b)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        r = await ca.request(1002, {"seqRanges": [
            {"conversationID": conv, "begin": 1, "end": 10, "num": 10}] * 2})
        assert r["errCode"] == 1001 and "twice" in r["errMsg"], r
        r = await ca.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [1]}] * 2})
        assert r["errCode"] == 1001 and "twice" in r["errMsg"], r
        r = await ca.request(1006, {"conversationIDs": [conv, conv]})
        assert r["errCode"] == 1001, r

    run_clients(scenario)


def fill_conversation(api, sender, recv, count, size):
    """count messages of about `size` bytes from sender to recv (REST)."""
    text = "y" * size
    for i in range(count):
        r = api.post("/msg/send_msg", {
            "sendID": sender, "recvID": recv, "senderPlatformID": 1,
            "content": {"content": text}, "contentType": 101,
            "sessionType": 1}, token=api.admin_token())
        assert r["errCode"] == 0, r


def test_pull_answer_bytes_bounded(stack, api):
    """100 messages of 15 KB: one range asking for all of them gets the
    newest that fit half the send queue (1m), isEnd false, contiguous;
    paging down from there returns the rest."""
    a, b = uids(2)
    api.register(a, b)
    conv = single_conv(a, b)
    fill_conversation(api, a, b, 100, 15000)

    async def scenario(pool):
        cb = await pool.connect(stack, b, api.user_token(b))
        got = []
        end = 100
        for _ in range(10):
            r = await cb.request(1002, {"seqRanges": [
                {"conversationID": conv, "begin": 1, "end": end,
                 "num": 100}]})
            assert r["errCode"] == 0, r
            part = r["data"]["msgs"][conv]
            seqs = [m["seq"] for m in part["Msgs"]]
            assert seqs == list(range(end - len(seqs) + 1, end + 1))
            assert sum(len(m["content"]) for m in part["Msgs"]) <= 600000
            got = seqs + got
            if part["isEnd"]:
                break
            assert len(seqs) < 100
            end = seqs[0] - 1
        assert got == list(range(1, 101))

        # 1005 is bounded the same way: what is left out is simply absent
        r = await cb.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": list(range(1, 101))}]})
        assert r["errCode"] == 0, r
        n = len(r["data"]["msgs"][conv]["Msgs"])
        assert 0 < n < 100

    run_clients(scenario)


def test_pull_flood_does_not_starve_others(stack, api):
    """The review's amplification: 4 connections pipeline 50 pulls each
    of 100 ranges (distinct conversations, one with 100 x 15 KB
    messages).  Meanwhile an unrelated pair keeps sending with quick
    acks, and Redis memory stays far below what the answers would
    take unbounded (50 x 4 x 1.5 MB)."""
    a, b, c, d = uids(4)
    api.register(a, b, c, d)
    conv = single_conv(a, b)
    fill_conversation(api, a, b, 100, 15000)
    ranges = [{"conversationID": conv, "begin": 1, "end": 100, "num": 100}]
    ranges += [{"conversationID": single_conv(b, "zz%d" % i), "begin": 1,
                "end": 100, "num": 100} for i in range(99)]
    rc = redis_py.Redis(port=int(stack_redis_port(stack)))
    before = rc.info("memory")["used_memory"]
    peak = [before]

    async def flood(cl):
        rs = await pipeline(cl, [(1002, {"seqRanges": ranges})] * 50,
                            window=50, timeout=60)
        assert all(r["errCode"] == 0 for r in rs), rs[0]

    async def watch(stop):
        while not stop.is_set():
            peak[0] = max(peak[0], rc.info("memory")["used_memory"])
            await asyncio.sleep(0.05)

    async def scenario(pool):
        tb = api.user_token(b)
        floods = [await pool.connect(stack, b, tb) for _ in range(4)]
        cc = await pool.connect(stack, c, api.user_token(c))
        stop = asyncio.Event()
        w = asyncio.ensure_future(watch(stop))
        tasks = [asyncio.ensure_future(flood(f)) for f in floods]
        worst = 0
        for i in range(20):
            t = time.time()
            r = await cc.request(1003, text_msg(c, d, "hi %d" % i))
            worst = max(worst, time.time() - t)
            assert r["errCode"] == 0, r
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
        stop.set()
        await w
        assert worst < 2.0, worst

    run_clients(scenario, timeout=120)
    assert peak[0] - before < 150 * 1024 * 1024, peak[0] - before


def stack_redis_port(ngx):
    with open(os.path.join(ngx.dir, "conf/nginx.conf")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("im_redis ") and ":" in line:
                return line.rstrip(";").rsplit(":", 1)[1]
    raise AssertionError("no im_redis line")
