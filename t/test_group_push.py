"""Offline-push jobs of group messages (docs/api.md, "Offline push";
docs/architecture.md, "Groups"): after the ack, in pages of members, one
job per member with no session (not the sender, not members online on
either worker, not members whose recvMsgOpt for the group is 1 or 2),
each with the group's conversation and the message's seq.
"""

import time
import uuid

from conftest import Client, run, uids
from test_conversations import Users, ok, rclient

REST = 3


def group_jobs(redis_server, conv):
    """recvID -> the im:push jobs of conv."""
    out = {}
    for _, f in rclient(redis_server).xrange("im:push"):
        f = {k.decode(): v.decode() for k, v in f.items()}
        if f.get("conversationID") == conv:
            out.setdefault(f["recvID"], []).append(f)
    return out


def wait_for(cond, timeout=10.0):
    end = time.time() + timeout
    while not cond() and time.time() < end:
        time.sleep(0.02)
    return cond()


def test_offline_members_get_jobs_in_pages(stack, api, redis_server):
    # 450 members: three pages of 200; the owner sends
    us = Users(api, 5)
    owner, on1, on2, quiet1, quiet2 = us.ids
    rest = uids(445, "gp")
    api.register(*rest)
    gid = "gp" + uuid.uuid4().hex[:8]
    conv = "sg_" + gid
    ok(api.post("/group/create_group",
                {"ownerUserID": owner, "groupInfo": {"groupID": gid},
                 "memberUserIDs": [on1, on2, quiet1, quiet2] + rest[:300]},
                token=api.admin_token()))
    ok(api.post("/group/invite_user_to_group",
                {"groupID": gid, "invitedUserIDs": rest[300:]},
                token=api.admin_token()))
    for u, opt in ((quiet1, 1), (quiet2, 2)):
        ok(us.call(u, "/conversation/set_conversations",
                   {"userIDs": [u], "conversation": {"conversationID": conv,
                                                     "recvMsgOpt": opt}}))

    async def scenario():
        c1 = await Client(stack, on1, api.user_token(on1, 1)).connect()
        c2 = await Client(stack, on2, api.user_token(on2, 2), 2).connect()
        co = await Client(stack, owner, api.user_token(owner, 1)).connect()
        r = await co.send_text("", "to all", sessionType=3, groupID=gid)
        assert r["errCode"] == 0, r
        seq = r["data"]["seq"]
        # the online members got the push itself
        assert [m["seq"] for m in await c1.push()] == [seq]
        assert [m["seq"] for m in await c2.push()] == [seq]
        # the jobs come while they are still online
        assert wait_for(lambda: len(group_jobs(redis_server, conv)) >= 445)
        time.sleep(0.2)
        for c in (c1, c2, co):
            await c.close()
        return seq

    seq = run(scenario())
    jobs = group_jobs(redis_server, conv)
    # every offline member once; not the sender, the online members or
    # the members who asked for no offline push
    assert set(jobs) == set(rest), set(jobs) ^ set(rest)
    assert all(len(v) == 1 for v in jobs.values())
    j = jobs[rest[0]]
    assert j[0]["seq"] == str(seq) and j[0]["sendID"] == owner
    assert j[0]["sessionType"] == "3"


def test_no_jobs_for_notifications_or_online_only(stack, api, redis_server):
    us = Users(api, 2)
    a, b = us.ids
    gid = "gq" + uuid.uuid4().hex[:8]
    ok(us.call(a, "/group/create_group",
               {"memberUserIDs": [b], "groupInfo": {"groupID": gid}}))
    # the 1501 notification is a stored group message: no job for it
    ok(us.call(a, "/group/set_group_info",
               {"groupInfo": {"groupID": gid, "groupName": "x"}}))
    r = api.post("/msg/send_msg", {"sendID": a, "groupID": gid,
                                   "sessionType": 3, "contentType": 101,
                                   "content": {"content": "hi"},
                                   "notOfflinePush": True},
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    r = api.post("/msg/send_msg", {"sendID": a, "groupID": gid,
                                   "sessionType": 3, "contentType": 101,
                                   "content": {"content": "hi"}},
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    last = r["data"]["seq"]
    assert wait_for(lambda: b in group_jobs(redis_server, "sg_" + gid))
    time.sleep(0.1)
    # only the last message made a job for b; none for the sender a
    jobs = group_jobs(redis_server, "sg_" + gid)
    assert list(jobs) == [b]
    assert [j["seq"] for j in jobs[b]] == [str(last)]


def test_a_burst_shares_one_pass(stack, api, redis_server):
    """Messages queued while the group's earlier one waits take its place:
    each offline member gets a job for the newest, not one per message."""
    us = Users(api, 1)
    owner = us.ids[0]
    rest = uids(600, "gb")
    api.register(*rest)
    gid = "gb" + uuid.uuid4().hex[:8]
    conv = "sg_" + gid
    ok(api.post("/group/create_group",
                {"ownerUserID": owner, "groupInfo": {"groupID": gid},
                 "memberUserIDs": rest}, token=api.admin_token()))
    seqs = []
    for i in range(10):
        r = api.post("/msg/send_msg", {
            "sendID": owner, "groupID": gid, "sessionType": 3,
            "contentType": 101, "content": {"content": "burst %d" % i}},
            token=api.admin_token())
        assert r["errCode"] == 0, r
        seqs.append(r["data"]["seq"])
    last = str(seqs[-1])
    assert wait_for(lambda: all(
        any(j["seq"] == last for j in v)
        for v in group_jobs(redis_server, conv).values())
        and len(group_jobs(redis_server, conv)) == len(rest), 20)
    jobs = group_jobs(redis_server, conv)
    # per worker (each sends its own messages' jobs): at most the message
    # whose pass had started and the newest; 2 workers
    assert max(len(v) for v in jobs.values()) <= 4, jobs[rest[0]]
    made = sum(len(v) for v in jobs.values())
    assert made <= 4 * len(rest) < 10 * len(rest)
