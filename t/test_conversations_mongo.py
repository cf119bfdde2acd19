"""Conversations with MongoDB (FerretDB) behind Redis, end to end:

- Redis loses everything (FLUSHALL): the users are registered again
  (users live in Redis only for now) and their conversation lists come
  back unchanged: IDs, pins, recvMsgOpt, settings, hasReadSeq, unread,
  deleted seqs, latest message;
- a revoked message's text is gone from MongoDB's `msg` documents too,
  for a message already persisted, one only in MongoDB (outside the hot
  window), and one revoked while its persistence races;
- delete_msg_physical deletes from MongoDB too: still gone after a
  FLUSHALL.

Every test runs on its own MongoDB + Redis + nginx (helpers_mongo).
"""

import asyncio
import json
import time
import uuid

import pytest

from conftest import single_conv
from helpers_mongo import (fresh_tokens, mstack,  # noqa: F401 (a fixture)
                           ON_LOOP, await_persisted, make_stack,
                           teardown_stack, wait_for, wait_persisted)
from helpers_msg import run_clients




# ---------------------------------------------------------------------------
# helpers


def ok(r):
    assert r["errCode"] == 0, r
    return r["data"]


def text_of(m):
    return json.loads(m["content"]).get("content")


def detail_of(m):
    return json.loads(json.loads(m["content"])["detail"])


def call(st, tok, path, body):
    return st.api.post(path, body, token=tok)


def admin(st, path, body):
    return st.api.post(path, body, token=st.api.admin_token())


def rest_send(st, a, b, text):
    return ok(admin(st, "/msg/send_msg", {
        "sendID": a, "recvID": b, "senderPlatformID": 1,
        "content": {"content": text}, "contentType": 101,
        "sessionType": 1}))


async def pull(c, conv, begin, end, num=100):
    r = await c.pull(conv, begin, end, num)
    assert r["errCode"] == 0, r
    return (r["data"]["msgs"].get(conv) or {}).get("Msgs") or []


def seq_list(msgs):
    return [m["seq"] for m in msgs]


def view(lst):
    """What must survive of a sorted list: per conversation, in order."""
    keep = ("conversationID", "conversationType", "userID", "recvMsgOpt",
            "isPinned", "isPrivateChat", "burnDuration", "groupAtType",
            "attachedInfo", "ex", "minSeq", "maxSeq", "hasReadSeq",
            "unreadCount", "latestMsgSendTime")
    out = []
    for e in lst["conversationElems"]:
        row = {k: e[k] for k in keep}
        lm = e["latestMsg"]
        row["latestMsg"] = None if lm is None else (
            lm["seq"], lm["serverMsgID"], lm["contentType"], lm["content"])
        out.append(row)
    return {"total": lst["conversationTotal"],
            "unreadTotal": lst["unreadTotal"], "elems": out}


def docs_holding(st, text, convs):
    """The _ids of `msg` and `conversation` documents of these
    conversations that hold text anywhere."""
    db = st.db()
    found = []
    for d in db.msg.find({"conversationID": {"$in": list(convs)}}):
        if text in json.dumps(d, default=str):
            found.append(d["_id"])
    for d in db.conversation.find({"conversationID": {"$in": list(convs)}}):
        if text in json.dumps(d, default=str):
            found.append(d["_id"])
    return found


# ---------------------------------------------------------------------------
# 1. the conversation list survives a FLUSHALL


