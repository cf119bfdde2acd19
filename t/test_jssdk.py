"""The OpenIM JS SDK's protobuf REST routes (docs/api.md, "JS SDK"):
/jssdk/get_active_conversations and /jssdk/get_conversations.  The body
is a protobuf request sent as the SDK sends it (Content-Type
application/x-protobuf); the answer is the JSON wrapper whose "data" is
base64 of the protobuf response, decoded here with classes protoc makes
from im.proto.  Checked: every ConversationMsg field the SDK reads (the
record, lastMsg, maxSeq, readSeq after a mark-as-read, the peer's
profile and friend remark, the group's name), the order, unreadCount;
bad bodies, counts out of range, another user's ID (1001, 1002).
"""
import base64
import importlib
import json
import os
import subprocess
import sys
import time
import uuid

import shutil

import pytest

from conftest import ROOT, single_conv, uids

PB_DIR = os.path.join(ROOT, "build/py")
REST = 3
PB = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def pb():
    os.makedirs(PB_DIR, exist_ok=True)
    subprocess.run(["protoc", "--python_out=" + PB_DIR,
                    "--proto_path=" + os.path.join(ROOT, "ngx_im_module"),
                    "im.proto"], check=True)
    sys.path.insert(0, PB_DIR)
    return importlib.reload(importlib.import_module("im_pb2"))


def ok(r):
    assert r["errCode"] == 0, r
    return r["data"]


def call(api, token, path, msg=None, raw=None):
    body = raw if raw is not None else msg.SerializeToString()
    return api.post(path, None, token=token, raw=body, headers=PB)


def decode(resp_cls, r):
    data = ok(r)
    assert isinstance(data, str), r
    out = resp_cls()
    out.ParseFromString(base64.b64decode(data))
    return out


def wait(pred, what, timeout=5.0):
    end = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class World:
    """a, b, c registered with nicknames; a and b friends (a's remark for
    b "bestie"); a group of a, b, c; a text b -> a, a text in the group."""

    def __init__(self, api):
        self.api = api
        self.a, self.b, self.c = uids(3, "js")
        adm = api.admin_token()
        ok(api.post("/user/user_register", {"users": [
            {"userID": u, "nickname": "nick-" + u, "faceURL": "f/" + u}
            for u in (self.a, self.b, self.c)]}, token=adm))
        self.tok = {u: api.user_token(u, REST)
                    for u in (self.a, self.b, self.c)}
        ok(api.post("/friend/import_friend", {
            "ownerUserID": self.a, "friendUserIDs": [self.b]}, token=adm))
        ok(api.post("/friend/set_friend_remark", {
            "ownerUserID": self.a, "friendUserID": self.b,
            "remark": "bestie"}, token=self.tok[self.a]))
        self.gid = "g" + uuid.uuid4().hex[:12]
        ok(api.post("/group/create_group", {
            "ownerUserID": self.a, "memberUserIDs": [self.b, self.c],
            "adminUserIDs": [], "groupInfo": {"groupID": self.gid,
                                              "groupName": "the team",
                                              "faceURL": "gf"}},
            token=adm))
        self.single = single_conv(self.a, self.b)
        self.group = "sg_" + self.gid
        wait(lambda: self.max_seq(self.a, self.group) >= 1, "group notice")
        self.s1 = self.send(self.b, self.a, "hello a", 1)
        # conversations are listed by their last message's sendTime (ms):
        # two sends in one millisecond would tie
        time.sleep(0.01)
        self.s2 = self.send(self.c, self.gid, "hi team", 3)

    def send(self, who, to, text, session):
        body = {"sendID": who, "senderPlatformID": 1,
                "content": {"content": text}, "contentType": 101,
                "sessionType": session}
        body["recvID" if session == 1 else "groupID"] = to
        return ok(self.api.post("/msg/send_msg", body,
                                token=self.api.admin_token()))

    def max_seq(self, uid, conv):
        seqs = ok(self.api.post(
            "/msg/get_conversations_has_read_and_max_seq",
            {"userID": uid, "conversationIDs": [conv]},
            token=self.tok[uid]))["seqs"]
        return seqs.get(conv, {}).get("maxSeq", 0)


@pytest.fixture
def world(stack, api):
    return World(api)


def by_id(resp):
    return {m.conversation.conversationID: m for m in resp.conversations}


def content(m):
    return json.loads(m.lastMsg.content.decode())["content"]


