"""Multi-device login policy (im_multi_login_policy 0|1|4|5).

- each policy with two and three devices: the right sessions are kicked
  (2002, then Close 1000), the others stay and still get pushes;
- a kicked token is refused afterwards: 401/1506 at the upgrade, 1506 on
  REST; a device that logs in again with its own token is replaced, and
  its token stays good;
- the handover: no message is pushed to both the old and the new device;
- two logins racing for one seat, on the two workers of a host and on
  two hosts: exactly one survives;
- /user/get_users_online_token_detail.

The shared Redis may be a Redis Cluster (IM_TEST_REDIS=cluster).
"""

import asyncio
import json
import re
import time

import pytest
import websockets

from conftest import Api, Client, Nginx, run, single_conv, uids
from helpers_msg import worker_of
from test_notify import expect_kick, push_frame, quiet, send_v3, ws_handshake


@pytest.fixture(scope="module")
def hosts(base_dir, redis_server):
    """Two nginx hosts per policy, started on first use, sharing the
    suite's Redis."""
    made = {}

    def get(policy):
        if policy not in made:
            http = "im_multi_login_policy %d;" % policy
            made[policy] = [Nginx(base_dir, redis_server.addr,
                                  http=http).start() for _ in range(2)]
        return made[policy]

    yield get
    for pair in made.values():
        for ngx in pair:
            ngx.stop()
    for pair in made.values():
        for ngx in pair:
            assert ngx.bad_log_lines() == []


def user(api):
    u = uids(1, "lp")[0]
    api.register(u)
    return u


def distinct_tokens(api, u, platform, n):
    """n different tokens of one platform: a token is a function of its
    claims, so two issued in the same second are one token."""
    out = []
    while len(out) < n:
        t = api.user_token(u, platform)
        if t in out:
            time.sleep(0.2)
            continue
        out.append(t)
    return out


async def alive(c):
    """c is open and served: a request gets its answer."""
    r = await c.newest()
    assert r["errCode"] == 0, r


async def refused_1506(ngx, u, token, platform):
    status, body = ws_handshake(ngx, u, token, platform)
    assert status == 401, status
    assert body["errCode"] == 1506, body


def rest_code(api, token):
    return api.post("/user/get_users_info", {"userIDs": ["x"]},
                    token=token)["errCode"]


