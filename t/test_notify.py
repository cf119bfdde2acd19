"""Notifications and messages sent through REST, and what follows them.

- the seed request (send_msg_example.json, embedded verbatim below) on
  /manager/send_msg: online recipients get the 1400 push with the seed's
  fields intact, offline ones find it in sn_<sendID>_<recvID> by pull;
- /msg/send_msg (OpenIM v3): sessionTypes, msgFrom 200, content checks;
- /msg/batch_send_msg to 1,000 users, unknown ones in failedUserIDs;
- force_logout of a user connected to the other nginx host;
- isOnlineOnly, online and offline;
- offline-push jobs on the im:push stream: class, title, device tokens;
  none when the recipient is online or offline push is off.
"""

import asyncio
import base64
import copy
import http.client
import json
import os
import random
import re
import socket
import time

import pytest
import redis as pyredis
import websockets

from conftest import CLUSTER, channel, Api, Client, run, single_conv, uids


# A verbatim copy of ../shared/reference/send_msg_example.json (the tests
# must not read ../shared at run time).
SEED_JSON = r'''{
  "operationID": "Oa notification operationID111",
  "sendID": "openIM123456",
  "recvID": "18712345678",
  "senderPlatformID": 2,
  "senderFaceURL": "http://www.head.com",
  "senderNickname": "系统通知2",
  "content": {
    "notificationName": "公文管理",
    "notificationFaceURL": "http://www.head1.com",
    "notificationType": 1,
    "text": "大家好,今天是...",
    "externalUrl": "",
    "mixType": 0,
    "pictureElem": {
      "sourcePath": "",
      "sourcePicture": {
        "uuid": "",
        "type": "",
        "size": 0,
        "width": 0,
        "height": 0,
        "url": ""
      },
      "bigPicture": {
        "uuid": "",
        "type": "",
        "size": 0,
        "width": 0,
        "height": 0,
        "url": ""
      },
      "snapshotPicture": {
        "uuid": "",
        "type": "",
        "size": 0,
        "width": 0,
        "height": 0,
        "url": ""
      }
    },
    "soundElem": {
      "uuid": "",
      "soundPath": "",
      "sourceUrl": "",
      "dataSize": 0,
      "duration": 0
    },
    "videoElem": {
      "videoPath": "",
      "videoUUID": "",
      "videoUrl": "",
      "videoType": "",
      "videoSize": 0,
      "duration": 0,
      "snapshotPath": "",
      "snapshotUUID": "",
      "snapshotSize": 0,
      "snapshotUrl": "",
      "snapshotWidth": 0,
      "snapshotHeight": 0
    },
    "fileElem": {
      "filePath": "",
      "uuid": "",
      "sourceUrl": "",
      "fileName": "",
      "fileSize": 0
    },
    "ex": ""
  },
  "contentType": 1400,
  "sessionType": 4,
  "isOnlineOnly": false,
  "offlinePushInfo": {
    "title": "admin revoke your message",
    "desc": "",
    "ex": "",
    "iOSPushSound": "default",
    "iOSBadgeCount": false
  }
}'''
SEED = json.loads(SEED_JSON)
SEED_SENDER = "openIM123456"


# ---------------------------------------------------------------------------
# helpers


def phone_id():
    """A fresh phone-number-like user ID, as in the seed."""
    return "187%08d" % random.randrange(10 ** 8)


def seed_for(recv):
    """The seed request, verbatim but for recvID."""
    body = copy.deepcopy(SEED)
    body["recvID"] = recv
    return body


def redis_client(redis_server):
    return pyredis.Redis(host="127.0.0.1", port=redis_server.port)


def jobs_for(redis_server, recv):
    """The im:push jobs for recv, oldest first.  Fields are decoded with
    "replace", so one job with bad bytes cannot break the others' tests."""
    r = redis_client(redis_server)
    out = []
    for _, f in r.xrange("im:push"):
        f = {k.decode(errors="replace"): v.decode(errors="replace")
             for k, v in f.items()}
        if f.get("recvID") == recv:
            out.append(f)
    return out


def wait_jobs(redis_server, recv, n, timeout=3.0):
    end = time.time() + timeout
    while True:
        jobs = jobs_for(redis_server, recv)
        if len(jobs) >= n or time.time() > end:
            return jobs
        time.sleep(0.02)


def no_jobs_after(redis_server, recv, settle=0.5):
    """Waits for a late job to show up, then returns all of recv's."""
    time.sleep(settle)
    return jobs_for(redis_server, recv)


def wait_presence(redis_server, uid, n, timeout=3.0):
    """Waits for uid's n presence entries: a session writes its entry just
    after its 101, and a send before that counts the user as landing."""
    key = "im:{u:%s}:online" % uid
    r = key_client(redis_server, key)
    end = time.time() + timeout
    while r.hlen(key) != n and time.time() < end:
        time.sleep(0.01)
    assert r.hlen(key) == n
    return r


def key_client(redis_server, key):
    """A client of the Redis (the cluster master) that holds key."""
    port = redis_server.port
    if CLUSTER:
        c = redis_server.cluster
        port = c.master_of_slot(c.slot_of(key))
    return pyredis.Redis(host="127.0.0.1", port=port)


def subscribers(redis_server, uid):
    out = redis_server.cli("PUBSUB", "SHARDNUMSUB" if CLUSTER else "NUMSUB",
                           channel(uid)).split()
    return int(out[1])


def wait_offline(redis_server, uid, timeout=3.0):
    """Until no worker of any host is subscribed to uid's channel."""
    end = time.time() + timeout
    while subscribers(redis_server, uid) and time.time() < end:
        time.sleep(0.02)
    assert subscribers(redis_server, uid) == 0


def metric(ngx, name):
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=10)
    try:
        conn.request("GET", "/im/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric %s" % name)


def send_v3(api, recv, content=None, path="/msg/send_msg", **extra):
    body = {"sendID": "system", "recvID": recv, "senderNickname": "Ops",
            "senderFaceURL": "http://ops/face.png", "senderPlatformID": 10,
            "content": {"content": "hello"} if content is None else content,
            "contentType": 101,
            "sessionType": 1, "isOnlineOnly": False, "notOfflinePush": False,
            "offlinePushInfo": {"title": "", "desc": "", "ex": "",
                                "iOSPushSound": "", "iOSBadgeCount": False},
            "ex": ""}
    body.update(extra)
    return api.post(path, body, token=api.admin_token())


