"""1:1 messaging end to end: routing across workers and hosts, offline
delivery, multi-device, dedup, concurrency, permissions and validation,
read state (DESIGN.md 1.2)."""

import asyncio
import json
import time
import uuid

from conftest import Api, Client, run, single_conv, uids
from helpers_msg import (burst, pipeline, pull_all, push_msgs, raw_request,
                         run_clients, silence, text_msg, worker_of)


def content_of(m):
    return json.loads(m["content"])["content"]


def test_push_across_workers_of_one_host(stack, api):
    """B's devices are spread over both workers; A's message reaches
    every one of them, wherever A is."""
    a, b = uids()
    api.register(a, b)
    workers = sorted(stack.worker_pids())
    assert len(workers) == 2, workers
    tb = {p: api.user_token(b, p) for p in range(1, 7)}
    ta = api.user_token(a, 1)

    async def scenario(pool):
        devs = {}
        for p in range(1, 7):
            devs[p] = await pool.connect(stack, b, tb[p], p)
        where = {p: worker_of(stack, c) for p, c in devs.items()}
        assert set(where.values()) <= set(workers), (where, workers)

        # reuseport spreads connections over the workers by 4-tuple;
        # add devices (more platform-1 sessions: platform 10 is the
        # admin's) until both workers hold one of B's
        extra = 7
        while len(set(where.values())) < 2 and extra <= 30:
            devs[extra] = await pool.connect(stack, b, tb[1], 1)
            where[extra] = worker_of(stack, devs[extra])
            extra += 1
        assert set(where.values()) == set(workers), where

        ca = await pool.connect(stack, a, ta, 1)
        wa = worker_of(stack, ca)
        assert wa in workers
        other = [p for p in where if where[p] != wa]
        same = [p for p in where if where[p] == wa]
        assert other and same, (wa, where)

        for i in range(3):
            ack = await ca.send_text(b, "m%d" % i)
            assert ack["errCode"] == 0, ack
            assert ack["data"]["seq"] == i + 1
            for p, c in devs.items():
                msgs = await push_msgs(c, 1, timeout=5)
                assert [(m["seq"], content_of(m), m["sendID"], m["recvID"])
                        for m in msgs] == [(i + 1, "m%d" % i, a, b)], \
                    (p, where[p], msgs)
        for c in list(devs.values()) + [ca]:
            await c.close()

    run_clients(scenario)


def test_push_across_hosts(stack, stack2):
    """A on host 1, B on host 2 (and the reverse), one Redis."""
    api1, api2 = Api(stack), Api(stack2)
    a, b = uids()
    api1.register(a, b)
    ta = api1.user_token(a, 1)
    tb = api2.user_token(b, 2)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        cb = await pool.connect(stack2, b, tb, 2)
        conv = single_conv(a, b)

        ack = await ca.send_text(b, "to host 2")
        assert ack["errCode"] == 0, ack
        assert ack["data"]["seq"] == 1
        msgs = await push_msgs(cb, 1)
        assert [(m["seq"], m["sendID"], content_of(m),
                 m["serverMsgID"], m["clientMsgID"]) for m in msgs] == \
            [(1, a, "to host 2", ack["data"]["serverMsgID"],
              ack["data"]["clientMsgID"])]
        assert list(cb.pushes) == []

        ack = await cb.send_text(a, "to host 1")
        assert ack["errCode"] == 0, ack
        assert ack["data"]["seq"] == 2
        msgs = await push_msgs(ca, 1)
        assert [(m["seq"], m["sendID"], content_of(m)) for m in msgs] == \
            [(2, b, "to host 1")]

        # both hosts read the same conversation
        for c in (ca, cb):
            r = await c.pull(conv, 1, 10)
            assert r["errCode"] == 0, r
            assert [(m["seq"], content_of(m))
                    for m in r["data"]["msgs"][conv]["Msgs"]] == \
                [(1, "to host 2"), (2, "to host 1")]
        await ca.close()
        await cb.close()

    run_clients(scenario)


