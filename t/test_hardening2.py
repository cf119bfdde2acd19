"""Hardening, second round: answers that must always fit, and exits that
must not wait for MongoDB.

- GetNewestSeq (1001) for a user with im_max_conversations (10,000)
  conversations of the longest IDs ("si_<64>_<64>") and the largest seqs
  goes out whole, over JSON and over protobuf: no [alert], no close, the
  connection stays usable.  The protobuf transcoder once refused maps of
  more than 1,000 entries (alert, close 1011) and the JSON answer did not
  fit the send queue from ~3,900 such conversations on.
- The configuration checks that keep it so: im_max_conversations is at
  most the transcoder's entry limit, and every im_ws location's send
  queue holds the largest answer; a smaller queue with the default caps
  the answer at what fits.
- A reload or quit while MongoDB hangs (FerretDB stopped with SIGSTOP)
  after a flood of re-seeds finishes within the documented bound, without
  the old worker spinning; after SIGCONT nothing acked is lost.  Re-seeds
  whose sends gave up are skipped, not run against the hung server, and
  repeated reloads never crash an exiting worker (mongoc's threads are
  stopped before nginx unloads the module).
"""

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis as redislib
import websockets

from conftest import ROOT, Api, Client, Nginx, alive, single_conv, uids
from helpers_mongo import (make_stack, teardown_stack, wait_for,
                           wait_persisted)

PB_DIR = os.path.join(ROOT, "build/py")

SEQ_MAX = 2 ** 53 - 1            # the largest seq a Lua number holds
MAX_CONVS = 10000                # im_max_conversations' default and cap


# ---------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def im_pb2():
    os.makedirs(PB_DIR, exist_ok=True)
    subprocess.run(["protoc", "--python_out=" + PB_DIR,
                    "--proto_path=" + os.path.join(ROOT, "ngx_im_module"),
                    "im.proto"], check=True)
    sys.path.insert(0, PB_DIR)
    return importlib.import_module("im_pb2")


def long_uid(tag, i=0):
    """A user ID of exactly 64 bytes."""
    s = "%s%06d-" % (tag, i)
    return s + "x" * (64 - len(s))


def fill_index(redis_port, uid, n, tag):
    """n conversations of uid with 64-byte partners, written straight
    into Redis: the user's index (conv -> last ms), each conversation's
    seq and the user's read seq, all at SEQ_MAX.  Returns {conv: ms}."""
    r = redislib.Redis(port=redis_port)
    convs = {}
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        conv = single_conv(uid, long_uid(tag, i))
        convs[conv] = now - i
        pipe.set("im:{c:%s}:seq" % conv, SEQ_MAX)
        pipe.hset("im:{u:%s}:read" % uid, conv, SEQ_MAX)
        if len(convs) % 1000 == 0:
            pipe.zadd("im:{u:%s}:convs" % uid,
                      {c: convs[c] for c in list(convs)[-1000:]})
            pipe.execute()
    pipe.zadd("im:{u:%s}:convs" % uid, convs)
    pipe.execute()
    r.close()
    return convs


class PbWs:
    """A protobuf WebSocket client without a frame size limit."""

    def __init__(self, pb, ngx, uid, token):
        self.pb = pb
        self.url = ngx.ws_url(uid, token)
        self.uid = uid
        self.incr = 0

    async def connect(self):
        self.ws = await websockets.connect(self.url, max_size=None,
                                           max_queue=None,
                                           ping_interval=None)
        return self

    async def request(self, req_id, data_msg, timeout=20):
        self.incr += 1
        req = self.pb.Req(reqIdentifier=req_id, operationID="op",
                          msgIncr="pb-%d" % self.incr, sendID=self.uid,
                          data=data_msg.SerializeToString())
        await self.ws.send(req.SerializeToString())
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(frame, bytes), frame
            resp = self.pb.Resp()
            resp.ParseFromString(frame)
            if resp.reqIdentifier != 2001:
                assert resp.msgIncr == "pb-%d" % self.incr
                return resp


def newest_stack(own_stack, ws=""):
    """A private Redis + nginx; a registered user of 64 bytes."""
    r, ngx = own_stack(ws=ws)
    api = Api(ngx)
    u = long_uid("N" + uids(1)[0][1:9])
    api.register(u)
    return r, ngx, u, api.user_token(u)


async def json_newest(ngx, u, tok):
    c = await Client(ngx, u, tok).connect()
    try:
        r = await c.request(1001, {}, timeout=20)
        # the connection is still open and serves the next request
        again = await c.request(1006, {"conversationIDs": "not a list"})
        assert again["errCode"] == 1001, again
    finally:
        await c.close()
    return r