def token_detail(api, u):
    r = api.post("/user/get_users_online_token_detail", {"userIDs": [u]},
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    (entry,) = r["data"]["users"]
    assert entry["userID"] == u
    return {p["platformID"]: p for p in entry["platforms"]}


async def login(ngx, u, token, platform):
    return await Client(ngx, u, token, platform).connect()


# ---------------------------------------------------------------------------
# each policy


def test_policy_0_keeps_every_device(stack, api):
    """The default: any number of devices, even on one platform."""
    u = user(api)
    t1, t2 = distinct_tokens(api, u, 1, 2)

    async def scenario():
        a = await login(stack, u, t1, 1)
        b = await login(stack, u, t2, 1)
        c = await login(stack, u, t1, 1)
        for x in (a, b, c):
            await alive(x)
        r = send_v3(api, u)
        assert r["errCode"] == 0, r
        for x in (a, b, c):
            await push_frame(x)
        assert sum(p["total"] for p in token_detail(api, u).values()) == 3
        for x in (a, b, c):
            await x.close()

    run(scenario())
    assert rest_code(api, t1) == 0 and rest_code(api, t2) == 0


def test_policy_1_one_device_per_class(hosts):
    """1: a mobile kicks the other mobile (iOS/Android), a PC the other
    PC; Web and Pad are classes of their own."""
    ngx, _ = hosts(1)
    api = Api(ngx)
    u = user(api)
    tok = {p: api.user_token(u, p) for p in (1, 2, 3, 4, 5, 8)}

    async def scenario():
        ios = await login(ngx, u, tok[1], 1)
        win = await login(ngx, u, tok[3], 3)
        web = await login(ngx, u, tok[5], 5)
        for c in (ios, win, web):
            await alive(c)

        # Android takes the mobile seat; the others stay
        android = await login(ngx, u, tok[2], 2)
        await expect_kick(ios)
        await alive(android)
        for c in (win, web):
            assert await quiet(c, 0.2)

        # OSX takes the PC seat; a Pad adds a device
        osx = await login(ngx, u, tok[4], 4)
        pad = await login(ngx, u, tok[8], 8)
        await expect_kick(win)
        for c in (android, web, osx, pad):
            await alive(c)

        # pushes reach the survivors
        r = send_v3(api, u)
        assert r["errCode"] == 0, r
        for c in (android, web, osx, pad):
            m = (await push_frame(c))[single_conv("system", u)][0]
            assert m["serverMsgID"] == r["data"]["serverMsgID"]

        detail = token_detail(api, u)
        assert sorted(detail) == [2, 4, 5, 8], detail
        assert detail[2]["tokens"] == [tok[2]] and detail[2]["total"] == 1

        # the kicked tokens are refused everywhere
        await refused_1506(ngx, u, tok[1], 1)
        await refused_1506(ngx, u, tok[3], 3)
        assert rest_code(api, tok[1]) == 1506
        assert rest_code(api, tok[3]) == 1506
        assert rest_code(api, tok[2]) == 0
        for c in (android, web, osx, pad):
            await c.close()

    run(scenario())


def test_policy_4_one_device_per_platform(hosts):
    """4: a second Android kicks the first; iOS stays; a third Android
    kicks the second."""
    ngx, _ = hosts(4)
    api = Api(ngx)
    u = user(api)
    a1, a2, a3 = distinct_tokens(api, u, 2, 3)
    ios_t = api.user_token(u, 1)

    async def scenario():
        first = await login(ngx, u, a1, 2)
        ios = await login(ngx, u, ios_t, 1)
        second = await login(ngx, u, a2, 2)
        await expect_kick(first)
        await alive(ios)
        await alive(second)
        third = await login(ngx, u, a3, 2)
        await expect_kick(second)
        await alive(third)
        assert await quiet(ios, 0.2)
        detail = token_detail(api, u)
        assert sorted(detail) == [1, 2]
        assert detail[2]["tokens"] == [a3]
        for t in (a1, a2):
            await refused_1506(ngx, u, t, 2)
            assert rest_code(api, t) == 1506
        assert rest_code(api, a3) == 0 and rest_code(api, ios_t) == 0
        await ios.close()
        await third.close()

    run(scenario())


def test_policy_5_one_pc_and_one_other(hosts):
    """5: one PC, and one session among every other platform (mobile,
    Web, Pad, ... share that seat)."""
    ngx, _ = hosts(5)
    api = Api(ngx)
    u = user(api)
    tok = {p: api.user_token(u, p) for p in (1, 3, 5, 7, 8)}

    async def scenario():
        win = await login(ngx, u, tok[3], 3)
        ios = await login(ngx, u, tok[1], 1)
        linux = await login(ngx, u, tok[7], 7)
        await expect_kick(win)
        await alive(ios)
        web = await login(ngx, u, tok[5], 5)
        await expect_kick(ios)
        await alive(linux)
        await alive(web)
        pad = await login(ngx, u, tok[8], 8)
        await expect_kick(web)
        assert sorted(token_detail(api, u)) == [7, 8]
        for p in (3, 1, 5):
            await refused_1506(ngx, u, tok[p], p)
        assert rest_code(api, tok[7]) == 0 and rest_code(api, tok[8]) == 0
        await linux.close()
        await pad.close()

    run(scenario())


def test_same_token_again_replaces_and_keeps_the_token(hosts):
    """A device that reconnects with its own token while its old
    connection still looks open (a dead network) takes the seat back: the
    old connection is told (2002), the token stays good."""
    ngx, _ = hosts(4)
    api = Api(ngx)
    u = user(api)
    t = api.user_token(u, 1)

    async def scenario():
        old = await login(ngx, u, t, 1)
        new = await login(ngx, u, t, 1)
        await expect_kick(old)
        await alive(new)
        assert rest_code(api, t) == 0
        await new.close()
        again = await login(ngx, u, t, 1)
        await alive(again)
        await again.close()

    run(scenario())


def test_kick_across_hosts(hosts):
    """The older device on the other host is kicked, and its token is
    refused on both hosts."""
    h1, h2 = hosts(4)
    api1, api2 = Api(h1), Api(h2)
    u = user(api1)
    t1, t2 = distinct_tokens(api1, u, 3, 2)

    async def scenario():
        old = await login(h2, u, t1, 3)
        new = await login(h1, u, t2, 3)
        await expect_kick(old)
        await alive(new)
        for ngx in (h1, h2):
            await refused_1506(ngx, u, t1, 3)
        for a in (api1, api2):
            assert rest_code(a, t1) == 1506
            assert rest_code(a, t2) == 0
        await new.close()

    run(scenario())


def test_handover_no_push_reaches_both(hosts):
    """Messages flow while a new device takes the seat on the other
    host: the old device gets a prefix of them, the new one the rest;
    none reaches both."""
    h1, h2 = hosts(4)
    api = Api(h1)
    u, peer = user(api), user(api)
    t_old, t_new = distinct_tokens(api, u, 2, 2)
    t_peer = api.user_token(peer, 1)
    conv = single_conv(peer, u)

    async def collect(c, stop):
        seqs = []
        try:
            while not stop.is_set():
                try:
                    frame = json.loads(await asyncio.wait_for(c.ws.recv(),
                                                              0.2))
                except asyncio.TimeoutError:
                    continue
                if frame.get("reqIdentifier") == 2002:
                    seqs.append("kick")
                elif frame.get("reqIdentifier") == 2001:
                    seqs += [m["seq"] for m in frame["data"]["msgs"][conv]]
        except websockets.exceptions.ConnectionClosed:
            pass
        return seqs

    async def scenario():
        sender = await login(h1, peer, t_peer, 1)
        old = await login(h2, u, t_old, 2)
        stop = asyncio.Event()
        got_old = asyncio.ensure_future(collect(old, stop))

        async def send_many():
            for i in range(60):
                r = await sender.send_text(u, "m%d" % i)
                assert r["errCode"] == 0, r
                await asyncio.sleep(0.005)

        sending = asyncio.ensure_future(send_many())
        await asyncio.sleep(0.1)
        new = await login(h1, u, t_new, 2)
        got_new = asyncio.ensure_future(collect(new, stop))
        await sending
        await asyncio.sleep(0.5)
        stop.set()
        s_old, s_new = await got_old, await got_new

        assert s_old and s_old[-1] == "kick", s_old
        s_old = s_old[:-1]
        assert s_new, s_new
        assert not set(s_old) & set(s_new), (s_old, s_new)
        if s_old:
            assert max(s_old) < min(s_new), (s_old, s_new)
        await new.close()
        await sender.close()

    run(scenario())


# ---------------------------------------------------------------------------
# races


async def race(ngx_a, ngx_b, u, ta, tb, platform):
    """Two logins for one seat at once; returns their outcomes: an open
    Client, or "refused" (401/1506 before the upgrade), and whether each
    open one was then kicked."""

    async def one(ngx, t):
        try:
            return await login(ngx, u, t, platform)
        except websockets.exceptions.InvalidStatus as e:
            assert e.response.status_code == 401, e
            body = json.loads(e.response.body)
            assert body["errCode"] == 1506, body
            return "refused"

    return await asyncio.gather(one(ngx_a, ta), one(ngx_b, tb))


async def survivors(clients, wait=1.0):
    """The open clients not kicked within wait seconds."""
    left = []
    for c in clients:
        if c == "refused":
            continue
        try:
            frame = json.loads(await asyncio.wait_for(c.ws.recv(), wait))
            assert frame["reqIdentifier"] == 2002, frame
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(c.ws.recv(), 5)
            assert c.ws.close_code == 1000
        except asyncio.TimeoutError:
            left.append(c)
    return left


def test_race_on_two_workers(hosts):
    """Two logins for one seat on the two workers of one host end with
    one session (connections are spread by the kernel: several tries,
    and at least one must have crossed workers)."""
    ngx, _ = hosts(4)
    api = Api(ngx)
    crossed = 0

    async def attempt():
        nonlocal crossed
        u = user(api)
        ta, tb = distinct_tokens(api, u, 1, 2)
        clients = await race(ngx, ngx, u, ta, tb, 1)
        left = await survivors(clients)
        # the workers that served the two: the survivor's socket, and
        # the log lines of the kicked or refused one (pid#tid prefix)
        pids = set(int(m) for m in re.findall(
            r"\] (\d+)#\d+: .*\"%s\"" % re.escape(u), ngx.log()))
        if len(left) == 1:
            pids.add(worker_of(ngx, left[0]))
        if len(pids) == 2:
            crossed += 1
        assert len(left) == 1, clients
        await alive(left[0])
        detail = token_detail(api, u)
        assert detail[1]["total"] == 1, detail
        assert detail[1]["tokens"] == [ta if ta in left[0].url else tb]
        await left[0].close()

    async def scenario():
        for _ in range(12):
            await attempt()
            if crossed >= 2:
                break

    run(scenario(), timeout=120)
    assert crossed >= 1


def test_race_on_two_hosts(hosts):
    """The same race across two hosts (policy 1, one mobile seat)."""
    h1, h2 = hosts(1)
    api = Api(h1)

    async def scenario():
        for _ in range(5):
            u = user(api)
            ta, tb = distinct_tokens(api, u, 2, 2)
            clients = await race(h1, h2, u, ta, tb, 2)
            left = await survivors(clients)
            assert len(left) == 1, clients
            await alive(left[0])
            detail = token_detail(api, u)
            assert detail[2]["tokens"] == [ta if ta in left[0].url else tb]
            await left[0].close()

    run(scenario(), timeout=120)


# ---------------------------------------------------------------------------
# /user/get_users_online_token_detail


def test_online_token_detail_shape_and_bounds(stack, api):
    u, off = user(api), user(api)
    t = api.user_token(u, 5)

    async def scenario():
        c = await login(stack, u, t, 5)
        r = api.post("/user/get_users_online_token_detail",
                     {"userIDs": [u, off]}, token=api.admin_token())
        assert r["errCode"] == 0, r
        assert r["data"] == {"users": [
            {"userID": u, "platforms": [
                {"platformID": 5, "tokens": [t], "total": 1}]},
            {"userID": off, "platforms": []}]}
        await c.close()

    run(scenario())

    adm = api.admin_token()
    for body in ({"userIDs": ["u%d" % i for i in range(1001)]},
                 {"userIDs": []}, {"userIDs": "x"}, {"userIDs": [7]},
                 {"userIDs": ["a_b"]}, {}):
        r = api.post("/user/get_users_online_token_detail", body,
                     token=adm)
        assert r["errCode"] == 1001, (body, r)
    r = api.post("/user/get_users_online_token_detail", {"userIDs": [u]},
                 token=t)
    assert r["errCode"] == 1002, r


# ---------------------------------------------------------------------------
# a kick published while a worker cannot hear it


def test_kick_missed_during_reconnect_is_caught_up(own_stack):
    """The pub/sub connections are cut and a force_logout lands while
    they reconnect: its kick line reaches nobody, but every session asks
    the registry again once its user is subscribed again, and the kicked
    one goes."""
    r, ngx = own_stack(http="im_multi_login_policy 4;")
    api = Api(ngx)
    u, other = user(api), user(api)
    t, t_other = api.user_token(u, 1), api.user_token(other, 1)

    async def scenario():
        victim = await login(ngx, u, t, 1)
        bystander = await login(ngx, other, t_other, 1)
        await alive(victim)
        out = r.cli("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(out) >= 1, out
        res = api.post("/auth/force_logout", {"userID": u, "platformID": 1},
                       token=api.admin_token())
        assert res["errCode"] == 0, res
        await expect_kick(victim, timeout=10)
        # an untouched session stays
        await alive(bystander)
        assert await quiet(bystander, 0.3)
        await bystander.close()

    run(scenario())