def ws_handshake(ngx, uid, token, platform):
    """A raw upgrade request: (HTTP status, JSON body or None)."""
    path = "/im/ws?sendID=%s&token=%s&platformID=%d&operationID=op" % (
        uid, token, platform)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: %s\r\n\r\n" % (path, key)).encode()
    with socket.create_connection(("127.0.0.1", ngx.port), 5) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status == 101:
            return status, None
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, json.loads(rest[:n]) if n else None


async def push_frame(c, timeout=5):
    """The next 2001 push, whole: {conversationID: [MsgData]}."""
    end = time.time() + timeout
    while not c.pushes:
        await c._read_one(max(0.01, end - time.time()))
    return c.pushes.pop(0)["data"]["msgs"]


async def quiet(c, seconds=0.4):
    """True when nothing arrives on c for that long."""
    try:
        frame = await asyncio.wait_for(c.ws.recv(), seconds)
    except asyncio.TimeoutError:
        return True
    raise AssertionError("unexpected frame: %s" % frame[:300])


async def expect_kick(c, timeout=5):
    """The next frame is a 2002, then the server closes with 1000."""
    frame = json.loads(await asyncio.wait_for(c.ws.recv(), timeout))
    assert frame["reqIdentifier"] == 2002, frame
    assert frame["errCode"] == 0
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await asyncio.wait_for(c.ws.recv(), timeout)
    assert c.ws.close_code == 1000, c.ws.close_code


# ---------------------------------------------------------------------------
# the seed request, /manager/send_msg


def test_seed_embedded_verbatim():
    """The embedded copy is the seed: the fields the other tests rely on."""
    assert SEED["sendID"] == SEED_SENDER
    assert SEED["contentType"] == 1400 and SEED["sessionType"] == 4
    assert SEED["content"]["mixType"] == 0
    assert SEED["offlinePushInfo"]["title"] == "admin revoke your message"
    assert SEED["senderNickname"] == "系统通知2"


def test_seed_online_recipient(stack, stack2, api):
    recv = phone_id()
    api.register(recv)
    tok = api.user_token(recv, 2)
    conv = "sn_%s_%s" % (SEED_SENDER, recv)

    async def scenario():
        # the recipient is on the other host
        c = await Client(stack2, recv, tok, 2).connect()
        r = api.post("/manager/send_msg", seed_for(recv),
                     token=api.admin_token())
        assert r["errCode"] == 0, r
        assert r["errMsg"] == ""
        ack = r["data"]
        assert set(ack) >= {"serverMsgID", "clientMsgID", "sendTime", "seq"}
        assert ack["seq"] == 1
        assert abs(ack["sendTime"] - time.time() * 1000) < 10000
        assert ack["serverMsgID"] and ack["clientMsgID"]

        msgs = await push_frame(c)
        assert list(msgs) == [conv]
        assert len(msgs[conv]) == 1
        m = msgs[conv][0]
        assert m["sendID"] == SEED_SENDER
        assert m["recvID"] == recv
        assert m["groupID"] == ""
        assert m["sessionType"] == 4
        assert m["contentType"] == 1400
        assert m["msgFrom"] == 200
        assert m["senderNickname"] == SEED["senderNickname"]
        assert m["senderFaceURL"] == SEED["senderFaceURL"]
        assert m["senderPlatformID"] == SEED["senderPlatformID"]
        assert isinstance(m["content"], str)
        assert json.loads(m["content"]) == SEED["content"]
        assert m["offlinePushInfo"] == SEED["offlinePushInfo"]
        assert m["seq"] == 1
        assert m["serverMsgID"] == ack["serverMsgID"]
        assert m["clientMsgID"] == ack["clientMsgID"]
        assert m["sendTime"] == ack["sendTime"]
        assert m["status"] == 2

        # the pull gives the same message
        p = await c.pull(conv, 1, 10)
        assert p["errCode"] == 0, p
        got = p["data"]["msgs"][conv]["Msgs"]
        assert len(got) == 1
        assert got[0] == m
        await c.close()

    run(scenario())


