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

import rawws
from conftest import ROOT, Api, Redis, run, single_conv, uids
from helpers_mongo import make_stack, teardown_stack
from helpers_msg import Pool, pipeline, run_clients, text_msg
from test_handshake import make_jwt
from test_protobuf import PbClient, im_pb2  # noqa: F401 (a fixture)

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


# ---------------------------------------------------------------------------
# the send path: one validation of MsgData for WebSocket 1003 and REST
# (defects 4, 7, 8), the dedup key (5), tokens, JSON strings and the
# handshake (9)


REST_SEND_PATHS = ("/msg/send_msg", "/manager/send_msg",
                   "/msg/batch_send_msg")
INT32_FIELDS = ("senderPlatformID", "sessionType", "msgFrom", "contentType",
                "status")
INT32_BAD = (2 ** 31, -2 ** 31 - 1, 2 ** 63 - 1)

# the bounds of docs/protocol.md ("MsgData"): field, its largest length
STR_LIMITS = (("senderNickname", 255), ("senderFaceURL", 1024),
              ("ex", 4096), ("groupID", 64), ("clientMsgID", 128))
PUSH_LIMITS = (("title", 255), ("desc", 1024), ("ex", 4096),
               ("iOSPushSound", 255))


def rest_msg(sender, recv, **extra):
    body = {"sendID": sender, "recvID": recv, "senderPlatformID": 10,
            "content": {"content": "hello"}, "contentType": 101,
            "sessionType": 1}
    body.update(extra)
    return body


def rest_send(api, path, body):
    """One REST send on any of the three paths; a batch of one recipient
    answers like a single send (its failure is the call's)."""
    if path == "/msg/batch_send_msg":
        body = dict(body, recvIDs=[body["recvID"]])
    elif path == "/manager/send_msg":
        body = dict(body, operationID="op-manager")
    r = api.post(path, body, token=api.admin_token())
    if path == "/msg/batch_send_msg" and r["errCode"] == 0:
        assert r["data"]["failedUserIDs"] == [], r
        r = dict(r, data=r["data"]["results"][0])
    return r


def nothing_stored(redis_server, conv):
    return redis_server.cli("EXISTS", "im:{c:%s}:seq" % conv) == "0"


def refused(r, field):
    return r["errCode"] == 1001 and field in r["errMsg"]


@pytest.mark.parametrize("path", REST_SEND_PATHS)
def test_rest_int32_fields_range_checked(api, redis_server, path):
    """Defect 4: senderPlatformID 2147483648 was stored through REST.
    Every int32 field of MsgData must fit int32, and senderPlatformID is
    0..11; 1001 names the field and nothing is stored."""
    a, b = uids(2)
    api.register(b)
    for field in INT32_FIELDS:
        for value in INT32_BAD:
            r = rest_send(api, path, rest_msg(a, b, **{field: value}))
            assert refused(r, field), (field, value, r)
    for value in (12, -1, 2 ** 31 - 1):
        r = rest_send(api, path, rest_msg(a, b, senderPlatformID=value))
        assert refused(r, '"senderPlatformID"'), (value, r)
    assert nothing_stored(redis_server, single_conv(a, b))
    r = rest_send(api, path, rest_msg(a, b, senderPlatformID=11))
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r


