"""The OpenIM JS SDK's wire mode (sdkType=js, isMsgResp=true).

After the 101 the SDK waits for a text frame {"errCode":0,...}; then every
request and answer is a binary frame of a JSON envelope whose "data" is
the base64 of the protobuf message (docs/protocol.md "Clients").  The
client here is python3-websockets with protobuf classes protoc generates
from im.proto, as t/test_protobuf.py does.
"""

import asyncio
import base64
import json

import pytest
import websockets

from conftest import Client, run, single_conv, uids
from test_protobuf import im_pb2  # noqa: F401 (a fixture)


def js_url(ngx, uid, token, platform=5, msg_resp=True):
    return ngx.ws_url(uid, token, platform) + "&sdkType=js" + (
        "&isMsgResp=true" if msg_resp else "")


class JsClient:
    """Frames as @openim/client-sdk 0.0.14 writes and reads them."""

    def __init__(self, pb, ngx, uid, token, platform=5):
        self.pb = pb
        self.url = js_url(ngx, uid, token, platform)
        self.uid = uid
        self.incr = 0
        self.frames = []

    async def connect(self):
        self.ws = await websockets.connect(self.url, max_queue=None,
                                           ping_interval=None)
        first = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(first, str), first
        assert json.loads(first)["errCode"] == 0
        return self

    async def send(self, req_id, msg, op="op-js", data=None):
        self.incr += 1
        if data is None:
            data = base64.b64encode(msg.SerializeToString()).decode()
        env = {"reqIdentifier": req_id, "msgIncr": "js-%d" % self.incr,
               "sendID": self.uid, "operationID": op, "data": data}
        await self.ws.send(json.dumps(env).encode())
        return "js-%d" % self.incr

    async def frame(self):
        if self.frames:
            return self.frames.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(raw, bytes), raw
        return json.loads(raw)

    async def answer(self, incr):
        """The answer to incr; the pushes met on the way stay queued."""
        seen = []
        while True:
            env = await self.frame()
            if env.get("msgIncr") == incr:
                self.frames = seen + self.frames
                return env
            seen.append(env)

    async def request(self, req_id, msg, **kw):
        return await self.answer(await self.send(req_id, msg, **kw))

    def decode(self, env, cls):
        m = cls()
        m.ParseFromString(base64.b64decode(env["data"]))
        return m


def text_msg(pb, a, b, cid, text):
    return pb.MsgData(sendID=a, recvID=b, sessionType=1, contentType=101,
                      clientMsgID=cid,
                      content=json.dumps({"content": text}).encode())


def test_js_send_echo_push_and_pull(stack, api, im_pb2):
    pb = im_pb2
    a, b = uids()
    api.register(a, b)
    conv = single_conv(a, b)

    async def scenario():
        ca = await JsClient(pb, stack, a, api.user_token(a, 5)).connect()
        cb = await JsClient(pb, stack, b, api.user_token(b, 5)).connect()

        incr = await ca.send(1003, text_msg(pb, a, b, "js-1", "hi"),
                             op="send-op-1")
        ack = await ca.answer(incr)
        assert ack["errCode"] == 0 and ack["reqIdentifier"] == 1003
        assert isinstance(ack["data"], str)
        resp = ca.decode(ack, pb.SendMsgResp)
        assert resp.clientMsgID == "js-1" and resp.serverMsgID
        assert resp.sendTime > 0

        # the echo: after the ack, on the sending connection, with the
        # send's operationID, carrying the seq
        echo = await ca.frame()
        assert echo["reqIdentifier"] == 2001
        assert echo["operationID"] == "send-op-1"
        push = ca.decode(echo, pb.PushMessages)
        assert [(m.clientMsgID, m.seq) for m in push.msgs[conv].Msgs] == [
            ("js-1", 1)]

        env = await cb.frame()
        # non-empty: the SDK sends it as the header of REST calls
        assert env["reqIdentifier"] == 2001 and env["operationID"]
        got = cb.decode(env, pb.PushMessages).msgs[conv].Msgs
        assert [m.clientMsgID for m in got] == ["js-1"]
        assert json.loads(got[0].content) == {"content": "hi"}

        # 1006 with no IDs: every conversation of the user
        r = await cb.request(1006, pb.GetConversationsHasReadAndMaxSeqReq())
        assert r["errCode"] == 0, r
        seqs = cb.decode(r, pb.GetConversationsHasReadAndMaxSeqResp)
        assert seqs.seqs[conv].maxSeq == 1

        # 1002 pull, and a text ping answered as the SDK expects
        r = await cb.request(1002, pb.PullMessageBySeqsReq(seqRanges=[
            pb.SeqRange(conversationID=conv, begin=0, end=1, num=10)]))
        assert r["errCode"] == 0, r
        pulled = cb.decode(r, pb.PullMessageBySeqsResp)
        assert [m.seq for m in pulled.msgs[conv].Msgs] == [1]

        await cb.ws.send(json.dumps({"type": "ping"}))
        pong = await asyncio.wait_for(cb.ws.recv(), 10)
        assert json.loads(pong) == {"type": "pong"}

        await ca.ws.close()
        await cb.ws.close()

    run(scenario())