def test_offline_then_newest_and_pull(stack, api):
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b, 3)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        acks = []
        for i in range(3):
            r = await ca.send_text(b, "offline %d" % i,
                                   client_msg_id="cm-%s-%d" % (a, i))
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        assert [x["seq"] for x in acks] == [1, 2, 3]
        assert [x["clientMsgID"] for x in acks] == \
            ["cm-%s-%d" % (a, i) for i in range(3)]

        cb = await pool.connect(stack, b, tb, 3)
        r = await cb.newest()
        assert r["errCode"] == 0, r
        assert r["reqIdentifier"] == 1001
        assert r["data"]["maxSeqs"] == {conv: 3}
        assert r["data"]["hasReadSeqs"] == {conv: 0}

        r = await cb.pull(conv, 1, 3, num=3)
        assert r["errCode"] == 0, r
        assert r["reqIdentifier"] == 1002
        part = r["data"]["msgs"][conv]
        got = part["Msgs"]
        assert [m["seq"] for m in got] == [1, 2, 3]
        assert [content_of(m) for m in got] == \
            ["offline 0", "offline 1", "offline 2"]
        assert [m["clientMsgID"] for m in got] == \
            [x["clientMsgID"] for x in acks]
        assert [m["serverMsgID"] for m in got] == \
            [x["serverMsgID"] for x in acks]
        assert [m["sendTime"] for m in got] == [x["sendTime"] for x in acks]
        for m in got:
            assert (m["sendID"], m["recvID"], m["sessionType"],
                    m["contentType"], m["msgFrom"],
                    m["senderPlatformID"]) == (a, b, 1, 101, 100, 1)
        assert part["isEnd"] is True

        # newest num within the range
        r = await cb.pull(conv, 1, 3, num=2)
        part = r["data"]["msgs"][conv]
        assert [m["seq"] for m in part["Msgs"]] == [2, 3]
        assert part["isEnd"] is False

        # nothing was pushed to B for messages sent before it connected
        assert await silence(cb, 0.3) == []
        await ca.close()
        await cb.close()

    run_clients(scenario)


def test_multi_device(stack, api):
    """Both of B's devices get the push; A's other device gets A's own
    message; A's sending connection gets only the ack."""
    a, b = uids()
    api.register(a, b)
    ta1, ta2 = api.user_token(a, 1), api.user_token(a, 2)
    tb1, tb2 = api.user_token(b, 1), api.user_token(b, 2)

    async def scenario(pool):
        a1 = await pool.connect(stack, a, ta1, 1)
        a2 = await pool.connect(stack, a, ta2, 2)
        b1 = await pool.connect(stack, b, tb1, 1)
        b2 = await pool.connect(stack, b, tb2, 2)

        for i in range(3):
            ack = await a1.send_text(b, "multi %d" % i)
            assert ack["errCode"] == 0, ack
            want = [(i + 1, a, b, "multi %d" % i, 1,
                     ack["data"]["clientMsgID"])]
            for c in (b1, b2, a2):
                msgs = await push_msgs(c, 1)
                assert [(m["seq"], m["sendID"], m["recvID"], content_of(m),
                         m["senderPlatformID"], m["clientMsgID"])
                        for m in msgs] == want, c.uid

        # a round trip on a1 after every other device has its pushes:
        # a push of its own message would have come before the answer
        r = await a1.newest()
        assert r["errCode"] == 0, r
        assert await silence(a1, 0.5) == []
        assert a1.pushes == []
        for c in (a2, b1, b2):
            assert await silence(c, 0.05) == []

        # B answers from device 1: B's device 2 and both of A's get it
        ack = await b1.send_text(a, "reply")
        assert ack["errCode"] == 0, ack
        for c in (a1, a2, b2):
            msgs = await push_msgs(c, 1)
            assert [(m["seq"], m["sendID"], content_of(m))
                    for m in msgs] == [(4, b, "reply")]
        assert await silence(b1, 0.3) == []
        for c in (a1, a2, b1, b2):
            await c.close()

    run_clients(scenario)


