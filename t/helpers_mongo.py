"""Helpers for test_mongo.py: a private MongoDB (FerretDB) + Redis + nginx
stack per test, bounded waits on persistence, metrics, and a syscall
trace of one nginx worker (to see which thread talks to MongoDB)."""

import asyncio
import json
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import Api, Mongo, Nginx, Redis, uids

ON_LOOP = "called on the event-loop thread"


# ---------------------------------------------------------------------------
# a stack


class Stack:
    """MongoDB (or None: Redis-only mode), Redis and nginx of one test."""

    def __init__(self, mongo, redis, ngx, allow=()):
        self.mongo = mongo
        self.redis = redis
        self.ngx = ngx
        self.api = Api(ngx)
        self.allow = [re.compile(a) for a in allow]
        self._client = None

    # -- MongoDB

    def db(self):
        """The im database (one pymongo client per stack)."""
        if self._client is None:
            import pymongo
            self._client = pymongo.MongoClient(
                self.mongo.uri, serverSelectionTimeoutMS=5000,
                connectTimeoutMS=2000, socketTimeoutMS=10000)
        return self._client.im

    def close_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def docs(self, conv):
        """{seq: document} of a conversation; asserts _id == conv:seq and
        that no seq is stored twice."""
        out = {}
        for d in self.db().msg.find({"conversationID": conv}):
            assert d["_id"] == "%s:%d" % (conv, d["seq"]), d
            assert d["seq"] not in out, ("seq stored twice", d)
            out[d["seq"]] = d
        return out

    def mongo_stop(self, kill=False):
        """Stops MongoDB; kill: SIGKILL (a crash), else SIGTERM (FerretDB
        then gives connected clients about 3 s)."""
        self.close_client()
        if kill and self.mongo.proc and self.mongo.proc.poll() is None:
            self.mongo.proc.kill()
            self.mongo.proc.wait(10)
            self.mongo.proc = None
        self.mongo.stop()

    def mongo_start(self):
        """Starts MongoDB again on the same port and directory."""
        if self.mongo.proc is None:
            deadline = time.time() + 10
            while True:
                try:
                    self.mongo.start()
                    return
                except AssertionError:
                    # the port may linger a moment after a kill
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)

    # -- Redis

    def cli(self, *args):
        return self.redis.cli(*args)

    def xlen(self):
        return int(self.cli("XLEN", "im:persist") or 0)

    def hlen(self, conv):
        return int(self.cli("HLEN", "im:{c:%s}:msgs" % conv) or 0)

    def hot_seqs(self, conv):
        out = self.cli("HKEYS", "im:{c:%s}:msgs" % conv)
        return sorted(int(s) for s in out.split()) if out else []

    def pending(self):
        """{consumer: count} of the persist group's unacknowledged
        entries (XPENDING's summary form)."""
        out = self.cli("XPENDING", "im:persist", "persist").split("\n")
        if len(out) < 5:
            return {}
        rest = out[3:]
        return {rest[i]: int(rest[i + 1]) for i in range(0, len(rest) - 1, 2)}

    # -- nginx

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/im/metrics"
                                    % self.ngx.port, timeout=10) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def metric(self, name):
        return self.metrics().get(name, 0.0)

    def users(self, n=2):
        """n fresh registered users and a platform-1 token each."""
        us = uids(n)
        self.api.register(*us)
        return us, {u: self.api.user_token(u, 1) for u in us}

    def unexpected_log_lines(self):
        return [l for l in self.ngx.bad_log_lines()
                if not any(a.search(l) for a in self.allow)]


def make_stack(base_dir, workers=2, http="", mongo=True, redis=None,
               allow=()):
    m = r = None
    try:
        if mongo is True:
            m = Mongo(base_dir).start()
        elif mongo:
            m = mongo
        r = redis or Redis(base_dir).start()
        ngx = Nginx(base_dir, r.addr, workers=workers, http=http,
                    mongo=m.uri if m else None).start()
    except BaseException:
        if r is not None and redis is None:
            r.stop()
        if m is not None and mongo is True:
            m.stop()
        raise
    return Stack(m, r, ngx, allow)


def teardown_stack(st):
    if st.mongo is not None and st.mongo.proc is None:
        # pool threads blocked on a missing MongoDB would hold nginx's
        # exit for up to 30 s
        try:
            st.mongo_start()
        except Exception:
            pass
    st.ngx.stop()
    st.close_client()
    st.redis.stop()
    if st.mongo is not None:
        st.mongo.stop()


# ---------------------------------------------------------------------------
# waits