def test_js_mixed_with_json_clients(stack, api, im_pb2):
    """A JSON-text sender, a JS-SDK receiver, and the reverse."""
    pb = im_pb2
    a, b = uids()
    api.register(a, b)
    conv = single_conv(a, b)

    async def scenario():
        ca = await Client(stack, a, api.user_token(a)).connect()
        cb = await JsClient(pb, stack, b, api.user_token(b, 5)).connect()
        ack = await ca.send_text(b, "from json", client_msg_id="mix-1")
        assert ack["errCode"] == 0
        env = await cb.frame()
        got = cb.decode(env, pb.PushMessages).msgs[conv].Msgs
        assert [m.clientMsgID for m in got] == ["mix-1"]

        r = await cb.request(1003, text_msg(pb, b, a, "mix-2", "from js"))
        assert r["errCode"] == 0
        push = await ca.push()
        assert [m["clientMsgID"] for m in push] == ["mix-2"]
        await ca.close()
        await cb.ws.close()

    run(scenario())


def test_js_read_receipt_is_a_notification(stack, api, im_pb2):
    """A read receipt (2200) of a single conversation comes, as OpenIM
    sends it, under the notification conversation n_<a>_<b>: in
    PushMessages.notificationMsgs for the JS SDK (it fires
    OnRecvC2CReadReceipt from there only; in msgs it would be a new
    message), under that key in msgs for a JSON client; a group's, to
    the reader's own devices, under n_<groupID>."""
    pb = im_pb2
    a, b = uids()
    api.register(a, b)
    conv = single_conv(a, b)
    note = "n_" + conv[3:]

    async def scenario():
        ca = await JsClient(pb, stack, a, api.user_token(a, 5)).connect()
        tb = api.user_token(b, 1)
        cb = await Client(stack, b, tb).connect()
        r = await ca.request(1003, text_msg(pb, a, b, "rr-1", "read me"))
        assert r["errCode"] == 0, r
        assert (await ca.frame())["reqIdentifier"] == 2001   # the echo
        assert [m["clientMsgID"] for m in await cb.push()] == ["rr-1"]

        r = api.post("/msg/mark_conversation_as_read",
                     {"conversationID": conv, "userID": b,
                      "hasReadSeq": 1, "seqs": [1]}, token=tb)
        assert r["errCode"] == 0, r

        env = await ca.frame()
        assert env["reqIdentifier"] == 2001, env
        push = ca.decode(env, pb.PushMessages)
        assert list(push.msgs) == [] and list(push.notificationMsgs) == [
            note], push
        m, = push.notificationMsgs[note].Msgs
        assert (m.contentType, m.seq, m.sendID, m.recvID,
                m.sessionType) == (2200, 0, b, a, 1)
        detail = json.loads(json.loads(m.content)["detail"])
        assert (detail["markAsReadUserID"], detail["conversationID"],
                detail["seqs"]) == (b, conv, [1])

        # b's own device: the same notification, in msgs (JSON mode)
        await cb._read_one(10)
        frame = cb.pushes.pop(0)
        assert list(frame["data"]["msgs"]) == [note], frame

        # in a group, b's own devices are told, under n_<groupID>
        r = api.post("/group/create_group", {
            "ownerUserID": a, "memberUserIDs": [b],
            "groupInfo": {"groupName": "rr"}}, token=api.admin_token())
        assert r["errCode"] == 0, r
        gid = r["data"]["groupInfo"]["groupID"]
        frame = await cb._read_one(10)          # the creation notice
        assert list(frame["data"]["msgs"]) == ["sg_" + gid], frame
        cb.pushes.pop(0)
        r = api.post("/msg/mark_conversation_as_read",
                     {"conversationID": "sg_" + gid, "userID": b,
                      "hasReadSeq": 1, "seqs": [1]}, token=tb)
        assert r["errCode"] == 0, r
        frame = await cb._read_one(10)
        m, = frame["data"]["msgs"]["n_" + gid]
        assert (m["contentType"], m["seq"], m["sessionType"],
                m["groupID"]) == (2200, 0, 3, gid), m
        await ca.ws.close()
        await cb.close()

    run(scenario())


