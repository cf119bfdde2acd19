"""Redis Cluster end to end: one 3 masters + 3 replicas cluster
(t/helpers_cluster.py) and two nginx "hosts" of 2 workers each on it
(im_redis_cluster), shared by the tests of this file.

- test_messages_across_shards_hosts_and_workers: users whose keys live on
  all three masters, spread over both hosts and all four workers, message
  each other in every direction: every device gets exactly the messages
  meant for it (pushes), 1001 names every conversation with its max and
  read seqs, 1002 returns every message with the seq its ack named.
- test_resharding_under_traffic: while senders keep sending (pipelined,
  distinct clientMsgIDs, a 90004 resent with the same clientMsgID), the
  slots of a conversation and of a recipient are moved by hand step by
  step (MIGRATING/IMPORTING, MIGRATE in small batches: ASK windows), and
  the slots of another conversation and recipient by `redis-cli --cluster
  reshard`.  Afterwards every ack is in the pull exactly once (seqs 1..N
  without gaps, no clientMsgID twice), pushes carry the acked seqs and
  resume for every recipient, and the MOVED, ASK and resubscribe counters
  moved.
- test_master_failover_under_traffic: while senders send to conversations
  on every shard, one master is SIGKILLed: sends on its shard answer
  90004 quickly (no hang) until a replica took over, then succeed again
  and pushes resume; nginx workers do not crash.  Acked messages the
  promoted replica never got (Redis replicates asynchronously) are
  reported, not hidden.  The old master is restarted at the end (as a
  replica: which ports are masters changes), so this test comes last.

Run with -s to see what each test measured (timelines, pushes lost
during moves, refusals, metrics).
"""

import asyncio
import json
import re
import time
import urllib.request
import warnings

import pytest
from redis.crc import key_slot

from conftest import ADMIN, SECRET, Api, Nginx, single_conv, uids
from helpers_cluster import RedisCluster
from helpers_msg import frame_of, pull_all, run_clients, worker_of

# known harmless lines at [crit]/[alert] level: none so far
ALLOWED_BAD = []


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cluster(base_dir):
    rc = RedisCluster(base_dir, masters=3, replicas=1).start()
    yield rc
    rc.stop()


def wait_cluster_ready(ngx, nodes, timeout=15.0):
    """Nginx.wait_ready counts connection lines over all workers, which
    one worker alone satisfies in a cluster; and a worker refuses every
    keyed command (90004) until its first CLUSTER SLOTS reply.  So: until
    each worker logged its command and subscriber connection to each
    master, the workers loaded as many slot maps as there are workers,
    and 10 admin-token requests in a row succeed (new connections, so
    reuseport spreads them over the workers)."""
    end = time.time() + timeout
    why = "?"
    while time.time() < end:
        log = ngx.log()
        pids = ngx.worker_pids()
        short = [p for p in pids
                 if log.count("%d#%d: im redis subscriber connected" % (p, p))
                 < nodes
                 or log.count("%d#%d: im redis command connection to"
                              % (p, p)) < nodes]
        if short:
            why = "workers %s not connected to every master" % short
        elif metrics(ngx).get("im_redis_slot_refreshes_total", 0) < len(pids):
            why = "slot maps not loaded"
        else:
            ok = 0
            for _ in range(10):
                try:
                    r = Api(ngx).post("/auth/get_admin_token",
                                      {"secret": SECRET, "userID": ADMIN})
                except OSError as e:
                    r = {"errCode": repr(e)}
                if r["errCode"] != 0:
                    why = "admin token: %s" % r
                    break
                ok += 1
            if ok == 10:
                return
        time.sleep(0.05)
    raise AssertionError("nginx %d not ready on the cluster: %s"
                         % (ngx.port, why))


@pytest.fixture(scope="module")
def hosts(base_dir, cluster):
    made = []
    try:
        for _ in range(2):
            made.append(Nginx(base_dir, cluster.seeds, workers=2).start())
            wait_cluster_ready(made[-1], len(cluster.masters()))
        yield tuple(made)
    finally:
        for ngx in made:
            ngx.stop()
    for ngx in made:
        assert bad_lines(ngx) == [], ngx.error_log


@pytest.fixture(autouse=True)
def clean_logs(request):
    """Every test leaves both hosts' error logs free of alert/crit/emerg
    and their workers alive (no crash: same pids before and after)."""
    if "hosts" not in request.fixturenames:
        yield
        return
    hs = request.getfixturevalue("hosts")
    before = [sorted(h.worker_pids()) for h in hs]
    yield
    for h, pids in zip(hs, before):
        assert bad_lines(h) == [], h.error_log
        assert sorted(h.worker_pids()) == pids, \
            "nginx workers changed (crash?): %s -> %s; %s" % (
                pids, sorted(h.worker_pids()), crash_lines(h))


def bad_lines(ngx):
    return [l for l in ngx.bad_log_lines()
            if not any(re.search(p, l) for p in ALLOWED_BAD)]


def crash_lines(ngx):
    return [l for l in ngx.log().splitlines()
            if "exited on signal" in l or "[alert]" in l]


