"""Faults: Redis restarts and hangs, slow readers, nginx reloads, clients
that vanish mid-request.  Every test runs on its own Redis + nginx."""

import asyncio
import json
import signal
import time

import websockets

from conftest import Api, SECRET, ADMIN, Client, run, single_conv, uids
from helpers_msg import (RawWs, burst, pid_alive, pipeline, pull_all,
                         push_msgs, run_clients, server_side_owner, silence,
                         text_msg, vm_rss_kb, wait_log_count)


def content_of(m):
    return json.loads(m["content"])["content"]


def setup_users(ngx, n=2, platforms=(1,)):
    api = Api(ngx)
    us = uids(n)
    api.register(*us)
    toks = {(u, p): api.user_token(u, p) for u in us for p in platforms}
    return api, us, toks


async def until_sent(c, recv, text, cmid, timeout=12.0):
    """Resends (same clientMsgID) until the server takes it; every
    refusal meanwhile must be a quick 90004."""
    end = time.time() + timeout
    while True:
        t = time.time()
        r = await c.send_text(recv, text, client_msg_id=cmid)
        assert time.time() - t < 3, "a send took %.1fs" % (time.time() - t)
        if r["errCode"] == 0:
            return r
        assert r["errCode"] == 90004, r
        assert time.time() < end, "sends still failing after %.0fs" % timeout
        await asyncio.sleep(0.1)


def test_redis_restart_with_live_sessions(own_stack):
    redis, ngx = own_stack()
    _, (a, b), toks = setup_users(ngx)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(ngx, a, toks[(a, 1)])
        cb = await pool.connect(ngx, b, toks[(b, 1)])

        acked = {}          # clientMsgID -> ack data
        errors = []         # (errCode, seconds) of refused sends
        stop = asyncio.Event()

        async def sender():
            i = 0
            while not stop.is_set():
                cmid = "%s-%d" % (a, i)
                t = time.time()
                r = await ca.send_text(b, "m%d" % i, client_msg_id=cmid)
                if r["errCode"] == 0:
                    acked[cmid] = r["data"]
                else:
                    errors.append((r["errCode"], time.time() - t))
                    await asyncio.sleep(0.05)
                i += 1

        task = asyncio.ensure_future(sender())
        end = time.time() + 10
        while len(acked) < 30:
            assert time.time() < end and not task.done()
            await asyncio.sleep(0.01)

        # Redis goes away (SIGTERM: AOF is flushed) while messages flow
        await asyncio.to_thread(redis.stop)
        down_at = time.time()
        end = time.time() + 8
        while len(errors) < 3:
            assert time.time() < end, "no refusals while Redis is down"
            assert not task.done(), task
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        n_before = len(acked)
        assert errors and all(code == 90004 for code, _ in errors), errors
        assert max(s for _, s in errors) < 3, errors

        # reads refused quickly too; the connections stay open
        for req in ((1001, {}), (1002, {"seqRanges": [
                {"conversationID": conv, "begin": 1, "end": 10}]}),
                (1006, {"conversationIDs": [conv]})):
            t = time.time()
            r = await cb.request(req[0], req[1], timeout=5)
            assert (r["reqIdentifier"], r["errCode"]) == (req[0], 90004), r
            assert time.time() - t < 3

        # a new login while Redis is down is refused, not left hanging
        t = time.time()
        try:
            c = await asyncio.wait_for(pool.connect(
                ngx, b, toks[(b, 1)]), 8)
            raise AssertionError("login succeeded without Redis: %r" % c)
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 503, e
        assert time.time() - t < 8

        # Redis comes back on the same port and directory
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - down_at)))
        await asyncio.to_thread(redis.start)
        up_at = time.time()

        # the module reconnects (backoff <= 5 s); the same clientMsgID
        # retried until taken is stored once
        r = await until_sent(ca, b, "after", "%s-after" % a, timeout=12)
        assert time.time() - up_at < 10
        after_seq = r["data"]["seq"]
        seqs_before = sorted(x["seq"] for x in acked.values())
        assert seqs_before == list(range(1, n_before + 1)), seqs_before
        # nothing acked was lost: the seq continues after the last ack
        # (a send refused during the outage may still have been stored)
        assert n_before + 1 <= after_seq <= n_before + 1 + len(errors)

        # pushes to the connection that lived through it resume: its
        # subscription is restored (push is best effort until then)
        seen = set()
        end = time.time() + 10
        k = 0
        while not any(s > n_before for s in seen):
            try:
                msgs = await cb.push(timeout=0.5)
                seen.update(m["seq"] for m in msgs)
            except asyncio.TimeoutError:
                assert time.time() < end, "no push after the restart"
                await until_sent(ca, b, "probe %d" % k,
                                 "%s-probe-%d" % (a, k))
                k += 1
        # from now on every message is pushed
        for j in range(3):
            r = await until_sent(ca, b, "live %d" % j, "%s-live-%d" % (a, j))
            want = r["data"]["seq"]
            got = []
            while want not in got:
                got.extend(m["seq"] for m in await push_msgs(cb, 1, 3))

        # everything acked is there, once, under its seq
        rn = await cb.newest()
        assert rn["errCode"] == 0, rn
        max_seq = rn["data"]["maxSeqs"][conv]
        msgs = await pull_all(cb, conv, max_seq)
        assert [m["seq"] for m in msgs] == list(range(1, max_seq + 1))
        by_cmid = {m["clientMsgID"]: m for m in msgs}
        assert len(by_cmid) == max_seq
        for cmid, ack in acked.items():
            m = by_cmid[cmid]
            assert (m["seq"], m["serverMsgID"], m["sendTime"]) == \
                (ack["seq"], ack["serverMsgID"], ack["sendTime"]), cmid
        assert by_cmid["%s-after" % a]["seq"] == after_seq

        # a new login works again
        c2 = await pool.connect(ngx, a, toks[(a, 1)])
        r = await c2.newest()
        assert r["data"]["maxSeqs"] == {conv: max_seq}

    run_clients(scenario, timeout=60)