def test_duplicate_client_msg_id(stack, api):
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)
    conv = single_conv(a, b)
    cmid = "dup-" + uuid.uuid4().hex

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        cb = await pool.connect(stack, b, tb)

        first = await ca.send_text(b, "once", client_msg_id=cmid)
        assert first["errCode"] == 0, first
        assert first["data"]["seq"] == 1
        assert first["data"]["clientMsgID"] == cmid

        second = await ca.send_text(b, "once", client_msg_id=cmid)
        assert second["errCode"] == 0, second
        assert second["data"] == first["data"]

        # a resend with other content is still the same message
        third = await ca.send_text(b, "changed", client_msg_id=cmid)
        assert third["errCode"] == 0, third
        assert third["data"] == first["data"]

        nxt = await ca.send_text(b, "next")
        assert nxt["errCode"] == 0, nxt
        assert nxt["data"]["seq"] == 2

        # B's pushes: seq 1 exactly once, then seq 2
        msgs = await push_msgs(cb, 2)
        assert [(m["seq"], content_of(m)) for m in msgs] == \
            [(1, "once"), (2, "next")]
        assert await silence(cb, 0.3) == []

        r = await cb.pull(conv, 1, 100)
        got = r["data"]["msgs"][conv]["Msgs"]
        assert [(m["seq"], m["clientMsgID"], content_of(m)) for m in got] \
            == [(1, cmid, "once"), (2, nxt["data"]["clientMsgID"], "next")]

        r = await cb.newest()
        assert r["data"]["maxSeqs"] == {conv: 2}
        await ca.close()
        await cb.close()

    run_clients(scenario)


def test_duplicate_client_msg_id_racing(stack, api):
    """A's 4 devices send the same 50 clientMsgIDs at the same time: each
    is stored once, and every device gets that one message's ack."""
    a, b = uids()
    api.register(a, b)
    ta = {p: api.user_token(a, p) for p in range(1, 5)}
    conv = single_conv(a, b)
    n = 50

    async def scenario(pool):
        devs = [await pool.connect(stack, a, ta[p], p) for p in range(1, 5)]
        reqs = [(1003, text_msg(a, b, "race %d" % k,
                                client_msg_id="race-%s-%d" % (a, k)))
                for k in range(n)]
        results = await asyncio.gather(*[pipeline(c, reqs, window=16)
                                         for c in devs])
        for k in range(n):
            answers = [rs[k] for rs in results]
            assert [r["errCode"] for r in answers] == [0] * 4, answers
            assert all(r["data"] == answers[0]["data"] for r in answers), \
                answers
        seqs = sorted(results[0][k]["data"]["seq"] for k in range(n))
        assert seqs == list(range(1, n + 1))
        r = await devs[0].newest()
        assert r["data"]["maxSeqs"] == {conv: n}
        msgs = await pull_all(devs[0], conv, n, chunk=n)
        assert sorted(m["clientMsgID"] for m in msgs) == \
            sorted("race-%s-%d" % (a, k) for k in range(n))

    run_clients(scenario)


def test_concurrent_senders(stack, api):
    """A's 5 devices send 200 messages each to B at once: seqs are
    exactly 1..1000, every message pulled once, in order, no gaps."""
    a, b = uids()
    api.register(a, b)
    ta = {p: api.user_token(a, p) for p in range(1, 6)}
    tb = api.user_token(b, 1)
    conv = single_conv(a, b)
    per, total = 200, 1000

    async def scenario(pool):
        senders = [await pool.connect(stack, a, ta[p], p)
                   for p in range(1, 6)]
        cb = await pool.connect(stack, b, tb, 1)

        async def blast(i, c):
            reqs = [(1003, text_msg(a, b, "d%d-%d" % (i, k),
                                    client_msg_id="c-%s-%d-%d" % (a, i, k)))
                    for k in range(per)]
            return await pipeline(c, reqs, window=32, timeout=40)

        async def receive():
            seen = []
            end = time.time() + 40
            while len(seen) < total and time.time() < end:
                seen.extend(m["seq"] for m in
                            await cb.push(max(0.01, end - time.time())))
            return seen

        t0 = time.time()
        results = await asyncio.gather(
            receive(), *[blast(i, c) for i, c in enumerate(senders)])
        pushed, acks = results[0], results[1:]
        elapsed = time.time() - t0

        seqs = []
        for i, answers in enumerate(acks):
            assert len(answers) == per
            for k, r in enumerate(answers):
                assert r["errCode"] == 0, r
                assert r["data"]["clientMsgID"] == "c-%s-%d-%d" % (a, i, k)
                seqs.append(r["data"]["seq"])
            # one connection's messages get increasing seqs
            mine = [r["data"]["seq"] for r in answers]
            assert mine == sorted(mine)
        assert len(seqs) == len(set(seqs)) == total
        assert sorted(seqs) == list(range(1, total + 1))
        assert sorted(pushed) == list(range(1, total + 1)), \
            "B got %d pushes" % len(pushed)

        msgs = await pull_all(cb, conv, total, chunk=100)
        assert [m["seq"] for m in msgs] == list(range(1, total + 1))
        cmids = [m["clientMsgID"] for m in msgs]
        assert sorted(cmids) == sorted("c-%s-%d-%d" % (a, i, k)
                                       for i in range(5)
                                       for k in range(per))
        by_seq = {r["data"]["seq"]: r["data"]["clientMsgID"]
                  for answers in acks for r in answers}
        assert all(by_seq[m["seq"]] == m["clientMsgID"] for m in msgs)

        r = await cb.newest()
        assert r["data"]["maxSeqs"] == {conv: total}

        # the whole range with the default num gives the newest 100
        r = await cb.pull(conv, 1, total, num=0)
        part = r["data"]["msgs"][conv]
        assert [m["seq"] for m in part["Msgs"]] == \
            list(range(total - 99, total + 1))
        assert part["isEnd"] is False
        assert elapsed < 40
        for c in senders + [cb]:
            await c.close()

    run_clients(scenario, timeout=90)


