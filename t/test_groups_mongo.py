"""Groups with MongoDB (FerretDB) behind Redis (docs/architecture.md,
"Groups"): every change is in MongoDB's `group` collection before the
call answers, and a Redis FLUSHALL loses nothing:

- the group record, members with their roles and mutes, former members'
  ranges and pending applications come back (loaded on first use, by a
  REST call or by a send);
- each member's side comes back with its conversation record: the
  joined-groups list, the seqs it may read (a kicked member still stops
  at its leave), so sends, pushes and pulls keep working;
- a group ID MongoDB never had is still 1201, and leaves nothing in Redis.

Every test runs on its own MongoDB + Redis + nginx (helpers_mongo).
"""

import time
import uuid

from helpers_mongo import (fresh_tokens, mstack,  # noqa: F401 (a fixture)
                           wait_for, wait_persisted)
from helpers_msg import run_clients
from test_conversations_mongo import admin, call, ok, pull


def group_state(st, tok, owner, gid):
    info = ok(call(st, tok[owner], "/group/get_groups_info",
                   {"groupIDs": [gid]}))["groupInfos"][0]
    members = ok(call(st, tok[owner], "/group/get_group_member_list",
                      {"groupID": gid,
                       "pagination": {"pageNumber": 1, "showNumber": 100}}))
    apps = ok(call(st, tok[owner],
                   "/group/get_group_users_req_application_list",
                   {"groupID": gid}))
    keep = ("groupName", "ownerUserID", "memberCount", "status",
            "needVerification", "notification")
    return ({k: info[k] for k in keep},
            sorted((m["userID"], m["roleLevel"], m["nickname"],
                    m["muteEndTime"]) for m in members["members"]),
            sorted((a["userID"], a["handleResult"], a["reqMsg"])
                   for a in apps["groupRequests"]))


def test_flushall_keeps_groups(mstack):
    st = mstack()
    (o, adm, m1, m2, kicked, applicant), tok = st.users(6)
    gid = "gm" + uuid.uuid4().hex[:8]
    conv = "sg_" + gid
    ok(call(st, tok[o], "/group/create_group",
            {"memberUserIDs": [m1, m2, kicked], "adminUserIDs": [adm],
             "groupInfo": {"groupID": gid, "groupName": "kept",
                           "needVerification": 1}}))
    ok(call(st, tok[o], "/group/set_group_member_info",
            {"members": [{"groupID": gid, "userID": m1,
                          "nickname": "one"}]}))
    ok(call(st, tok[o], "/group/mute_group_member",
            {"groupID": gid, "userID": m2, "mutedSeconds": 3600}))
    ok(call(st, tok[applicant], "/group/join_group",
            {"groupID": gid, "reqMessage": "let me in"}))
    ok(call(st, tok[o], "/group/set_group_info",
            {"groupInfo": {"groupID": gid, "notification": "hello"}}))

    async def talk(pool):
        c = await pool.connect(st.ngx, m1, tok[m1])
        for i in range(3):
            r = await c.send_text("", "g%d" % i, sessionType=3, groupID=gid)
            assert r["errCode"] == 0, r
        await pool.close_all()

    run_clients(talk)
    ok(call(st, tok[o], "/group/kick_group",
            {"groupID": gid, "kickedUserIDs": [kicked]}))
    max_seq = ok(call(st, tok[m1], "/conversation/get_conversation",
                      {"ownerUserID": m1, "conversationID": conv})
                 )["conversation"]["maxSeq"]
    old = group_state(st, tok, o, gid)
    assert old[0]["memberCount"] == 4 and old[0]["notification"] == "hello"
    assert (m1, 20, "one", 0) in old[1] and (adm, 60, "", 0) in old[1]
    assert old[2] == [(applicant, 0, "let me in")]
    kicked_seqs = None

    async def kicked_view(pool):
        nonlocal kicked_seqs
        c = await pool.connect(st.ngx, kicked, tok[kicked])
        kicked_seqs = [m["seq"] for m in await pull(c, conv, 1, 100)]
        await pool.close_all()

    run_clients(kicked_view)
    assert kicked_seqs and max(kicked_seqs) < max_seq

    # the messages persisted, then Redis forgets everything
    wait_persisted(st, {conv: max_seq})
    assert st.db().group.count_documents({"groupID": gid}) >= 8
    assert st.cli("FLUSHALL") == "OK"
    tok = fresh_tokens(st, [o, adm, m1, m2, kicked, applicant])

    # the group, as it was (loaded by the first call)
    new = group_state(st, tok, o, gid)
    assert new == old
    joined = ok(call(st, tok[m1], "/group/get_joined_group_list",
                     {"fromUserID": m1}))
    assert [g["groupID"] for g in joined["groups"]] == [gid]
    assert ok(call(st, tok[kicked], "/group/get_joined_group_list",
                   {"fromUserID": kicked}))["groups"] == []

    # sends keep working (the mute too), pushes reach members, the kicked
    # member still reads up to its leave only
    async def after(pool):
        c1 = await pool.connect(st.ngx, m1, tok[m1])
        c2 = await pool.connect(st.ngx, m2, tok[m2])
        ck = await pool.connect(st.ngx, kicked, tok[kicked])
        r = await c2.send_text("", "muted?", sessionType=3, groupID=gid)
        assert r["errCode"] == 1402, r
        r = await c1.send_text("", "after", sessionType=3, groupID=gid)
        assert r["errCode"] == 0, r
        assert r["data"]["seq"] > max_seq
        got = await c2.push()
        assert [m["seq"] for m in got] == [r["data"]["seq"]]
        # (the seqs a re-seed jumped over hold nothing: pull around them)
        seqs = [m["seq"] for m in await pull(c2, conv, 1, max_seq)]
        assert seqs == list(range(1, max_seq + 1)), seqs
        new = r["data"]["seq"]
        assert [m["seq"] for m in await pull(c2, conv, new, new)] == [new]
        again = [m["seq"] for m in await pull(ck, conv, 1, max_seq)]
        assert again == kicked_seqs
        await pool.close_all()

    run_clients(after)


def test_unknown_group_stays_unknown(mstack):
    st = mstack()
    (a,), tok = st.users(1)
    gid = "nx" + uuid.uuid4().hex[:8]
    r = call(st, tok[a], "/group/get_groups_info", {"groupIDs": [gid]})
    assert ok(r)["groupInfos"] == []
    r = call(st, tok[a], "/group/join_group", {"groupID": gid})
    assert r["errCode"] == 1201, r

    async def send(pool):
        c = await pool.connect(st.ngx, a, tok[a])
        r = await c.send_text("", "x", sessionType=3, groupID=gid)
        assert r["errCode"] == 1201, r
        await pool.close_all()

    run_clients(send)
    # nothing of it in Redis or MongoDB
    assert st.cli("KEYS", "*%s*" % gid) == ""
    assert st.db().group.count_documents({"groupID": gid}) == 0
    # and it can still be created
    ok(call(st, tok[a], "/group/create_group",
            {"groupInfo": {"groupID": gid}}))
    wait_for(lambda: st.db().group.count_documents({"groupID": gid}) >= 2,
             5, 0.1, "the new group in MongoDB")
    time.sleep(0)