def test_flushall_keeps_conversation_list(mstack):
    st = mstack()
    (a, b, c, d), tok = st.users(4)
    ab, cb, bd = single_conv(a, b), single_conv(c, b), single_conv(b, d)
    tb = tok[b]

    async def before(pool):
        ca = await pool.connect(st.ngx, a, tok[a])
        cb_ = await pool.connect(st.ngx, b, tb)
        for i in range(5):
            r = await ca.send_text(b, "a%d" % i)
            assert r["errCode"] == 0, r
        r = await cb_.send_text(d, "b to d")
        assert r["errCode"] == 0, r
        await pool.close_all()

    run_clients(before)
    for i in range(2):
        rest_send(st, c, b, "c%d" % i)

    # B's settings and read state
    assert ok(call(st, tb, "/msg/mark_conversation_as_read",
                   {"conversationID": ab, "userID": b, "hasReadSeq": 3,
                    "seqs": []})) == {}
    assert ok(call(st, tb, "/msg/delete_msgs", {
        "conversationID": ab, "seqs": [4], "userID": b,
        "deleteSyncOpt": {"isSyncSelf": True, "isSyncOther": False}})) == {}
    for conv, fields in ((ab, {"isPinned": True, "ex": "kept"}),
                         (cb, {"recvMsgOpt": 1, "attachedInfo": "att"}),
                         (bd, {"recvMsgOpt": 2, "burnDuration": 60,
                               "isPrivateChat": True})):
        body = {"conversationID": conv}
        body.update(fields)
        assert ok(call(st, tb, "/conversation/set_conversations",
                       {"userIDs": [b], "conversation": body})) == {}

    def b_state(tb):
        lst = ok(call(st, tb, "/conversation/get_sorted_conversation_list",
                      {"userID": b, "conversationIDs": []}))
        pinned = ok(call(st, tb, "/conversation/get_pinned_conversation_ids",
                         {"userID": b}))["conversationIDs"]
        mute = ok(call(st, tb,
                       "/conversation/get_not_notify_conversation_ids",
                       {"userID": b}))["conversationIDs"]
        seqs = ok(call(st, tb, "/msg/get_conversations_has_read_and_max_seq",
                       {"userID": b, "conversationIDs": []}))["seqs"]
        return {"list": view(lst), "pinned": sorted(pinned),
                "mute": sorted(mute), "seqs": seqs}

    def others(tok):
        out = {}
        for u, conv in ((a, ab), (c, cb), (d, bd)):
            one = ok(call(st, tok[u], "/conversation/get_conversation",
                          {"ownerUserID": u, "conversationID": conv})
                     )["conversation"]
            out[u] = (one["maxSeq"], one["hasReadSeq"], one["unreadCount"])
        return out

    old = b_state(tb)
    assert [e["conversationID"] for e in old["list"]["elems"]] == \
        [ab, cb, bd]
    e_ab = old["list"]["elems"][0]
    assert (e_ab["hasReadSeq"], e_ab["unreadCount"], e_ab["maxSeq"],
            e_ab["isPinned"]) == (3, 1, 5, True), e_ab
    assert old["list"]["unreadTotal"] == 3
    assert old["pinned"] == [ab]
    assert old["mute"] == sorted([cb, bd])
    old_others = others(tok)
    assert old_others == {a: (5, 5, 0), c: (2, 2, 0), d: (1, 0, 1)}

    # everything in MongoDB: the messages, and every user's records
    wait_persisted(st, {ab: 5, cb: 2, bd: 1})
    wait_for(lambda: st.db().conversation.count_documents(
        {"conversationID": {"$in": [ab, cb, bd]}}) >= 6, 10, 0.1,
        "the six conversation records in MongoDB")

    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [a, b, c, d])
    tb = tok[b]

    new = b_state(tb)
    assert new == old
    assert others(tok) == old_others

    async def after(pool):
        ca = await pool.connect(st.ngx, a, tok[a])
        cb_ = await pool.connect(st.ngx, b, tb)
        r = await cb_.request(1006, {"conversationIDs": []})
        assert r["errCode"] == 0, r
        assert {k: (v["maxSeq"], v["hasReadSeq"])
                for k, v in r["data"]["seqs"].items()} == \
            {ab: (5, 3), cb: (2, 0), bd: (1, 1)}
        # the deleted seq stays hidden for B only
        assert seq_list(await pull(cb_, ab, 1, 5)) == [1, 2, 3, 5]
        assert seq_list(await pull(ca, ab, 1, 5)) == [1, 2, 3, 4, 5]
        # a new message: the latest, the read state kept
        r = await ca.send_text(b, "after the flush")
        assert r["errCode"] == 0, r
        assert r["data"]["seq"] > 5
        one = ok(call(st, tb, "/conversation/get_conversation",
                      {"ownerUserID": b, "conversationID": ab})
                 )["conversation"]
        assert (one["hasReadSeq"], one["isPinned"], one["maxSeq"],
                one["latestMsg"]["seq"], text_of(one["latestMsg"])) == \
            (3, True, r["data"]["seq"], r["data"]["seq"], "after the flush")

    run_clients(after)

    # the version log started anew: an old versionID syncs in full
    inc = ok(call(st, tb, "/conversation/get_incremental_conversations",
                  {"userID": b, "version": 0, "versionID": ""}))
    assert inc["full"] is True
    assert sorted(x["conversationID"] for x in inc["insert"]) == \
        sorted([ab, cb, bd])