def test_permissions_and_validation(stack, api):
    a, b, c, ghost = uids(4)
    api.register(a, b, c)
    ta, tb, tc = api.user_token(a), api.user_token(b), api.user_token(c)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        cc = await pool.connect(stack, c, tc)
        cb = await pool.connect(stack, b, tb)
        ok = await ca.send_text(b, "private")
        assert ok["errCode"] == 0, ok

        # C reads A and B's conversation
        r = await cc.pull(conv, 1, 10)
        assert (r["reqIdentifier"], r["errCode"]) == (1002, 1002), r
        assert "msgs" not in json.dumps(r["data"]), r
        r = await cc.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [1]}]})
        assert (r["reqIdentifier"], r["errCode"]) == (1005, 1002), r
        assert "private" not in json.dumps(r), r
        r = await cc.request(1006, {"conversationIDs": [conv]})
        assert (r["reqIdentifier"], r["errCode"]) == (1006, 1002), r
        assert "seqs" not in r["data"], r
        # one foreign conversation among its own spoils the request
        r = await cc.request(1006, {"conversationIDs": [
            single_conv(a, c), conv]})
        assert r["errCode"] == 1002, r
        # C's own conversation with A is fine (and empty)
        r = await cc.request(1006, {"conversationIDs": [single_conv(a, c)]})
        assert r["errCode"] == 0, r
        assert r["data"]["seqs"] == {single_conv(a, c): {
            "maxSeq": 0, "hasReadSeq": 0, "maxSeqTime": 0}}

        # sending as someone else
        r = await cc.send_text(b, "spoof", sendID=a)
        assert (r["reqIdentifier"], r["errCode"]) == (1003, 1002), r
        # to a user that does not exist
        r = await ca.send_text(ghost, "nobody")
        assert r["errCode"] == 1101, r
        # to a group that does not exist; an unknown sessionType; unknown
        # content types; empty content
        r = await ca.send_text(b, "group?", sessionType=3,
                               groupID="nogroup" + uuid.uuid4().hex[:8])
        assert r["errCode"] == 1201, r
        r = await ca.send_text(b, "write group?", sessionType=2)
        assert r["errCode"] == 1001, r
        assert "sessionType" in r["errMsg"], r
        r = await ca.send_text(b, "x", contentType=9999)
        assert r["errCode"] == 1001, r
        assert "contentType" in r["errMsg"], r
        r = await ca.send_text(b, "x", content="")
        assert r["errCode"] == 1001, r
        assert "content" in r["errMsg"], r

        # content size: 16384 bytes pass, 16385 do not
        def sized(n):
            body = json.dumps({"content": ""})
            return json.dumps({"content": "y" * (n - len(body))})
        assert len(sized(16384)) == 16384
        r = await ca.send_text(b, "x", content=sized(16384))
        assert r["errCode"] == 0, r["errMsg"]
        assert r["data"]["seq"] == 2
        r = await ca.send_text(b, "x", content=sized(16385))
        assert r["errCode"] == 1001, r
        assert "content" in r["errMsg"], r

        # wrong types: 1001 naming the field
        for field, value in (("recvID", 42), ("sessionType", "1"),
                             ("contentType", 101.5), ("content", {"a": 1}),
                             ("clientMsgID", ["x"]),
                             ("options", {"history": 1}),
                             ("atUserIDList", "x")):
            r = await ca.send_text(b, "t", **{field: value})
            assert (r["reqIdentifier"], r["errCode"]) == (1003, 1001), \
                (field, r)
            assert field in r["errMsg"], (field, r)

        # an unknown reqIdentifier: 1001, connection stays
        r = await ca.request(1999, {})
        assert (r["reqIdentifier"], r["errCode"]) == (1999, 1001), r

        # pulls with wrong shapes
        r = await ca.request(1002, {"seqRanges": "all"})
        assert r["errCode"] == 1001 and "seqRanges" in r["errMsg"], r
        r = await ca.request(1002, {"seqRanges": [
            {"conversationID": conv, "begin": "1", "end": 2}]})
        assert r["errCode"] == 1001 and "begin" in r["errMsg"], r
        r = await ca.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": ["1"]}]})
        assert r["errCode"] == 1001 and "seqs" in r["errMsg"], r
        r = await ca.request(1006, {"conversationIDs": conv})
        assert r["errCode"] == 1001 and "conversationIDs" in r["errMsg"], r

        # none of that stored or pushed anything
        r = await cb.newest()
        assert r["data"]["maxSeqs"] == {conv: 2}
        msgs = await push_msgs(cb, 2)
        assert [m["seq"] for m in msgs] == [1, 2]
        assert await silence(cb, 0.3) == []
        r = await cc.newest()
        assert r["data"]["maxSeqs"] == {}

        # and the connections still work
        r = await ca.send_text(b, "still here")
        assert (r["errCode"], r["data"]["seq"]) == (0, 3), r
        for cl in (ca, cb, cc):
            await cl.close()

    run_clients(scenario)