# ---------------------------------------------------------------------------
# helpers


def content_of(m):
    return json.loads(m["content"])["content"]


def metrics(*hs):
    """Prometheus counters summed over the given hosts (and, by the
    endpoint, over their workers): name -> value, labels dropped."""
    out = {}
    for h in hs:
        with urllib.request.urlopen("http://127.0.0.1:%d/im/metrics"
                                    % h.port, timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, val = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0) + float(val)
    return out


class SlotMap:
    """A snapshot of CLUSTER SLOTS for picking keys locally (CRC16)."""

    def __init__(self, cluster):
        self.ranges = cluster.slots()
        self.masters = sorted({m for _, _, m, _ in self.ranges})

    def owner(self, slot):
        for start, end, master, _ in self.ranges:
            if start <= slot <= end:
                return master
        raise AssertionError("slot %d unassigned" % slot)

    def slots_of(self, master):
        return [s for start, end, m, _ in self.ranges if m == master
                for s in range(start, end + 1)]


def user_slot(uid):
    return key_slot(("im:{u:%s}:convs" % uid).encode())


def conv_slot(conv):
    return key_slot(("im:{c:%s}:seq" % conv).encode())


def pick_uid(prefix, ok, tries=200000):
    """A fresh uid (prefix + counter) for which ok(uid) holds."""
    for i in range(tries):
        uid = "%s-%d" % (prefix, i)
        if ok(uid):
            return uid
    raise AssertionError("no uid with prefix %s fits after %d tries"
                         % (prefix, tries))


async def read_pushes(c, seconds):
    """Every message pushed to c within `seconds` (frames flattened)."""
    end = time.time() + seconds
    got = []
    while True:
        while c.pushes:
            frame = c.pushes.pop(0)
            got.extend(m for ms in frame["data"]["msgs"].values()
                       for m in ms)
        remaining = end - time.time()
        if remaining <= 0:
            return got
        try:
            await c._read_one(remaining)
        except asyncio.TimeoutError:
            pass


async def pushes_until(c, want, timeout, quiet=0.3):
    """Reads c's pushes until want(msgs) holds or timeout, then `quiet`
    seconds more (to catch extras); returns every message read."""
    end = time.time() + timeout
    got = []
    while time.time() < end and not want(got):
        got.extend(await read_pushes(c, min(0.2, end - time.time())))
    got.extend(await read_pushes(c, quiet))
    return got


async def request_many(c, reqs, window=4, timeout=15.0):
    """Pipelined requests, at most `window` in flight; returns
    [(response, seconds)] in request order.  Pushes stay in c.pushes."""
    end = time.time() + timeout
    incrs, started, results = [], {}, {}
    sent = 0
    while len(results) < len(reqs):
        while sent < len(reqs) and sent - len(results) < window:
            incr, text = frame_of(c, reqs[sent][0], reqs[sent][1])
            started[incr] = time.time()
            await c.ws.send(text)
            incrs.append(incr)
            sent += 1
        remaining = end - time.time()
        if remaining <= 0:
            raise AssertionError(
                "%s: %d of %d requests unanswered after %.0fs (a hang)"
                % (c.uid, len(reqs) - len(results), len(reqs), timeout))
        await c._read_one(remaining)
        for k in incrs:
            if k not in results and k in c.responses:
                results[k] = (c.responses.pop(k), time.time() - started[k])
    return [results[k] for k in incrs]


def msg_data(sender, recv, text, cmid):
    return {"sendID": sender, "recvID": recv, "sessionType": 1,
            "contentType": 101, "content": json.dumps({"content": text}),
            "clientMsgID": cmid}


class Sender:
    """One connection sending to one peer continuously: batches of
    `window` new messages (distinct clientMsgIDs) plus every 90004 of the
    previous batch again with the same clientMsgID.  Records acks,
    refusals and every answer's latency."""

    def __init__(self, client, peer, tag, window=4, pause=0.03,
                 max_msgs=400, max_retries=60):
        self.c = client
        self.peer = peer
        self.tag = tag
        self.window = window
        self.pause = pause
        self.max_msgs = max_msgs
        self.max_retries = max_retries
        self.acks = {}          # cmid -> ack data
        self.acked_at = {}      # cmid -> time of its (first) ack
        self.texts = {}         # cmid -> text
        self.refused = []       # (time, cmid, seconds) of 90004 answers
        self.other = []         # any other errCode: a failure
        self.answers = []       # (time sent, seconds, errCode)
        self.tries = {}
        self.retry = []
        self.n = 0
        self.gave_up = []

    async def run(self, stop):
        while True:
            if stop.is_set() and not self.retry:
                return
            batch = list(self.retry)
            self.retry = []
            while (len(batch) < self.window and not stop.is_set()
                   and self.n < self.max_msgs):
                cmid = "%s-%d" % (self.tag, self.n)
                self.texts[cmid] = "%s #%d" % (self.tag, self.n)
                self.n += 1
                batch.append(cmid)
            if not batch:
                await asyncio.sleep(0.05)
                continue
            t0 = time.time()
            res = await request_many(
                self.c, [(1003, msg_data(self.c.uid, self.peer,
                                         self.texts[k], k)) for k in batch],
                window=self.window)
            for cmid, (r, secs) in zip(batch, res):
                self.answers.append((t0, secs, r["errCode"]))
                self.tries[cmid] = self.tries.get(cmid, 0) + 1
                if r["errCode"] == 0:
                    assert r["data"]["clientMsgID"] == cmid, r
                    old = self.acks.get(cmid)
                    assert old is None or old["seq"] == r["data"]["seq"], \
                        (old, r)
                    self.acks[cmid] = r["data"]
                    self.acked_at.setdefault(cmid, time.time())
                elif r["errCode"] == 90004:
                    self.refused.append((time.time(), cmid, secs))
                    if self.tries[cmid] < self.max_retries:
                        self.retry.append(cmid)
                    else:
                        self.gave_up.append(cmid)
                else:
                    self.other.append(r)
            if self.retry:
                await asyncio.sleep(0.1)
            else:
                await asyncio.sleep(self.pause)