def test_ws_int32_fields_range_checked(stack, api, redis_server):
    """The same fields through WebSocket 1003, where the server sets
    msgFrom and senderPlatformID: out-of-range input is still 1001."""
    a, b = uids(2)
    api.register(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        for field in INT32_FIELDS:
            for value in INT32_BAD:
                r = await ca.send_text(b, "x", **{field: value})
                assert refused(r, field), (field, value, r)
        assert nothing_stored(redis_server, single_conv(a, b))
        r = await ca.send_text(b, "ok", senderPlatformID=7, status=1)
        assert r["errCode"] == 0, r

    run_clients(scenario)


def test_rest_platform_refusal_keeps_protobuf_sessions(stack, api, im_pb2):
    """The review's repro: a REST message with senderPlatformID 2^31 made
    the protobuf push fail ([alert] out of range) and every protobuf pull
    of the conversation close 1011.  Now it is refused, and the
    conversation stays readable in protobuf."""
    pb = im_pb2
    b = uids(1)[0]
    api.register(b)
    conv = single_conv("system", b)

    async def scenario():
        cb = await PbClient(pb, stack, b, api.user_token(b)).connect()
        try:
            assert (await cb.request(1001, pb.GetMaxSeqReq())).errCode == 0
            r = rest_send(api, "/msg/send_msg", rest_msg(
                "system", b, senderPlatformID=2147483648))
            assert refused(r, "senderPlatformID"), r
            r = rest_send(api, "/msg/send_msg", rest_msg("system", b))
            assert r["errCode"] == 0, r
            push = await cb.push()
            assert [m.senderPlatformID for m in push.msgs[conv].Msgs] \
                == [10]
            r = await cb.request(1002, pb.PullMessageBySeqsReq(
                seqRanges=[pb.SeqRange(conversationID=conv, begin=1,
                                       end=10, num=10)]))
            assert r.errCode == 0, r.errMsg
            pulled = pb.PullMessageBySeqsResp()
            pulled.ParseFromString(r.data)
            assert [m.seq for m in pulled.msgs[conv].Msgs] == [1]
        finally:
            await cb.ws.close()

    run(scenario())
    # (the shared stack's log holds other tests' info lines)
    assert not [l for l in stack.log().splitlines()
                if "[alert]" in l and "out of range" in l]


def test_dedup_is_per_sender(stack, api, redis_server):
    """Defect 5: B sends clientMsgID msg-1 to A, then A sends its own
    msg-1 in the same conversation: A's message is stored with its own
    serverMsgID and seq.  A resend by either sender still returns that
    sender's first ack, on WebSocket and REST alike."""
    a, b = uids(2)
    api.register(a, b)
    conv = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        cb = await pool.connect(stack, b, api.user_token(b))
        rb = await cb.send_text(a, "from b", client_msg_id="msg-1")
        ra = await ca.send_text(b, "from a", client_msg_id="msg-1")
        assert rb["errCode"] == 0 and ra["errCode"] == 0, (rb, ra)
        assert (rb["data"]["seq"], ra["data"]["seq"]) == (1, 2)
        assert ra["data"]["serverMsgID"] != rb["data"]["serverMsgID"]
        again = await ca.send_text(b, "resent", client_msg_id="msg-1")
        assert again["data"] == ra["data"], again
        again = await cb.send_text(a, "resent", client_msg_id="msg-1")
        assert again["data"] == rb["data"], again
        r = rest_send(api, "/msg/send_msg", rest_msg(
            a, b, clientMsgID="msg-1", senderPlatformID=1))
        assert r["errCode"] == 0 and r["data"] == ra["data"], r
        r = await ca.pull(conv, 1, 10)
        msgs = r["data"]["msgs"][conv]["Msgs"]
        assert [(m["sendID"], json.loads(m["content"])["content"])
                for m in msgs] == [(b, "from b"), (a, "from a")]

    run_clients(scenario)
    for sender in (a, b):
        key = "im:{c:%s}:cmid:%s:msg-1" % (conv, sender)
        assert redis_server.cli("EXISTS", key) == "1", key


# bad contents, each with the check that refuses it
BAD_CONTENTS = (
    (101, "not json", "content must be a JSON object"),
    (101, '{"content":5}', 'content field "content"'),
    (101, "[]", "content must be a JSON object"),
    (101, "{}", '"content" or "text"'),
    (101, '{"content":""}', "content"),
    (101, '{"content":"x"', "content must be a JSON object"),
    (101, '"x"', "content must be a JSON object"),
    (102, '{"sourcePicture":{}}', "sourcePicture.url"),
    (103, '{"sourceUrl":"http://a","duration":-1}', "duration"),
    (106, '{"text":"hi","atUserList":[1]}', "atUserList[0]"),
)


def test_ws_content_checked_like_rest(stack, api, redis_server):
    """Defect 7: WebSocket 1003 stored contentType 101 with content
    "not json", {"content":5} or [].  Both surfaces now run the same
    content check: the same content gets the same 1001 errMsg."""
    a, b = uids(2)
    api.register(a, b)

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        for ctype, content, what in BAD_CONTENTS:
            r = await ca.send_text(b, "", content=content, contentType=ctype)
            assert refused(r, what), (content, r)
            assert str(ctype) in r["errMsg"], r
            try:
                obj = json.loads(content)
            except ValueError:
                continue
            if isinstance(obj, dict):
                rr = rest_send(api, "/msg/send_msg", rest_msg(
                    a, b, content=obj, contentType=ctype))
                assert rr["errCode"] == 1001, rr
                assert rr["errMsg"] == r["errMsg"], (rr, r)
        assert nothing_stored(redis_server, single_conv(a, b))
        r = await ca.send_text(b, "fine")
        assert r["errCode"] == 0 and r["data"]["seq"] == 1, r

    run_clients(scenario)


def test_string_fields_bounded(stack, api, redis_server):
    """Defect 8: every string of MsgData has a bound (docs/protocol.md);
    one byte over it is 1001 naming the field, on both surfaces."""
    a, b = uids(2)
    api.register(a, b)
    conv = single_conv(a, b)

    def cases():
        for field, n in STR_LIMITS:
            yield field, n, lambda v, f=field: {f: v}
        for field, n in PUSH_LIMITS:
            yield "offlinePushInfo." + field, n, \
                lambda v, f=field: {"offlinePushInfo": {f: v}}

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        for name, n, make in cases():
            r = await ca.send_text(b, "x", **make("y" * (n + 1)))
            assert refused(r, '"%s"' % name), (name, r)
            r = rest_send(api, "/msg/send_msg", rest_msg(
                a, b, **make("y" * (n + 1))))
            assert refused(r, '"%s"' % name), (name, r)
        assert nothing_stored(redis_server, conv)
        for name, n, make in cases():
            extra = make("y" * n)
            r = await ca.send_text(b, "x", **extra)
            assert r["errCode"] == 0, (name, r)
            extra.pop("clientMsgID", None)
            r = rest_send(api, "/msg/send_msg", rest_msg(a, b, **extra))
            assert r["errCode"] == 0, (name, r)

    run_clients(scenario)


def test_whole_msgdata_bounded(stack, api, redis_server):
    """Defect 8: the review's message (16 bytes of content, large ex,
    nickname, faceURL, offlinePushInfo and groupID) stored 61.5 KB.  It
    is refused, and so is a message whose strings together pass
    im_max_content + 16 KiB (a full content and a long @ list)."""
    a, b = uids(2)
    api.register(a, b)
    big = {"ex": "e" * 20000, "senderNickname": "n" * 10000,
           "senderFaceURL": "f" * 10000, "groupID": "g" * 5000,
           "offlinePushInfo": {"title": "t" * 3000, "desc": "d" * 3000,
                               "ex": "x" * 10000}}
    r = rest_send(api, "/msg/send_msg", rest_msg(a, b, **big))
    assert r["errCode"] == 1001, r
    at = ["user%016d" % i for i in range(1000)]
    full = {"content": "y" * (16384 - len('{"content":""}'))}
    r = rest_send(api, "/msg/send_msg", rest_msg(
        a, b, content=full, atUserIDList=at))
    assert refused(r, "MsgData"), r

    async def scenario(pool):
        ca = await pool.connect(stack, a, api.user_token(a))
        r = await ca.send_text(b, "x", **big)
        assert r["errCode"] == 1001, r
        r = await ca.send_text(b, "y" * 14000, atUserIDList=at)
        assert refused(r, "MsgData"), r
        r = await ca.send_text(b, "x", atUserIDList=["bad_id"])
        assert refused(r, '"atUserIDList[0]"'), r
        assert nothing_stored(redis_server, single_conv(a, b))
        r = await ca.send_text(b, "y" * 14000, atUserIDList=at[:100])
        assert r["errCode"] == 0, r

    run_clients(scenario)


def test_token_not_active_yet(stack, api):
    """Defect 9a: a token whose nbf is in the future is 1504 "token not
    active yet" at the handshake (401) and on REST."""
    uid = uids(1)[0]
    api.register(uid)
    now = int(time.time())
    token = make_jwt({"UserID": uid, "PlatformID": 1, "exp": now + 3600,
                      "nbf": now + 600, "iat": now})
    ws = rawws.connect(stack.port, rawws.ws_path(uid, token))
    ws.close()
    assert ws.status == 401, (ws.status, ws.body)
    assert ws.body_json() == {"errCode": 1504,
                              "errMsg": "token not active yet",
                              "errDlt": ""}
    r = api.post("/user/get_users_info", {"userIDs": [uid]}, token=token)
    assert (r["errCode"], r["errMsg"]) == (1504, "token not active yet"), r
    r = api.post("/auth/parse_token", {"token": token},
                 token=api.admin_token())
    assert (r["errCode"], r["errMsg"]) == (1504, "token not active yet"), r


def test_json_nul_in_strings_refused(stack, api):
    """Defect 9b: "a\\u0000b" registered user "a", and the secret
    "openIM123\\u0000junk" passed for the secret.  A string holding a
    NUL byte is 1001 naming its field, wherever it is read."""
    uid, b = uids(2)
    api.register(b)
    nul = "\u0000junk"
    r = api.post("/auth/get_admin_token",
                 {"secret": "openIM123" + nul, "userID": "imAdmin"})
    assert refused(r, '"secret"'), r
    r = api.post("/auth/get_admin_token",
                 {"secret": "openIM123", "userID": "imAdmin" + nul})
    assert refused(r, '"userID"'), r
    r = api.post("/user/user_register", {"users": [{"userID": uid + nul}]},
                 token=api.admin_token())
    assert refused(r, '"userID"'), r
    r = api.post("/user/get_users_info", {"userIDs": [uid]},
                 token=api.admin_token())
    assert r["data"]["usersInfo"] == [], r
    # an ID inside a list is no shorter ID either
    r = api.post("/msg/batch_send_msg", dict(rest_msg(
        "system", b), recvIDs=[b + nul]), token=api.admin_token())
    assert r["errCode"] == 0 and r["data"]["results"] == [], r
    assert r["data"]["failedUserIDs"] == [b + nul], r
    r = rest_send(api, "/msg/send_msg", rest_msg("system", b, ex="a" + nul))
    assert refused(r, '"ex"'), r

    async def scenario(pool):
        cb = await pool.connect(stack, b, api.user_token(b))
        r = await cb.send_text(b, "x", senderNickname="n" + nul)
        assert refused(r, '"senderNickname"'), r
        r = await cb.send_text(b, "x", offlinePushInfo={"title": nul})
        assert refused(r, '"offlinePushInfo.title"'), r
        r = await cb.request(1003, {"recvID": b + nul, "sessionType": 1,
                                    "contentType": 101,
                                    "content": '{"content":"x"}'})
        assert refused(r, '"recvID"'), r

    run_clients(scenario)


@pytest.mark.parametrize("upgrade,connection,ok", [
    ("websocket", "Upgrade", True),
    ("WebSocket", "keep-alive, Upgrade", True),
    ("websocket", "Upgrade ,keep-alive", True),
    ("websocket", "keep-alive,\tUPGRADE", True),
    ("h2c, websocket", "Upgrade", True),
    ("notwebsocketatall", "Upgrade", False),
    ("websocket2", "Upgrade", False),
    ("xwebsocket", "Upgrade", False),
    ("websocket/13", "Upgrade", False),
    ("websocket", "notupgrade", False),
    ("websocket", "upgrades", False),
    ("websocket", "keep-alive", False),
    ("websocket", "keep-alive upgrade", False),
    ("", "Upgrade", False),
    ("websocket", "", False),
])
def test_handshake_header_tokens(stack, api, upgrade, connection, ok):
    """Defect 9c: Upgrade and Connection were matched as substrings
    ("Upgrade: notwebsocketatall" passed).  They are token lists now:
    comma-separated, case-insensitive, whitespace around tokens."""
    uid = uids(1)[0]
    api.register(uid)
    ws = rawws.connect(stack.port, rawws.ws_path(uid, api.user_token(uid)),
                       upgrade=upgrade, connection=connection)
    ws.close()
    assert ws.status == (101 if ok else 400), (ws.status, ws.body)


def test_handshake_connection_in_two_headers(stack, api):
    """Connection given twice (a list split over header lines) counts
    as one list."""
    uid = uids(1)[0]
    api.register(uid)
    ws = rawws.connect(stack.port, rawws.ws_path(uid, api.user_token(uid)),
                       connection="keep-alive",
                       headers=[("Connection", "Upgrade")])
    ws.close()
    assert ws.status == 101, (ws.status, ws.body)
