"""Presence subscriptions: WS 2005 SubUserOnlineStatus and its pushes,
/user/get_users_status and /user/subscribe_users_status.

- a watcher on one worker sees a user go online and offline, platform by
  platform, on the other worker and on the other host, within a second;
- unsubscribing stops the pushes; so does closing the connection (the
  worker's presence subscription goes away);
- bounds and bad input get 1001 and leave the connection working;
- protobuf sessions get the same in binary frames.

The shared Redis may be a Redis Cluster (IM_TEST_REDIS=cluster).
"""

import asyncio
import json
import subprocess
import time

import pytest

from conftest import CLUSTER, Api, Client, run, uids
from helpers_msg import worker_of
from test_protobuf import im_pb2  # noqa: F401 (a fixture)


def presence_channel(uid):
    return "im:{u:%s}:p" % uid if CLUSTER else "im:p:%s" % uid


def subscribers(redis_server, uid):
    """Workers subscribed to uid's presence (in a cluster, asked of the
    master of the channel's slot: PUBSUB answers for its node only)."""
    ch = presence_channel(uid)
    if CLUSTER:
        c = redis_server.cluster
        port = c.master_of_slot(c.slot_of(ch))
        out = subprocess.run(["redis-cli", "-p", str(port), "PUBSUB",
                              "SHARDNUMSUB", ch], capture_output=True,
                             text=True, timeout=10).stdout.split()
    else:
        out = redis_server.cli("PUBSUB", "NUMSUB", ch).split()
    return int(out[-1]) if out else 0


async def sub(c, subscribe=(), unsubscribe=()):
    data = {}
    if subscribe is not None:
        data["subscribeUserID"] = list(subscribe)
    if unsubscribe is not None:
        data["unsubscribeUserID"] = list(unsubscribe)
    return await c.request(2005, data)


async def change(c, timeout=1.0):
    """The next 2005 push: (userID, platforms, seconds it took)."""
    start = time.time()
    end = start + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(
            c.ws.recv(), max(0.01, end - time.time())))
        if frame.get("reqIdentifier") == 2005 and not frame.get("msgIncr"):
            (e,) = frame["data"]["subscribers"]
            return e["userID"], e["onlinePlatformIDs"], time.time() - start
        assert frame.get("reqIdentifier") == 2001, frame


async def no_change(c, seconds=0.5):
    try:
        frame = await asyncio.wait_for(c.ws.recv(), seconds)
    except asyncio.TimeoutError:
        return True
    raise AssertionError("unexpected frame: %s" % frame[:300])