def test_active_conversations(world, api, pb):
    w = world
    req = pb.GetActiveConversationsReq(ownerUserID=w.a, count=20)
    resp = decode(pb.GetActiveConversationsResp,
                  call(api, w.tok[w.a], "/jssdk/get_active_conversations",
                       req))
    got = by_id(resp)
    assert {w.single, w.group} <= set(got), got.keys()

    # the newest message first (the group text was sent last)
    order = [m.conversation.conversationID for m in resp.conversations]
    assert order.index(w.group) < order.index(w.single), order

    s = got[w.single]
    assert s.conversation.ownerUserID == w.a
    assert s.conversation.conversationType == 1
    assert s.conversation.userID == w.b
    assert s.maxSeq == w.s1["seq"] == s.lastMsg.seq
    assert s.readSeq == 0
    assert s.lastMsg.sendID == w.b and s.lastMsg.recvID == w.a
    assert s.lastMsg.clientMsgID == w.s1["clientMsgID"]
    assert s.lastMsg.serverMsgID == w.s1["serverMsgID"]
    assert s.lastMsg.contentType == 101 and content(s) == "hello a"
    assert s.user.userID == w.b and s.user.nickname == "nick-" + w.b
    assert s.user.faceURL == "f/" + w.b
    assert s.friend.friendUserID == w.b and s.friend.remark == "bestie"
    assert s.friend.ownerUserID == w.a
    assert not s.HasField("group")

    g = got[w.group]
    assert g.conversation.conversationType == 3
    assert g.conversation.groupID == w.gid
    assert g.maxSeq == w.s2["seq"] == g.lastMsg.seq
    assert content(g) == "hi team" and g.lastMsg.sendID == w.c
    assert g.group.groupID == w.gid and g.group.groupName == "the team"
    assert g.group.faceURL == "gf" and g.group.memberCount == 3
    assert not g.HasField("user") and not g.HasField("friend")

    # unread: OpenIM's total over the user's conversations, the sorted
    # list's unreadTotal; the SDK's own per-conversation count
    total = ok(api.post("/conversation/get_sorted_conversation_list",
                        {"userID": w.a, "conversationIDs": []},
                        token=w.tok[w.a]))["unreadTotal"]
    assert resp.unreadCount == total >= 2, (resp.unreadCount, total)
    assert s.maxSeq - s.readSeq == 1

    # count bounds the page
    one = decode(pb.GetActiveConversationsResp,
                 call(api, w.tok[w.a], "/jssdk/get_active_conversations",
                      pb.GetActiveConversationsReq(ownerUserID=w.a,
                                                   count=1)))
    assert [m.conversation.conversationID for m in one.conversations] \
        == order[:1]

    # count 0 is OpenIM's default (100), ownerUserID empty is the caller
    dflt = decode(pb.GetActiveConversationsResp,
                  call(api, w.tok[w.a], "/jssdk/get_active_conversations",
                       pb.GetActiveConversationsReq()))
    assert [m.conversation.conversationID for m in dflt.conversations] \
        == order


def test_a_user_without_conversations(stack, api, pb):
    (u,) = uids(1, "js")
    api.register(u)
    t = api.user_token(u, REST)
    resp = decode(pb.GetActiveConversationsResp,
                  call(api, t, "/jssdk/get_active_conversations",
                       pb.GetActiveConversationsReq(ownerUserID=u,
                                                    count=20)))
    assert len(resp.conversations) == 0 and resp.unreadCount == 0
    # an empty body is every field's default: the caller, count 100
    r = call(api, t, "/jssdk/get_active_conversations", raw=b"")
    assert len(decode(pb.GetActiveConversationsResp, r).conversations) == 0
    resp = decode(pb.GetConversationsResp,
                  call(api, t, "/jssdk/get_conversations",
                       pb.GetConversationsReq(ownerUserID=u,
                                              conversationIDs=[
                                                  single_conv(u, "x")])))
    assert len(resp.conversations) == 0


def test_read_seq_after_mark_as_read(world, api, pb):
    w = world
    ok(api.post("/msg/mark_conversation_as_read", {
        "conversationID": w.single, "userID": w.a,
        "hasReadSeq": w.s1["seq"], "seqs": []}, token=w.tok[w.a]))
    req = pb.GetConversationsReq(ownerUserID=w.a,
                                 conversationIDs=[w.single, w.group])
    resp = decode(pb.GetConversationsResp,
                  call(api, w.tok[w.a], "/jssdk/get_conversations", req))
    assert [m.conversation.conversationID for m in resp.conversations] \
        == [w.single, w.group]
    s, g = resp.conversations
    assert s.readSeq == s.maxSeq == w.s1["seq"]
    assert s.user.nickname == "nick-" + w.b and s.friend.remark == "bestie"
    assert g.group.groupName == "the team" and content(g) == "hi team"
    assert resp.unreadCount == g.maxSeq - g.readSeq

    # b sees a without a friend record of its own
    req = pb.GetConversationsReq(ownerUserID=w.b,
                                 conversationIDs=[w.single])
    resp = decode(pb.GetConversationsResp,
                  call(api, w.tok[w.b], "/jssdk/get_conversations", req))
    (m,) = resp.conversations
    assert m.conversation.userID == w.a and m.user.nickname == "nick-" + w.a
    assert m.readSeq == w.s1["seq"]          # b's own message
    assert content(m) == "hello a"

    # the admin may name any owner; unknown IDs are left out
    req = pb.GetConversationsReq(ownerUserID=w.c, conversationIDs=[
        w.group, single_conv(w.c, "nobody")])
    resp = decode(pb.GetConversationsResp,
                  call(api, api.admin_token(), "/jssdk/get_conversations",
                       req))
    assert [m.conversation.conversationID for m in resp.conversations] \
        == [w.group]


