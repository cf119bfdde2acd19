"""Conversations and read state, end to end on one Redis (no MongoDB):
the contract is docs/api.md (Conversations) and docs/protocol.md
(1001, 1005, 1006, notifications).

- the sorted list: latestMsg, unreadCount, unreadTotal; read marks and
  their 2200 notifications (the user's other device, the peer's receipt);
  unread in every view (list, get_conversation, has_read_and_max_seq,
  WebSocket 1006);
- order (pinned first, then latest message), pagination;
- hasReadSeq only moves forward; bad marks change nothing;
- the incremental conversation log (versions, insert/update/delete);
- recvMsgOpt 0/1/2: pushes and offline-push jobs (with the badge);
- revoke (2101): pushes, pulls, the text gone from Redis;
- delete_msgs, clear_conversation_msg, user_clear_all_msg;
- typing (113): online only, no seq, nothing stored;
- delete_msg_physical.

No fixed sleeps where a condition can be waited for: "no push" is shown
by a later push that would have come after it (pub/sub keeps the order
of the publishes), "no offline-push job" by a later job made on the same
worker connection.
"""

import asyncio
import json
import time
import uuid

import redis as pyredis

from conftest import CLUSTER, channel, single_conv, uids
from helpers_msg import run_clients

CONV_FIELDS = {"ownerUserID", "conversationID", "conversationType", "userID",
               "groupID", "recvMsgOpt", "isPinned", "isPrivateChat",
               "burnDuration", "groupAtType", "attachedInfo", "ex", "minSeq",
               "maxSeq", "hasReadSeq", "unreadCount", "latestMsgSendTime",
               "latestMsg"}
REST = 3            # the platform of the tokens used for REST calls


# ---------------------------------------------------------------------------
# helpers


def ok(r):
    assert r["errCode"] == 0, r
    return r["data"]


def now_ms():
    return int(time.time() * 1000)


def after_ms(t):
    """Until the local clock (the server's too: same host) is past t."""
    while now_ms() <= t + 1:
        time.sleep(0.001)


def content_of(m):
    return json.loads(m["content"])


def text_of(m):
    return json.loads(m["content"]).get("content")


def detail_of(m):
    """The NotificationElem's detail, decoded."""
    return json.loads(json.loads(m["content"])["detail"])


class Users:
    """Fresh registered users, REST tokens (platform REST) and a REST
    client; call(uid, path, body) uses uid's token, admin(path, body)
    the admin token."""

    def __init__(self, api, n):
        self.api = api
        self.ids = uids(n)
        api.register(*self.ids)
        self.tok = {u: api.user_token(u, REST) for u in self.ids}

    def call(self, uid, path, body):
        return self.api.post(path, body, token=self.tok[uid])

    def admin(self, path, body):
        return self.api.post(path, body, token=self.api.admin_token())

    def send(self, a, b, text):
        """A text from a to b through /msg/send_msg (admin): its ack."""
        return ok(self.admin("/msg/send_msg", {
            "sendID": a, "recvID": b, "senderPlatformID": 1,
            "content": {"content": text}, "contentType": 101,
            "sessionType": 1}))

    def ws_token(self, uid, platform):
        return self.api.user_token(uid, platform)

    # the conversation endpoints
    def sorted_list(self, uid, ids=(), page=None, show=None):
        body = {"userID": uid, "conversationIDs": list(ids)}
        if page is not None or show is not None:
            body["pagination"] = {}
            if page is not None:
                body["pagination"]["pageNumber"] = page
            if show is not None:
                body["pagination"]["showNumber"] = show
        return ok(self.call(uid, "/conversation/get_sorted_conversation_list",
                            body))

    def conv(self, uid, conv):
        return ok(self.call(uid, "/conversation/get_conversation",
                            {"ownerUserID": uid, "conversationID": conv})
                  )["conversation"]

    def seqs(self, uid, ids=()):
        return ok(self.call(uid, "/msg/get_conversations_has_read_and_max_seq",
                            {"userID": uid, "conversationIDs": list(ids)})
                  )["seqs"]

    def set_conv(self, uid, conv, **fields):
        body = {"conversationID": conv}
        body.update(fields)
        return self.call(uid, "/conversation/set_conversations",
                         {"userIDs": [uid], "conversation": body})

    def mark(self, uid, conv, seq, seqs=()):
        return self.call(uid, "/msg/mark_conversation_as_read",
                         {"conversationID": conv, "userID": uid,
                          "hasReadSeq": seq, "seqs": list(seqs)})


def rclient(redis_server):
    if CLUSTER:         # IM_TEST_REDIS=cluster
        return redis_server.cluster.client(decode_responses=False)
    return pyredis.Redis(host="127.0.0.1", port=redis_server.port)


def jobs_for(redis_server, recv):
    """The im:push jobs for recv, oldest first (fields decoded)."""
    out = []
    for _, f in rclient(redis_server).xrange("im:push"):
        f = {k.decode(errors="replace"): v.decode(errors="replace")
             for k, v in f.items()}
        if f.get("recvID") == recv:
            out.append(f)
    return out


def wait_jobs(redis_server, recv, n, timeout=5.0):
    end = time.time() + timeout
    while True:
        jobs = jobs_for(redis_server, recv)
        if len(jobs) >= n or time.time() > end:
            return jobs
        time.sleep(0.02)


def subscribers(redis_server, uid):
    out = redis_server.cli("PUBSUB", "SHARDNUMSUB" if CLUSTER else "NUMSUB",
                           channel(uid)).split()
    return int(out[1])


def wait_offline(redis_server, uid, timeout=5.0):
    """Until no worker is subscribed to uid's delivery channel (a
    message to uid then reaches nobody: the offline-push decision)."""
    end = time.time() + timeout
    while subscribers(redis_server, uid) and time.time() < end:
        time.sleep(0.02)
    assert subscribers(redis_server, uid) == 0