async def pb_newest(pb, ngx, u, tok):
    c = await PbWs(pb, ngx, u, tok).connect()
    try:
        resp = await c.request(1001, pb.GetMaxSeqReq())
        assert resp.errCode == 0, (resp.errCode, resp.errMsg)
        got = pb.GetMaxSeqResp()
        got.ParseFromString(resp.data)
        size = len(resp.data)
        again = await c.request(1001, pb.GetMaxSeqReq())
        assert again.errCode == 0, again.errMsg
    finally:
        await c.ws.close()
    return dict(got.maxSeqs), dict(got.hasReadSeqs), size


# ---------------------------------------------------------------------------
# 1001 for the largest legal answer


def test_newest_max_conversations_json_and_protobuf(own_stack, im_pb2):
    """10,000 conversations of 132-byte IDs at seq 2^53-1: the whole
    answer (~3 MB of JSON) over both encodings; no alert, no close."""
    r, ngx, u, tok = newest_stack(own_stack)
    convs = fill_index(r.port, u, MAX_CONVS, "P" + uids(1)[0][1:9])
    assert all(len(c) == 132 for c in convs)

    resp = asyncio.run(json_newest(ngx, u, tok))
    assert resp["errCode"] == 0, (resp["errCode"], resp["errMsg"])
    assert resp["data"]["maxSeqs"] == {c: SEQ_MAX for c in convs}
    assert resp["data"]["hasReadSeqs"] == {c: SEQ_MAX for c in convs}

    max_seqs, read_seqs, size = asyncio.run(pb_newest(im_pb2, ngx, u, tok))
    assert max_seqs == {c: SEQ_MAX for c in convs}
    assert read_seqs == {c: SEQ_MAX for c in convs}
    assert size > 2 * MAX_CONVS * 132

    assert ngx.bad_log_lines() == []
    assert "cannot encode a protobuf answer" not in ngx.log()
    assert "send queue of" not in ngx.log()


def test_newest_over_a_thousand_protobuf(own_stack, im_pb2):
    """2,500 conversations: more than the 1,000 entries the transcoder
    once allowed in a map."""
    r, ngx, u, tok = newest_stack(own_stack)
    convs = fill_index(r.port, u, 2500, "Q" + uids(1)[0][1:9])
    max_seqs, read_seqs, _ = asyncio.run(pb_newest(im_pb2, ngx, u, tok))
    assert max_seqs == {c: SEQ_MAX for c in convs}
    assert read_seqs == {c: SEQ_MAX for c in convs}
    resp = asyncio.run(json_newest(ngx, u, tok))
    assert resp["errCode"] == 0, resp["errMsg"]
    assert len(resp["data"]["maxSeqs"]) == 2500
    assert ngx.bad_log_lines() == []


def test_newest_small_queue_answers_what_fits(own_stack, im_pb2):
    """im_ws_send_queue 128k with the default im_max_conversations: the
    answer holds the most recent conversations that always fit
    ((128k - 64k - 1k) / 312 = 206), in both encodings, never a close."""
    r, ngx, u, tok = newest_stack(own_stack, ws="im_ws_send_queue 128k;")
    convs = fill_index(r.port, u, 1000, "S" + uids(1)[0][1:9])
    fit = (128 * 1024 - 64 * 1024 - 1024) // 312
    recent = sorted(convs, key=lambda c: -convs[c])[:fit]

    resp = asyncio.run(json_newest(ngx, u, tok))
    assert resp["errCode"] == 0, resp["errMsg"]
    assert resp["data"]["maxSeqs"] == {c: SEQ_MAX for c in recent}
    max_seqs, _, _ = asyncio.run(pb_newest(im_pb2, ngx, u, tok))
    assert max_seqs == {c: SEQ_MAX for c in recent}
    assert ngx.bad_log_lines() == []


def config_test(base_dir, http="", ws=""):
    """nginx -t of a configuration: (return code, stderr)."""
    ngx = Nginx(base_dir, "127.0.0.1:6379", http=http, ws=ws)
    out = ngx.nginx("-t")
    return out.returncode, out.stderr


@pytest.mark.parametrize("http,ws,ok,words", [
    ("", "", True, ()),
    ("im_max_conversations 10000;", "", True, ()),
    ("im_max_conversations 10001;", "", False,
     ("im_max_conversations", "10000", "protobuf")),
    ("im_max_conversations 0;", "", False, ("im_max_conversations",)),
    ("im_max_conversations 10000;", "im_ws_send_queue 1m;", False,
     ("im_ws_send_queue", "im_max_conversations", "im_ws_max_message")),
    ("im_max_conversations 3000;", "im_ws_send_queue 1m;", True, ()),
    ("", "im_ws_send_queue 128k;", True, ()),
])
def test_newest_config_checks(base_dir, http, ws, ok, words):
    rc, err = config_test(base_dir, http=http, ws=ws)
    assert (rc == 0) == ok, err
    for w in words:
        assert w in err, err
    if not ok:
        assert "[emerg]" in err, err