SDK_PROTOCOL = os.environ.get("IM_SDK_PROTOCOL")   # @openim/protocol dir
DECODE_JS = """
const { PbCoder } = require(process.argv[1]);
const raw = Buffer.from(require('fs').readFileSync(0, 'utf8'), 'base64');
const d = PbCoder[process.argv[2]].decode(new Uint8Array(raw));
console.log(JSON.stringify(d, (k, v) => v instanceof Uint8Array
                                   ? Buffer.from(v).toString() : v));
"""


@pytest.mark.skipif(not SDK_PROTOCOL or not shutil.which("node"),
                    reason="IM_SDK_PROTOCOL (the SDK's @openim/protocol) "
                           "and node not given")
def test_the_sdk_decodes_the_answer(world, api, pb):
    """The SDK's own decoder (protobufjs code of @openim/protocol) reads
    the server's answer to the SDK's own request bytes."""
    w = world
    req = pb.GetActiveConversationsReq(ownerUserID=w.a, count=20)
    data = ok(call(api, w.tok[w.a], "/jssdk/get_active_conversations",
                   req))
    out = subprocess.run(["node", "-e", DECODE_JS, SDK_PROTOCOL,
                          "GetActiveConversationsResp"], input=data,
                         capture_output=True, text=True, check=True)
    got = {c["conversation"]["conversationID"]: c
           for c in json.loads(out.stdout)["conversations"]}
    s, g = got[w.single], got[w.group]
    assert s["user"]["nickname"] == "nick-" + w.b
    assert s["friend"]["remark"] == "bestie"
    assert s["maxSeq"] == s["lastMsg"]["seq"] == w.s1["seq"]
    assert json.loads(s["lastMsg"]["content"]) == {"content": "hello a"}
    assert g["group"]["groupName"] == "the team"
    assert g["lastMsg"]["sendID"] == w.c


def code(r):
    return r["errCode"]


def test_errors(world, api, pb):
    w = world
    t = w.tok[w.a]
    for path in ("/jssdk/get_active_conversations",
                 "/jssdk/get_conversations"):
        # not protobuf: a truncated field, a JSON body
        r = call(api, t, path, raw=b"\x0a\x10abc")
        assert code(r) == 1001 and "protobuf" in r["errMsg"], r
        r = call(api, t, path, raw=b'{"ownerUserID":"x"}')
        assert code(r) == 1001, r

    # someone else's user ID
    r = call(api, t, "/jssdk/get_active_conversations",
             pb.GetActiveConversationsReq(ownerUserID=w.b, count=10))
    assert code(r) == 1002, r
    r = call(api, t, "/jssdk/get_conversations",
             pb.GetConversationsReq(ownerUserID=w.b,
                                    conversationIDs=[w.single]))
    assert code(r) == 1002, r
    # a conversation of others
    r = call(api, t, "/jssdk/get_conversations",
             pb.GetConversationsReq(ownerUserID=w.a, conversationIDs=[
                 single_conv(w.b, w.c)]))
    assert code(r) == 1002, r

    # counts out of range; ID lists out of range
    for n in (-1, 1001, 1 << 40):
        r = call(api, t, "/jssdk/get_active_conversations",
                 pb.GetActiveConversationsReq(ownerUserID=w.a, count=n))
        assert code(r) == 1001 and "count" in r["errMsg"], (n, r)
    r = call(api, t, "/jssdk/get_active_conversations",
             pb.GetActiveConversationsReq(ownerUserID=w.a, count=1000))
    assert code(r) == 0, r
    for ids in ([], [w.single] * 1001):
        r = call(api, t, "/jssdk/get_conversations",
                 pb.GetConversationsReq(ownerUserID=w.a,
                                        conversationIDs=ids))
        assert code(r) == 1001, (len(ids), r)

    # no token
    r = api.post("/jssdk/get_conversations", None, raw=b"", headers=PB)
    assert code(r) == 1507 or code(r) >= 1500, r
