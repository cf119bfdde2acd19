"""Self-test of the Redis Cluster fixture (t/helpers_cluster.py and
t/redis_cluster.sh), no nginx involved.

Checks, on one 3 masters + 3 replicas cluster on free loopback ports:
  - start: every node ok, 3 masters in `seeds`, 6 `addrs`;
  - keys with hash tags (im:{u:x}:a) written through redis.cluster land in
    the slot CLUSTER KEYSLOT names, on the master CLUSTER SLOTS names;
  - migrate_slot moves one slot holding keys to another master by hand
    (IMPORTING/MIGRATING, MIGRATE ... KEYS, SETSLOT NODE): every node's
    CLUSTER SLOTS names the new owner and the keys read back, and a
    half-done migration (begin_migration + move_keys(limit)) gives the
    ASK/MOVED window tests rely on;
  - kill_master + wait_failover promotes a replica and the cluster is ok
    again; restart_node brings the old master back as a replica;
  - stop leaves no redis-server of the cluster running and is idempotent.
"""

import os

import pytest
import redis

from helpers_cluster import RedisCluster, _alive


@pytest.fixture(scope="module")
def cluster(base_dir):
    rc = RedisCluster(base_dir, masters=3, replicas=1).start()
    yield rc
    rc.stop()


def keys_for(tag, n=5):
    return ["im:{u:%s}:%s" % (tag, c) for c in "abcdefghij"[:n]]


def test_start(cluster):
    assert len(cluster.addrs) == 6
    masters = cluster.masters()
    assert len(masters) == 3
    assert cluster.seeds == " ".join("127.0.0.1:%d" % p for p in masters)
    assert set(masters) < set(cluster.ports)
    for m in masters:
        assert len(cluster.replicas_of(m)) == 1
    cluster.wait_ok(5)
    assert cluster.cli(masters[0], "PING") == "PONG"


def test_keys_migrate_slot(cluster):
    c = cluster.client()
    try:
        keys = keys_for("x")
        for k in keys:
            c.set(k, "v-" + k)
        slot = cluster.slot_of(keys[0])
        assert {cluster.slot_of(k) for k in keys} == {slot}
        assert slot == c.keyslot(keys[0])
        src = cluster.master_of_slot(slot)
        assert int(cluster.cmd(src, "CLUSTER", "COUNTKEYSINSLOT", slot)) \
            == len(keys)

        dst = next(m for m in cluster.masters() if m != src)
        moved = cluster.migrate_slot(slot, dst)
        assert moved == len(keys)
        for p in cluster.live_ports():
            assert cluster.master_of_slot(slot, p) == dst
        assert int(cluster.cmd(src, "CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
        assert int(cluster.cmd(dst, "CLUSTER", "COUNTKEYSINSLOT", slot)) \
            == len(keys)
        # the old owner now redirects
        with pytest.raises(redis.ResponseError, match="MOVED %d" % slot):
            cluster.cmd(src, "GET", keys[0])
        # the client follows MOVED and reads everything back
        for k in keys:
            assert c.get(k) == "v-" + k
        cluster.wait_ok(10)
    finally:
        c.close()


def test_half_migrated_slot_asks(cluster):
    c = cluster.client()
    try:
        keys = keys_for("ask", 6)
        for k in keys:
            c.set(k, k)
        slot = cluster.slot_of(keys[0])
        src = cluster.master_of_slot(slot)
        dst = next(m for m in cluster.masters() if m != src)
        assert cluster.begin_migration(slot, dst) == src
        assert cluster.move_keys(slot, src, dst, limit=2) == 2
        left = {k.decode() for k in
                cluster.cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)}
        gone = [k for k in keys if k not in left]
        assert len(gone) == 2 and len(left) == len(keys) - 2
        # the source still serves the keys it has, ASKs for the others
        assert cluster.cmd(src, "GET", sorted(left)[0]) is not None
        with pytest.raises(redis.ResponseError, match="ASK %d" % slot):
            cluster.cmd(src, "GET", gone[0])
        for k in keys:                  # the client follows ASK
            assert c.get(k) == k
        cluster.move_keys(slot, src, dst)
        cluster.finish_migration(slot, dst, src)
        assert cluster.master_of_slot(slot) == dst
        for k in keys:
            assert c.get(k) == k
    finally:
        c.close()


def test_failover_and_restart(cluster):
    c = cluster.client()
    try:
        keys = keys_for("fo")
        for k in keys:
            c.set(k, k)
        slot = cluster.slot_of(keys[0])
        old = cluster.master_of_slot(slot)
        replica = cluster.replicas_of(old)[0]
        # the replica must have the keys before the kill
        cluster.cmd(old, "WAIT", 1, 2000)
        cluster.kill_master(old)
        new = cluster.wait_failover(old, timeout=15)
        assert new == replica
        assert old not in cluster.masters()
        assert new in cluster.masters()
        assert cluster.master_of_slot(slot) == new
    finally:
        c.close()
    c = cluster.client()
    try:
        for k in keys:
            assert c.get(k) == k
    finally:
        c.close()

    cluster.restart_node(old)
    assert cluster.repl_info(old)["role"] == "slave"
    assert cluster.replicas_of(new) == [old]
    assert len(cluster.masters()) == 3


def test_stop_is_idempotent(base_dir):
    rc = RedisCluster(base_dir, masters=3, replicas=0).start()
    pids = [rc.pid(p) for p in rc.ports]
    assert all(pids)
    rc.stop()
    assert not any(_alive(p) for p in pids)
    for p in rc.ports:
        assert not os.path.exists(os.path.join(rc.dir, str(p), "redis.pid"))
    rc.started = True                   # force the script to run again
    rc.stop()