def test_rest_while_redis_down(own_stack):
    redis, ngx = own_stack()
    api, (a, b), toks = setup_users(ngx)
    admin = api.admin_token()
    calls = [
        ("/auth/get_admin_token", {"secret": SECRET, "userID": ADMIN}, None),
        ("/auth/get_user_token", {"userID": a, "platformID": 2}, admin),
        ("/user/user_register", {"users": [{"userID": "nu-" + a,
                                            "nickname": "n"}]}, admin),
        ("/user/get_users_info", {"userIDs": [a]}, toks[(a, 1)]),
        ("/msg/send_msg", {"sendID": a, "recvID": b, "senderPlatformID": 1,
                           "content": {"content": "rest"}, "contentType": 101,
                           "sessionType": 1}, admin),
    ]

    redis.stop()
    try:
        for path, body, tok in calls:
            t = time.time()
            r = api.post(path, body, token=tok)   # asserts HTTP 200
            took = time.time() - t
            assert r["errCode"] == 90004, (path, r)
            assert took < 2, (path, took)
    finally:
        redis.start()

    # back to normal once the module has reconnected
    end = time.time() + 12
    while True:
        r = api.post("/auth/get_user_token", {"userID": a, "platformID": 2},
                     token=admin)
        if r["errCode"] == 0:
            break
        assert r["errCode"] == 90004, r
        assert time.time() < end, "REST still failing after Redis is back"
        time.sleep(0.1)
    r = api.post("/msg/send_msg", calls[-1][1], token=admin)
    assert r["errCode"] == 0, r
    assert r["data"]["seq"] == 1