def test_seed_offline_recipient(stack, api, redis_server):
    recv = phone_id()
    api.register(recv)
    conv = "sn_%s_%s" % (SEED_SENDER, recv)
    r = api.post("/manager/send_msg", seed_for(recv),
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    ack = r["data"]
    assert ack["seq"] == 1
    # a second post of the seed is a second message (no clientMsgID)
    r2 = api.post("/manager/send_msg", seed_for(recv),
                  token=api.admin_token())
    assert r2["errCode"] == 0, r2
    assert r2["data"]["seq"] == 2
    assert r2["data"]["serverMsgID"] != ack["serverMsgID"]

    jobs = wait_jobs(redis_server, recv, 2)
    assert len(jobs) == 2, jobs
    j = jobs[0]
    assert j["sendID"] == SEED_SENDER
    assert j["conversationID"] == conv
    assert j["seq"] == "1"
    assert j["serverMsgID"] == ack["serverMsgID"]
    assert j["contentType"] == "1400"
    assert j["sessionType"] == "4"
    assert j["class"] == "notification"
    assert j["title"] == "admin revoke your message"
    assert j["desc"] == "" and j["ex"] == ""
    assert j["platforms"] == "" and json.loads(j["tokens"]) == {}
    assert jobs[1]["seq"] == "2"

    tok = api.user_token(recv, 1)

    async def scenario():
        c = await Client(stack, recv, tok, 1).connect()
        n = await c.newest()
        assert n["errCode"] == 0, n
        assert n["data"]["maxSeqs"][conv] == 2
        p = await c.pull(conv, 1, 2)
        assert p["errCode"] == 0, p
        got = p["data"]["msgs"][conv]["Msgs"]
        assert [m["seq"] for m in got] == [1, 2]
        m = got[0]
        assert m["serverMsgID"] == ack["serverMsgID"]
        assert m["clientMsgID"] == ack["clientMsgID"]
        assert (m["sendID"], m["recvID"]) == (SEED_SENDER, recv)
        assert (m["sessionType"], m["contentType"], m["msgFrom"]) == \
            (4, 1400, 200)
        assert m["senderNickname"] == "系统通知2"
        assert m["senderFaceURL"] == "http://www.head.com"
        assert json.loads(m["content"]) == SEED["content"]
        assert m["offlinePushInfo"] == SEED["offlinePushInfo"]
        assert await quiet(c, 0.2)
        await c.close()

    run(scenario())


def test_seed_errors(api):
    unknown = phone_id()
    r = api.post("/manager/send_msg", seed_for(unknown),
                 token=api.admin_token())
    assert r["errCode"] == 1101, r
    recv = phone_id()
    api.register(recv)
    u = uids(1, "st")[0]
    api.register(u)
    # a user token is not enough
    r = api.post("/manager/send_msg", seed_for(recv),
                 token=api.user_token(u, 1))
    assert r["errCode"] == 1002, r
    # mixType 1, 2, 3 with the seed's empty elems: the selected elem's URL
    for mix, field in ((1, "pictureElem.sourcePicture.url"),
                       (2, "videoElem.videoUrl"), (3, "fileElem.sourceUrl")):
        body = seed_for(recv)
        body["content"]["mixType"] = mix
        r = api.post("/manager/send_msg", body, token=api.admin_token())
        assert r["errCode"] == 1001, r
        assert field in r["errMsg"] and "mixType %d" % mix in r["errMsg"], r
    # without notificationName
    body = seed_for(recv)
    del body["content"]["notificationName"]
    r = api.post("/manager/send_msg", body, token=api.admin_token())
    assert r["errCode"] == 1001 and "notificationName" in r["errMsg"], r
    # mixType out of range
    body = seed_for(recv)
    body["content"]["mixType"] = 4
    r = api.post("/manager/send_msg", body, token=api.admin_token())
    assert r["errCode"] == 1001 and "mixType" in r["errMsg"], r
    # nothing was stored by the refused ones
    r = api.post("/manager/send_msg", seed_for(recv), token=api.admin_token())
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r


# ---------------------------------------------------------------------------
# /msg/send_msg (OpenIM v3)


def test_send_msg_single_online(stack, api):
    a, b = uids(2, "sm")
    api.register(a, b)
    ta, tb = api.user_token(a, 1), api.user_token(b, 2)
    conv = single_conv(a, b)

    async def scenario():
        ca = await Client(stack, a, ta, 1).connect()
        cb = await Client(stack, b, tb, 2).connect()
        # a REST message "from" a: b gets it, and so does a's session
        r = send_v3(api, b, sendID=a, senderNickname="Alice",
                    offlinePushInfo={"title": "T", "desc": "D", "ex": "X",
                                     "iOSPushSound": "s",
                                     "iOSBadgeCount": True})
        assert r["errCode"] == 0, r
        ack = r["data"]
        assert ack["seq"] == 1
        mb = await push_frame(cb)
        ma = await push_frame(ca)
        assert list(mb) == [conv] and list(ma) == [conv]
        m = mb[conv][0]
        assert ma[conv][0] == m
        assert (m["sendID"], m["recvID"], m["sessionType"]) == (a, b, 1)
        assert m["msgFrom"] == 200
        assert m["contentType"] == 101
        assert json.loads(m["content"]) == {"content": "hello"}
        assert m["senderNickname"] == "Alice"
        assert m["senderFaceURL"] == "http://ops/face.png"
        assert m["offlinePushInfo"] == {"title": "T", "desc": "D",
                                        "ex": "X", "iOSPushSound": "s",
                                        "iOSBadgeCount": True}
        assert m["serverMsgID"] == ack["serverMsgID"]
        assert m["seq"] == 1

        # the same conversation over WebSocket: same MsgData shape, seq 2
        wack = await ca.send_text(b, "over ws")
        assert wack["errCode"] == 0 and wack["data"]["seq"] == 2, wack
        w = (await push_frame(cb))[conv][0]
        assert set(w) == set(m)
        assert w["msgFrom"] == 100 and w["seq"] == 2

        # the seed's text form
        r = send_v3(api, b, content={"text": "seed form"}, sendID=a)
        assert r["errCode"] == 0 and r["data"]["seq"] == 3, r
        t = (await push_frame(cb))[conv][0]
        assert json.loads(t["content"]) == {"text": "seed form"}
        # a's session got 1 and 3 (REST), not its own WebSocket message 2
        assert (await push_frame(ca))[conv][0]["seq"] == 3
        p = await cb.pull(conv, 1, 3)
        assert [x["seq"] for x in p["data"]["msgs"][conv]["Msgs"]] == \
            [1, 2, 3]
        assert [x["msgFrom"] for x in p["data"]["msgs"][conv]["Msgs"]] == \
            [200, 100, 200]
        assert await quiet(ca, 0.2)
        await ca.close()
        await cb.close()

    run(scenario())


def test_send_msg_system_sender_and_notification(stack, api):
    """sendID need not be registered; sessionType 4 is sn_<send>_<recv>,
    and contentType 1400 always goes there."""
    b = uids(1, "sy")[0]
    api.register(b)
    tb = api.user_token(b, 1)

    async def scenario():
        cb = await Client(stack, b, tb, 1).connect()
        r = send_v3(api, b, sendID="system")
        assert r["errCode"] == 0 and r["data"]["seq"] == 1, r
        conv = single_conv("system", b)
        m = (await push_frame(cb))[conv][0]
        assert (m["sendID"], m["sessionType"], m["msgFrom"]) == \
            ("system", 1, 200)

        r = send_v3(api, b, sendID="hr.bot", sessionType=4,
                    content={"content": "notice"})
        assert r["errCode"] == 0 and r["data"]["seq"] == 1, r
        conv4 = "sn_hr.bot_%s" % b
        m = (await push_frame(cb))[conv4][0]
        assert (m["sendID"], m["recvID"], m["sessionType"]) == \
            ("hr.bot", b, 4)
        assert m["msgFrom"] == 200

        # 1400 with sessionType 1 is still a notification
        content = copy.deepcopy(SEED["content"])
        r = send_v3(api, b, sendID="hr.bot", sessionType=1,
                    contentType=1400, content=content)
        assert r["errCode"] == 0 and r["data"]["seq"] == 2, r
        m = (await push_frame(cb))[conv4][0]
        assert m["sessionType"] == 4 and m["contentType"] == 1400
        assert json.loads(m["content"]) == content

        n = await cb.newest()
        assert n["data"]["maxSeqs"] == {conv: 1, conv4: 2}
        await cb.close()

    run(scenario())


def test_send_msg_unknown_group(api, redis_server):
    b = uids(1, "bs")[0]
    api.register(b)
    r = send_v3(api, b, sessionType=3, groupID="nog" + b)
    assert r["errCode"] == 1201, r
    assert redis_server.cli("KEYS", "im:{c:*%s*" % b) == ""


@pytest.mark.parametrize("session_type", [2, 0, 5, -1])
def test_send_msg_bad_session_type(api, redis_server, session_type):
    b = uids(1, "bs")[0]
    api.register(b)
    r = send_v3(api, b, sessionType=session_type, groupID="g1")
    assert r["errCode"] == 1001, r
    assert "sessionType" in r["errMsg"], r
    assert redis_server.cli("KEYS", "im:{c:*%s*" % b) == ""


def test_send_msg_recipient_errors(api):
    r = send_v3(api, uids(1, "nobody")[0])
    assert r["errCode"] == 1101, r
    r = send_v3(api, "bad_id")
    assert r["errCode"] == 1001 and "recvID" in r["errMsg"], r
    b = uids(1, "re")[0]
    api.register(b)
    r = send_v3(api, b, sendID="bad id")
    assert r["errCode"] == 1001 and "sendID" in r["errMsg"], r
    r = api.post("/msg/send_msg", {"sendID": "s", "recvID": b,
                                   "contentType": 101, "sessionType": 1},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "content" in r["errMsg"], r
    r = api.post("/msg/send_msg", {"sendID": "s", "recvID": b,
                                   "content": {"content": "x"},
                                   "sessionType": 1},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "contentType" in r["errMsg"], r
    # nothing stored so far
    r = send_v3(api, b)
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r


def test_send_msg_idempotent_client_msg_id(stack, api):
    b = uids(1, "id")[0]
    api.register(b)
    tb = api.user_token(b, 1)

    async def scenario():
        cb = await Client(stack, b, tb, 1).connect()
        r1 = send_v3(api, b, clientMsgID="order-42-shipped")
        r2 = send_v3(api, b, clientMsgID="order-42-shipped")
        assert r1["errCode"] == 0 and r2["errCode"] == 0, (r1, r2)
        assert r1["data"]["clientMsgID"] == "order-42-shipped"
        assert r2["data"] == r1["data"]
        m = (await push_frame(cb))[single_conv("system", b)][0]
        assert m["clientMsgID"] == "order-42-shipped"
        assert await quiet(cb, 0.4)
        r3 = send_v3(api, b, clientMsgID="order-43")
        assert r3["data"]["seq"] == 2
        await cb.close()

    run(scenario())


PIC = {"uuid": "u1", "type": "png", "size": 10, "width": 1, "height": 2,
       "url": "http://img/1.png"}


@pytest.mark.parametrize("ctype,content,field", [
    (101, {}, '"content" or "text"'),
    (101, {"content": ""}, "content"),
    (101, {"content": 5}, "content"),
    (102, {}, "sourcePicture"),
    (102, {"sourcePicture": {"url": ""}}, "sourcePicture.url"),
    (102, {"sourcePicture": {"uuid": "x"}}, "sourcePicture.url"),
    (102, {"sourcePicture": PIC, "bigPicture": {"size": -1}},
     "bigPicture.size"),
    (103, {"sourceUrl": "http://a/1.mp3", "duration": "5"}, "duration"),
    (103, {"duration": 5}, "sourceUrl"),
    (103, {"sourceUrl": "http://a/1.mp3", "duration": 1.5}, "duration"),
    (104, {"duration": 1}, "videoUrl"),
    (104, {"videoUrl": "http://v", "duration": -3}, "duration"),
    (105, {"sourceUrl": "http://f"}, "fileName"),
    (105, {"sourceUrl": "http://f", "fileName": "a", "fileSize": "1"},
     "fileSize"),
    (106, {"text": "hi", "atUserList": ["a", 5]}, "atUserList[1]"),
    (106, {"atUserList": []}, "text"),
    (107, {"title": "t", "multiMessage": []}, "multiMessage"),
    (108, {}, "userID"),
    (109, {"longitude": 200, "latitude": 0}, "longitude"),
    (109, {"longitude": 0, "latitude": "1"}, "latitude"),
    (110, {"data": ""}, "data"),
    (114, {"text": "x"}, "quoteMessage"),
    (1400, {"notificationName": "n", "text": "t", "mixType": 1},
     "pictureElem"),
    (1400, {"notificationName": "n", "text": "t", "mixType": 2,
            "videoElem": {"videoUrl": ""}}, "videoElem.videoUrl"),
    (1400, {"notificationName": "n", "text": "t", "mixType": 3},
     "fileElem"),
    (1400, {"text": "t"}, "notificationName"),
    (1400, {"notificationName": "n", "text": ""}, "text"),
    (1400, {"notificationName": "n", "text": "t", "mixType": "0"},
     "mixType"),
    (999, {"content": "x"}, "contentType 999 is not supported"),
    (116, {"content": "x"}, "contentType 116 is not supported"),
])
def test_content_validation(api, redis_server, ctype, content, field):
    b = uids(1, "cv")[0]
    api.register(b)
    r = send_v3(api, b, content=content, contentType=ctype)
    assert r["errCode"] == 1001, r
    assert field in r["errMsg"], r
    assert str(ctype) in r["errMsg"], r
    assert redis_server.cli("EXISTS",
                            "im:{c:%s}:seq" % single_conv("system", b)) \
        == "0"


@pytest.mark.parametrize("ctype,content", [
    (101, {"content": "x", "text": ""}),
    (102, {"sourcePicture": PIC, "bigPicture": {}, "extra": [1]}),
    (103, {"sourceUrl": "http://a/1.mp3", "duration": 0}),
    (104, {"videoUrl": "http://v", "duration": 3, "snapshotWidth": 4}),
    (105, {"sourceUrl": "http://f", "fileName": "a.pdf", "fileSize": 9}),
    (106, {"text": "@a hi", "atUserList": ["a"], "isAtSelf": False}),
    (107, {"title": "", "multiMessage": [{"any": "thing"}]}),
    (108, {"userID": "u1", "nickname": "n"}),
    (109, {"longitude": -180, "latitude": 90.0, "description": "x"}),
    (110, {"data": "{\"k\":1}"}),
    (114, {"text": "re", "quoteMessage": {"seq": 1}}),
    (1400, {"notificationName": "n", "text": "", "mixType": 1,
            "pictureElem": {"sourcePicture": PIC}}),
    (1400, {"notificationName": "n", "text": "t", "mixType": 3,
            "fileElem": {"sourceUrl": "http://f", "fileName": "f"}}),
])
def test_content_accepted(stack, api, ctype, content):
    b = uids(1, "ca")[0]
    api.register(b)
    tb = api.user_token(b, 1)

    async def scenario():
        cb = await Client(stack, b, tb, 1).connect()
        r = send_v3(api, b, content=content, contentType=ctype)
        assert r["errCode"] == 0, r
        msgs = await push_frame(cb)
        m = list(msgs.values())[0][0]
        assert m["contentType"] == ctype
        assert json.loads(m["content"]) == content
        await cb.close()

    run(scenario())


# ---------------------------------------------------------------------------
# batch_send_msg


def test_batch_send_1000(stack, api, redis_server):
    users = ["bt%s-%04d" % (uids(1, "")[0][:8], i) for i in range(1000)]
    r = api.post("/user/user_register",
                 {"users": [{"userID": u} for u in users]},
                 token=api.admin_token())
    assert r["errCode"] == 0, r

    def batch(recv_ids, **extra):
        body = {"sendID": "system", "senderNickname": "Ops",
                "content": {"content": "batch"}, "contentType": 101,
                "sessionType": 1, "notOfflinePush": True,
                "recvIDs": recv_ids}
        body.update(extra)
        return api.post("/msg/batch_send_msg", body, token=api.admin_token())

    # 1000 known recipients in one call
    t0 = time.time()
    r = batch(users)
    assert r["errCode"] == 0, r
    res = r["data"]["results"]
    assert r["data"]["failedUserIDs"] == []
    assert len(res) == 1000
    assert sorted(x["recvID"] for x in res) == sorted(users)
    assert all(x["seq"] == 1 for x in res)
    assert len({x["serverMsgID"] for x in res}) == 1000
    assert len({x["clientMsgID"] for x in res}) == 1000
    assert all(set(x) >= {"serverMsgID", "clientMsgID", "sendTime", "seq",
                          "recvID"} for x in res)
    assert time.time() - t0 < 15

    # 995 known + 5 unknown
    unknown = uids(5, "unk")
    ids = users[:500] + unknown[:2] + users[500:995] + unknown[2:]
    r = batch(ids)
    assert r["errCode"] == 0, r
    res = r["data"]["results"]
    assert sorted(r["data"]["failedUserIDs"]) == sorted(unknown)
    assert len(res) == 995
    assert sorted(x["recvID"] for x in res) == sorted(users[:995])
    assert all(x["seq"] == 2 for x in res)

    # invalid and unknown IDs mixed with known ones; one recipient online
    tok = api.user_token(users[0], 1)

    async def scenario():
        c = await Client(stack, users[0], tok, 1).connect()
        r = batch(["bad_id", users[0], unknown[0], users[999]])
        assert r["errCode"] == 0, r
        assert sorted(r["data"]["failedUserIDs"]) == \
            sorted(["bad_id", unknown[0]])
        res = {x["recvID"]: x for x in r["data"]["results"]}
        assert set(res) == {users[0], users[999]}
        assert res[users[0]]["seq"] == 3 and res[users[999]]["seq"] == 2
        conv = single_conv("system", users[0])
        m = (await push_frame(c))[conv][0]
        assert m["seq"] == 3 and m["msgFrom"] == 200
        assert m["serverMsgID"] == res[users[0]]["serverMsgID"]
        p = await c.pull(conv, 1, 10)
        assert [x["seq"] for x in p["data"]["msgs"][conv]["Msgs"]] == \
            [1, 2, 3]
        await c.close()

    run(scenario())
    # notOfflinePush: no job for anyone
    assert no_jobs_after(redis_server, users[999], 0.2) == []

    # limits
    r = batch(users + unknown[:1])
    assert r["errCode"] == 1001 and "recvIDs" in r["errMsg"], r
    r = batch([])
    assert r["errCode"] == 1001 and "recvIDs" in r["errMsg"], r
    # sessionType 3: the recvIDs are groups; no such group fails alone
    r = batch([users[1]], sessionType=3)
    assert r["errCode"] == 0 and r["data"]["failedUserIDs"] == [users[1]], r
    r = batch([users[1]], sessionType=2)
    assert r["errCode"] == 1001 and "sessionType" in r["errMsg"], r
    r = batch([users[1]], content={"content": ""})
    assert r["errCode"] == 1001 and "content" in r["errMsg"], r
    # the refused calls stored nothing
    assert redis_server.cli(
        "GET", "im:{c:%s}:seq" % single_conv("system", users[1])) == "2"


def test_batch_offline_jobs_and_client_msg_id(api, redis_server):
    """Offline recipients of a batch each get a job; a clientMsgID in the
    body is not shared by the per-recipient messages."""
    a, b = uids(2, "bj")
    api.register(a, b)
    body = {"sendID": "shop", "content": {"content": "sale"},
            "contentType": 101, "sessionType": 1, "recvIDs": [a, b],
            "pushClass": "marketing", "clientMsgID": "same-for-all"}
    r = api.post("/msg/batch_send_msg", body, token=api.admin_token())
    assert r["errCode"] == 0, r
    res = r["data"]["results"]
    assert len(res) == 2 and r["data"]["failedUserIDs"] == []
    assert res[0]["clientMsgID"] != res[1]["clientMsgID"]
    for u in (a, b):
        jobs = wait_jobs(redis_server, u, 1)
        assert len(jobs) == 1, jobs
        assert jobs[0]["class"] == "marketing"
        assert jobs[0]["conversationID"] == single_conv("shop", u)


# ---------------------------------------------------------------------------
# force_logout across hosts


def test_force_logout_other_host(stack, stack2, api):
    u = uids(1, "kk")[0]
    api.register(u)
    t1, t2 = api.user_token(u, 1), api.user_token(u, 2)
    kicks1, kicks2 = metric(stack, "im_kicks_total"), \
        metric(stack2, "im_kicks_total")

    async def scenario():
        # platform 1 on the other host (two sessions), platform 2 too
        k1 = await Client(stack2, u, t1, 1).connect()
        k2 = await Client(stack2, u, t1, 1).connect()
        keep = await Client(stack2, u, t2, 2).connect()
        # the kick goes through stack
        r = api.post("/auth/force_logout", {"userID": u, "platformID": 1},
                     token=api.admin_token())
        assert r["errCode"] == 0, r
        assert r["data"] == {}
        await expect_kick(k1)
        await expect_kick(k2)

        # the other device stays, and works both ways
        assert await quiet(keep, 0.3)
        n = await keep.newest()
        assert n["errCode"] == 0, n
        r = send_v3(api, u)
        assert r["errCode"] == 0, r
        m = (await push_frame(keep))[single_conv("system", u)][0]
        assert m["serverMsgID"] == r["data"]["serverMsgID"]

        # the kicked token is refused everywhere
        for ngx in (stack, stack2):
            status, body = ws_handshake(ngx, u, t1, 1)
            assert status == 401, status
            assert body["errCode"] == 1506, body
        for a in (api, Api(stack2)):
            r = a.post("/user/get_users_info", {"userIDs": [u]}, token=t1)
            assert r["errCode"] == 1506, r
            r = a.post("/third/update_push_token",
                       {"platformID": 1, "token": "x"}, token=t1)
            assert r["errCode"] == 1506, r
        r = api.post("/auth/parse_token", {"token": t1},
                     token=api.admin_token())
        assert r["errCode"] == 1506, r
        # the other platform's token is fine
        r = api.post("/user/get_users_info", {"userIDs": [u]}, token=t2)
        assert r["errCode"] == 0, r
        status, _ = ws_handshake(stack, u, t2, 2)
        assert status == 101

        # online: platform 2 only
        r = api.post("/user/get_users_online_status", {"userIDs": [u]},
                     token=api.admin_token())
        st = r["data"]["statusList"][0]
        assert st["status"] == "online"
        assert [p["platformID"] for p in st["detailPlatformStatus"]] == [2]

        # a fresh token for platform 1 logs in again
        t1b = api.user_token(u, 1)
        again = await Client(stack2, u, t1b, 1).connect()
        assert (await again.newest())["errCode"] == 0
        assert await quiet(keep, 0.1)
        await again.close()
        await keep.close()

    run(scenario())
    assert metric(stack2, "im_kicks_total") - kicks2 == 2
    assert metric(stack, "im_kicks_total") - kicks1 == 0


def test_force_logout_both_hosts_and_workers(stack, stack2, api):
    """Sessions of the kicked platform on every worker of every host."""
    u = uids(1, "kw")[0]
    api.register(u)
    tok = api.user_token(u, 5)

    async def scenario():
        cs = [await Client(ngx, u, tok, 5).connect()
              for ngx in (stack, stack2) for _ in range(4)]
        r = api.post("/auth/force_logout", {"userID": u, "platformID": 5},
                     token=Api(stack2).admin_token())
        assert r["errCode"] == 0, r
        for c in cs:
            await expect_kick(c)

    run(scenario())
    status, body = ws_handshake(stack2, u, tok, 5)
    assert status == 401 and body["errCode"] == 1506


# ---------------------------------------------------------------------------
# isOnlineOnly


def test_online_only_recipient_online(stack, stack2, api, redis_server):
    b = uids(1, "oo")[0]
    api.register(b)
    tb = api.user_token(b, 1)
    conv = single_conv("system", b)

    async def scenario():
        cb = await Client(stack2, b, tb, 1).connect()
        r = send_v3(api, b, isOnlineOnly=True, content={"content": "typing"})
        assert r["errCode"] == 0, r
        assert r["data"]["online"] is True
        assert r["data"]["seq"] == 0
        assert r["data"]["serverMsgID"]
        msgs = await push_frame(cb)
        m = msgs[conv][0]
        assert json.loads(m["content"]) == {"content": "typing"}
        assert m["seq"] == 0
        assert m["serverMsgID"] == r["data"]["serverMsgID"]
        assert m["msgFrom"] == 200
        # nothing stored: no conversation, nothing to pull
        n = await cb.newest()
        assert conv not in n["data"]["maxSeqs"], n
        p = await cb.pull(conv, 0, 10)
        assert p["errCode"] == 0
        got = p["data"]["msgs"].get(conv, {}).get("Msgs", [])
        assert got == []
        await cb.close()

    run(scenario())
    assert redis_server.cli("EXISTS", "im:{c:%s}:seq" % conv) == "0"
    assert redis_server.cli("EXISTS", "im:{c:%s}:msgs" % conv) == "0"
    assert no_jobs_after(redis_server, b, 0.3) == []
    # a stored message after it gets seq 1
    assert send_v3(api, b, notOfflinePush=True)["data"]["seq"] == 1


def test_online_only_recipient_offline(api, redis_server):
    b = uids(1, "of")[0]
    api.register(b)
    conv = single_conv("system", b)
    r = send_v3(api, b, isOnlineOnly=True)
    assert r["errCode"] == 0, r
    assert r["data"]["online"] is False
    assert r["data"]["seq"] == 0
    assert redis_server.cli("EXISTS", "im:{c:%s}:seq" % conv) == "0"
    assert redis_server.cli("EXISTS", "im:{u:%s}:convs" % b) == "0"
    assert no_jobs_after(redis_server, b, 0.3) == []
    # unknown recipient
    r = send_v3(api, uids(1, "no")[0], isOnlineOnly=True)
    assert r["errCode"] == 1101, r


def test_online_only_after_disconnect(stack, api, redis_server):
    b = uids(1, "od")[0]
    api.register(b)
    tb = api.user_token(b, 1)

    async def scenario():
        cb = await Client(stack, b, tb, 1).connect()
        assert send_v3(api, b, isOnlineOnly=True)["data"]["online"] is True
        await push_frame(cb)
        await cb.close()

    run(scenario())
    wait_offline(redis_server, b)
    assert send_v3(api, b, isOnlineOnly=True)["data"]["online"] is False


# ---------------------------------------------------------------------------
# offline-push jobs


def test_push_job_fields_and_tokens(stack, api, redis_server):
    b = uids(1, "pj")[0]
    api.register(b)
    before = metric(stack, "im_offline_push_jobs_total")
    for platform, dev in ((1, "apns-dev-token"), (2, "fcm-dev-token")):
        tok = api.user_token(b, platform)
        r = api.post("/third/update_push_token",
                     {"platformID": platform, "token": dev}, token=tok)
        assert r["errCode"] == 0, r
    r = send_v3(api, b, sendID="crm",
                offlinePushInfo={"title": "", "desc": "You have mail",
                                 "ex": "{\"id\":7}", "iOSPushSound": "",
                                 "iOSBadgeCount": False})
    assert r["errCode"] == 0, r
    jobs = wait_jobs(redis_server, b, 1)
    assert len(jobs) == 1, jobs
    j = jobs[0]
    assert j["recvID"] == b and j["sendID"] == "crm"
    assert j["conversationID"] == single_conv("crm", b)
    assert j["seq"] == "1"
    assert j["serverMsgID"] == r["data"]["serverMsgID"]
    assert j["contentType"] == "101" and j["sessionType"] == "1"
    assert j["class"] == "im"
    assert j["title"] == "[Text]"
    assert j["desc"] == "You have mail"
    assert j["ex"] == "{\"id\":7}"
    assert sorted(j["platforms"].split(",")) == ["1", "2"]
    assert json.loads(j["tokens"]) == {"1": "apns-dev-token",
                                       "2": "fcm-dev-token"}
    assert set(j) == {"recvID", "sendID", "conversationID", "seq",
                      "serverMsgID", "contentType", "sessionType", "class",
                      "title", "desc", "ex", "badge", "platforms", "tokens"}
    assert metric(stack, "im_offline_push_jobs_total") - before == 1


@pytest.mark.parametrize("extra,klass,title", [
    ({}, "im", "[Text]"),
    ({"sessionType": 4}, "notification", "[Text]"),
    ({"pushClass": "order"}, "order", "[Text]"),
    ({"pushClass": "order", "sessionType": 4}, "order", "[Text]"),
    ({"pushClass": "marketing"}, "marketing", "[Text]"),
    ({"pushClass": "notification"}, "notification", "[Text]"),
    ({"pushClass": "im", "sessionType": 4}, "im", "[Text]"),
    ({"contentType": 102, "content": {"sourcePicture": PIC}}, "im",
     "[Picture]"),
    ({"contentType": 105, "content": {"sourceUrl": "u", "fileName": "f"}},
     "im", "[File]"),
    ({"contentType": 1400, "content": {"notificationName": "OA",
                                       "text": "t"}},
     "notification", "[Notification]"),
    ({"offlinePushInfo": {"title": "Your order shipped", "desc": "",
                          "ex": ""}, "pushClass": "order"},
     "order", "Your order shipped"),
])
def test_push_job_class_and_title(api, redis_server, extra, klass, title):
    b = uids(1, "pc")[0]
    api.register(b)
    r = send_v3(api, b, **extra)
    assert r["errCode"] == 0, r
    jobs = wait_jobs(redis_server, b, 1)
    assert len(jobs) == 1, jobs
    assert jobs[0]["class"] == klass
    assert jobs[0]["title"] == title
    assert jobs[0]["platforms"] == ""
    assert json.loads(jobs[0]["tokens"]) == {}


@pytest.mark.parametrize("klass", ["vip", "IM", "", " order", "orders"])
def test_push_class_invalid(api, redis_server, klass):
    b = uids(1, "pi")[0]
    api.register(b)
    r = send_v3(api, b, pushClass=klass)
    if klass == "":
        # empty means the default
        assert r["errCode"] == 0, r
        assert wait_jobs(redis_server, b, 1)[0]["class"] == "im"
        return
    assert r["errCode"] == 1001, r
    assert "pushClass" in r["errMsg"], r
    assert redis_server.cli(
        "EXISTS", "im:{c:%s}:seq" % single_conv("system", b)) == "0"
    assert no_jobs_after(redis_server, b, 0.1) == []


def test_no_push_job_when_online(stack, stack2, api, redis_server):
    b = uids(1, "po")[0]
    api.register(b)
    tb = api.user_token(b, 2)
    r = api.post("/third/update_push_token",
                 {"platformID": 2, "token": "fcm-x"}, token=tb)
    assert r["errCode"] == 0, r

    async def scenario():
        # online on the other host only
        cb = await Client(stack2, b, tb, 2).connect()
        for i in range(3):
            r = send_v3(api, b)
            assert r["errCode"] == 0, r
            await push_frame(cb)
        await cb.close()

    run(scenario())
    assert no_jobs_after(redis_server, b, 0.3) == []
    # once offline, the next message makes a job
    wait_offline(redis_server, b)
    r = send_v3(api, b)
    assert r["data"]["seq"] == 4
    jobs = wait_jobs(redis_server, b, 1)
    assert len(jobs) == 1 and jobs[0]["seq"] == "4", jobs
    assert json.loads(jobs[0]["tokens"]) == {"2": "fcm-x"}
    assert jobs[0]["class"] == "im"


def test_no_push_job_when_disabled(api, redis_server):
    b = uids(1, "pn")[0]
    api.register(b)
    r = send_v3(api, b, notOfflinePush=True)
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r
    r = send_v3(api, b, options={"offlinePush": False})
    assert r["errCode"] == 0 and r["data"]["seq"] == 2, r
    r = send_v3(api, b, isOnlineOnly=True)
    assert r["errCode"] == 0, r
    r = api.post("/manager/send_msg", dict(seed_for(b), notOfflinePush=True),
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    assert no_jobs_after(redis_server, b, 0.4) == []
    # the control: a normal one makes exactly one job
    r = send_v3(api, b)
    assert r["data"]["seq"] == 3
    jobs = wait_jobs(redis_server, b, 1)
    time.sleep(0.2)
    jobs = jobs_for(redis_server, b)
    assert [j["seq"] for j in jobs] == ["3"], jobs


def test_push_stream_consumer_group(api, redis_server):
    """The documented consumer contract: XGROUP + XREADGROUP + XACK."""
    r = pyredis.Redis(host="127.0.0.1", port=redis_server.port,
                      decode_responses=True)
    group = "gw-" + uids(1, "")[0]
    r.xgroup_create("im:push", group, id="$", mkstream=True)
    b = uids(1, "cg")[0]
    api.register(b)
    assert send_v3(api, b)["errCode"] == 0
    got = r.xreadgroup(group, "g1", {"im:push": ">"}, count=100, block=3000)
    mine = [(i, f) for _, entries in got for i, f in entries
            if f["recvID"] == b]
    assert len(mine) == 1, got
    assert mine[0][1]["class"] == "im"
    assert r.xack("im:push", group, mine[0][0]) == 1
    r.xgroup_destroy("im:push", group)


def spin(seconds):
    """Waits finer than time.sleep() can."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_force_logout_racing_logins(stack, api):
    """A kick fired while a login is still in flight: every login ends
    refused with 1506, or opened and then kicked with 2002 + Close 1000.
    None may stay open with a kicked token.  The kick lands at staggered
    points of the handshake (registry check, SUBSCRIBE, 101)."""
    import rawws
    u = uids(1, "kr")[0]
    api.register(u)
    adm = api.admin_token()
    kick = json.dumps({"userID": u, "platformID": 3}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    outcomes = {"refused": 0, "kicked": 0}
    for i in range(200):
        tok = api.user_token(u, 3)
        ws = rawws.RawWS(stack.port)
        req, ws.key = rawws.handshake_request(rawws.ws_path(u, tok, 3))
        # the kick goes from 400 us before the login to 100 us after it
        offset = ((i * 7) % 51 - 40) * 0.00001
        if offset >= 0:
            ws.send(req)
            spin(offset)
        conn.request("POST", "/im/api/auth/force_logout", body=kick,
                     headers={"token": adm, "operationID": "kr-%d" % i,
                              "Content-Type": "application/json"})
        if offset < 0:
            spin(-offset)
            ws.send(req)
        resp = conn.getresponse()
        assert json.loads(resp.read())["errCode"] == 0
        status = ws.read_response()
        if status == 401:
            assert ws.body_json()["errCode"] == 1506, ws.body
            outcomes["refused"] += 1
        else:
            assert status == 101, (status, ws.body)
            f = ws.recv_frame(timeout=3)
            assert f.opcode == rawws.OP_TEXT, f
            assert f.json()["reqIdentifier"] == 2002, f
            assert ws.expect_close(timeout=3).close_code == 1000
            outcomes["kicked"] += 1
        ws.sock.close()
    conn.close()
    # both orders happened, so the race was really run
    assert outcomes["refused"] and outcomes["kicked"], outcomes


# ---------------------------------------------------------------------------
# 2004 SetBackgroundStatus: background-only recipients get push jobs


def test_background_sessions_get_push_jobs(stack, stack2, api,
                                           redis_server):
    b = uids(1, "bg")[0]
    api.register(b)
    t1, t2 = api.user_token(b, 1), api.user_token(b, 2)

    async def scenario():
        c1 = await Client(stack, b, t1, 1).connect()
        # foreground: pushed, no job
        assert send_v3(api, b)["errCode"] == 0
        await push_frame(c1)
        assert no_jobs_after(redis_server, b, 0.3) == []

        r = await c1.request(2004, {"userID": b, "isBackground": True})
        assert r["errCode"] == 0 and r["data"] == {}, r
        # background: still pushed, and a job for the push gateway
        assert send_v3(api, b)["errCode"] == 0
        await push_frame(c1)
        assert len(wait_jobs(redis_server, b, 1)) == 1

        # a second device in the foreground, on the other host: no job
        c2 = await Client(stack2, b, t2, 2).connect()
        wait_presence(redis_server, b, 2)
        assert send_v3(api, b)["errCode"] == 0
        await push_frame(c1)
        await push_frame(c2)
        assert len(no_jobs_after(redis_server, b, 0.3)) == 1

        # both in the background (userID may be left out)
        r = await c2.request(2004, {"isBackground": True})
        assert r["errCode"] == 0, r
        assert send_v3(api, b)["errCode"] == 0
        assert len(wait_jobs(redis_server, b, 2)) == 2

        # back in the foreground (proto3 leaves false out: the default)
        r = await c1.request(2004, {"userID": b})
        assert r["errCode"] == 0, r
        assert send_v3(api, b)["errCode"] == 0
        await push_frame(c1)
        assert len(no_jobs_after(redis_server, b, 0.3)) == 2
        await c1.close()
        await c2.close()

    run(scenario())


def test_many_sessions_keep_a_send_cheap(stack, api, redis_server):
    """A user's sessions are not bounded, so a send must not read all of
    them: send.lua (deliver.lua in a cluster) looks for a foreground
    session in at most 8 HSCAN pages of the recipient's presence.  Here
    100,000 background entries of a worker that is gone stand for a user
    who opened that many sessions: the script that stores the send stays
    cheap (reading the whole hash took ~100 ms), and the live session
    gets the message."""
    b = uids(1, "ms")[0]
    api.register(b)
    key = "im:{u:%s}:online" % b
    r = key_client(redis_server, key)

    async def scenario():
        c = await Client(stack, b, api.user_token(b, 1), 1).connect()
        wait_presence(redis_server, b, 1)
        for n in range(0, 100000, 10000):
            r.hset(key, mapping={"5:im:w:gone:%d" % i: "b1 t"
                                 for i in range(n, n + 10000)})
        r.config_set("slowlog-log-slower-than", 0)
        r.slowlog_reset()
        try:
            assert send_v3(api, b)["errCode"] == 0
            msgs = await push_frame(c)
            took = [e["duration"] for e in r.slowlog_get(128)
                    if e["command"].split(b" ")[0].upper() == b"EVALSHA"]
        finally:
            r.config_set("slowlog-log-slower-than", 10000)
            r.delete(key)
        assert list(msgs.values())[0][0]["recvID"] == b
        assert took and max(took) < 10000, took
        await c.close()

    run(scenario())


def test_background_status_errors(stack, api):
    a, b = uids(2, "be")
    api.register(a, b)
    ta = api.user_token(a, 1)

    async def scenario():
        c = await Client(stack, a, ta, 1).connect()
        r = await c.request(2004, {"userID": b, "isBackground": True})
        assert r["errCode"] == 1002, r
        r = await c.request(2004, {"isBackground": "yes"})
        assert r["errCode"] == 1001 and "isBackground" in r["errMsg"], r
        r = await c.request(2004, {"userID": 7})
        assert r["errCode"] == 1001 and "userID" in r["errMsg"], r
        r = await c.request(2004, [1, 2])
        assert r["errCode"] == 1001, r
        # still open and working
        assert (await c.newest())["errCode"] == 0
        await c.close()

    run(scenario())