def test_unread_after_flushall_counts_messages(mstack):
    """After a Redis loss the next seq jumps past the reserved block
    (im_seq_block, 1000 by default): seqs that never held a message must
    not count as unread (nor in the offline-push badge)."""
    st = mstack()
    (a, b), tok = st.users(2)
    ab = single_conv(a, b)
    for i in range(3):
        rest_send(st, a, b, "before %d" % i)
    assert ok(call(st, tok[b], "/msg/mark_conversation_as_read",
                   {"conversationID": ab, "userID": b, "hasReadSeq": 3,
                    "seqs": []})) == {}
    wait_persisted(st, {ab: 3})
    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [a, b])

    ack = rest_send(st, a, b, "after")
    one = ok(call(st, tok[b], "/conversation/get_conversation",
                  {"ownerUserID": b, "conversationID": ab}))["conversation"]
    lst = ok(call(st, tok[b], "/conversation/get_sorted_conversation_list",
                  {"userID": b, "conversationIDs": []}))
    assert (one["maxSeq"], one["hasReadSeq"]) == (ack["seq"], 3), one
    assert (one["unreadCount"], lst["unreadTotal"]) == (1, 1), \
        (ack["seq"], one["unreadCount"], lst["unreadTotal"])


# ---------------------------------------------------------------------------
# 2. a revoked message's text is gone from MongoDB


def test_revoke_text_gone_from_mongo(mstack):
    st = mstack(http="im_hot_window 2;")
    (a, b), tok = st.users(2)
    ab = single_conv(a, b)
    secret = "secret-%s" % uuid.uuid4().hex

    async def scenario(pool):
        ca = await pool.connect(st.ngx, a, tok[a])
        cb_ = await pool.connect(st.ngx, b, tok[b])
        acks = []
        for i in range(6):
            r = await ca.send_text(b, "m%d %s" % (i, secret))
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        got = []
        while len(got) < 6:                 # the original pushes
            got += await cb_.push()
        assert seq_list(got) == [1, 2, 3, 4, 5, 6]
        await await_persisted(st, {ab: 6})
        assert len(await asyncio.to_thread(docs_holding, st, secret,
                                           [ab])) >= 6, "bad test"

        # seq 6, the newest: in Redis and in MongoDB
        for seq in (6,):
            assert ok(call(st, tok[a], "/msg/revoke_msg",
                           {"conversationID": ab, "seq": seq,
                            "userID": a})) == {}
            got = await cb_.push()
            assert [(m["seq"], m["contentType"]) for m in got] == \
                [(seq, 2101)], got
            m = got[0]
            assert detail_of(m)["clientMsgID"] == acks[seq - 1]["clientMsgID"]

        # seq 7: revoked at once, its persistence racing
        r = await ca.send_text(b, "m6 %s" % secret)
        assert (r["errCode"], r["data"]["seq"]) == (0, 7), r
        assert ok(call(st, tok[a], "/msg/revoke_msg",
                       {"conversationID": ab, "seq": 7,
                        "userID": a})) == {}

        def revoked_in_mongo():
            docs = {d["seq"]: d for d in st.db().msg.find(
                {"conversationID": ab})}
            return (sorted(docs) == list(range(1, 8))
                    and all(docs[s]["msg"]["contentType"] == 2101
                            for s in (6, 7)))
        await asyncio.to_thread(wait_for, revoked_in_mongo, 10, 0.1,
                                "seqs 6, 7 revoked in MongoDB")
        await await_persisted(st, {ab: 7})
        docs = {d["seq"]: d for d in st.db().msg.find({"conversationID": ab})}
        for s in (6, 7):
            assert secret not in json.dumps(docs[s], default=str), s
            assert docs[s]["msg"]["seq"] == s
        for s in (1, 2, 3, 4, 5):
            assert docs[s]["msg"]["contentType"] == 101
            assert secret in text_of(docs[s]["msg"])

        msgs = await pull(cb_, ab, 1, 7)
        assert [(m["seq"], m["contentType"]) for m in msgs] == \
            [(1, 101), (2, 101), (3, 101), (4, 101), (5, 101), (6, 2101),
             (7, 2101)]
        return msgs

    msgs = run_clients(scenario)

    # and from MongoDB alone
    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [a, b])

    async def after(pool):
        cb_ = await pool.connect(st.ngx, b, tok[b])
        got = await pull(cb_, ab, 1, 7)
        assert got == msgs
        for m in got:
            if m["seq"] in (6, 7):
                assert secret not in json.dumps(m)

    run_clients(after)