def test_redis_hang_times_out(own_stack):
    """A Redis that stops answering (SIGSTOP) costs a request at most
    im_redis_timeout, never a hang; a login meanwhile is refused; a user
    who left during the hang can come back and gets pushes."""
    redis, ngx = own_stack(http="im_redis_timeout 1s;")
    _, (a, b, c), toks = setup_users(ngx, 3)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(ngx, a, toks[(a, 1)])
        cb = await pool.connect(ngx, b, toks[(b, 1)])
        r = await ca.send_text(b, "before")
        assert r["errCode"] == 0, r
        assert [m["seq"] for m in await push_msgs(cb, 1)] == [1]

        redis.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(3):
                t = time.time()
                r = await ca.request(1003, text_msg(a, b, "hung %d" % i),
                                     timeout=6)
                took = time.time() - t
                assert r["errCode"] == 90004, r
                assert took < 3, took
            # b leaves while its UNSUBSCRIBE cannot be answered
            await cb.close()
            # a login now is refused in bounded time
            t = time.time()
            try:
                await asyncio.wait_for(pool.connect(ngx, c, toks[(c, 1)]), 6)
                raise AssertionError("login succeeded with Redis hung")
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 503, e
            assert time.time() - t < 4
        finally:
            redis.proc.send_signal(signal.SIGCONT)

        # b comes straight back, racing its own UNSUBSCRIBE
        cb = await pool.connect_retry(ngx, b, toks[(b, 1)], 1, timeout=10)
        r = await until_sent(ca, b, "after", "after-" + a, timeout=12)
        seq = r["data"]["seq"]
        got = []
        while seq not in got:
            got.extend(m["seq"] for m in await push_msgs(cb, 1, 5))
        assert got[-1] == seq

        r2 = await ca.pull(conv, 1, 100)
        got = [content_of(m) for m in r2["data"]["msgs"][conv]["Msgs"]]
        # the hung sends may or may not have been stored; the others are
        assert got[0] == "before" and got[-1] == "after", got
        assert set(got[1:-1]) <= {"hung 0", "hung 1", "hung 2"}, got

        # c can log in now and is reachable
        cc = await pool.connect_retry(ngx, c, toks[(c, 1)], 1, timeout=10)
        r = await ca.send_text(c, "hello c")
        assert r["errCode"] == 0, r
        assert [content_of(m) for m in await push_msgs(cc, 1)] == ["hello c"]

    run_clients(scenario, timeout=50)