async def settle(c, uid, platforms, timeout=5.0):
    """Reads changes until uid's platforms are these and nothing more
    comes for 0.5 s (the tries of on_other_worker() come and go
    first)."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = (await change(c, 0.5))[:2]
        except asyncio.TimeoutError:
            if last == (uid, platforms):
                return
    raise AssertionError("last change %r" % (last,))


async def on_other_worker(ngx, uid, token, platform, than):
    """A session of uid on the worker other than `than`'s (the kernel
    spreads connections: a few tries)."""
    want = worker_of(ngx, than)
    for _ in range(30):
        c = await Client(ngx, uid, token, platform).connect()
        if worker_of(ngx, c) != want:
            return c
        await c.close()
    raise AssertionError("no connection landed on the other worker")


def test_changes_across_workers_and_hosts(stack, stack2, api):
    w, t = uids(2, "pr")
    api.register(w, t)
    tw = api.user_token(w, 5)
    t1, t2 = api.user_token(t, 1), api.user_token(t, 2)

    async def scenario():
        watcher = await Client(stack, w, tw, 5).connect()
        r = await sub(watcher, [t])
        assert r["errCode"] == 0, r
        assert r["data"] == {"subscribers": [
            {"userID": t, "onlinePlatformIDs": []}]}

        ios = await on_other_worker(stack, t, t1, 1, watcher)
        await settle(watcher, t, [1])
        android = await Client(stack2, t, t2, 2).connect()
        assert (await change(watcher))[:2] == (t, [1, 2])
        # a second session on a platform already online changes nothing
        ios2 = await Client(stack2, t, t1, 1).connect()
        assert await no_change(watcher, 0.3)
        await ios.close()
        assert await no_change(watcher, 0.3)
        await ios2.close()
        assert (await change(watcher))[:2] == (t, [2])
        await android.close()
        assert (await change(watcher))[:2] == (t, [])

        # a second subscription answers the status now
        android = await Client(stack2, t, t2, 2).connect()
        assert (await change(watcher))[:2] == (t, [2])
        r = await sub(watcher, [t])
        assert r["data"]["subscribers"] == [
            {"userID": t, "onlinePlatformIDs": [2]}]
        await android.close()
        assert (await change(watcher))[:2] == (t, [])
        await watcher.close()

    run(scenario())


def test_watchers_on_both_hosts_and_workers(stack, stack2, api):
    """Four watchers spread over both hosts all get the change once."""
    t = uids(1, "pt")[0]
    ws = uids(4, "pw")
    api.register(t, *ws)
    tt = api.user_token(t, 3)

    async def scenario():
        watchers = []
        for i, w in enumerate(ws):
            ngx = stack if i % 2 else stack2
            c = await Client(ngx, w, api.user_token(w, 1), 1).connect()
            r = await sub(c, [t])
            assert r["errCode"] == 0, r
            watchers.append(c)
        target = await Client(stack, t, tt, 3).connect()
        for c in watchers:
            uid, platforms, took = await change(c)
            assert (uid, platforms) == (t, [3])
            assert took < 1.0
        await target.close()
        for c in watchers:
            assert (await change(c))[:2] == (t, [])
            assert await no_change(c, 0.1)
        for c in watchers:
            await c.close()

    run(scenario())


def test_unsubscribe_stops_changes(stack, api, redis_server):
    w, t, other = uids(3, "pu")
    api.register(w, t, other)
    tt = api.user_token(t, 1)

    async def scenario():
        watcher = await Client(stack, w, api.user_token(w, 1), 1).connect()
        r = await sub(watcher, [t, other])
        assert r["errCode"] == 0, r
        assert subscribers(redis_server, t) >= 1
        r = await sub(watcher, [], [t])
        assert r["errCode"] == 0, r
        assert r["data"] == {"subscribers": []}
        target = await Client(stack, t, tt, 1).connect()
        assert await no_change(watcher, 0.5)
        await target.close()
        assert await no_change(watcher, 0.3)
        # still watching the other one
        oc = await Client(stack, other, api.user_token(other, 1), 1).connect()
        assert (await change(watcher))[:2] == (other, [1])
        await oc.close()
        await watcher.close()

    run(scenario())
    end = time.time() + 3
    while subscribers(redis_server, t) and time.time() < end:
        time.sleep(0.05)
    assert subscribers(redis_server, t) == 0


def test_disconnect_cleans_up(stack, api, redis_server):
    """A watcher's connection closes: the worker unsubscribes from every
    user it alone watched."""
    w = uids(1, "pd")[0]
    targets = uids(50, "pdt")
    api.register(w)

    async def scenario():
        for _ in range(3):
            c = await Client(stack, w, api.user_token(w, 1), 1).connect()
            r = await sub(c, targets)
            assert r["errCode"] == 0, r
            assert len(r["data"]["subscribers"]) == 50
            assert subscribers(redis_server, targets[7]) >= 1
            await c.close()

    run(scenario())
    end = time.time() + 3
    while (any(subscribers(redis_server, t) for t in targets[:5])
           and time.time() < end):
        time.sleep(0.05)
    for t in targets[:5] + targets[-5:]:
        assert subscribers(redis_server, t) == 0, t


BAD = [
    ({"subscribeUserID": "alice"}, "subscribeUserID"),
    ({"subscribeUserID": [7]}, "user ID"),
    ({"subscribeUserID": ["a_b"]}, "user ID"),
    ({"subscribeUserID": ["x" * 65]}, "user ID"),
    ({"unsubscribeUserID": {"a": 1}}, "unsubscribeUserID"),
    # 10,000 IDs (short ones: the frame stays under im_ws_max_message)
    ({"subscribeUserID": ["x"] * 10000}, "1000"),
    ({"unsubscribeUserID": ["u%d" % i for i in range(1001)]}, "1000"),
]


def test_bad_input_and_bounds(stack, api, redis_server):
    w = uids(1, "pb")[0]
    api.register(w)

    async def scenario():
        c = await Client(stack, w, api.user_token(w, 1), 1).connect()
        for data, word in BAD:
            r = await c.request(2005, data)
            assert r["errCode"] == 1001, (data, r)
            assert word in r["errMsg"], (data, r)
        r = await c.request(2005, [])
        assert r["errCode"] == 1001, r
        # nothing was subscribed by the refused requests
        assert subscribers(redis_server, "u7") == 0

        # 1000 at once is the bound; one more is refused, and changes
        # nothing; unsubscribing one makes room
        many = ["pbm%d-%s" % (i, w[-4:]) for i in range(1000)]
        r = await sub(c, many)
        assert r["errCode"] == 0, r
        assert len(r["data"]["subscribers"]) == 1000
        r = await sub(c, ["one-more"])
        assert r["errCode"] == 1001, r
        assert "1000" in r["errMsg"]
        r = await sub(c, ["one-more"], [many[0]])
        assert r["errCode"] == 0, r
        assert r["data"]["subscribers"] == [
            {"userID": "one-more", "onlinePlatformIDs": []}]
        # repeated IDs are answered once
        r = await sub(c, [many[1], many[1]])
        assert r["errCode"] == 0, r
        assert len(r["data"]["subscribers"]) == 1
        n = await c.newest()
        assert n["errCode"] == 0, n
        await c.close()

    run(scenario())


def test_protobuf_subscription(stack, api, im_pb2):
    pb = im_pb2
    w, t = uids(2, "pp")
    api.register(w, t)

    async def scenario():
        import websockets
        ws = await websockets.connect(stack.ws_url(w, api.user_token(w, 1),
                                                   1), ping_interval=None)
        req = pb.Req(reqIdentifier=2005, operationID="op", msgIncr="p1",
                     sendID=w, data=pb.SubUserOnlineStatus(
                         subscribeUserID=[t]).SerializeToString())
        await ws.send(req.SerializeToString())
        resp = pb.Resp()
        resp.ParseFromString(await asyncio.wait_for(ws.recv(), 5))
        assert resp.reqIdentifier == 2005 and resp.msgIncr == "p1"
        assert resp.errCode == 0, resp.errMsg
        tips = pb.SubUserOnlineStatusTips()
        tips.ParseFromString(resp.data)
        assert [(e.userID, list(e.onlinePlatformIDs))
                for e in tips.subscribers] == [(t, [])]

        target = await Client(stack, t, api.user_token(t, 4), 4).connect()
        frame = await asyncio.wait_for(ws.recv(), 1)
        assert isinstance(frame, bytes)
        resp = pb.Resp()
        resp.ParseFromString(frame)
        assert resp.reqIdentifier == 2005 and resp.msgIncr == ""
        tips = pb.SubUserOnlineStatusTips()
        tips.ParseFromString(resp.data)
        assert [(e.userID, list(e.onlinePlatformIDs))
                for e in tips.subscribers] == [(t, [4])]
        await target.close()
        await ws.close()

    run(scenario())


# ---------------------------------------------------------------------------
# REST


def test_get_users_status(stack, stack2, api):
    a, b = uids(2, "ps")
    api.register(a, b)

    async def scenario():
        c1 = await Client(stack, a, api.user_token(a, 2), 2).connect()
        c2 = await Client(stack2, a, api.user_token(a, 5), 5).connect()
        tb = api.user_token(b, 1)
        r = api.post("/user/get_users_status",
                     {"userID": b, "userIDs": [a, b]}, token=tb)
        assert r["errCode"] == 0, r
        assert r["data"] == {"statusList": [
            {"userID": a, "status": 1, "platformIDs": [2, 5]},
            {"userID": b, "status": 0, "platformIDs": []}]}
        await c1.close()
        await c2.close()

    run(scenario())
    tb = api.user_token(b, 1)
    for body in ({"userIDs": ["x"] * 1001}, {"userIDs": "x"},
                 {"userIDs": ["a_b"]}, {}, {"userID": 5, "userIDs": [a]}):
        r = api.post("/user/get_users_status", body, token=tb)
        assert r["errCode"] == 1001, (body, r)


def test_rest_subscribe_reaches_open_sessions(stack, stack2, api):
    """subscribe_users_status makes the user's open sessions on both
    hosts watch the users (a worker that starts watching pushes the
    current status once); genre 2 stops them."""
    w, t = uids(2, "pv")
    api.register(w, t)
    tw = api.user_token(w, 1)

    async def scenario():
        c1 = await Client(stack, w, tw, 1).connect()
        c2 = await Client(stack2, w, api.user_token(w, 5), 5).connect()
        r = api.post("/user/subscribe_users_status",
                     {"userID": w, "userIDs": [t], "genre": 1}, token=tw)
        assert r["errCode"] == 0, r
        assert r["data"] == {}
        for c in (c1, c2):
            assert (await change(c))[:2] == (t, [])
        target = await Client(stack2, t, api.user_token(t, 3), 3).connect()
        for c in (c1, c2):
            uid, platforms, took = await change(c)
            assert (uid, platforms) == (t, [3]) and took < 1.0
        r = api.post("/user/subscribe_users_status",
                     {"userID": w, "userIDs": [t], "genre": 2},
                     token=api.admin_token())
        assert r["errCode"] == 0, r
        await asyncio.sleep(0.2)
        await target.close()
        for c in (c1, c2):
            assert await no_change(c, 0.4)
            await c.close()

    run(scenario())
    adm = api.admin_token()
    bad = [({"userID": w, "userIDs": [t], "genre": 3}, 1001),
           ({"userID": w, "userIDs": [t], "genre": "1"}, 1001),
           ({"userID": w, "userIDs": "x", "genre": 1}, 1001),
           ({"userID": w, "userIDs": ["u%d" % i for i in range(10000)],
             "genre": 1}, 1001),
           ({"userID": "a_b", "userIDs": [t], "genre": 1}, 1001),
           ({"userIDs": [t], "genre": 1}, 1001)]
    for body, code in bad:
        r = api.post("/user/subscribe_users_status", body, token=adm)
        assert r["errCode"] == code, (body, r)
    r = api.post("/user/subscribe_users_status",
                 {"userID": t, "userIDs": [w], "genre": 1}, token=tw)
    assert r["errCode"] == 1002, r


def test_change_during_reconnect_is_caught_up(own_stack):
    """The pub/sub connections are cut and the watched user goes offline
    while they reconnect (a logout needs no subscription): its change is
    published to nobody, but the worker reads the platforms again once
    subscribed again, and pushes the difference."""
    r, ngx = own_stack()
    api = Api(ngx)
    w, t = uids(2, "pc")
    api.register(w, t)

    async def scenario():
        watcher = await Client(ngx, w, api.user_token(w, 1), 1).connect()
        res = await sub(watcher, [t])
        assert res["data"]["subscribers"][0]["onlinePlatformIDs"] == []
        target = await Client(ngx, t, api.user_token(t, 2), 2).connect()
        assert (await change(watcher))[:2] == (t, [2])
        assert int(r.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await target.close()
        uid, platforms, took = await change(watcher, 5.0)
        assert (uid, platforms) == (t, [])
        assert await no_change(watcher, 0.3)
        await watcher.close()

    run(scenario())


def test_policy_swap_seen_by_watchers(stack, base_dir, redis_server):
    """Under im_multi_login_policy 1 an Android login kicks the iOS one:
    a watcher sees the platforms go from [1] to [2] (one change), and
    nothing for a login that replaces a session on the same platform."""
    from conftest import Nginx
    ngx = Nginx(base_dir, redis_server.addr,
                http="im_multi_login_policy 1;").start()
    try:
        api = Api(ngx)
        w, t = uids(2, "pq")
        api.register(w, t)

        async def scenario():
            watcher = await Client(ngx, w, api.user_token(w, 5),
                                   5).connect()
            await sub(watcher, [t])
            ios = await Client(ngx, t, api.user_token(t, 1), 1).connect()
            assert (await change(watcher))[:2] == (t, [1])
            android = await Client(ngx, t, api.user_token(t, 2),
                                   2).connect()
            assert (await change(watcher))[:2] == (t, [2])
            assert await no_change(watcher, 0.3)
            again = await Client(ngx, t, api.user_token(t, 2), 2).connect()
            assert await no_change(watcher, 0.3)
            for c in (ios, android):
                await c.close()
            await again.close()
            assert (await change(watcher))[:2] == (t, [])
            await watcher.close()

        run(scenario())
    finally:
        ngx.stop()
    assert ngx.bad_log_lines() == []