def test_revoke_message_only_in_mongo(mstack):
    """A message that left Redis (outside the hot window) is revoked
    in MongoDB: pulls (from MongoDB) show the 2101, the text is gone."""
    st = mstack(http="im_hot_window 2;")
    (a, b), tok = st.users(2)
    ab = single_conv(a, b)
    secret = "secret-%s" % uuid.uuid4().hex

    async def scenario(pool):
        ca = await pool.connect(st.ngx, a, tok[a])
        cb_ = await pool.connect(st.ngx, b, tok[b])
        acks = []
        for i in range(5):
            r = await ca.send_text(b, "m%d %s" % (i, secret))
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        got = []
        while len(got) < 5:
            got += await cb_.push()
        await await_persisted(st, {ab: 5})
        await asyncio.to_thread(
            wait_for, lambda: "1" not in st.cli(
                "HKEYS", "im:{c:%s}:msgs" % ab).split(), 10, 0.1,
            "seq 1 out of the hot window")

        r = call(st, tok[a], "/msg/revoke_msg",
                 {"conversationID": ab, "seq": 1, "userID": a})
        assert ok(r) == {}
        got = await cb_.push()
        assert [(m["seq"], m["contentType"]) for m in got] == [(1, 2101)]
        assert detail_of(got[0])["clientMsgID"] == acks[0]["clientMsgID"]
        await asyncio.to_thread(
            wait_for, lambda: st.docs(ab)[1]["msg"]["contentType"] == 2101,
            10, 0.1, "seq 1 revoked in MongoDB")
        assert secret not in json.dumps(st.docs(ab)[1], default=str)
        msgs = await pull(cb_, ab, 1, 5)
        assert [(m["seq"], m["contentType"]) for m in msgs] == \
            [(1, 2101), (2, 101), (3, 101), (4, 101), (5, 101)]
        assert secret not in json.dumps(msgs[0])

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 3. delete_msg_physical reaches MongoDB


def test_delete_msg_physical_mongo(mstack):
    st = mstack(http="im_hot_window 2;")
    (a, b), tok = st.users(2)
    ab = single_conv(a, b)

    async def scenario(pool):
        ca = await pool.connect(st.ngx, a, tok[a])
        acks = []
        for i in range(3):
            r = await ca.send_text(b, "old %d" % i)
            assert r["errCode"] == 0, r
            acks.append(r["data"])
        cut = acks[-1]["sendTime"] + 1
        while time.time() * 1000 <= cut + 2:      # the server's clock too
            await asyncio.sleep(0.001)
        for i in range(2):
            r = await ca.send_text(b, "new %d" % i)
            assert r["errCode"] == 0, r
            assert r["data"]["sendTime"] >= cut
        await await_persisted(st, {ab: 5})

        assert ok(admin(st, "/msg/delete_msg_physical",
                        {"conversationIDs": [ab], "timestamp": cut})) == {}
        assert seq_list(await pull(ca, ab, 1, 5)) == [4, 5]
        await asyncio.to_thread(
            wait_for, lambda: sorted(st.docs(ab)) == [4, 5], 10, 0.1,
            "seqs 1-3 deleted from MongoDB")

    run_clients(scenario)
    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [a, b])

    async def after(pool):
        cb_ = await pool.connect(st.ngx, b, tok[b])
        assert seq_list(await pull(cb_, ab, 1, 5)) == [4, 5]

    run_clients(after)


# ---------------------------------------------------------------------------
# a user with more records than one restore call takes (1000)


def test_flushall_restores_in_chunks(mstack):
    """1100 records in MongoDB (as the persistence writes them for new
    conversations): after a FLUSHALL they come back, over two restore
    calls."""
    st = mstack()
    (a,), tok = st.users(1)
    peers = ["p%d%s" % (i, a) for i in range(1100)]
    docs = []
    for p in peers:
        conv = single_conv(a, p)
        docs.append({"_id": "%s:%s" % (a, conv), "ownerUserID": a,
                     "conversationID": conv, "conversationType": 1,
                     "userID": p, "groupID": "", "hasReadSeq": 0,
                     "minSeq": 0, "deleted": False, "rev": 1})
    st.db().conversation.insert_many(docs)
    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [a])
    lst = ok(call(st, tok[a], "/conversation/get_sorted_conversation_list",
                  {"userID": a, "pagination": {"pageNumber": 1,
                                               "showNumber": 10}}))
    assert lst["conversationTotal"] == 1100
    ids = ok(call(st, tok[a], "/conversation/get_full_conversation_ids",
                  {"userID": a}))["conversationIDs"]
    assert sorted(ids) == sorted(single_conv(a, p) for p in peers)