def test_data_not_an_object(stack, api):
    """1001 naming "data"; the answer still echoes reqIdentifier,
    operationID and msgIncr (DESIGN.md 1.2), and the connection stays."""
    a, b = uids()
    api.register(a, b)
    ta = api.user_token(a)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        for req_id, data in ((1003, [1, 2]), (1003, "text"), (1002, 5),
                             (1001, True)):
            incr = "bad-data-%d-%s" % (req_id, type(data).__name__)
            r = await raw_request(ca, json.dumps({
                "reqIdentifier": req_id, "operationID": "op-bad",
                "msgIncr": incr, "data": data}))
            assert r["errCode"] == 1001, r
            assert "data" in r["errMsg"], r
            assert (r["reqIdentifier"], r["operationID"], r["msgIncr"]) == \
                (req_id, "op-bad", incr), r
        r = await ca.send_text(b, "after")
        assert (r["errCode"], r["data"]["seq"]) == (0, 1), r

    run_clients(scenario)


def test_pull_by_seq_list(stack, api):
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        for i in range(4):
            r = await ca.send_text(b, "s%d" % (i + 1))
            assert r["errCode"] == 0, r
        cb = await pool.connect(stack, b, tb)
        r = await cb.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [1, 3, 4]}]})
        assert (r["reqIdentifier"], r["errCode"]) == (1005, 0), r
        got = r["data"]["msgs"][conv]["Msgs"]
        assert [(m["seq"], content_of(m)) for m in got] == \
            [(1, "s1"), (3, "s3"), (4, "s4")]
        # a seq that does not exist is left out
        r = await cb.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [2, 99]}]})
        assert r["errCode"] == 0, r
        assert [m["seq"] for m in r["data"]["msgs"][conv]["Msgs"]] == [2]
        await ca.close()
        await cb.close()

    run_clients(scenario)