def test_pull_by_seqs_skips_seqs_below_one(stack, api):
    """1005 skips seqs <= 0 as OpenIM does: the JS SDK asks for the seqs
    from its hasReadSeq, which is -1 when a typing message (seq 0) made
    the conversation known to it, when it marks the conversation read."""
    a, b = uids()
    api.register(a, b)
    conv = single_conv(a, b)

    async def scenario():
        ca = await Client(stack, a, api.user_token(a)).connect()
        cb = await Client(stack, b, api.user_token(b)).connect()
        assert (await ca.send_text(b, "one"))["errCode"] == 0
        r = await cb.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [-1, 0, 1]}]})
        assert r["errCode"] == 0, r
        assert [m["seq"] for m in r["data"]["msgs"][conv]["Msgs"]] == [1]
        r = await cb.request(1005, {"conversations": [
            {"conversationID": conv, "seqs": [-5, -1]}]})
        assert r["errCode"] == 0, r
        assert (r["data"]["msgs"].get(conv) or {}).get("Msgs") in (None, [])
        await ca.close()
        await cb.close()

    run(scenario())


def test_js_unstored_group_note_is_a_notification(stack, api, im_pb2):
    """A group notice told to single users and never stored (seq 0, here
    the 1503 join application to the owner, under sg_<groupID>) comes in
    notificationMsgs for the JS SDK, which lists everything in msgs as a
    message; stored group notices (seq > 0) stay in msgs."""
    pb = im_pb2
    a, b = uids()
    api.register(a, b)

    async def scenario():
        ca = await JsClient(pb, stack, a, api.user_token(a, 5)).connect()
        r = api.post("/group/create_group", {
            "ownerUserID": a, "memberUserIDs": [],
            "groupInfo": {"groupName": "ask", "needVerification": 1}},
            token=api.admin_token())
        assert r["errCode"] == 0, r
        gid = r["data"]["groupInfo"]["groupID"]

        r = api.post("/group/join_group", {"groupID": gid,
                                           "reqMessage": "let me in"},
                     token=api.user_token(b, 1))
        assert r["errCode"] == 0, r
        # the creation notice (1501, stored: seq 1, in msgs) may come
        # first, or not at all: the owner's worker subscribes the group's
        # channel as the group is made
        for _ in range(3):
            env = await ca.frame()
            assert env["reqIdentifier"] == 2001, env
            push = ca.decode(env, pb.PushMessages)
            if push.notificationMsgs:
                break
            created, = push.msgs["sg_" + gid].Msgs
            assert (created.contentType, created.seq) == (1501, 1)
        assert list(push.msgs) == [], push
        m, = push.notificationMsgs["sg_" + gid].Msgs
        assert (m.contentType, m.seq, m.sendID) == (1503, 0, b)
        await ca.ws.close()

    run(scenario())


def test_js_bad_frames_get_errors(stack, api, im_pb2):
    pb = im_pb2
    a, b = uids()
    api.register(a, b)

    async def scenario():
        c = await JsClient(pb, stack, a, api.user_token(a, 5)).connect()
        for data in ["not base64!", "QQ", "////"]:
            r = await c.request(1003, None, data=data)
            assert r["errCode"] == 1001, (data, r)
            assert r["errMsg"]
        # not JSON at all, in a binary frame
        await c.ws.send(b"\x08\x01garbage")
        r = await c.frame()
        assert r["errCode"] == 1001
        # data of the wrong shape: a GetMaxSeqReq where MsgData belongs
        r = await c.request(1003, pb.SeqRange(conversationID="x", begin=5))
        assert r["errCode"] != 0
        # another user's sendID in MsgData
        r = await c.request(1003, text_msg(pb, b, a, "x-1", "spoof"))
        assert r["errCode"] == 1002
        # unknown reqIdentifier
        r = await c.request(4242, pb.GetMaxSeqReq())
        assert r["errCode"] == 1001 and r["reqIdentifier"] == 4242
        # the session still works
        r = await c.request(1003, text_msg(pb, a, b, "x-2", "fine"))
        assert r["errCode"] == 0
        await c.ws.close()

    run(scenario())


@pytest.mark.parametrize("case", ["bad", "kicked", "mismatch"])
def test_js_refused_login_is_a_frame(stack, api, case):
    """isMsgResp=true: a refused login is upgraded, answered with the
    error as the text frame, and closed (the SDK reads token errors
    only from it)."""
    a, b = uids()
    api.register(a, b)
    token = api.user_token(a, 5)
    want = {"bad": 1502, "kicked": 1506, "mismatch": 1502}[case]
    if case == "bad":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA")
                              else "BBBB")
    elif case == "kicked":
        r = api.post("/auth/force_logout", {"userID": a, "platformID": 5},
                     token=api.admin_token())
        assert r["errCode"] == 0, r
    else:
        token = api.user_token(b, 5)

    async def scenario():
        ws = await websockets.connect(js_url(stack, a, token),
                                      ping_interval=None)
        first = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(first, str)
        err = json.loads(first)
        assert err["errCode"] == want, err
        assert err["errMsg"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)

    run(scenario())


def test_refused_login_without_msg_resp_stays_http(stack, api):
    a, = uids(1)
    api.register(a)
    url = js_url(stack, a, "x.y.z", msg_resp=False)

    async def scenario():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await websockets.connect(url)
        assert e.value.status_code == 401

    run(scenario())