async def job_barrier(redis_server, sender_client, offline_uid, text):
    """Sends a text from sender_client to offline_uid (recvMsgOpt 0, no
    session: a job) and waits for its job.  The jobs of the sender's
    earlier messages, made on the same worker connection, come first."""
    before = len(jobs_for(redis_server, offline_uid))
    r = await sender_client.send_text(offline_uid, text)
    assert r["errCode"] == 0, r
    jobs = await asyncio.to_thread(wait_jobs, redis_server, offline_uid,
                                   before + 1)
    assert len(jobs) == before + 1, ("no job for the barrier", jobs)
    return jobs[-1]


async def msgs_until(c, pred, timeout=5.0):
    """Every pushed message of c (flattened, in order) up to and
    including the first one pred accepts."""
    end = time.time() + timeout
    got = []
    while True:
        for m in await c.push(max(0.01, end - time.time())):
            got.append(m)
            if pred(m):
                return got


async def pull(c, conv, begin, end, num=100):
    r = await c.pull(conv, begin, end, num)
    assert r["errCode"] == 0, r
    return (r["data"]["msgs"].get(conv) or {}).get("Msgs") or []


async def pull_seq_list(c, conv, seqs):
    r = await c.request(1005, {"conversations": [
        {"conversationID": conv, "seqs": list(seqs)}]})
    assert r["errCode"] == 0, r
    return (r["data"]["msgs"].get(conv) or {}).get("Msgs") or []


async def ws_read_seqs(c, ids):
    r = await c.request(1006, {"conversationIDs": list(ids)})
    assert r["errCode"] == 0, r
    return r["data"]["seqs"]


def seq_list(msgs):
    return [m["seq"] for m in msgs]


def key_values(r, key):
    """Every value (and member, field) of a Redis key, as bytes."""
    t = r.type(key).decode()
    if t == "string":
        return [r.get(key)]
    if t == "hash":
        h = r.hgetall(key)
        return list(h.keys()) + list(h.values())
    if t == "list":
        return r.lrange(key, 0, -1)
    if t == "set":
        return list(r.smembers(key))
    if t == "zset":
        return r.zrange(key, 0, -1)
    if t == "stream":
        return [v for _, f in r.xrange(key) for kv in f.items() for v in kv]
    return []


def redis_holding(redis_server, text, patterns):
    """The keys matching any of the glob patterns whose values hold text."""
    r = rclient(redis_server)
    needle = text.encode()
    found = set()
    for pat in patterns:
        for key in r.scan_iter(match=pat, count=1000):
            if any(needle in v for v in key_values(r, key)):
                found.add(key.decode())
    return found


# ---------------------------------------------------------------------------
# 1. unread, read marks, 2200 to the other device and the peer


def test_unread_and_mark_as_read(stack, api):
    us = Users(api, 3)
    a, b, c = us.ids
    ab, bc = single_conv(a, b), single_conv(b, c)
    ta = us.ws_token(a, 1)
    tb1, tb2 = us.ws_token(b, 1), us.ws_token(b, 2)

    async def scenario(pool):
        # an older conversation of B's, with B's own message only
        b1 = await pool.connect(stack, b, tb1, 1)
        r = await b1.send_text(c, "b to c")
        assert (r["errCode"], r["data"]["seq"]) == (0, 1), r
        await b1.close()

        # A sends 5 while B is offline
        ca = await pool.connect(stack, a, ta, 1)
        acks = []
        for i in range(5):
            r = await ca.send_text(b, "m%d" % i)
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        assert [x["seq"] for x in acks] == [1, 2, 3, 4, 5]

        lst = us.sorted_list(b)
        assert lst["conversationTotal"] == 2, lst
        assert lst["unreadTotal"] == 5, lst
        elems = lst["conversationElems"]
        assert [e["conversationID"] for e in elems] == [ab, bc]
        first = elems[0]
        assert set(first) == CONV_FIELDS, sorted(first)
        assert {k: first[k] for k in CONV_FIELDS - {"latestMsg"}} == {
            "ownerUserID": b, "conversationID": ab, "conversationType": 1,
            "userID": a, "groupID": "", "recvMsgOpt": 0, "isPinned": False,
            "isPrivateChat": False, "burnDuration": 0, "groupAtType": 0,
            "attachedInfo": "", "ex": "", "minSeq": 0, "maxSeq": 5,
            "hasReadSeq": 0, "unreadCount": 5,
            "latestMsgSendTime": acks[4]["sendTime"]}
        lm = first["latestMsg"]
        assert (lm["seq"], lm["sendID"], lm["recvID"], text_of(lm),
                lm["clientMsgID"], lm["serverMsgID"], lm["sendTime"],
                lm["contentType"]) == \
            (5, a, b, "m4", acks[4]["clientMsgID"], acks[4]["serverMsgID"],
             acks[4]["sendTime"], 101)
        # B's own message never counts
        assert (elems[1]["userID"], elems[1]["maxSeq"],
                elems[1]["hasReadSeq"], elems[1]["unreadCount"]) == \
            (c, 1, 1, 0), elems[1]
        # nor do A's own for A
        mine = us.conv(a, ab)
        assert (mine["maxSeq"], mine["hasReadSeq"], mine["unreadCount"],
                mine["userID"]) == (5, 5, 0, b), mine

        # B's two devices come online; device 1 marks read up to 3
        b1 = await pool.connect(stack, b, tb1, 1)
        b2 = await pool.connect(stack, b, tb2, 2)
        assert ok(api.post("/msg/mark_conversation_as_read",
                           {"conversationID": ab, "userID": b,
                            "hasReadSeq": 3, "seqs": []},
                           token=tb1)) == {}

        want = {"markAsReadUserID": b, "conversationID": ab,
                "hasReadSeq": 3}
        for who, cl, send_id, recv_id in ((b, b2, b, b), (a, ca, b, a)):
            msgs = await cl.push()
            assert len(msgs) == 1, (who, msgs)
            m = msgs[0]
            assert (m["contentType"], m["seq"], m["sendID"], m["recvID"],
                    m["msgFrom"]) == (2200, 0, send_id, recv_id, 200), \
                (who, m)
            d = detail_of(m)
            assert {k: d.get(k) for k in want} == want, (who, d)
            assert isinstance(d.get("seqs"), list), d
            assert all(isinstance(s, int) and 1 <= s <= 3
                       for s in d["seqs"]), d

        # unread 2 everywhere
        lst = us.sorted_list(b)
        assert lst["unreadTotal"] == 2, lst
        e = lst["conversationElems"][0]
        assert (e["conversationID"], e["hasReadSeq"], e["unreadCount"],
                e["maxSeq"]) == (ab, 3, 2, 5), e
        one = us.conv(b, ab)
        assert (one["hasReadSeq"], one["unreadCount"]) == (3, 2), one
        want_ab = {"maxSeq": 5, "hasReadSeq": 3,
                   "maxSeqTime": acks[4]["sendTime"]}
        assert us.seqs(b, [ab]) == {ab: want_ab}
        every = us.seqs(b)
        assert every[ab] == want_ab
        assert (every[bc]["maxSeq"], every[bc]["hasReadSeq"]) == (1, 1)
        assert set(every) == {ab, bc}
        for cl in (b1, b2):
            assert await ws_read_seqs(cl, [ab]) == {ab: want_ab}
            every = await ws_read_seqs(cl, [])
            assert set(every) == {ab, bc} and every[ab] == want_ab
        r = await b2.newest()
        assert r["errCode"] == 0, r
        assert r["data"]["maxSeqs"][ab] == 5
        assert r["data"]["hasReadSeqs"][ab] == 3
        # the 2200 was not stored: A's view is unchanged
        r = await ca.newest()
        assert (r["data"]["maxSeqs"][ab], r["data"]["hasReadSeqs"][ab]) == \
            (5, 5), r

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 2. order and pagination