async def background_pushes(c, stop, into):
    """Collects c's pushed messages into `into` until stop is set."""
    while not stop.is_set():
        into.extend(await read_pushes(c, 0.2))
    into.extend(await read_pushes(c, 0.05))


def check_conversation(conv, acks, pulled):
    """pulled: every message 1..max of conv.  Asserts seqs 1..N without
    gaps, no clientMsgID twice, every ack at its seq with its
    clientMsgID.  Returns the cmids stored but never acked."""
    seqs = [m["seq"] for m in pulled]
    assert seqs == list(range(1, len(pulled) + 1)), (conv, seqs)
    cmids = [m["clientMsgID"] for m in pulled]
    dups = sorted({k for k in cmids if cmids.count(k) > 1})
    assert not dups, "%s: clientMsgIDs stored twice: %s" % (conv, dups)
    by_seq = {m["seq"]: m["clientMsgID"] for m in pulled}
    wrong = [(k, a["seq"], by_seq.get(a["seq"])) for k, a in acks.items()
             if by_seq.get(a["seq"]) != k]
    assert not wrong, "%s: acked (cmid, seq) not pulled so: %s" % (
        conv, wrong[:10])
    return sorted(set(cmids) - set(acks))


async def newest_max(c, conv):
    r = await c.newest()
    assert r["errCode"] == 0, r
    return r["data"]["maxSeqs"].get(conv, 0)


# ---------------------------------------------------------------------------
# 1. plain messaging over shards, hosts and workers