def test_slow_reader_is_disconnected(own_stack):
    redis, ngx = own_stack(ws="im_ws_send_queue 128k; im_ws_max_message 64k;")
    _, (s, f, c, d), toks = setup_users(ngx, 4, platforms=(1, 2))
    conv = single_conv(s, f)
    count, size = 2000, 8 * 1024

    async def scenario(pool):
        cf = await pool.connect(ngx, f, toks[(f, 1)])
        cc = await pool.connect(ngx, c, toks[(c, 1)])
        cd = await pool.connect(ngx, d, toks[(d, 1)])
        workers = ngx.worker_pids()
        assert len(workers) == 2
        rss0 = {p: vm_rss_kb(p) for p in workers}

        # the same user's other device reads as fast as it can
        healthy = await pool.connect(ngx, s, toks[(s, 2)], 2)

        async def read_all():
            seqs = []
            end = time.time() + 40
            while len(seqs) < count and time.time() < end:
                seqs.extend(m["seq"] for m in
                            await healthy.push(max(0.01, end - time.time())))
            return seqs

        reader = asyncio.ensure_future(read_all())
        slow = RawWs(ngx, s, toks[(s, 1)], rcvbuf=4096).open().handshake()
        try:
            payload = "z" * size
            reqs = [(1003, text_msg(f, s, payload,
                                    client_msg_id="%s-%d" % (f, i)))
                    for i in range(count)]
            t0 = time.time()
            acks = await pipeline(cf, reqs, window=64, timeout=40)
            flood_s = time.time() - t0
            assert [r["errCode"] for r in acks] == [0] * count
            assert sorted(r["data"]["seq"] for r in acks) == \
                list(range(1, count + 1))

            # nginx has let go of the slow connection
            end = time.time() + 10
            while True:
                exists, pid = server_side_owner(ngx, slow.local_port)
                if pid is None:
                    break
                assert time.time() < end, \
                    "worker %d still holds the slow reader" % pid
                await asyncio.sleep(0.1)

            rss1 = {p: vm_rss_kb(p) for p in workers}
            for p in workers:
                # well under the flood (16 MB): nothing kept it queued
                assert rss1[p] - rss0[p] < 10 * 1024, (p, rss0, rss1)

            # what the reader gets: part of the flood, then EOF or reset
            got, how = await asyncio.to_thread(slow.read_to_eof, 15)
            assert how in ("eof", "reset"), (how, got)
            assert got < count * size, got
        finally:
            slow.close()

        # the healthy device got every push, in order, and is still on
        seqs = await asyncio.wait_for(reader, 20)
        assert seqs == list(range(1, count + 1))
        r = await healthy.newest()
        assert r["data"]["maxSeqs"] == {conv: count}

        # everybody else is fine
        r = await cc.send_text(d, "still working")
        assert (r["errCode"], r["data"]["seq"]) == (0, 1), r
        msgs = await push_msgs(cd, 1)
        assert [content_of(m) for m in msgs] == ["still working"]
        r = await cf.send_text(d, "flooder too")
        assert r["errCode"] == 0, r

        # the slow reader recovers by pulling
        cs = await pool.connect(ngx, s, toks[(s, 1)])
        r = await cs.newest()
        assert r["data"]["maxSeqs"] == {conv: count}
        r = await cs.pull(conv, count - 4, count)
        assert [m["seq"] for m in r["data"]["msgs"][conv]["Msgs"]] == \
            list(range(count - 4, count + 1))
        assert flood_s < 40

    run_clients(scenario, timeout=60)


def test_reload_with_live_sessions(own_stack):
    redis, ngx = own_stack()
    _, (a, b), toks = setup_users(ngx, 2, platforms=(1, 2))
    conv = single_conv(a, b)

    async def scenario(pool):
        sender = await pool.connect(ngx, a, toks[(a, 1)])
        idle = [await pool.connect(ngx, a, toks[(a, 2)], 2),
                await pool.connect(ngx, b, toks[(b, 1)], 1),
                await pool.connect(ngx, b, toks[(b, 2)], 2)]
        old = set(ngx.worker_pids())
        assert len(old) == 2
        ready = ngx.log().count("subscriber connected")

        acked = {}

        async def send_loop():
            i = 0
            try:
                while True:
                    cmid = "%s-%d" % (a, i)
                    r = await sender.send_text(b, "r%d" % i,
                                               client_msg_id=cmid)
                    if r["errCode"] == 0:
                        acked[cmid] = r["data"]
                    i += 1
            except (websockets.exceptions.ConnectionClosed,
                    asyncio.TimeoutError):
                return

        task = asyncio.ensure_future(send_loop())
        end = time.time() + 10
        while len(acked) < 20:
            assert time.time() < end and not task.done()
            await asyncio.sleep(0.01)

        await asyncio.to_thread(ngx.reload)
        t0 = time.time()

        # every old session is closed promptly; idle ones say 1001
        for cl in idle + [sender]:
            await asyncio.wait_for(cl.ws.wait_closed(),
                                   max(0.1, 5 - (time.time() - t0)))
        assert [cl.ws.close_code for cl in idle] == [1001, 1001, 1001]
        assert sender.ws.close_code in (1001, 1006), sender.ws.close_code
        await asyncio.wait_for(task, 5)
        assert time.time() - t0 < 5

        # the old workers exit
        end = time.time() + 10
        while any(pid_alive(p) for p in old):
            assert time.time() < end, [p for p in old if pid_alive(p)]
            await asyncio.sleep(0.1)
        new = set(ngx.worker_pids())
        assert len(new) == 2 and not (new & old), (old, new)
        assert await asyncio.to_thread(
            wait_log_count, ngx, "subscriber connected", ready + 2, 10)

        # reconnect: nothing acked was lost
        cb = await pool.connect_retry(ngx, b, toks[(b, 1)], 1, timeout=10)
        r = await cb.newest()
        assert r["errCode"] == 0, r
        max_seq = r["data"]["maxSeqs"][conv]
        assert max_seq >= max(x["seq"] for x in acked.values())
        msgs = await pull_all(cb, conv, max_seq)
        assert [m["seq"] for m in msgs] == list(range(1, max_seq + 1))
        by_cmid = {m["clientMsgID"]: m for m in msgs}
        for cmid, ack in acked.items():
            assert by_cmid[cmid]["seq"] == ack["seq"], cmid
            assert by_cmid[cmid]["serverMsgID"] == ack["serverMsgID"]

        # and the new workers deliver
        ca = await pool.connect_retry(ngx, a, toks[(a, 1)], 1, timeout=10)
        r = await ca.send_text(b, "after reload")
        assert (r["errCode"], r["data"]["seq"]) == (0, max_seq + 1), r
        msgs = await push_msgs(cb, 1)
        assert [(m["seq"], content_of(m)) for m in msgs] == \
            [(max_seq + 1, "after reload")]

    run_clients(scenario, timeout=60)