def test_list_order_pins_and_pagination(stack, api):
    us = Users(api, 5)
    b, peers = us.ids[0], us.ids[1:]
    convs = [single_conv(p, b) for p in peers]
    acks = []
    for i, p in enumerate(peers):
        acks.append(us.send(p, b, "from peer %d" % i))
        after_ms(acks[-1]["sendTime"])
    assert [x["sendTime"] for x in acks] == sorted(
        set(x["sendTime"] for x in acks))
    c0, c1, c2, c3 = convs

    def order(**kw):
        return [e["conversationID"]
                for e in us.sorted_list(b, **kw)["conversationElems"]]

    assert order() == [c3, c2, c1, c0]
    # pin two: pinned first, each group by latest message, newest first
    assert ok(us.set_conv(b, c1, isPinned=True)) == {}
    assert ok(us.set_conv(b, c0, isPinned={"value": True})) == {}
    assert order() == [c1, c0, c3, c2]
    assert sorted(ok(us.call(b, "/conversation/get_pinned_conversation_ids",
                             {"userID": b}))["conversationIDs"]) == \
        sorted([c0, c1])
    # a new message moves c0 up among the pinned ones
    after_ms(acks[-1]["sendTime"])
    us.send(peers[0], b, "again")
    assert order() == [c0, c1, c3, c2]
    # unpin c1: back to its place by time
    assert ok(us.set_conv(b, c1, isPinned={"value": False})) == {}
    assert order() == [c0, c3, c2, c1]
    assert ok(us.call(b, "/conversation/get_pinned_conversation_ids",
                      {"userID": b}))["conversationIDs"] == [c0]

    # pages
    pages = [us.sorted_list(b, page=p, show=2) for p in (1, 2, 3)]
    assert [[e["conversationID"] for e in pg["conversationElems"]]
            for pg in pages] == [[c0, c3], [c2, c1], []]
    assert [pg["conversationTotal"] for pg in pages] == [4, 4, 4]
    assert [pg["unreadTotal"] for pg in pages] == [5, 5, 5]
    assert order(show=3) == [c0, c3, c2]
    assert order(page=1, show=1) == [c0]

    # most recent first, whatever the pins
    allc = ok(us.call(b, "/conversation/get_all_conversations",
                      {"ownerUserID": b}))["conversations"]
    assert [x["conversationID"] for x in allc] == [c0, c3, c2, c1]
    own = ok(us.call(b, "/conversation/get_owner_conversation",
                     {"userID": b, "pagination": {"pageNumber": 1,
                                                  "showNumber": 3}}))
    assert own["total"] == 4
    assert [x["conversationID"] for x in own["conversations"]] == \
        [c0, c3, c2]
    own = ok(us.call(b, "/conversation/get_owner_conversation",
                     {"userID": b, "pagination": {"pageNumber": 2,
                                                  "showNumber": 3}}))
    assert [x["conversationID"] for x in own["conversations"]] == [c1]
    got = ok(us.call(b, "/conversation/get_conversations",
                     {"ownerUserID": b,
                      "conversationIDs": [c2, single_conv(b, "nobody"), c0]})
             )["conversations"]
    assert [x["conversationID"] for x in got] == [c2, c0]

    # the sorted list of asked IDs only: still sorted (pinned c0 first)
    got = us.sorted_list(b, ids=[c1, c0])
    assert [e["conversationID"] for e in got["conversationElems"]] == \
        [c0, c1]


# ---------------------------------------------------------------------------
# 3. hasReadSeq only moves forward; bad marks change nothing


