"""A real Redis Cluster on loopback for tests (see t/redis_cluster.sh).

    rc = RedisCluster(base_dir, masters=3, replicas=1).start()
    rc.seeds                      # "127.0.0.1:p1 127.0.0.1:p2 127.0.0.1:p3"
    rc.client().set("im:{u:1}:a", "x")
    slot = rc.slot_of("im:{u:1}:a")
    rc.migrate_slot(slot, other_master_port)     # or begin/move_keys/finish
    new = rc.wait_failover(rc.kill_master(port)) # replica promoted
    rc.restart_node(port)                        # old master back as replica
    rc.stop()

Every wait is bounded and fails with RuntimeError (the cluster did not get
there) or AssertionError (the caller asked for something impossible).
"""

import os
import random
import signal
import socket
import subprocess
import time
import uuid

import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as _ClusterClient

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "redis_cluster.sh")
HOST = "127.0.0.1"
BUS_OFFSET = 10000          # cluster bus port = port + 10000 (cluster-port 0)
# Client ports and bus ports both stay below the ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range, 32768.. here), so an outgoing
# connection can never grab one of them between the check and the bind.
PORT_LOW, PORT_HIGH = 20000, 22700


def _bindable(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_base_port(n, tries=300):
    """A base such that base..base+n-1 and their bus ports are all free."""
    for _ in range(tries):
        base = random.randrange(PORT_LOW, PORT_HIGH - n)
        ports = list(range(base, base + n))
        if all(_bindable(p) and _bindable(p + BUS_OFFSET) for p in ports):
            return base
    raise RuntimeError("no %d free consecutive loopback ports (+bus) in %d..%d"
                       % (n, PORT_LOW, PORT_HIGH))


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a truthy value; RuntimeError after
    timeout with what (a string or a callable giving the last reason)."""
    end = time.time() + timeout
    last = None
    while True:
        try:
            val = cond()
        except (redis.RedisError, OSError) as e:
            val, last = None, e
        if val:
            return val
        if time.time() >= end:
            why = what() if callable(what) else what
            raise RuntimeError("%s (after %.1f s%s)"
                               % (why, timeout,
                                  ", last error: %r" % last if last else ""))
        time.sleep(interval)


class RedisCluster:
    """MASTERS*(1+REPLICAS) redis-server nodes in cluster mode, each in
    <base_dir>/cluster-xxxxxx/<port>/ with AOF on and node timeout 1 s."""

    def __init__(self, base_dir, masters=3, replicas=1):
        self.n_masters = masters
        self.n_replicas = replicas
        self.n = masters * (1 + replicas)
        self.dir = os.path.join(base_dir, "cluster-%s" % uuid.uuid4().hex[:6])
        os.makedirs(self.dir)
        self.base_port = pick_base_port(self.n)
        self.ports = list(range(self.base_port, self.base_port + self.n))
        self.down = set()           # ports we killed and did not restart
        self._killed = {}           # port -> {"replicas": [...]}
        self._conns = {}
        self._client = None
        self.started = False

    # ---------------------------------------------------------- lifecycle

    def _script(self, *args, timeout=90):
        out = subprocess.run([SCRIPT] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=timeout)
        return out

    def start(self):
        out = self._script("start", self.dir, self.base_port,
                           self.n_masters, self.n_replicas)
        self.started = True
        if out.returncode != 0 or not out.stdout.startswith("ready"):
            self.stop()
            raise RuntimeError("redis cluster on %d.. did not start (rc %d):"
                               "\n%s%s" % (self.base_port, out.returncode,
                                           out.stdout, out.stderr))
        return self

    def stop(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        for c in self._conns.values():
            c.close()
        self._conns.clear()
        if not self.started:
            return
        out = self._script("stop", self.dir, self.base_port,
                           self.n_masters, self.n_replicas, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("redis cluster stop failed:\n%s%s"
                               % (out.stdout, out.stderr))
        self.started = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------- addresses

    @staticmethod
    def addr(port):
        return "%s:%d" % (HOST, port)

    @property
    def addrs(self):
        """All nodes, "127.0.0.1:port", in port order (down ones too)."""
        return [self.addr(p) for p in self.ports]

    @property
    def seeds(self):
        """The current masters, space separated (an im_redis_cluster-style
        seed list)."""
        return " ".join(self.addr(p) for p in self.masters())

    def live_ports(self):
        return [p for p in self.ports if p not in self.down]

    def pid(self, port):
        try:
            with open(os.path.join(self.dir, str(port), "redis.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------ clients

    def cli(self, port, *args, check=True):
        """redis-cli -p port args... → stdout text (stripped).  With check,
        a Redis error reply raises RuntimeError."""
        cmd = ["redis-cli", "-h", HOST, "-p", str(port)]
        if check:
            cmd.append("-e")
        out = subprocess.run(cmd + [str(a) for a in args],
                             capture_output=True, text=True, timeout=10)
        if check and out.returncode != 0:
            raise RuntimeError("redis-cli -p %d %s: %s%s"
                               % (port, " ".join(map(str, args)),
                                  out.stdout.strip(), out.stderr.strip()))
        return out.stdout.strip()

    def node(self, port):
        """A plain (non-cluster) redis.Redis to one node, bytes replies."""
        c = self._conns.get(port)
        if c is None:
            c = redis.Redis(host=HOST, port=port, socket_timeout=5,
                            socket_connect_timeout=2)
            self._conns[port] = c
        return c

    def cmd(self, port, *args):
        """One raw command to one node; bytes/lists as the server sent."""
        return self.node(port).execute_command(*args)

    def client(self, **kw):
        """A redis.cluster.RedisCluster (decode_responses=True unless
        given), seeded with every live node."""
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 2)
        nodes = [ClusterNode(HOST, p) for p in self.live_ports()]
        return _ClusterClient(startup_nodes=nodes, **kw)

    def _any(self):
        """A live node that answers PING."""
        for p in self.live_ports():
            try:
                if self.cmd(p, "PING"):
                    return p
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError("no live cluster node answers PING (ports %s, "
                           "down %s)" % (self.ports, sorted(self.down)))

    # ------------------------------------------------------- cluster view

    def info(self, port):
        """CLUSTER INFO of port as a dict of strings."""
        raw = self.cmd(port, "CLUSTER", "INFO")
        if isinstance(raw, bytes):
            raw = raw.decode()
        if isinstance(raw, dict):
            return {k: str(v) for k, v in raw.items()}
        return dict(l.split(":", 1) for l in raw.split("\r\n") if ":" in l)

    def repl_info(self, port):
        return {k.decode() if isinstance(k, bytes) else k: v
                for k, v in self.node(port).info("replication").items()}

    def nodes(self, port=None):
        """CLUSTER NODES as seen by port (or any live node): list of dicts
        id, port, flags (set), master (id or None), link, slots (list of
        (start, end) ranges), importing/migrating markers dropped."""
        port = port or self._any()
        raw = self.cmd(port, "CLUSTER", "NODES")
        if isinstance(raw, bytes):
            raw = raw.decode()
        out = []
        for line in raw.strip().splitlines():
            f = line.split()
            slots = []
            for s in f[8:]:
                if s.startswith("["):
                    continue
                a, _, b = s.partition("-")
                slots.append((int(a), int(b or a)))
            out.append({
                "id": f[0],
                "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                "flags": set(f[2].split(",")),
                "master": None if f[3] == "-" else f[3],
                "link": f[7],
                "slots": slots,
            })
        return out

    def node_id(self, port):
        nid = self.cmd(port, "CLUSTER", "MYID")
        return nid.decode() if isinstance(nid, bytes) else nid

    def slots(self, port=None):
        """CLUSTER SLOTS seen by port (or any live node):
        [(start, end, master_port, [replica_ports])] sorted by start."""
        port = port or self._any()
        out = []
        for entry in self.cmd(port, "CLUSTER", "SLOTS"):
            start, end = int(entry[0]), int(entry[1])
            ports = [int(n[1]) for n in entry[2:]]
            out.append((start, end, ports[0], ports[1:]))
        return sorted(out)

    def slot_of(self, key):
        return int(self.cmd(self._any(), "CLUSTER", "KEYSLOT", key))

    def master_of_slot(self, slot, port=None):
        """Port of the master serving slot according to CLUSTER SLOTS of
        port (or any live node); None if the slot is unassigned."""
        for start, end, master, _ in self.slots(port):
            if start <= slot <= end:
                return master
        return None

    def masters(self, port=None):
        """Ports currently masters (not failed) in the view of port (or any
        live node), sorted; includes masters without slots."""
        return sorted(n["port"] for n in self.nodes(port)
                      if "master" in n["flags"] and "fail" not in n["flags"]
                      and "noaddr" not in n["flags"])

    def replicas_of(self, master_port, port=None):
        nodes = self.nodes(port)
        mid = next((n["id"] for n in nodes if n["port"] == master_port), None)
        assert mid, "port %d is not a cluster node" % master_port
        return sorted(n["port"] for n in nodes if n["master"] == mid)

    # ------------------------------------------------------------- waits

    def _ok_reason(self):
        """None when every live node is ok, agrees on the slot map and
        every live replica's link is up; else why not."""
        maps = {}
        for p in self.live_ports():
            try:
                info = self.info(p)
                if info.get("cluster_state") != "ok":
                    return "node %d: cluster_state:%s" % (
                        p, info.get("cluster_state"))
                if info.get("cluster_slots_ok") != "16384":
                    return "node %d: cluster_slots_ok:%s" % (
                        p, info.get("cluster_slots_ok"))
                repl = self.repl_info(p)
                if repl.get("role") == "slave" and \
                        repl.get("master_link_status") != "up":
                    return "replica %d: master_link_status:%s" % (
                        p, repl.get("master_link_status"))
                maps[p] = [(s, e, m) for s, e, m, _ in self.slots(p)]
            except (redis.RedisError, OSError) as e:
                return "node %d: %r" % (p, e)
        views = {tuple(v) for v in maps.values()}
        if len(views) != 1:
            return "nodes disagree on the slot map"
        return None

    def wait_ok(self, timeout=20):
        """Until every live node says cluster_state:ok with all slots, all
        agree on CLUSTER SLOTS and all live replicas are linked up."""
        why = []

        def ok():
            r = self._ok_reason()
            why[:] = [r]
            return r is None
        _until(ok, timeout, lambda: "cluster not ok: %s" % why[0],
               interval=0.1)
        return self

    def _wait_owner(self, slot, dst_port, timeout=10):
        def agreed():
            return all(self.master_of_slot(slot, p) == dst_port
                       for p in self.live_ports())
        _until(agreed, timeout,
               lambda: "slot %d: not every node says %d owns it: %s"
               % (slot, dst_port,
                  {p: self._safe(self.master_of_slot, slot, p)
                   for p in self.live_ports()}))

    @staticmethod
    def _safe(fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            return repr(e)

    # --------------------------------------------------------- resharding

    def begin_migration(self, slot, dst_port):
        """SETSLOT IMPORTING on dst, MIGRATING on the owner; returns the
        owner's port.  From now on the owner answers -ASK for keys it no
        longer has, and dst accepts them after ASKING."""
        src_port = self.master_of_slot(slot)
        assert src_port is not None, "slot %d has no owner" % slot
        assert src_port != dst_port, \
            "slot %d is already on %d" % (slot, dst_port)
        assert dst_port in self.masters(), "%d is not a master" % dst_port
        src_id, dst_id = self.node_id(src_port), self.node_id(dst_port)
        self.cmd(dst_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        self.cmd(src_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        return src_port

    def move_keys(self, slot, src_port, dst_port, batch=100, limit=None,
                  timeout_ms=5000):
        """MIGRATE the keys of slot from src to dst in batches (KEYS form);
        at most limit keys if given (to leave a slot half moved).
        Returns how many keys moved."""
        moved = 0
        for _ in range(100000):         # bounded: 10M keys at batch 100
            n = batch if limit is None else min(batch, limit - moved)
            if n <= 0:
                break
            keys = self.cmd(src_port, "CLUSTER", "GETKEYSINSLOT", slot, n)
            if not keys:
                break
            res = self.cmd(src_port, "MIGRATE", HOST, dst_port, "", 0,
                           timeout_ms, "REPLACE", "KEYS", *keys)
            # NOKEY: every key expired or was deleted in between
            if res not in (b"OK", "OK", True, b"NOKEY", "NOKEY"):
                raise RuntimeError("MIGRATE slot %d %d->%d: %r"
                                   % (slot, src_port, dst_port, res))
            moved += len(keys)
        else:
            raise RuntimeError("slot %d: keys keep coming, gave up" % slot)
        return moved

    def finish_migration(self, slot, dst_port, src_port=None, timeout=10):
        """SETSLOT NODE dst on dst, then the source, then every other
        master; waits until every live node's CLUSTER SLOTS agrees."""
        dst_id = self.node_id(dst_port)
        order = [dst_port] + ([src_port] if src_port else [])
        order += [p for p in self.masters() if p not in order]
        for p in order:
            self.cmd(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self._wait_owner(slot, dst_port, timeout)

    def migrate_slot(self, slot, dst_port, batch=100, timeout=10):
        """Moves one slot, keys included, to master dst_port by hand."""
        src_port = self.begin_migration(slot, dst_port)
        moved = self.move_keys(slot, src_port, dst_port, batch=batch)
        left = int(self.cmd(src_port, "CLUSTER", "COUNTKEYSINSLOT", slot))
        if left:
            raise RuntimeError("slot %d: %d keys still on %d after MIGRATE"
                               % (slot, left, src_port))
        self.finish_migration(slot, dst_port, src_port, timeout)
        return moved

    def reshard(self, count, src_port, dst_port, timeout=60):
        """redis-cli --cluster reshard: count slots from src to dst."""
        out = subprocess.run(
            ["redis-cli", "--cluster", "reshard", self.addr(src_port),
             "--cluster-from", self.node_id(src_port),
             "--cluster-to", self.node_id(dst_port),
             "--cluster-slots", str(count), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0 or "[ERR]" in out.stdout:
            raise RuntimeError("reshard %d slots %d->%d failed:\n%s%s"
                               % (count, src_port, dst_port,
                                  out.stdout[-3000:], out.stderr))
        self.wait_ok()
        return out.stdout

    # ----------------------------------------------------------- failures

    def kill_node(self, port):
        """SIGKILL one node (no AOF flush beyond everysec)."""
        pid = self.pid(port)
        assert pid and _alive(pid), "node %d is not running" % port
        os.kill(pid, signal.SIGKILL)
        _until(lambda: not _alive(pid), 5,
               "node %d (pid %d) still alive after SIGKILL" % (port, pid))
        self.down.add(port)
        conn = self._conns.pop(port, None)
        if conn is not None:
            conn.close()

    def kill_master(self, port):
        """SIGKILL master port; returns port (for wait_failover)."""
        assert port not in self.down, "node %d is already down" % port
        assert port in self.masters(), "%d is not a master" % port
        replicas = [p for p in self.replicas_of(port) if p not in self.down]
        self._killed[port] = {"replicas": replicas}
        self.kill_node(port)
        return port

    def wait_failover(self, old_port, timeout=15):
        """Until one of old_port's replicas is a master in every live
        node's view and the cluster is ok; returns its port."""
        assert old_port in self._killed, \
            "%d was not killed with kill_master" % old_port
        replicas = self._killed[old_port]["replicas"]
        assert replicas, "master %d had no replica: no failover" % old_port
        why = ["no replica promoted yet"]

        def promoted():
            new = None
            for p in replicas:
                if self.repl_info(p).get("role") == "master":
                    new = p
            if new is None:
                why[0] = "none of %s reports role:master" % replicas
                return None
            for p in self.live_ports():
                if new not in self.masters(p):
                    why[0] = "node %d does not see %d as master yet" % (p, new)
                    return None
            r = self._ok_reason()
            if r:
                why[0] = r
                return None
            return new
        return _until(promoted, timeout,
                      lambda: "failover of %d: %s" % (old_port, why[0]),
                      interval=0.1)

    def restart_node(self, port, timeout=20):
        """Starts a killed node again from its nodes.conf and AOF; a former
        master comes back as a replica of whoever took its slots.  Waits
        until it is a linked replica (or a master, if it still owns slots)
        and the cluster is ok."""
        assert port in self.ports, "%d is not a node of this cluster" % port
        out = self._script("node", self.dir, port, timeout=30)
        if out.returncode != 0:
            raise RuntimeError("restart of node %d failed:\n%s%s"
                               % (port, out.stdout, out.stderr))
        self.down.discard(port)
        self._killed.pop(port, None)
        why = [""]

        def back():
            for p in self.live_ports():
                n = next((x for x in self.nodes(p) if x["port"] == port), None)
                if n is None or "fail" in n["flags"] or \
                        "fail?" in n["flags"]:
                    why[0] = "node %d still sees %d as %s" % (
                        p, port, n and ",".join(sorted(n["flags"])))
                    return False
            r = self._ok_reason()
            why[0] = r or ""
            return r is None
        _until(back, timeout,
               lambda: "node %d did not rejoin: %s" % (port, why[0]),
               interval=0.1)
        return port