def test_abrupt_disconnects(own_stack):
    """Clients that vanish mid-handshake, mid-frame or with requests in
    flight break nobody else, and crash no worker."""
    redis, ngx = own_stack()
    _, (a, b, x), toks = setup_users(ngx, 3)
    workers = sorted(ngx.worker_pids())
    assert len(workers) == 2

    def burst(k):
        """A pipeline of requests from x, sent in one write."""
        out = b""
        for j in range(k):
            out += RawWs.frame(0x1, json.dumps({
                "reqIdentifier": 1003, "operationID": "o", "msgIncr": str(j),
                "data": text_msg(x, a, "gone %d" % j)}).encode())
            out += RawWs.frame(0x1, json.dumps({
                "reqIdentifier": 1002, "operationID": "o", "msgIncr": "p%d" % j,
                "data": {"seqRanges": [{"conversationID": single_conv(x, a),
                                        "begin": 1, "end": 100}]}}).encode())
        return out

    def misbehave(round_):
        # 1. gone during the login (the token check is in Redis)
        w = RawWs(ngx, x, toks[(x, 1)]).open()
        w.send_raw(w.request_bytes())
        w.abort()
        # 2. gone with requests in flight
        w = RawWs(ngx, x, toks[(x, 1)]).open().handshake()
        w.send_raw(burst(20))
        time.sleep((0, 0.001, 0.005, 0.02)[round_ % 4])
        w.abort()
        # 3. gone in the middle of a frame
        w = RawWs(ngx, x, toks[(x, 1)]).open().handshake()
        frame = RawWs.frame(0x1, json.dumps({
            "reqIdentifier": 1001, "operationID": "o", "msgIncr": "1",
            "data": {}}).encode())
        w.send_raw(frame[:len(frame) // 2])
        w.abort()
        # 4. gone with requests in flight, but a polite FIN
        w = RawWs(ngx, x, toks[(x, 1)]).open().handshake()
        w.send_raw(burst(5))
        w.close()
        # 5. the handshake request cut in half
        w = RawWs(ngx, x, toks[(x, 1)]).open()
        w.send_raw(w.request_bytes()[:40])
        w.abort()

    async def scenario(pool):
        ca = await pool.connect(ngx, a, toks[(a, 1)])
        cb = await pool.connect(ngx, b, toks[(b, 1)])
        conv = single_conv(a, b)
        seq = 0
        for round_ in range(12):
            await asyncio.to_thread(misbehave, round_)
            r = await ca.send_text(b, "ok %d" % round_)
            seq += 1
            assert (r["errCode"], r["data"]["seq"]) == (0, seq), r
            msgs = await push_msgs(cb, 1)
            assert [(m["seq"], content_of(m)) for m in msgs] == \
                [(seq, "ok %d" % round_)]

        assert sorted(ngx.worker_pids()) == workers
        # x's pushes went nowhere, a got them (x wrote to a)
        frames = await silence(ca, 0.3)
        assert all(f.get("reqIdentifier") == 2001 for f in frames)
        r = await cb.pull(conv, 1, 100)
        assert [m["seq"] for m in r["data"]["msgs"][conv]["Msgs"]] == \
            list(range(1, seq + 1))
        # a fresh login still works
        cx = await pool.connect(ngx, x, toks[(x, 1)])
        r = await cx.newest()
        assert r["errCode"] == 0, r

    run_clients(scenario, timeout=60)
    assert sorted(ngx.worker_pids()) == workers
    assert not [l for l in ngx.log().splitlines()
                if "exited on signal" in l]


def test_redis_pending_bound(own_stack):
    """More requests than im_redis_max_pending: the excess is refused at
    once with 90004, nothing hangs, and what was acked is stored."""
    redis, ngx = own_stack(http="im_redis_max_pending 8;")
    _, (a, b), toks = setup_users(ngx, 2, platforms=(1, 2, 3))
    conv = single_conv(a, b)

    async def scenario(pool):
        senders = [await pool.connect(ngx, a, toks[(a, p)], p)
                   for p in (1, 2, 3)]

        async def blast(i, c):
            reqs = [(1003, text_msg(a, b, "q", client_msg_id="%d-%d" % (i, k)))
                    for k in range(300)]
            return await pipeline(c, reqs, window=64, timeout=20)

        t0 = time.time()
        results = await asyncio.gather(*[blast(i, c)
                                          for i, c in enumerate(senders)])
        assert time.time() - t0 < 20
        codes = [r["errCode"] for rs in results for r in rs]
        assert set(codes) <= {0, 90004}, set(codes)
        acked = {r["data"]["clientMsgID"]: r["data"]["seq"]
                 for rs in results for r in rs if r["errCode"] == 0}
        assert acked, "nothing got through"

        # the offline-push job of each stored message goes to Redis just
        # before its ack, so the last jobs may still hold the 8 slots: a
        # login then is refused (503, as documented) until they are
        # answered, a few ms later
        cb = await pool.connect_retry(ngx, b, toks[(b, 1)], 1, timeout=5)
        rn = await cb.newest()
        max_seq = rn["data"]["maxSeqs"][conv]
        msgs = await pull_all(cb, conv, max_seq)
        stored = {m["clientMsgID"]: m["seq"] for m in msgs}
        assert [m["seq"] for m in msgs] == list(range(1, max_seq + 1))
        for cmid, seq in acked.items():
            assert stored[cmid] == seq, cmid
        # a refused message is simply not there (the refusal came before
        # Redis saw it)
        assert set(stored) == set(acked)

        # once the burst is over, everything is accepted again
        r = await senders[0].send_text(b, "calm")
        assert (r["errCode"], r["data"]["seq"]) == (0, max_seq + 1), r

    run_clients(scenario, timeout=45)


def test_subscriber_heartbeat_keeps_connection(stack, api):
    """The subscriber connection is checked every 10 s; a healthy one is
    never recycled for a missing heartbeat reply (a PING's reply is lost
    on a subscribed hiredis 0.14 connection; the check must not use it)."""
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)
    time.sleep(11.5)
    log = stack.log()
    assert "no reply for" not in log, [
        l for l in log.splitlines() if "no reply for" in l]

    async def scenario():
        ca = await Client(stack, a, ta).connect()
        cb = await Client(stack, b, tb).connect()
        assert (await ca.send_text(b, "after heartbeat"))["errCode"] == 0
        assert [m["content"] for m in await cb.push()] == [
            json.dumps({"content": "after heartbeat"})]
        await ca.close()
        await cb.close()

    run(scenario())


def test_script_cache_flushed(own_stack):
    """SCRIPT FLUSH empties Redis's script cache under a running module:
    the next EVALSHA gets NOSCRIPT, is re-sent once as EVAL, and every
    request still succeeds; the scripts are cached again afterwards."""
    r, ngx = own_stack(workers=1)
    api = Api(ngx)
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)

    async def scenario():
        ca = await Client(ngx, a, ta).connect()
        cb = await Client(ngx, b, tb).connect()
        assert (await ca.send_text(b, "before"))["errCode"] == 0
        assert r.cli("SCRIPT", "FLUSH") == "OK"
        for i in range(3):
            ack = await ca.send_text(b, "after %d" % i)
            assert ack["errCode"] == 0, ack
        got = await cb.pull(single_conv(a, b), 1, 10)
        assert [m["seq"] for m in
                got["data"]["msgs"][single_conv(a, b)]["Msgs"]] == [1, 2, 3, 4]
        await ca.close()
        await cb.close()

    run(scenario())
    assert "resending as EVAL" in ngx.log()