def wait_for(pred, timeout, interval=0.1, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout
    seconds passed (AssertionError with the last value)."""
    end = time.time() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.time() > end:
            raise AssertionError("%s not reached in %.0f s (last: %r)"
                                 % (what, timeout, last))
        time.sleep(interval)


async def await_for(pred, timeout, interval=0.1, what="condition"):
    """wait_for for coroutines (pred is synchronous)."""
    end = time.time() + timeout
    last = None
    while True:
        last = await asyncio.to_thread(pred)
        if last:
            return last
        if time.time() > end:
            raise AssertionError("%s not reached in %.0f s (last: %r)"
                                 % (what, timeout, last))
        await asyncio.sleep(interval)


def persisted_state(st, expect):
    """expect: {conv: number of messages}.  True once MongoDB holds that
    many documents of every conversation and the backlog is empty; else a
    description (for the timeout message)."""
    counts = {c: st.db().msg.count_documents({"conversationID": c})
              for c in expect}
    xlen = st.xlen()
    if all(counts[c] >= n for c, n in expect.items()) and xlen == 0:
        return True
    return False if not counts else (counts, "xlen", xlen)


def wait_persisted(st, expect, timeout=15.0):
    t0 = time.time()
    end = t0 + timeout
    last = None
    while time.time() < end:
        last = persisted_state(st, expect)
        if last is True:
            return time.time() - t0
        time.sleep(0.1)
    raise AssertionError("not persisted in %.0f s: want %r, have %r"
                         % (timeout, expect, last))


async def await_persisted(st, expect, timeout=15.0):
    return await asyncio.to_thread(wait_persisted, st, expect, timeout)


# ---------------------------------------------------------------------------
# messages


def msg_seqs(resp, conv):
    assert resp["errCode"] == 0, resp
    return [m["seq"] for m in resp["data"]["msgs"][conv]["Msgs"]]


def pulled(resp, conv):
    assert resp["errCode"] == 0, resp
    return resp["data"]["msgs"][conv]["Msgs"]


def is_end(resp, conv):
    return resp["data"]["msgs"][conv]["isEnd"]


async def pull_seqs(c, conv, seqs, timeout=10):
    r = await c.request(1005, {"conversations": [
        {"conversationID": conv, "seqs": list(seqs)}]}, timeout=timeout)
    return r


# ---------------------------------------------------------------------------
# which thread does MongoDB I/O


class SyscallTrace:
    """strace -f of one process: every socket syscall with the socket's
    endpoints (-yy), one line per syscall, prefixed by the thread id."""

    CALLS = ("connect,sendto,sendmsg,recvfrom,recvmsg,read,write,writev,"
             "readv,poll,ppoll,select,shutdown,close")

    def __init__(self, pid, path):
        self.pid = pid
        self.path = path
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["strace", "-f", "-yy", "-qq", "-s", "0", "-e",
             "trace=" + self.CALLS, "-o", self.path, "-p", str(self.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # strace prints nothing once attached; give it a moment and make
        # sure it did not fail (no ptrace permission)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError("strace failed: %s" % self.proc.stderr.read())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def lines(self):
        with open(self.path, errors="replace") as f:
            return f.read().splitlines()

    def threads_talking_to(self, port):
        """{thread id: count} of syscalls on sockets to 127.0.0.1:port
        (and connects to it)."""
        peer = "->127.0.0.1:%d]" % port
        conn = "htons(%d)" % port
        out = {}
        for line in self.lines():
            if peer in line or (line.split(None, 1)[-1].startswith("connect(")
                                and conn in line):
                tid = int(line.split(None, 1)[0])
                out[tid] = out.get(tid, 0) + 1
        return out


def content_text(m):
    return json.loads(m["content"])["content"]


@pytest.fixture
def mstack(base_dir):
    """make(workers=2, http="", mongo=True, redis=None, allow=()): a
    private MongoDB + Redis + nginx (mongo=False: Redis-only mode).  At
    teardown every error log must be free of [alert]/[crit]/[emerg] lines
    (except the `allow` patterns) and of the module's event-loop alert.
    A test file imports it to use it."""
    made = []

    def make(**kw):
        st = make_stack(base_dir, **kw)
        made.append(st)
        return st

    yield make
    for st in made:
        teardown_stack(st)
    for st in made:
        assert ON_LOOP not in st.ngx.log()
        assert st.unexpected_log_lines() == []


def fresh_tokens(st, names, timeout=10.0):
    """Fresh platform-1 tokens once nginx answers after Redis lost its
    data (the old ones went with it: 1507).  The users are not
    registered again: they come back from MongoDB."""
    def issue():
        try:
            st.api._admin = None
            return {u: st.api.user_token(u, 1) for u in names}
        except (AssertionError, OSError):
            return None
    return wait_for(issue, timeout, 0.2, "tokens after the Redis loss")