def test_conv_max_read_seq(stack, api):
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        cb = await pool.connect(stack, b, tb)

        r = await ca.request(1006, {"conversationIDs": [conv]})
        assert r["errCode"] == 0, r
        assert r["data"]["seqs"] == {conv: {
            "maxSeq": 0, "hasReadSeq": 0, "maxSeqTime": 0}}

        acks = []
        for i in range(3):
            r = await ca.send_text(b, "r%d" % i)
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        last = acks[-1]["sendTime"]
        assert acks[0]["sendTime"] <= acks[1]["sendTime"] <= last

        r = await ca.request(1006, {"conversationIDs": [conv]})
        assert (r["reqIdentifier"], r["errCode"]) == (1006, 0), r
        assert r["data"]["seqs"] == {conv: {
            "maxSeq": 3, "hasReadSeq": 3, "maxSeqTime": last}}
        r = await cb.request(1006, {"conversationIDs": [conv]})
        assert r["data"]["seqs"] == {conv: {
            "maxSeq": 3, "hasReadSeq": 0, "maxSeqTime": last}}

        # B answers: B's read seq follows its own send, A's stays
        r = await cb.send_text(a, "back")
        assert r["errCode"] == 0, r
        t4 = r["data"]["sendTime"]
        r = await cb.request(1006, {"conversationIDs": [conv]})
        assert r["data"]["seqs"] == {conv: {
            "maxSeq": 4, "hasReadSeq": 4, "maxSeqTime": t4}}
        r = await ca.request(1006, {"conversationIDs": [conv]})
        assert r["data"]["seqs"] == {conv: {
            "maxSeq": 4, "hasReadSeq": 3, "maxSeqTime": t4}}

        # GetNewestSeq agrees
        r = await ca.newest()
        assert r["data"] == {"maxSeqs": {conv: 4},
                             "hasReadSeqs": {conv: 3}}
        r = await cb.newest()
        assert r["data"] == {"maxSeqs": {conv: 4},
                             "hasReadSeqs": {conv: 4}}
        await ca.close()
        await cb.close()

    run_clients(scenario)


def test_long_conversation_ids_refused(stack, api):
    """A conversationID whose other side is not a user ID (here 3000
    bytes) is refused with 1002 for 1002/1005/1006; it once overflowed a
    key buffer and killed the worker."""
    a = uids(1)[0]
    api.register(a)
    t = api.user_token(a)
    workers = sorted(stack.worker_pids())
    long_conv = "si_%s_%s" % (a, "A" * 3000)

    async def scenario():
        c = await Client(stack, a, t).connect()
        r = await c.request(1002, {"seqRanges": [
            {"conversationID": long_conv, "begin": 1, "end": 5, "num": 5}]})
        assert r["errCode"] == 1002, r
        r = await c.request(1005, {"conversations": [
            {"conversationID": long_conv, "seqs": [1]}]})
        assert r["errCode"] == 1002, r
        r = await c.request(1006, {"conversationIDs": [long_conv]})
        assert r["errCode"] == 1002, r
        assert (await c.newest())["errCode"] == 0
        await c.close()

    run(scenario())
    assert sorted(stack.worker_pids()) == workers


def test_pull_seqs_all_empty_lists(stack, api):
    """1005 whose conversations all ask for no seqs answers empty lists."""
    a, b = uids()
    api.register(a, b)
    t = api.user_token(a)
    conv = single_conv(a, b)

    async def scenario():
        c = await Client(stack, a, t).connect()
        r = await c.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": []}]})
        assert r["errCode"] == 0, r
        assert r["data"]["msgs"][conv]["Msgs"] == []
        await c.close()

    run(scenario())