def test_connections_gauge_after_a_worker_crash(base_dir):
    """im_connections counts per worker slot: a worker killed with its
    sessions open stops counting once nginx respawns it (its own stack:
    the kill logs an alert by design)."""
    import os
    from conftest import Nginx, Redis
    from helpers_msg import worker_of
    from test_api import metrics

    r = Redis(base_dir).start()
    ngx = Nginx(base_dir, r.addr, workers=2).start()
    try:
        api, us, toks = setup_users(ngx, 8)

        async def scenario(pool):
            cs = [await pool.connect(ngx, u, toks[(u, 1)]) for u in us]
            assert metrics(ngx)["im_connections"] == 8
            pids = [worker_of(ngx, c) for c in cs]
            victim = pids[0]
            survivors = sum(1 for p in pids if p != victim)
            os.kill(victim, signal.SIGKILL)
            end = time.time() + 10
            while time.time() < end:
                now = ngx.worker_pids()
                if len(now) == 2 and victim not in now:
                    break
                await asyncio.sleep(0.05)
            end = time.time() + 10
            while time.time() < end and \
                    metrics(ngx)["im_connections"] != survivors:
                await asyncio.sleep(0.05)
            assert metrics(ngx)["im_connections"] == survivors

        run_clients(scenario, timeout=60)
    finally:
        ngx.stop()
        r.stop()


