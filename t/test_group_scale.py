"""A 10,000-member group with 2,000 members online over both workers
(docs/architecture.md, "Groups"): one message reaches every online
member exactly once, Redis receives one PUBLISH for it, and every offline
member (but the sender) gets one offline-push job, in pages.
"""

import asyncio
import time
import uuid

import redis as pyredis

from conftest import CLUSTER, uids
from helpers_msg import run_clients, worker_of

MEMBERS = 10000
ONLINE = 2000


def publishes(redis_server):
    info = pyredis.Redis(host="127.0.0.1", port=redis_server.port).info(
        "commandstats")
    return info.get("cmdstat_publish", {}).get("calls", 0)


def jobs_of(redis_server, conv):
    r = pyredis.Redis(host="127.0.0.1", port=redis_server.port)
    out = []
    for _, f in r.xrange("im:push"):
        if f.get(b"conversationID") == conv.encode():
            out.append(f[b"recvID"].decode())
    return out


def test_ten_thousand_members(stack, api, redis_server):
    if CLUSTER:
        return      # the publish count reads one Redis
    users = uids(MEMBERS, "gs")
    for i in range(0, MEMBERS, 1000):
        api.register(*users[i:i + 1000])
    owner = users[0]
    gid = "gs" + uuid.uuid4().hex[:8]
    conv = "sg_" + gid
    admin = api.admin_token()
    r = api.post("/group/create_group",
                 {"ownerUserID": owner, "groupInfo": {"groupID": gid},
                  "memberUserIDs": users[1:1000]}, token=admin)
    assert r["errCode"] == 0, r
    for i in range(1000, MEMBERS, 1000):
        r = api.post("/group/invite_user_to_group",
                     {"groupID": gid, "invitedUserIDs": users[i:i + 1000]},
                     token=admin)
        assert r["errCode"] == 0, r
    info = api.post("/group/get_groups_info", {"groupIDs": [gid]},
                    token=admin)["data"]["groupInfos"][0]
    assert info["memberCount"] == MEMBERS

    online = users[MEMBERS - ONLINE:]
    tokens = {u: api.user_token(u, 1) for u in online}

    async def scenario(pool):
        sem = asyncio.Semaphore(100)

        async def one(u):
            async with sem:
                return await pool.connect(stack, u, tokens[u])

        clients = await asyncio.gather(*(one(u) for u in online))
        # both workers hold members
        assert len({worker_of(stack, c) for c in clients[::20]}) == 2
        before = publishes(redis_server)
        r = api.post("/msg/send_msg", {
            "sendID": owner, "groupID": gid, "sessionType": 3,
            "contentType": 101, "content": {"content": "to 10,000"}},
            token=admin)
        assert r["errCode"] == 0, r
        seq = r["data"]["seq"]

        async def got(c):
            msgs = await c.push(timeout=20)
            return [m["seq"] for m in msgs]

        seqs = await asyncio.gather(*(got(c) for c in clients))
        assert all(s == [seq] for s in seqs)
        # one publish for the message, whatever the member count
        assert publishes(redis_server) - before == 1
        # offline members: one job each, the sender and online members
        # none (the members stay online while the paced pass runs: it
        # checks presence when it reaches them)
        want = set(users[1:MEMBERS - ONLINE])
        end = time.time() + 30
        while time.time() < end:
            jobs = jobs_of(redis_server, conv)
            if len(jobs) >= len(want):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        jobs = jobs_of(redis_server, conv)
        assert len(jobs) == len(want) and set(jobs) == want
        # and no second copy of the message anywhere
        for c in clients:
            assert not c.pushes, c.pushes
        return seq

    run_clients(scenario, timeout=120)