def test_messages_across_shards_hosts_and_workers(cluster, hosts):
    n1, n2 = hosts
    api = Api(n1)
    smap = SlotMap(cluster)
    assert len(smap.masters) == 3, smap.ranges

    # two users per master, one of each pair on each host
    tag = uids(1, "x")[0]
    users = []
    for m in smap.masters:
        for k in range(2):
            users.append(pick_uid("%s%d%d" % (tag, m, k),
                                  lambda u: smap.owner(user_slot(u)) == m))
    assert {smap.owner(user_slot(u)) for u in users} == set(smap.masters)
    api.register(*users)
    host_of = {u: hosts[i % 2] for i, u in enumerate(users)}
    toks = {(u, p): Api(host_of[u]).user_token(u, p)
            for u in users for p in range(1, 6)}
    per_pair = 2

    async def scenario(pool):
        # two devices per user, more until both workers of each host hold
        # sessions (reuseport spreads connections by their 4-tuple)
        devs = {u: [] for u in users}
        where = {}
        for p in (1, 2):
            for u in users:
                c = await pool.connect(host_of[u], u, toks[(u, p)], p)
                devs[u].append(c)
                where[c] = (host_of[u], worker_of(host_of[u], c))
        for p in (3, 4, 5):
            for h in hosts:
                if len({w for hh, w in where.values() if hh is h}) == 2:
                    continue
                for u in users:
                    if host_of[u] is h:
                        c = await pool.connect(h, u, toks[(u, p)], p)
                        devs[u].append(c)
                        where[c] = (h, worker_of(h, c))
        for h in hosts:
            assert {w for hh, w in where.values() if hh is h} == \
                set(h.worker_pids()), (h.port, where)

        # every user sends per_pair messages to every other user, from its
        # platform-1 device, all users at once
        async def send_all(u):
            c = devs[u][0]
            reqs = [(1003, msg_data(u, v, "%s>%s %d" % (u, v, k),
                                    "t1-%s-%s-%d" % (u, v, k)))
                    for k in range(per_pair) for v in users if v != u]
            res = await request_many(c, reqs, window=4)
            return [(d, r) for (_, d), (r, _) in zip(reqs, res)]

        sent = await asyncio.gather(*[send_all(u) for u in users])
        acks = {}                   # cmid -> (data sent, ack)
        for lst in sent:
            for d, r in lst:
                assert r["errCode"] == 0, r
                assert r["data"]["clientMsgID"] == d["clientMsgID"], r
                acks[d["clientMsgID"]] = (d, r["data"])

        convs, members = {}, {}
        for d, a in acks.values():
            conv = single_conv(d["sendID"], d["recvID"])
            convs.setdefault(conv, []).append(a["seq"])
            members[conv] = (d["sendID"], d["recvID"])
        assert len(convs) == 15
        for conv, seqs in convs.items():
            assert sorted(seqs) == list(range(1, 2 * per_pair + 1)), \
                (conv, seqs)

        # pushes: a device gets every message to its user, and its user's
        # own messages sent from another device, each once
        async def check_device(u, c):
            want = sorted(
                (d["clientMsgID"], a["seq"]) for d, a in acks.values()
                if d["recvID"] == u
                or (d["sendID"] == u and c is not devs[u][0]))
            msgs = await pushes_until(
                c, lambda got: len(got) >= len(want), timeout=10)
            got = sorted((m["clientMsgID"], m["seq"]) for m in msgs)
            assert got == want, (u, where[c][0].port, where[c][1],
                                 len(got), len(want))
            for m in msgs:
                d, a = acks[m["clientMsgID"]]
                assert (m["sendID"], m["recvID"], content_of(m),
                        m["serverMsgID"]) == \
                    (d["sendID"], d["recvID"],
                     json.loads(d["content"])["content"],
                     a["serverMsgID"]), m

        await asyncio.gather(*[check_device(u, c) for u in users
                               for c in devs[u]])

        # 1001: every conversation of the user, its max seq, and as read
        # seq the last seq the user sent there
        for u in users:
            r = await devs[u][1].newest()
            assert r["errCode"] == 0, r
            mine = {single_conv(u, v): 2 * per_pair
                    for v in users if v != u}
            assert r["data"]["maxSeqs"] == mine, (u, r["data"])
            read = {}
            for d, a in acks.values():
                if d["sendID"] == u:
                    conv = single_conv(u, d["recvID"])
                    read[conv] = max(read.get(conv, 0), a["seq"])
            assert r["data"]["hasReadSeqs"] == read, (u, r["data"])

        # 1002 from the other host's side: every message at its seq
        for conv in convs:
            c = devs[members[conv][1]][1]
            r = await c.pull(conv, 1, 2 * per_pair)
            assert r["errCode"] == 0, r
            part = r["data"]["msgs"][conv]
            assert part["isEnd"] is True
            got = [(m["seq"], m["clientMsgID"], m["sendID"], m["recvID"],
                    content_of(m)) for m in part["Msgs"]]
            want = sorted((a["seq"], k, d["sendID"], d["recvID"],
                           json.loads(d["content"])["content"])
                          for k, (d, a) in acks.items()
                          if single_conv(d["sendID"], d["recvID"]) == conv)
            assert got == want, conv

    run_clients(scenario, timeout=60)


# ---------------------------------------------------------------------------
# 2. slots move while messages flow

RESHARD = 8         # slots redis-cli --cluster reshard moves (the first ones)


def step_keys(cluster, slot, src, dst, batch=10, pause=0.02):
    """MIGRATE the slot's keys a few at a time, pausing in between: every
    pause is an ASK window (some keys here, some there)."""
    moved = 0
    for _ in range(5000):
        n = cluster.move_keys(slot, src, dst, batch=batch, limit=batch)
        if n == 0:
            return moved
        moved += n
        time.sleep(pause)
    raise AssertionError("slot %d: keys keep coming" % slot)