def test_has_read_seq_forward_only_and_errors(stack, api):
    us = Users(api, 3)
    a, b, c = us.ids
    ab, ac = single_conv(a, b), single_conv(a, c)
    ta = us.ws_token(a, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        for i in range(5):
            r = await ca.send_text(b, "r%d" % i)
            assert r["errCode"] == 0, r
        r = await ca.send_text(c, "to c")
        assert r["errCode"] == 0, r

        def state():
            one = us.conv(b, ab)
            return (one["hasReadSeq"], one["unreadCount"],
                    us.seqs(b, [ab])[ab]["hasReadSeq"])

        assert ok(us.mark(b, ab, 4)) == {}
        assert state() == (4, 1, 4)
        m = (await ca.push())[0]
        assert (m["contentType"], detail_of(m)["hasReadSeq"]) == (2200, 4)

        # lower: accepted, nothing changes (and nobody is told)
        assert ok(us.mark(b, ab, 2)) == {}
        assert ok(us.call(b, "/msg/set_conversation_has_read_seq",
                          {"conversationID": ab, "userID": b,
                           "hasReadSeq": 1})) == {}
        assert ok(us.call(b, "/msg/mark_msgs_as_read",
                          {"conversationID": ab, "userID": b,
                           "seqs": [1, 3]})) == {}
        assert state() == (4, 1, 4)

        # refused, nothing changed
        for seq in (6, 1 << 40, -1):
            r = us.mark(b, ab, seq)
            assert r["errCode"] == 1001, (seq, r)
            r = us.call(b, "/msg/set_conversation_has_read_seq",
                        {"conversationID": ab, "userID": b,
                         "hasReadSeq": seq})
            assert r["errCode"] == 1001, (seq, r)
        for seqs in ([6], [-1], [], list(range(1, 10001)),
                     list(range(1, 1002))):
            r = us.call(b, "/msg/mark_msgs_as_read",
                        {"conversationID": ab, "userID": b, "seqs": seqs})
            assert r["errCode"] == 1001, (len(seqs), r)
        assert state() == (4, 1, 4)

        # an unknown conversation of B's: refused, and not created
        unknown = single_conv(b, "nobody")
        r = us.mark(b, unknown, 1)
        assert r["errCode"] in (1001, 1004), r
        r = us.call(b, "/conversation/get_conversation",
                    {"ownerUserID": b, "conversationID": unknown})
        assert r["errCode"] == 1004, r
        assert unknown not in us.seqs(b)

        # someone else's conversation: 1002, with B's and the admin token
        r = us.mark(b, ac, 1)
        assert r["errCode"] == 1002, r
        r = us.admin("/msg/mark_conversation_as_read",
                     {"conversationID": ac, "userID": b, "hasReadSeq": 1,
                      "seqs": []})
        assert r["errCode"] == 1002, r
        # B's token naming A: 1002
        for path, body in (
                ("/msg/mark_conversation_as_read",
                 {"conversationID": ab, "userID": a, "hasReadSeq": 1,
                  "seqs": []}),
                ("/msg/mark_msgs_as_read",
                 {"conversationID": ab, "userID": a, "seqs": [1]}),
                ("/msg/set_conversation_has_read_seq",
                 {"conversationID": ab, "userID": a, "hasReadSeq": 1}),
                ("/msg/get_conversations_has_read_and_max_seq",
                 {"userID": a, "conversationIDs": []}),
                ("/conversation/get_sorted_conversation_list",
                 {"userID": a, "conversationIDs": []}),
                ("/conversation/get_conversation",
                 {"ownerUserID": a, "conversationID": ab}),
                ("/conversation/set_conversations",
                 {"userIDs": [a], "conversation": {"conversationID": ab,
                                                   "isPinned": True}})):
            r = us.call(b, path, body)
            assert r["errCode"] == 1002, (path, r)
        assert us.seqs(a, [ab])[ab]["hasReadSeq"] == 5
        assert us.seqs(c, [ac])[ac]["hasReadSeq"] == 0
        assert us.conv(a, ab)["isPinned"] is False
        assert state() == (4, 1, 4)

        # the admin may name B; the largest of the seqs wins
        assert ok(us.admin("/msg/mark_msgs_as_read",
                           {"conversationID": ab, "userID": b,
                            "seqs": [5, 2]})) == {}
        assert state() == (5, 0, 5)
        # only real changes were told to A: the next 2200 is this one
        m = (await ca.push())[0]
        assert (m["contentType"], detail_of(m)["hasReadSeq"]) == (2200, 5), m

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 4. the incremental conversation log


def test_incremental_conversations(stack, api):
    us = Users(api, 4)
    b, a, c, d = us.ids
    ab, cb, db = single_conv(a, b), single_conv(c, b), single_conv(d, b)
    us.send(a, b, "a1")
    us.send(c, b, "c1")

    def incr(version, version_id):
        return ok(us.call(b, "/conversation/get_incremental_conversations",
                          {"userID": b, "version": version,
                           "versionID": version_id}))

    def ids(lst):
        return sorted(x["conversationID"] for x in lst)

    full = incr(0, "")
    assert full["full"] is True, full
    assert ids(full["insert"]) == sorted([ab, cb])
    assert full["update"] == [] and full["delete"] == []
    v0, vid = full["version"], full["versionID"]
    assert isinstance(v0, int) and vid

    same = incr(v0, vid)
    assert (same["version"], same["versionID"], same["full"],
            same["insert"], same["update"], same["delete"]) == \
        (v0, vid, False, [], [], [])

    assert ok(us.set_conv(b, ab, isPinned=True, ex="x1")) == {}
    us.send(d, b, "d1")
    assert ok(us.call(b, "/conversation/delete_conversations",
                      {"ownerUserID": b, "conversationIDs": [cb]})) == {}

    inc = incr(v0, vid)
    assert (inc["version"], inc["versionID"], inc["full"]) == \
        (v0 + 3, vid, False), inc
    assert ids(inc["update"]) == [ab]
    assert (inc["update"][0]["isPinned"], inc["update"][0]["ex"]) == \
        (True, "x1")
    assert ids(inc["insert"]) == [db]
    assert inc["insert"][0]["maxSeq"] == 1
    assert inc["delete"] == [cb]
    # from a version in between
    mid = incr(v0 + 2, vid)
    assert (ids(mid["update"]), ids(mid["insert"]), mid["delete"]) == \
        ([], [], [cb]), mid

    f = ok(us.call(b, "/conversation/get_full_conversation_ids",
                   {"userID": b}))
    assert (f["version"], f["versionID"]) == (v0 + 3, vid), f
    assert sorted(f["conversationIDs"]) == sorted([ab, db])
    lst = us.sorted_list(b)
    assert sorted(e["conversationID"] for e in lst["conversationElems"]) == \
        sorted([ab, db])
    assert lst["conversationTotal"] == 2

    # read state and new messages are not changes of the log
    us.send(a, b, "a2")
    assert ok(us.mark(b, ab, 2)) == {}
    same = incr(v0 + 3, vid)
    assert (same["version"], same["full"], same["insert"], same["update"],
            same["delete"]) == (v0 + 3, False, [], [], []), same

    # a message brings the deleted conversation back
    us.send(c, b, "c2")
    back = incr(v0 + 3, vid)
    assert back["version"] == v0 + 4, back
    assert ids(back["insert"]) == [cb] and back["delete"] == [], back
    assert ids(back["update"]) == []

    # an unknown versionID: the whole set again
    again = incr(v0 + 3, "not-" + vid)
    assert again["full"] is True
    assert ids(again["insert"]) == sorted([ab, cb, db])
    assert (again["version"], again["versionID"]) == (v0 + 4, vid)


# ---------------------------------------------------------------------------
# 5. recvMsgOpt


def test_recv_msg_opt_1_no_push_no_job(stack, api, redis_server):
    us = Users(api, 4)
    a, b, c, z = us.ids        # z never logs in: the job barrier
    ab, cb = single_conv(a, b), single_conv(c, b)
    ta, tb, tc = us.ws_token(a, 1), us.ws_token(b, 1), us.ws_token(c, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        cc = await pool.connect(stack, c, tc, 1)
        r = await ca.send_text(b, "before")
        assert r["errCode"] == 0, r
        assert ok(us.set_conv(b, ab, recvMsgOpt=1)) == {}
        assert us.conv(b, ab)["recvMsgOpt"] == 1
        assert ok(us.call(b, "/conversation/get_not_notify_conversation_ids",
                          {"userID": b}))["conversationIDs"] == [ab]

        cb_ = await pool.connect(stack, b, tb, 1)
        r = await ca.send_text(b, "muted")
        assert (r["errCode"], r["data"]["seq"]) == (0, 2), r
        r = await cc.send_text(b, "barrier")
        assert r["errCode"] == 0, r
        got = await msgs_until(cb_, lambda m: m["sendID"] == c)
        assert [m for m in got if m.get("sendID") == a
                and m.get("seq", 0) > 0] == [], got
        # the message is stored and synced by seq
        r = await cb_.newest()
        assert r["data"]["maxSeqs"][ab] == 2, r
        assert (await ws_read_seqs(cb_, [ab]))[ab]["maxSeq"] == 2
        assert seq_list(await pull(cb_, ab, 1, 2)) == [1, 2]
        assert us.conv(b, ab)["unreadCount"] == 2

        # offline: no job for B
        await cb_.close()
        await asyncio.to_thread(wait_offline, redis_server, b)
        r = await ca.send_text(b, "muted offline")
        assert (r["errCode"], r["data"]["seq"]) == (0, 3), r
        await job_barrier(redis_server, ca, z, "barrier job")
        # (seq 1 went to an offline B still at recvMsgOpt 0: a job)
        assert [(j["conversationID"], j["seq"])
                for j in jobs_for(redis_server, b)] == [(ab, "1")]
        # a conversation of B's left at 0 still makes jobs
        r = await cc.send_text(b, "not muted")
        assert r["errCode"] == 0, r
        jobs = await asyncio.to_thread(wait_jobs, redis_server, b, 2)
        assert [j["conversationID"] for j in jobs] == [ab, cb], jobs

    run_clients(scenario)


def test_recv_msg_opt_2_online_only(stack, api, redis_server):
    us = Users(api, 3)
    a, b, z = us.ids
    ab = single_conv(a, b)
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        r = await ca.send_text(b, "first")
        assert r["errCode"] == 0, r
        assert ok(us.set_conv(b, ab, recvMsgOpt={"value": 2})) == {}
        assert us.conv(b, ab)["recvMsgOpt"] == 2
        assert ok(us.call(b, "/conversation/get_not_notify_conversation_ids",
                          {"userID": b}))["conversationIDs"] == [ab]

        cb_ = await pool.connect(stack, b, tb, 1)
        r = await ca.send_text(b, "online")
        assert r["errCode"] == 0, r
        got = await msgs_until(cb_, lambda m: m.get("seq") == 2)
        assert text_of(got[-1]) == "online"

        await cb_.close()
        await asyncio.to_thread(wait_offline, redis_server, b)
        r = await ca.send_text(b, "offline")
        assert (r["errCode"], r["data"]["seq"]) == (0, 3), r
        await job_barrier(redis_server, ca, z, "barrier job")
        # (seq 1 went to an offline B still at recvMsgOpt 0: a job)
        assert [(j["conversationID"], j["seq"])
                for j in jobs_for(redis_server, b)] == [(ab, "1")]

        # back to 0: jobs again
        assert ok(us.set_conv(b, ab, recvMsgOpt=0)) == {}
        assert ok(us.call(b, "/conversation/get_not_notify_conversation_ids",
                          {"userID": b}))["conversationIDs"] == []
        r = await ca.send_text(b, "offline, receiving")
        assert (r["errCode"], r["data"]["seq"]) == (0, 4), r
        jobs = await asyncio.to_thread(wait_jobs, redis_server, b, 2)
        assert [(j["conversationID"], j["seq"]) for j in jobs] == \
            [(ab, "1"), (ab, "4")], jobs

    run_clients(scenario)


def test_recv_msg_opt_0_job_badge(stack, api, redis_server):
    us = Users(api, 3)
    a, b, c = us.ids
    ab, cb = single_conv(a, b), single_conv(c, b)
    ta = us.ws_token(a, 1)
    for i in range(3):
        us.send(c, b, "c%d" % i)
    assert ok(us.mark(b, cb, 1)) == {}           # 2 unread left in cb

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        # the jobs of c's three messages first
        n = len(await asyncio.to_thread(wait_jobs, redis_server, b, 3))
        assert n == 3
        for i in range(3):
            r = await ca.send_text(b, "a%d" % i)
            assert r["errCode"] == 0, r
            jobs = await asyncio.to_thread(wait_jobs, redis_server, b,
                                           n + i + 1)
            job = jobs[-1]
            assert (job["conversationID"], job["seq"], job["sendID"]) == \
                (ab, str(i + 1), a), job
            total = us.sorted_list(b)["unreadTotal"]
            assert total == 2 + i + 1
            assert job.get("badge") == str(total), job

        # reading lowers the next badge
        assert ok(us.mark(b, ab, 3)) == {}
        r = await ca.send_text(b, "a3")
        assert r["errCode"] == 0, r
        jobs = await asyncio.to_thread(wait_jobs, redis_server, b, n + 4)
        assert jobs[-1].get("badge") == "3", jobs[-1]

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 6. set_conversations: fields, wrappers, bounds, 1300


def test_set_conversations_fields_and_notification(stack, api):
    us = Users(api, 2)
    a, b = us.ids
    ab = single_conv(a, b)
    tb = us.ws_token(b, 1)

    async def scenario(pool):
        cb_ = await pool.connect(stack, b, tb, 1)
        # creates the record (no message yet)
        assert ok(us.set_conv(b, ab, isPrivateChat=True)) == {}
        m = (await cb_.push())[0]
        assert (m["contentType"], m["seq"]) == (1300, 0), m
        assert detail_of(m) == {"userID": b, "conversationIDList": [ab]}
        rec = us.conv(b, ab)
        assert (rec["isPrivateChat"], rec["maxSeq"], rec["latestMsg"],
                rec["latestMsgSendTime"], rec["unreadCount"]) == \
            (True, 0, None, 0, 0), rec

        assert ok(us.set_conv(b, ab, burnDuration={"value": 30},
                              groupAtType=2, attachedInfo="att",
                              ex={"value": "e" * 4096})) == {}
        rec = us.conv(b, ab)
        assert (rec["isPrivateChat"], rec["burnDuration"],
                rec["groupAtType"], rec["attachedInfo"], rec["ex"],
                rec["recvMsgOpt"], rec["isPinned"]) == \
            (True, 30, 2, "att", "e" * 4096, 0, False), rec

        for field, val in (("recvMsgOpt", 3), ("recvMsgOpt", -1),
                           ("groupAtType", 4), ("burnDuration", -1),
                           ("burnDuration", 1 << 31),
                           ("attachedInfo", "x" * 4097),
                           ("ex", {"value": "x" * 4097})):
            r = us.set_conv(b, ab, **{field: val})
            assert r["errCode"] == 1001, (field, r)
        # admin may name B; B may not name A
        assert ok(us.admin("/conversation/set_conversations",
                           {"userIDs": [b], "conversation": {
                               "conversationID": ab, "isPinned": True}})) \
            == {}
        r = us.call(b, "/conversation/set_conversations",
                    {"userIDs": [b, a], "conversation": {
                        "conversationID": ab, "isPinned": True}})
        assert r["errCode"] == 1002, r
        r = us.set_conv(b, single_conv(a, "other"), isPinned=True)
        assert r["errCode"] == 1002, r
        rec = us.conv(b, ab)
        assert (rec["isPinned"], rec["burnDuration"], rec["groupAtType"],
                rec["attachedInfo"], rec["ex"]) == \
            (True, 30, 2, "att", "e" * 4096), rec
        r = us.call(b, "/conversation/get_conversations",
                    {"ownerUserID": b,
                     "conversationIDs": [single_conv(b, "x%d" % i)
                                         for i in range(1001)]})
        assert r["errCode"] == 1001, r

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 7. revoke


def test_revoke(stack, api, redis_server):
    us = Users(api, 2)
    a, b = us.ids
    ab = single_conv(a, b)
    ta1, ta2, tb = (us.ws_token(a, 1), us.ws_token(a, 2),
                    us.ws_token(b, 1))
    secret = "secret-%s" % uuid.uuid4().hex

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta1, 1)
        ca2 = await pool.connect(stack, a, ta2, 2)
        cb_ = await pool.connect(stack, b, tb, 1)
        acks = []
        for text in ("one", "two " + secret, "three " + secret):
            r = await ca.send_text(b, text)
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        got = await msgs_until(cb_, lambda m: m["seq"] == 3)
        assert seq_list(got) == [1, 2, 3]
        await msgs_until(ca2, lambda m: m["seq"] == 3)
        assert redis_holding(redis_server, secret, ["*%s*" % a]), \
            "the text is not in Redis before the revoke: bad test"

        # the sender revokes its newest message
        assert ok(us.call(a, "/msg/revoke_msg",
                          {"conversationID": ab, "seq": 3,
                           "userID": a})) == {}
        for cl in (cb_, ca2, ca):
            got = await cl.push()
            assert len(got) == 1, got
            m = got[0]
            assert (m["contentType"], m["seq"]) == (2101, 3), m
            assert secret not in json.dumps(m)
            d = detail_of(m)
            assert {k: d.get(k) for k in (
                "revokerID", "revokerRole", "clientMsgID",
                "sourceMessageSendTime", "sourceMessageSendID",
                "sessionType", "seq")} == {
                "revokerID": a, "revokerRole": 0,
                "clientMsgID": acks[2]["clientMsgID"],
                "sourceMessageSendTime": acks[2]["sendTime"],
                "sourceMessageSendID": a, "sessionType": 1, "seq": 3}, d
            assert d["revokeTime"] >= acks[2]["sendTime"], d
        revoked = m

        # pulls
        for cl in (cb_, ca):
            msgs = await pull(cl, ab, 1, 3)
            assert [(x["seq"], x["contentType"]) for x in msgs] == \
                [(1, 101), (2, 101), (3, 2101)]
            assert msgs[2] == revoked
            msgs = await pull_seq_list(cl, ab, [3])
            assert msgs == [revoked]
        # no new seq, the list's latest message is the revoked one
        r = await cb_.newest()
        assert r["data"]["maxSeqs"][ab] == 3
        lm = us.conv(b, ab)["latestMsg"]
        assert (lm["seq"], lm["contentType"]) == (3, 2101)
        assert secret not in json.dumps(lm)

        # twice: {} and nothing changes
        assert ok(us.call(a, "/msg/revoke_msg",
                          {"conversationID": ab, "seq": 3,
                           "userID": a})) == {}
        assert await pull_seq_list(cb_, ab, [3]) == [revoked]

        # B may not revoke A's message, nor name A
        r = us.call(b, "/msg/revoke_msg",
                    {"conversationID": ab, "seq": 2, "userID": b})
        assert r["errCode"] == 1002, r
        r = us.call(b, "/msg/revoke_msg",
                    {"conversationID": ab, "seq": 2, "userID": a})
        assert r["errCode"] == 1002, r
        # unknown seq
        r = us.call(a, "/msg/revoke_msg",
                    {"conversationID": ab, "seq": 99, "userID": a})
        assert r["errCode"] == 1004, r
        msgs = await pull(cb_, ab, 2, 2)
        assert (msgs[0]["contentType"], text_of(msgs[0])) == \
            (101, "two " + secret)

        # the admin revokes in A's name
        assert ok(us.admin("/msg/revoke_msg",
                           {"conversationID": ab, "seq": 2,
                            "userID": a})) == {}
        got = await cb_.push()
        assert [(m["seq"], m["contentType"]) for m in got] == [(2, 2101)]
        assert detail_of(got[0])["revokerID"] == a
        msgs = await pull(cb_, ab, 1, 3)
        assert [(x["seq"], x["contentType"]) for x in msgs] == \
            [(1, 101), (2, 2101), (3, 2101)]

        # the text is gone from Redis: the conversation's messages, both
        # users' latest messages, and every other key of theirs
        rc = rclient(redis_server)
        assert rc.hlen("im:{c:%s}:msgs" % ab) == 3
        vals = rc.hvals("im:{c:%s}:msgs" % ab)
        assert len(vals) == 3
        assert not any(secret.encode() in v for v in vals)
        # the users' latest-message copies, where the store keeps them
        # (a Redis Cluster; one Redis reads the messages hash)
        for u in (a, b):
            v = rc.hget("im:{u:%s}:last" % u, ab)
            assert v is None or secret.encode() not in v, (u, v)
        assert redis_holding(redis_server, secret,
                             ["*%s*" % a, "*%s*" % b, "im:push"]) == set()

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 8. delete_msgs, clear_conversation_msg, user_clear_all_msg


def test_delete_msgs(stack, api):
    us = Users(api, 2)
    a, b = us.ids
    ab = single_conv(a, b)
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        for i in range(5):
            r = await ca.send_text(b, "d%d" % i)
            assert r["errCode"] == 0, r
        cb_ = await pool.connect(stack, b, tb, 1)

        assert ok(us.call(b, "/msg/delete_msgs", {
            "conversationID": ab, "seqs": [2, 4], "userID": b,
            "deleteSyncOpt": {"isSyncSelf": True,
                              "isSyncOther": False}})) == {}
        m = (await cb_.push())[0]
        assert (m["contentType"], m["seq"]) == (2102, 0), m
        d = detail_of(m)
        assert (d["conversationID"], sorted(d["seqs"])) == (ab, [2, 4]), d
        assert seq_list(await pull(cb_, ab, 1, 5)) == [1, 3, 5]
        assert seq_list(await pull_seq_list(cb_, ab, [2, 3, 4])) == [3]
        assert seq_list(await pull(ca, ab, 1, 5)) == [1, 2, 3, 4, 5]
        rec = us.conv(b, ab)
        assert (rec["maxSeq"], rec["unreadCount"]) == (5, 3), rec
        assert us.sorted_list(b)["unreadTotal"] == 3
        assert ok(us.mark(b, ab, 3)) == {}
        assert us.conv(b, ab)["unreadCount"] == 1
        m = (await cb_.push())[0]                 # B's own 2200
        assert m["contentType"] == 2200, m

        # for both
        assert ok(us.call(b, "/msg/delete_msgs", {
            "conversationID": ab, "seqs": [1, 5], "userID": b,
            "deleteSyncOpt": {"isSyncSelf": True,
                              "isSyncOther": True}})) == {}
        for cl in (cb_, ca):
            got = await msgs_until(cl, lambda x: x["contentType"] == 2102)
            d = detail_of(got[-1])
            assert (d["conversationID"], sorted(d["seqs"])) == \
                (ab, [1, 5]), d
        assert seq_list(await pull(cb_, ab, 1, 5)) == [3]
        assert seq_list(await pull(ca, ab, 1, 5)) == [2, 3, 4]
        assert seq_list(await pull_seq_list(ca, ab, [1, 2, 5])) == [2]
        assert us.conv(b, ab)["unreadCount"] == 0
        assert us.conv(a, ab)["unreadCount"] == 0

        # someone else's messages: B's token naming A
        r = us.call(b, "/msg/delete_msgs", {
            "conversationID": ab, "seqs": [2], "userID": a,
            "deleteSyncOpt": {"isSyncSelf": True, "isSyncOther": False}})
        assert r["errCode"] == 1002, r
        assert seq_list(await pull(ca, ab, 1, 5)) == [2, 3, 4]

        # new messages count and show
        r = await ca.send_text(b, "new")
        assert (r["errCode"], r["data"]["seq"]) == (0, 6), r
        assert seq_list(await pull(cb_, ab, 1, 6)) == [3, 6]
        assert us.conv(b, ab)["unreadCount"] == 1

    run_clients(scenario)


def test_clear_conversation_msg(stack, api):
    us = Users(api, 2)
    a, b = us.ids
    ab = single_conv(a, b)
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        for i in range(4):
            r = await ca.send_text(b, "c%d" % i)
            assert r["errCode"] == 0, r
        cb_ = await pool.connect(stack, b, tb, 1)

        assert ok(us.call(b, "/msg/clear_conversation_msg", {
            "conversationIDs": [ab], "userID": b,
            "deleteSyncOpt": {"isSyncSelf": True,
                              "isSyncOther": False}})) == {}
        m = (await cb_.push())[0]
        assert (m["contentType"], m["seq"]) == (1703, 0), m
        assert detail_of(m)["conversationIDs"] == [ab]
        rec = us.conv(b, ab)
        assert (rec["minSeq"], rec["maxSeq"], rec["unreadCount"]) == \
            (4, 4, 0), rec
        assert await pull(cb_, ab, 1, 4) == []
        assert await pull_seq_list(cb_, ab, [1, 4]) == []
        assert seq_list(await pull(ca, ab, 1, 4)) == [1, 2, 3, 4]
        assert us.conv(a, ab)["minSeq"] == 0

        for i in range(2):
            r = await ca.send_text(b, "after %d" % i)
            assert r["errCode"] == 0, r
        got = await msgs_until(cb_, lambda x: x["seq"] == 6)
        assert seq_list(got) == [5, 6]
        assert seq_list(await pull(cb_, ab, 1, 10)) == [5, 6]
        rec = us.conv(b, ab)
        assert (rec["minSeq"], rec["maxSeq"], rec["unreadCount"]) == \
            (4, 6, 2), rec

        # for the peer too
        assert ok(us.call(b, "/msg/clear_conversation_msg", {
            "conversationIDs": [ab], "userID": b,
            "deleteSyncOpt": {"isSyncSelf": True,
                              "isSyncOther": True}})) == {}
        assert await pull(ca, ab, 1, 6) == []
        assert await pull(cb_, ab, 1, 6) == []
        assert us.conv(a, ab)["minSeq"] == 6
        assert us.conv(b, ab)["minSeq"] == 6
        r = us.call(b, "/msg/clear_conversation_msg", {
            "conversationIDs": [single_conv(a, "other")], "userID": b,
            "deleteSyncOpt": {"isSyncSelf": True, "isSyncOther": False}})
        assert r["errCode"] == 1002, r

    run_clients(scenario)


def test_user_clear_all_msg(stack, api):
    us = Users(api, 3)
    b, a, c = us.ids
    ab, cb = single_conv(a, b), single_conv(c, b)
    tb = us.ws_token(b, 1)
    for i in range(3):
        us.send(a, b, "a%d" % i)
    for i in range(2):
        us.send(c, b, "c%d" % i)
    assert us.sorted_list(b)["unreadTotal"] == 5

    async def scenario(pool):
        cb_ = await pool.connect(stack, b, tb, 1)
        assert ok(us.call(b, "/msg/user_clear_all_msg", {
            "userID": b, "deleteSyncOpt": {"isSyncSelf": True,
                                           "isSyncOther": False}})) == {}
        lst = us.sorted_list(b)
        assert lst["unreadTotal"] == 0, lst
        assert sorted((e["conversationID"], e["minSeq"], e["unreadCount"])
                      for e in lst["conversationElems"]) == \
            sorted([(ab, 3, 0), (cb, 2, 0)])
        assert await pull(cb_, ab, 1, 3) == []
        assert await pull(cb_, cb, 1, 2) == []
        us.send(a, b, "new")
        assert seq_list(await pull(cb_, ab, 1, 4)) == [4]
        assert us.sorted_list(b)["unreadTotal"] == 1
        # A still has everything
        r = ok(us.admin("/conversation/get_conversation",
                        {"ownerUserID": a, "conversationID": ab}))
        assert r["conversation"]["minSeq"] == 0

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 9. typing


def test_typing_is_online_only(stack, api, redis_server):
    us = Users(api, 3)
    a, b, z = us.ids
    ab = single_conv(a, b)
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)
    typing = {"sendID": a, "recvID": b, "sessionType": 1,
              "contentType": 113,
              "content": json.dumps({"msgTips": "typing..."})}

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        cb_ = await pool.connect(stack, b, tb, 1)
        r = await ca.send_text(b, "hello")
        assert (r["errCode"], r["data"]["seq"]) == (0, 1), r
        await msgs_until(cb_, lambda m: m["seq"] == 1)

        r = await ca.request(1003, typing)
        assert r["errCode"] == 0, r
        assert r["data"]["seq"] == 0, r
        got = await cb_.push()
        assert [(m["contentType"], m["seq"], m["sendID"])
                for m in got] == [(113, 0, a)], got
        assert content_of(got[0]) == {"msgTips": "typing..."}

        r = await cb_.newest()
        assert r["data"]["maxSeqs"][ab] == 1, r
        assert seq_list(await pull(cb_, ab, 1, 10)) == [1]
        assert us.conv(b, ab)["unreadCount"] == 1
        assert us.conv(b, ab)["latestMsg"]["contentType"] == 101
        rc = rclient(redis_server)
        assert rc.hlen("im:{c:%s}:msgs" % ab) == 1
        assert not any(b"msgTips" in v
                       for v in rc.hvals("im:{c:%s}:msgs" % ab))

        # B offline: no job
        await cb_.close()
        await asyncio.to_thread(wait_offline, redis_server, b)
        n = len(jobs_for(redis_server, b))
        r = await ca.request(1003, typing)
        assert (r["errCode"], r["data"]["seq"]) == (0, 0), r
        await job_barrier(redis_server, ca, z, "barrier")
        assert len(jobs_for(redis_server, b)) == n
        assert rc.hlen("im:{c:%s}:msgs" % ab) == 1

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 10. delete_msg_physical