# ---------------------------------------------------------------------------
# worker exit while MongoDB hangs


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_exit(pids, limit):
    """Waits up to `limit` s for pids to exit; returns (seconds taken or
    None, {pid: CPU seconds used meanwhile})."""
    start = {p: cpu_seconds(p) or 0.0 for p in pids}
    last = dict(start)
    t0 = time.time()
    while time.time() - t0 < limit:
        live = [p for p in pids if alive(p)]
        for p in live:
            c = cpu_seconds(p)
            if c is not None:
                last[p] = c
        if not live:
            return time.time() - t0, {p: last[p] - start[p] for p in pids}
        time.sleep(0.05)
    return None, {p: last[p] - start[p] for p in pids}


def batch_send(api, sender, recvs, text):
    return api.post("/msg/batch_send_msg", {
        "sendID": sender, "recvIDs": recvs, "senderPlatformID": 1,
        "content": {"content": text}, "contentType": 101,
        "sessionType": 1}, token=api.admin_token())


def send(api, sender, recv, text):
    return api.post("/msg/send_msg", {
        "sendID": sender, "recvID": recv, "senderPlatformID": 1,
        "content": {"content": text}, "contentType": 101,
        "sessionType": 1}, token=api.admin_token())


EXIT_BOUND = 10.0   # docs/directives.md, im_mongo: a worker's exit


@pytest.fixture
def hung_mongo(base_dir):
    """A MongoDB + Redis + nginx whose FerretDB the test stops (SIGSTOP);
    teardown continues it and checks the logs."""
    made = []

    def make(**kw):
        st = make_stack(base_dir, **kw)
        made.append(st)
        return st

    yield make
    for st in made:
        if st.mongo.proc is not None:
            st.mongo.proc.send_signal(signal.SIGCONT)
        teardown_stack(st)
    for st in made:
        assert st.unexpected_log_lines() == []


def flood_with_mongo_stopped(st, n):
    """A sender, a seeded conversation, then MongoDB stopped, a
    batch_send_msg to n new recipients in the background (every one needs
    a re-seed) and 3 acked messages in the seeded conversation.  Returns
    (sender, peer, conv, thread, result): result["r"] is the batch's
    answer, result["t"] when it came."""
    api = st.api
    s, peer = uids(2, "h")
    recvs = uids(n, "r")
    api.register(s, peer)
    for i in range(0, n, 1000):
        api.register(*recvs[i:i + 1000])
    conv = single_conv(s, peer)
    assert send(api, s, peer, "seeded")["errCode"] == 0
    wait_persisted(st, {conv: 1})

    st.close_client()
    st.mongo.proc.send_signal(signal.SIGSTOP)
    result = {}

    def run_batch():
        try:
            result["r"] = batch_send(api, s, recvs, "flood")
        except Exception as e:          # the answer may be cut by a reload
            result["r"] = e
        result["t"] = time.time()

    th = threading.Thread(target=run_batch, daemon=True)
    th.start()
    # acked while MongoDB hangs: the conversation has its reservation
    for i in range(3):
        assert send(api, s, peer, "acked %d" % i)["errCode"] == 0
    return s, peer, conv, th, result


def kill_leftovers(pids):
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


def test_reload_with_hung_mongo_is_bounded(hung_mongo):
    """1,000 re-seeds queued behind a hung MongoDB, then a reload: the old
    worker exits within the bound and idles meanwhile (today it drains
    the whole queue, each task waiting for MongoDB, at 100% CPU in
    sched_yield, for minutes).  After SIGCONT the new worker persists
    every acked message and serves the recipients."""
    st = hung_mongo(workers=1, http="im_persist_claim 3s;")
    s, peer, conv, th, result = flood_with_mongo_stopped(st, 1000)
    th.join(15)                      # the re-seeds gave up (5 s)
    assert not th.is_alive()
    assert result["r"]["errCode"] == 0, result
    old = st.ngx.worker_pids()
    st.ngx.reload()
    try:
        took, cpu = watch_exit(old, EXIT_BOUND + 5)
        print("reload: old worker gone in %s s, CPU %r" % (took, cpu))
        assert took is not None and took < EXIT_BOUND, (took, cpu)
        assert sum(cpu.values()) < 1.0, cpu
    finally:
        kill_leftovers(old)
        st.mongo.proc.send_signal(signal.SIGCONT)

    wait_for(lambda: len(st.ngx.worker_pids()) == 1, 10, what="new worker")
    # nothing acked is lost, and the new worker serves new conversations
    a, b = uids(2, "z")
    st.api.register(a, b)
    wait_for(lambda: send(st.api, a, b, "after")["errCode"] == 0, 20,
             interval=0.5, what="a send after SIGCONT")
    wait_persisted(st, {conv: 4, single_conv(a, b): 1}, timeout=30)
    assert sorted(st.docs(conv)) == [1, 2, 3, 4]