def test_resharding_under_traffic(cluster, hosts):
    n1, n2 = hosts
    api = Api(n1)
    cluster.wait_ok()
    smap = SlotMap(cluster)
    m = smap.masters
    rs_src, rs_dst = m[2], m[0]
    rs = set(smap.slots_of(rs_src)[:RESHARD])
    tag = uids(1, "r")[0]

    def free(*slots):
        return not (set(slots) & avoid)

    # pair 0: the conversation's slot moves by hand
    avoid = set(rs)
    a0 = pick_uid(tag + "a0", lambda u: free(user_slot(u)))
    b0 = pick_uid(tag + "b0", lambda u: free(user_slot(u)) and
                  conv_slot(single_conv(a0, u)) not in
                  rs | {user_slot(a0), user_slot(u)})
    c0 = conv_slot(single_conv(a0, b0))
    avoid |= {c0}
    # pair 1: the recipient's user slot (keys and channel) moves by hand
    b1 = pick_uid(tag + "b1", lambda u: free(user_slot(u)) and
                  user_slot(u) not in (user_slot(a0), user_slot(b0)))
    u1 = user_slot(b1)
    avoid |= {u1}
    a1 = pick_uid(tag + "a1", lambda u: free(user_slot(u),
                                             conv_slot(single_conv(u, b1))))
    # pair 2: the recipient's slot and the conversation's slot are in the
    # reshard
    b2 = pick_uid(tag + "b2", lambda u: user_slot(u) in rs)
    a2 = pick_uid(tag + "a2", lambda u: free(user_slot(u)) and
                  conv_slot(single_conv(u, b2)) in rs)
    # pair 3: nothing of it moves
    a3 = pick_uid(tag + "a3", lambda u: free(user_slot(u)))
    b3 = pick_uid(tag + "b3", lambda u: free(user_slot(u),
                                             conv_slot(single_conv(a3, u))))
    pairs = [(a0, b0), (a1, b1), (a2, b2), (a3, b3)]
    moves = {b0: "conversation slot moved by hand",
             b1: "recipient slot moved by hand",
             b2: "both slots resharded", b3: "nothing moved"}
    convs = [single_conv(a, b) for a, b in pairs]
    dst0 = next(x for x in m if x != smap.owner(c0))
    dst1 = next(x for x in m if x != smap.owner(u1))

    users = [u for p in pairs for u in p]
    api.register(*users)
    # senders alternate between the hosts; each recipient has a device on
    # each host
    send_host = {a: hosts[i % 2] for i, (a, _) in enumerate(pairs)}
    toks = {(u, p): api.user_token(u, p) for u in users for p in (1, 2)}
    errors = []
    timeline = []

    def migrations():
        try:
            time.sleep(1.0)
            t = time.time()
            src = cluster.begin_migration(c0, dst0)
            k = step_keys(cluster, c0, src, dst0)
            cluster.finish_migration(c0, dst0, src)
            timeline.append(("conv slot %d %d->%d, %d keys" % (
                c0, src, dst0, k), t, time.time()))
            time.sleep(0.5)

            t = time.time()
            src = cluster.begin_migration(u1, dst1)
            k = step_keys(cluster, u1, src, dst1)
            # every key of b1 is on dst1, the slot not yet: a token for b1
            # (its registry and profile) is asked there
            Api(n2).user_token(b1, 3)
            cluster.finish_migration(u1, dst1, src)
            timeline.append(("user slot %d %d->%d, %d keys" % (
                u1, src, dst1, k), t, time.time()))
            time.sleep(0.5)

            t = time.time()
            cluster.reshard(RESHARD, rs_src, rs_dst)
            timeline.append(("reshard %d slots %d->%d" % (
                RESHARD, rs_src, rs_dst), t, time.time()))
            time.sleep(1.0)
        except Exception as e:          # reported by the test
            errors.append(e)
            raise

    async def scenario(pool):
        senders, devices = [], []
        for i, (a, b) in enumerate(pairs):
            ca = await pool.connect(send_host[a], a, toks[(a, 1)], 1)
            senders.append(Sender(ca, b, "%s-%d" % (tag, i), pause=0.04,
                                  max_msgs=1500))
            h = send_host[a]
            other = n2 if h is n1 else n1
            devices.append([await pool.connect(other, b, toks[(b, 1)], 1),
                            await pool.connect(h, b, toks[(b, 2)], 2)])
        where = {}
        for s, devs in zip(senders, devices):
            for c in [s.c] + devs:
                h = n1 if ":%d/" % n1.port in c.url else n2
                where[c] = "host %d worker %d" % (
                    hosts.index(h) + 1, worker_of(h, c))
        m0 = metrics(n1, n2)
        stop = asyncio.Event()
        pushed = [[[] for _ in devs] for devs in devices]
        readers = [asyncio.ensure_future(background_pushes(c, stop, into))
                   for devs, intos in zip(devices, pushed)
                   for c, into in zip(devs, intos)]
        sending = [asyncio.ensure_future(s.run(stop)) for s in senders]
        t0 = time.time()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, migrations),
                                   45)
        finally:
            stop.set()
            # senders finish their resends of 90004s: bounded by
            # Sender.max_retries, and by this wait
            done, pending = await asyncio.wait(sending, timeout=20)
            for t in pending:
                t.cancel()
            await asyncio.wait(readers, timeout=5)
        assert not errors, errors
        assert not pending, "senders still resending 20 s after the end"
        for t in sending:
            t.result()
        elapsed = time.time() - t0

        report = []
        for (a, b), s, conv, devs, intos in zip(pairs, senders, convs,
                                                devices, pushed):
            assert not s.other, s.other[:5]
            assert not s.gave_up, (conv, s.gave_up)
            slow = max(secs for _, secs, _ in s.answers)
            assert slow < 8, "%s: an answer took %.1fs" % (conv, slow)
            # pull: seqs 1..N, every ack there once, nothing else
            n = await newest_max(devs[0], conv)
            assert n == len(s.acks), (conv, n, len(s.acks))
            pulled = await pull_all(devs[0], conv, n)
            assert check_conversation(conv, s.acks, pulled) == []
            # pushes: only acked messages, at their acked seqs
            by_cmid = {k: v["seq"] for k, v in s.acks.items()}
            for c, msgs in zip(devs, intos):
                bad = [(m["clientMsgID"], m["seq"]) for m in msgs
                       if by_cmid.get(m["clientMsgID"]) != m["seq"]]
                assert not bad, (conv, bad[:5])
                got = [m["clientMsgID"] for m in msgs]
                missing = sorted(set(by_cmid) - set(got),
                                 key=lambda k: by_cmid[k])
                report.append(
                    "pair %d (%s), dev %d on %s: %d acked, %d pushed, %d "
                    "missing%s, %d twice; %d refusals (90004), slowest "
                    "answer %.2fs" % (
                        pairs.index((a, b)), moves[b], devs.index(c) + 1,
                        where[c], len(s.acks), len(got), len(missing),
                        " (seq@ack time: %s)" % ", ".join(
                            "%d@%.2fs" % (by_cmid[k], s.acked_at[k] - t0)
                            for k in missing[:8]) if missing else "",
                        len(got) - len(set(got)), len(s.refused), slow))

        # after the moves, every recipient's pushes flow again
        for i, ((a, b), s, devs) in enumerate(zip(pairs, senders, devices)):
            for k in range(3):
                cmid = "%s-probe-%d" % (s.tag, k)
                r = await s.c.request(1003, msg_data(a, b, "probe", cmid))
                assert r["errCode"] == 0, r
                got = await asyncio.gather(*[
                    pushes_until(c, lambda ms: any(
                        x["clientMsgID"] == cmid for x in ms), timeout=5,
                        quiet=0) for c in devs])
                if all(any(x["clientMsgID"] == cmid for x in ms)
                       for ms in got):
                    break
            else:
                raise AssertionError("%s: no push after the moves" % b)

        m1 = metrics(n1, n2)
        delta = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
        print("\nresharding under traffic, %.1fs:" % elapsed)
        for what, t, t2 in timeline:
            print("  %.2f..%.2fs %s" % (t - t0, t2 - t0, what))
        for i, s in enumerate(senders):
            print("  pair %d sender on %s" % (i, where[s.c]))
        for line in report:
            print("  " + line)
        print("  metrics: " + ", ".join(
            "%s %+d" % (k, delta.get(k, 0)) for k in (
                "im_redis_moved_total", "im_redis_ask_total",
                "im_redis_slot_refreshes_total",
                "im_redis_resubscribes_total", "im_redis_errors_total",
                "im_redis_busy_total")))
        assert delta["im_redis_moved_total"] > 0, delta
        assert delta["im_redis_ask_total"] > 0, delta
        assert delta["im_redis_resubscribes_total"] > 0, delta

    run_clients(scenario, timeout=110)

    # the slots are where they were sent
    assert cluster.master_of_slot(c0) == dst0
    assert cluster.master_of_slot(u1) == dst1
    assert {cluster.master_of_slot(s) for s in rs} == {rs_dst}