def test_delete_msg_physical(stack, api, redis_server):
    us = Users(api, 2)
    a, b = us.ids
    ab = single_conv(a, b)
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta, 1)
        cb_ = await pool.connect(stack, b, tb, 1)
        acks = []
        for i in range(3):
            r = await ca.send_text(b, "old %d" % i)
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        cut = acks[-1]["sendTime"] + 1
        await asyncio.to_thread(after_ms, cut + 2)
        for i in range(2):
            r = await ca.send_text(b, "new %d" % i)
            assert r["errCode"] == 0, r
            assert r["data"]["sendTime"] >= cut, (r, cut)

        r = us.call(a, "/msg/delete_msg_physical",
                    {"conversationIDs": [ab], "timestamp": cut})
        assert r["errCode"] == 1002, r
        assert seq_list(await pull(ca, ab, 1, 5)) == [1, 2, 3, 4, 5]

        assert ok(us.admin("/msg/delete_msg_physical",
                           {"conversationIDs": [ab],
                            "timestamp": cut})) == {}
        for cl in (ca, cb_):
            assert seq_list(await pull(cl, ab, 1, 5)) == [4, 5]
            assert await pull_seq_list(cl, ab, [1, 2, 3]) == []
        rc = rclient(redis_server)
        assert sorted(int(k) for k in rc.hkeys("im:{c:%s}:msgs" % ab)) == \
            [4, 5]
        r = await cb_.newest()
        assert r["data"]["maxSeqs"][ab] == 5
        r = await ca.send_text(b, "after")
        assert (r["errCode"], r["data"]["seq"]) == (0, 6), r

    run_clients(scenario)