def test_sends_of_one_turn_share_a_script_call(stack, api):
    """Sends that reach a worker together go to Redis as one send.lua
    call (store_batch.c), and each still gets its own answer: a burst of
    sends from two devices, with a recipient that does not exist and a
    resend of a clientMsgID amid them, is answered exactly as one send
    at a time would be, in fewer EVALSHA calls than messages (one
    Redis; a cluster sends each message in three steps)."""
    import redis as redis_py
    from test_hardening import stack_redis_port
    from conftest import CLUSTER
    a, b = uids()
    nobody = "nobody" + uuid.uuid4().hex[:8]
    api.register(a, b)
    ta = {p: api.user_token(a, p) for p in (1, 2)}
    tb = api.user_token(b)
    conv = single_conv(a, b)
    n = 60      # within im_ws_max_inflight (64): no frame waits
    rc = None if CLUSTER else redis_py.Redis(port=int(stack_redis_port(stack)))

    def evalsha_calls():
        stats = rc.info("commandstats").get("cmdstat_evalsha", {})
        return stats.get("calls", 0)

    async def scenario(pool):
        devs = [await pool.connect(stack, a, ta[p], p) for p in (1, 2)]
        cb = await pool.connect(stack, b, tb)
        reqs = {}
        for d in (0, 1):
            reqs[d] = [(1003, text_msg(a, b, "burst %d-%d" % (d, k),
                                       client_msg_id="b-%s-%d-%d"
                                       % (a, d, k)))
                       for k in range(n)]
        # amid the burst: a recipient that does not exist, and device 1
        # resending device 0's first clientMsgID
        reqs[0][7] = (1003, text_msg(a, nobody, "to nobody"))
        reqs[1][9] = (1003, text_msg(a, b, "again",
                                     client_msg_id="b-%s-0-0" % a))
        before = evalsha_calls() if rc else 0
        results = await asyncio.gather(*[burst(devs[d], reqs[d])
                                         for d in (0, 1)])
        calls = (evalsha_calls() - before) if rc else None

        assert results[0][7]["errCode"] == 1101, results[0][7]
        # the resend is answered with the first send's seq, whichever of
        # the two reached Redis first
        first = results[0][0]
        assert first["errCode"] == 0, first
        assert results[1][9]["errCode"] == 0, results[1][9]
        assert results[1][9]["data"]["seq"] == first["data"]["seq"]
        stored = {}
        for d in (0, 1):
            for k, r in enumerate(results[d]):
                if (d, k) in ((0, 7), (1, 9)):
                    continue
                assert r["errCode"] == 0, (d, k, r)
                stored[r["data"]["seq"]] = "burst %d-%d" % (d, k)
        want = 2 * n - 2
        assert sorted(stored) == list(range(1, want + 1))

        # each ack's seq is its own message's: the pull agrees (the
        # clientMsgID sent twice holds the text of whichever of its two
        # sends reached Redis first)
        msgs = await pull_all(cb, conv, want, chunk=100)
        pulled = {m["seq"]: content_of(m) for m in msgs}
        shared = first["data"]["seq"]
        assert pulled.pop(shared) in ("burst 0-0", "again")
        stored.pop(shared)
        assert pulled == stored
        got = await push_msgs(cb, want, timeout=20)
        assert sorted(m["seq"] for m in got) == list(range(1, want + 1))
        if rc:
            print("evalsha calls: %d for %d sends" % (calls, 2 * n))
            assert calls <= n // 2, "no batching: %d calls for %d sends" % (
                calls, 2 * n)

    run_clients(scenario)


def test_large_sends_split_by_bytes(stack, api):
    """A batch holds at most 256 KB (store_batch.c): 40 sends of ~15 KB
    in one write go to Redis in several calls, and each is stored and
    answered as its own."""
    import redis as redis_py
    from test_hardening import stack_redis_port
    from conftest import CLUSTER
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b)
    conv = single_conv(a, b)
    n = 40
    rc = None if CLUSTER else redis_py.Redis(port=int(stack_redis_port(stack)))

    def evalsha_calls():
        stats = rc.info("commandstats").get("cmdstat_evalsha", {})
        return stats.get("calls", 0)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        cb = await pool.connect(stack, b, tb)
        texts = ["%02d" % k + chr(ord("a") + k % 26) * 15000
                 for k in range(n)]
        before = evalsha_calls() if rc else 0
        rs = await burst(ca, [(1003, text_msg(a, b, t)) for t in texts])
        calls = (evalsha_calls() - before) if rc else None
        assert [r["errCode"] for r in rs] == [0] * n, rs
        seqs = [r["data"]["seq"] for r in rs]
        assert sorted(seqs) == list(range(1, n + 1))
        msgs = await pull_all(cb, conv, n, chunk=10)
        pulled = {m["seq"]: content_of(m) for m in msgs}
        assert pulled == dict(zip(seqs, texts))
        if rc:
            # 600 KB in batches of at most 256 KB, not one per message
            assert 3 <= calls <= n // 2, calls

    run_clients(scenario)