# ---------------------------------------------------------------------------
# 3. a master dies while messages flow


def compare(acks, pulled):
    """(gaps, dups, lost, extra) of a conversation's pull against its
    acks: seqs missing from 1..max, clientMsgIDs stored twice, acked
    (seq, clientMsgID) not pulled so, stored clientMsgIDs never acked."""
    seqs = [m["seq"] for m in pulled]
    gaps = sorted(set(range(1, max(seqs or [0]) + 1)) - set(seqs))
    cmids = [m["clientMsgID"] for m in pulled]
    dups = sorted({k for k in cmids if cmids.count(k) > 1})
    by_seq = {m["seq"]: m["clientMsgID"] for m in pulled}
    lost = sorted((a["seq"], k, by_seq.get(a["seq"]))
                  for k, a in acks.items() if by_seq.get(a["seq"]) != k)
    extra = sorted(set(cmids) - set(acks))
    return gaps, dups, lost, extra


def test_master_failover_under_traffic(cluster, hosts):
    n1, n2 = hosts
    api = Api(n1)
    cluster.wait_ok()
    smap = SlotMap(cluster)
    assert len(smap.masters) == 3
    tag = uids(1, "f")[0]

    # one pair per master: both users' keys and the conversation there
    pairs = []
    for i, mp in enumerate(smap.masters):
        def on(*slots, mp=mp):
            return all(smap.owner(s) == mp for s in slots)
        a = pick_uid("%sa%d" % (tag, i), lambda u: on(user_slot(u)))
        b = pick_uid("%sb%d" % (tag, i), lambda u: on(
            user_slot(u), conv_slot(single_conv(a, u))))
        pairs.append((a, b))
    convs = [single_conv(a, b) for a, b in pairs]
    vi = 1
    victim = smap.masters[vi]
    users = [u for p in pairs for u in p]
    api.register(*users)
    toks = {(u, p): api.user_token(u, p) for u in users for p in (1, 2)}
    # every write so far is on the replicas (WAIT), so only traffic from
    # now on can be lost with the master
    for mp in smap.masters:
        cluster.cmd(mp, "WAIT", 1, 2000)

    out = {}

    async def scenario(pool):
        senders, devices = [], []
        for i, (a, b) in enumerate(pairs):
            h, other = (n1, n2) if i % 2 == 0 else (n2, n1)
            ca = await pool.connect(h, a, toks[(a, 1)], 1)
            senders.append(Sender(ca, b, "%s-%d" % (tag, i), window=2,
                                  pause=0.02, max_msgs=2000,
                                  max_retries=400))
            devices.append([await pool.connect(other, b, toks[(b, 1)], 1),
                            await pool.connect(h, b, toks[(b, 2)], 2)])
        stop = asyncio.Event()
        pushed = [[[] for _ in devs] for devs in devices]
        readers = [asyncio.ensure_future(background_pushes(c, stop, into))
                   for devs, intos in zip(devices, pushed)
                   for c, into in zip(devs, intos)]
        sending = [asyncio.ensure_future(s.run(stop)) for s in senders]
        t0 = time.time()
        try:
            end = time.time() + 10
            while min(len(s.acks) for s in senders) < 20:
                assert time.time() < end, [len(s.acks) for s in senders]
                for t in sending:
                    if t.done():
                        t.result()
                await asyncio.sleep(0.05)

            t_kill = time.time()
            await asyncio.to_thread(cluster.kill_master, victim)
            new = await asyncio.to_thread(cluster.wait_failover, victim, 20)
            t_fo = time.time()
            vs = senders[vi]
            end = time.time() + 20
            while not any(t > t_fo for t in vs.acked_at.values()):
                assert time.time() < end, \
                    "sends on the failed-over shard still refused 20 s " \
                    "after the failover (%d refusals since)" % sum(
                        1 for t, _, _ in vs.refused if t > t_fo)
                assert not sending[vi].done(), sending[vi]
                await asyncio.sleep(0.05)
            t_rec = min(t for t in vs.acked_at.values() if t > t_fo)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            done, pending = await asyncio.wait(sending, timeout=20)
            for t in pending:
                t.cancel()
            await asyncio.wait(readers, timeout=5)
        assert not pending, "senders still resending 20 s after the end"
        for t in sending:
            t.result()

        # no hang: every answer came quickly, refusals were 90004
        lines = []
        for i, s in enumerate(senders):
            assert not s.other, s.other[:5]
            assert not s.gave_up, (convs[i], s.gave_up[:5])
            slow = max(secs for _, secs, _ in s.answers)
            assert slow < 5, "%s: an answer took %.1fs" % (convs[i], slow)
            down = [r for r in s.refused if t_kill <= r[0] <= t_rec + 1]
            lines.append("pair %d (master %d%s): %d acked, %d refused "
                         "(90004) during the outage, slowest refusal %.2fs,"
                         " slowest answer %.2fs" % (
                             i, smap.masters[i],
                             " killed, now %d" % new if i == vi else "",
                             len(s.acks), len(down),
                             max([secs for _, _, secs in down] or [0]),
                             slow))
        refusals = [r for r in senders[vi].refused if r[0] >= t_kill]
        assert refusals, "no send refused while its master was down"
        assert max(secs for _, _, secs in refusals) < 3, refusals[:5]

        # pushes resume on every shard
        probe_tries = []
        for i, ((a, b), s, devs) in enumerate(zip(pairs, senders, devices)):
            for k in range(5):
                cmid = "%s-probe-%d" % (s.tag, k)
                r = await s.c.request(1003, msg_data(a, b, "probe", cmid))
                assert r["errCode"] == 0, r
                got = await asyncio.gather(*[
                    pushes_until(c, lambda ms: any(
                        x["clientMsgID"] == cmid for x in ms), timeout=3,
                        quiet=0) for c in devs])
                if all(any(x["clientMsgID"] == cmid for x in ms)
                       for ms in got):
                    s.acks[cmid] = r["data"]
                    probe_tries.append(k + 1)
                    break
                s.acks[cmid] = r["data"]
            else:
                raise AssertionError("%s: no push after the failover" % b)

        # acks against pulls; Redis may lose the victim's last acked writes
        losses = []
        for i, (s, conv, devs, intos) in enumerate(zip(senders, convs,
                                                       devices, pushed)):
            n = await newest_max(devs[0], conv)
            top = max([n] + [a["seq"] for a in s.acks.values()])
            pulled = await pull_all(devs[0], conv, top)
            gaps, dups, lost, extra = compare(s.acks, pulled)
            assert not dups, (conv, "stored twice", dups[:10])
            assert not gaps, (conv, "seq gaps", gaps[:10])
            if i != vi:
                assert not lost and not extra, (conv, lost[:5], extra[:5])
                assert n == len(s.acks) == len(pulled), \
                    (conv, n, len(s.acks), len(pulled))
            elif lost or extra or n != len(pulled):
                losses.append(
                    "%s: %d acked messages lost by Redis (seq, acked "
                    "clientMsgID, now stored there): %s; %d stored, never "
                    "acked; 1001 max %d, pulled %d" % (
                        conv, len(lost), lost[:20], len(extra), n,
                        len(pulled)))
            by_cmid = {k: a["seq"] for k, a in s.acks.items()
                       if "-probe-" not in k}
            for d, msgs in enumerate(intos):
                got = [m["clientMsgID"] for m in msgs]
                lines.append(
                    "pair %d dev %d: %d pushed, %d acked not pushed, "
                    "%d pushed twice, %d pushed at another seq than acked"
                    % (i, d + 1, len(got), len(set(by_cmid) - set(got)),
                       len(got) - len(set(got)),
                       sum(1 for m in msgs
                           if by_cmid.get(m["clientMsgID"]) not in
                           (None, m["seq"]))))
        out.update(lines=lines, losses=losses, t0=t0, t_kill=t_kill,
                   t_fo=t_fo, t_rec=t_rec, probes=probe_tries)

    try:
        run_clients(scenario, timeout=110)
    finally:
        if victim in cluster.down:
            cluster.restart_node(victim)
        cluster.wait_ok()

    print("\nmaster failover under traffic: kill at %.2fs, failover "
          "done %.2fs later, first ack on that shard %.2fs after that; "
          "probes needed per pair %s"
          % (out["t_kill"] - out["t0"], out["t_fo"] - out["t_kill"],
             out["t_rec"] - out["t_fo"], out["probes"]))
    for line in out["lines"]:
        print("  " + line)
    for line in out["losses"]:
        print("  LOST: " + line)
        warnings.warn("Redis lost acked messages in the failover: " + line)
    assert out["t_rec"] - out["t_fo"] < 15