def test_quit_with_hung_mongo_is_bounded(hung_mongo):
    """The same flood, then nginx -s quit while the re-seeds still wait:
    nginx is gone within the bound, its worker idle meanwhile."""
    st = hung_mongo(workers=2)
    s, peer, conv, th, result = flood_with_mongo_stopped(st, 1000)
    time.sleep(1)
    workers = st.ngx.worker_pids()
    master = st.ngx.master_pid()
    st.ngx.nginx("-s", "quit")
    try:
        took, cpu = watch_exit(workers + [master], EXIT_BOUND + 5)
        print("quit: nginx gone in %s s, CPU %r" % (took, cpu))
        assert took is not None and took < EXIT_BOUND, (took, cpu)
        assert sum(cpu.values()) < 1.0, cpu
    finally:
        kill_leftovers(workers + [master])
        st.mongo.proc.send_signal(signal.SIGCONT)
    th.join(15)


def test_abandoned_reseeds_are_skipped(hung_mongo):
    """The batch's sends give up on their re-seeds after 5 s (90004): the
    ~1,000 re-seeds still queued are skipped, not run one by one against
    the hung MongoDB (each ~2 s of server selection on one of the 4 pool
    threads, for minutes).  A few seconds later no re-seed fails any more;
    after SIGCONT a new conversation is seeded at once."""
    st = hung_mongo(workers=1)
    s, peer, conv, th, result = flood_with_mongo_stopped(st, 1000)
    th.join(15)
    assert not th.is_alive()
    r = result["r"]
    assert r["errCode"] == 0, r
    assert len(r["data"]["failedUserIDs"]) == 1000, r

    # the re-seeds running at give-up end within two socket timeouts
    time.sleep(max(0.0, result["t"] + 7 - time.time()))
    mark = len(st.ngx.log())
    time.sleep(5)
    assert st.ngx.log()[mark:].count("reseed failed") == 0

    st.mongo.proc.send_signal(signal.SIGCONT)
    a, b = uids(2, "y")
    t0 = time.time()
    # a registration is in MongoDB first: its pool may need a retry
    wait_for(lambda: st.api.post("/user/user_register", {"users": [
        {"userID": u} for u in (a, b)]}, token=st.api.admin_token())[
            "errCode"] in (0, 1102), 20, interval=0.2,
        what="a registration after SIGCONT")
    wait_for(lambda: send(st.api, a, b, "fresh")["errCode"] == 0, 20,
             interval=0.2, what="a new conversation after SIGCONT")
    assert time.time() - t0 < 10
    wait_persisted(st, {conv: 4, single_conv(a, b): 1}, timeout=30)


def test_reloads_with_hung_mongo_do_not_crash(hung_mongo):
    """Reload after reload while MongoDB hangs and re-seeds are in flight:
    every old worker exits cleanly.  nginx unloads the module (and
    libmongoc with it) as a worker exits; mongoc's monitor threads, busy
    with the hung server, once crashed it (signal 11) unless the module
    stopped them first."""
    st = hung_mongo(workers=2)
    (a, b), _ = st.users(2)
    assert send(st.api, a, b, "seeded")["errCode"] == 0
    wait_persisted(st, {single_conv(a, b): 1})
    # users are registered in MongoDB first: before it hangs
    batches = [uids(4, "c") for _ in range(12)]
    st.api.register(*[u for us in batches for u in us])
    st.close_client()
    st.mongo.proc.send_signal(signal.SIGSTOP)

    def first_message(x, y):
        try:
            send(st.api, x, y, "first")
        except Exception:           # cut by the reload
            pass

    for i, us in enumerate(batches):
        for y in us[1:]:
            threading.Thread(target=first_message, args=(us[0], y),
                             daemon=True).start()
        time.sleep(0.3)
        old = st.ngx.worker_pids()
        st.ngx.reload()
        took, _ = watch_exit(old, EXIT_BOUND + 5)
        assert took is not None and took < EXIT_BOUND, (i, took)
        assert "signal" not in "".join(st.ngx.bad_log_lines()), i