def test_full_send_batch_while_redis_down(own_stack):
    """With Redis down, a turn's full batch of sends (64 frames of one
    connection in one write; store_batch.c flushes it inside the 64th
    send) and a REST batch_send_msg to 100 recipients are answered 90004,
    each once, after the add returned; the connection and the workers
    live on, and sends work again once Redis is back."""
    redis, ngx = own_stack()
    api, (a, b), toks = setup_users(ngx)
    admin = api.admin_token()
    workers = sorted(ngx.worker_pids())

    async def scenario(pool):
        ca = await pool.connect(ngx, a, toks[(a, 1)], 1)
        await asyncio.to_thread(redis.stop)
        try:
            reqs = [(1003, text_msg(a, b, "down %d" % k)) for k in range(64)]
            rs = await burst(ca, reqs, timeout=10)
            assert [r["errCode"] for r in rs] == [90004] * 64, rs
            body = {"sendID": a, "recvIDs": [b] * 100, "senderPlatformID": 1,
                    "content": {"content": "rest"}, "contentType": 101,
                    "sessionType": 1}
            r = await asyncio.to_thread(api.post, "/msg/batch_send_msg",
                                        body, admin)
            assert r["errCode"] == 90004 or (
                r["errCode"] == 0 and not r["data"]["results"]), r
        finally:
            await asyncio.to_thread(redis.start)
        assert sorted(ngx.worker_pids()) == workers
        r = await until_sent(ca, b, "back", "back-" + a)
        assert r["data"]["seq"] == 1

    run_clients(scenario, timeout=60)