# ---------------------------------------------------------------------------
# 4. MongoDB history on a cluster


def test_mongo_history_on_a_cluster(base_dir):
    """With im_mongo on a Redis Cluster: every acked message is in MongoDB
    exactly once (through the sharded persistence queues), the hot window
    of 5 keeps only the newest in Redis, a pull stitches MongoDB and
    Redis, the queues drain, and after Redis loses everything (FLUSHALL
    on every master) the history is still pullable and the seq goes on
    past every seq used (re-seeded from MongoDB), never repeating."""
    from conftest import Mongo, Client, run

    rc = RedisCluster(base_dir, masters=3, replicas=0).start()
    m = Mongo(base_dir).start()
    ngx = None
    try:
        # a reservation block of 1: the seq after a re-seed is exactly
        # the next one, so pulls show no gap of reserved, unused seqs
        ngx = Nginx(base_dir, rc.seeds, workers=2,
                    http="im_hot_window 5; im_seq_block 1;",
                    mongo=m.uri).start()
        wait_cluster_ready(ngx, 3)
        api = Api(ngx)
        pairs = [uids(2, "mg") for _ in range(3)]
        for a, b in pairs:
            api.register(a, b)
        tokens = {u: api.user_token(u) for p in pairs for u in p}

        async def send_all(count):
            acks = {}
            for a, b in pairs:
                c = await Client(ngx, a, tokens[a]).connect()
                for i in range(count):
                    r = await c.send_text(b, "m%d" % i)
                    assert r["errCode"] == 0, r
                    acks.setdefault(single_conv(a, b), []).append(
                        r["data"]["seq"])
                await c.close()
            return acks

        acks = run(send_all(30))
        for seqs in acks.values():
            assert seqs == list(range(1, 31))

        db = m.db()
        end = time.time() + 20
        while time.time() < end:
            counts = [db.msg.count_documents({"conversationID": c})
                      for c in acks]
            if counts == [30] * len(acks):
                break
            time.sleep(0.2)
        assert counts == [30] * len(acks), counts

        client = rc.client()
        for conv in acks:
            end = time.time() + 10
            while time.time() < end:
                hot = sorted(int(s) for s in
                             client.hkeys("im:{c:%s}:msgs" % conv))
                if hot == list(range(26, 31)):
                    break
                time.sleep(0.1)
            assert hot == list(range(26, 31)), (conv, hot)
        backlog = sum(client.xlen("im:{q:%d}:persist" % k)
                      for k in range(16)
                      if client.exists("im:{q:%d}:persist" % k))
        assert backlog == 0, backlog

        async def pull(a, b, tok):
            c = await Client(ngx, b, tok).connect()
            r = await c.pull(single_conv(a, b), 1, 1000, 100)
            await c.close()
            assert r["errCode"] == 0, r
            return [x["seq"] for x in
                    r["data"]["msgs"][single_conv(a, b)]["Msgs"]]

        for a, b in pairs:
            assert run(pull(a, b, tokens[b])) == list(range(1, 31))

        # Redis loses everything: the users come back from MongoDB (and
        # stay registered), the tokens do not (1507): new ones
        for p in rc.masters():
            rc.cli(p, "FLUSHALL")
        api._admin = None
        r = api.post("/user/user_register",
                     {"users": [{"userID": pairs[0][0]}]},
                     token=api.admin_token())
        assert r["errCode"] == 1102, r
        tokens = {u: api.user_token(u) for p in pairs for u in p}

        after = run(send_all(1))
        for conv, seqs in after.items():
            assert seqs == [31], (conv, seqs)
        for a, b in pairs:
            got = run(pull(a, b, tokens[b]))
            assert got[:30] == list(range(1, 31)), got
            assert got[30:] == after[single_conv(a, b)], got
        assert ngx.bad_log_lines() == []
    finally:
        if ngx:
            ngx.stop()
        m.stop()
        rc.stop()
