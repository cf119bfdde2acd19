"""Helpers for test_messaging.py and test_faults.py.

- which nginx worker serves a connection (from `ss -tnp`);
- pipelined WebSocket requests with a bounded window;
- bounded waits for pushes, and for silence;
- a raw-socket WebSocket client (no library), for clients that misbehave;
- worker memory (VmRSS).
"""

import asyncio
import base64
import json
import os
import re
import socket
import struct
import subprocess
import time

import websockets

from conftest import Client


# ---------------------------------------------------------------------------
# workers


def conn_worker(ngx, local_port, timeout=3.0):
    """The pid of the nginx process holding the server side of the TCP
    connection whose client side is 127.0.0.1:<local_port>."""
    end = time.time() + timeout
    out = ""
    while time.time() < end:
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established",
             "( sport = :%d and dport = :%d )" % (ngx.port, local_port)],
            capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"pid=(\d+)", out)
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError("no nginx socket for client port %d: %r"
                         % (local_port, out))


def server_side_owner(ngx, local_port):
    """(exists, pid or None) for the server side of the connection from
    client port local_port: pid None means no process holds it any more
    (nginx closed it; the kernel still flushes or resets it)."""
    out = subprocess.run(
        ["ss", "-Htanp",
         "( sport = :%d and dport = :%d )" % (ngx.port, local_port)],
        capture_output=True, text=True, timeout=5).stdout
    lines = [l for l in out.splitlines() if l.strip()]
    if not lines:
        return False, None
    m = re.search(r"pid=(\d+)", out)
    return True, int(m.group(1)) if m else None


def client_port(client):
    return client.ws.transport.get_extra_info("sockname")[1]


def worker_of(ngx, client):
    return conn_worker(ngx, client_port(client))


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie is gone for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def log_count(ngx, text):
    return ngx.log().count(text)


def wait_log_count(ngx, text, count, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if log_count(ngx, text) >= count:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# WebSocket clients


async def connect(ngx, uid, token, platform=1):
    c = await Client(ngx, uid, token, platform).connect()
    # pushes a test does not read must not stall the client's reader
    # (and with it the closing handshake)
    c.ws.max_queue = None
    return c


class Pool:
    """The clients of one scenario, all closed at its end, even when it
    fails (an unclosed websockets client costs 10 s in asyncio.run)."""

    def __init__(self):
        self.clients = []

    def add(self, c):
        c.ws.max_queue = None
        self.clients.append(c)
        return c

    async def connect(self, ngx, uid, token, platform=1):
        return self.add(await connect(ngx, uid, token, platform))

    async def connect_retry(self, ngx, uid, token, platform=1, timeout=10.0):
        return self.add(await connect_retry(ngx, uid, token, platform,
                                            timeout))

    async def close_all(self, timeout=2.0):
        live = [c for c in self.clients if c.ws is not None]
        if live:
            await asyncio.wait([asyncio.ensure_future(c.ws.close())
                                for c in live], timeout=timeout)
        for c in live:
            c.ws.transport.abort()
        self.clients = []


def run_clients(scenario, timeout=60):
    """Runs scenario(pool) to completion, then closes the pool."""
    from conftest import run

    async def main():
        pool = Pool()
        try:
            return await scenario(pool)
        finally:
            await pool.close_all()

    return run(main(), timeout)


async def connect_retry(ngx, uid, token, platform=1, timeout=10.0):
    """Connects, retrying while the server refuses (e.g. 503 while its
    Redis connections come up) or is not listening yet."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            return await asyncio.wait_for(
                Client(ngx, uid, token, platform).connect(), 5)
        except (OSError, asyncio.TimeoutError,
                websockets.exceptions.InvalidStatusCode,
                websockets.exceptions.InvalidHandshake) as e:
            last = e
            await asyncio.sleep(0.1)
    raise AssertionError("could not connect %s/%d: %r" % (uid, platform, last))


def frame_of(c, req_id, data, incr=None):
    c.incr += 1
    incr = incr or "%s-%d" % (c.uid, c.incr)
    return incr, json.dumps({"reqIdentifier": req_id,
                             "operationID": "op-%d" % c.incr,
                             "msgIncr": incr, "data": data})


async def raw_request(c, text, timeout=5.0):
    """Sends one raw text frame; returns the next frame that is not a
    2001 push (whatever its msgIncr)."""
    before = set(c.responses)
    await c.ws.send(text)
    end = time.time() + timeout
    while True:
        new = [k for k in c.responses if k not in before]
        if new:
            return c.responses.pop(new[0])
        await c._read_one(max(0.01, end - time.time()))


async def pipeline(c, reqs, window=32, timeout=30.0):
    """Sends [(reqIdentifier, data), ...] with at most `window` in flight;
    returns the responses in request order.  Pushes that arrive
    meanwhile are kept in c.pushes."""
    end = time.time() + timeout
    incrs = []
    pending = set()
    results = {}
    sent = 0
    while len(results) < len(reqs):
        while sent < len(reqs) and len(pending) < window:
            incr, text = frame_of(c, reqs[sent][0], reqs[sent][1])
            await c.ws.send(text)
            incrs.append(incr)
            pending.add(incr)
            sent += 1
        remaining = end - time.time()
        if remaining <= 0:
            raise asyncio.TimeoutError("pipeline: %d of %d answered"
                                       % (len(results), len(reqs)))
        await c._read_one(remaining)
        for k in list(pending):
            if k in c.responses:
                results[k] = c.responses.pop(k)
                pending.discard(k)
    return [results[i] for i in incrs]


async def burst(c, reqs, timeout=30.0):
    """Sends [(reqIdentifier, data), ...] in one TCP write (the frames
    masked by hand, under the client library), so that the server reads
    them in one go; returns the responses in request order."""
    incrs, frames = [], []
    for req_id, data in reqs:
        incr, text = frame_of(c, req_id, data)
        incrs.append(incr)
        frames.append(RawWs.frame(0x1, text.encode()))
    c.ws.transport.write(b"".join(frames))
    end = time.time() + timeout
    results = {}
    while len(results) < len(reqs):
        for k in incrs:
            if k in c.responses:
                results[k] = c.responses.pop(k)
        if len(results) == len(reqs):
            break
        remaining = end - time.time()
        if remaining <= 0:
            raise asyncio.TimeoutError("burst: %d of %d answered"
                                       % (len(results), len(reqs)))
        await c._read_one(remaining)
    return [results[i] for i in incrs]


def text_msg(sender, recv, text, client_msg_id=None, **extra):
    data = {"sendID": sender, "recvID": recv, "sessionType": 1,
            "contentType": 101, "content": json.dumps({"content": text})}
    if client_msg_id:
        data["clientMsgID"] = client_msg_id
    data.update(extra)
    return data


async def push_msgs(c, count, timeout=10.0):
    """At least `count` pushed messages (flattened), in arrival order."""
    end = time.time() + timeout
    got = []
    while len(got) < count:
        got.extend(await c.push(max(0.01, end - time.time())))
    return got


async def silence(c, seconds):
    """Reads for `seconds`; returns every frame that arrived."""
    end = time.time() + seconds
    frames = []
    npush = len(c.pushes)
    nresp = len(c.responses)
    while True:
        remaining = end - time.time()
        if remaining <= 0:
            break
        try:
            frames.append(await c._read_one(remaining))
        except asyncio.TimeoutError:
            break
    assert len(c.pushes) >= npush and len(c.responses) >= nresp
    return frames


async def pull_all(c, conv, max_seq, chunk=100):
    """Every message 1..max_seq via 1002, chunk seqs per request."""
    msgs = []
    for begin in range(1, max_seq + 1, chunk):
        last = min(max_seq, begin + chunk - 1)
        r = await c.pull(conv, begin, last, num=chunk)
        assert r["errCode"] == 0, r
        part = r["data"]["msgs"][conv]
        assert part["isEnd"] is True, (begin, last, part["isEnd"])
        msgs.extend(part["Msgs"])
    return msgs


# ---------------------------------------------------------------------------
# a raw WebSocket client over a plain socket


class RawWs:
    """Speaks just enough RFC 6455 to log in and send masked frames; it
    reads only when told to."""

    def __init__(self, ngx, uid, token, platform=1, rcvbuf=None):
        self.ngx = ngx
        self.path = ("/im/ws?sendID=%s&token=%s&platformID=%d&operationID=raw"
                     % (uid, token, platform))
        self.rcvbuf = rcvbuf
        self.sock = None
        self.extra = b""
        self.status = None

    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            # before connect(), so the window scale follows it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.ngx.port))
        self.sock = s
        return self

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def request_bytes(self):
        key = base64.b64encode(os.urandom(16)).decode()
        return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                % (self.path, self.ngx.port, key)).encode()

    def handshake(self):
        self.sock.sendall(self.request_bytes())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.extra = buf.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n")[0]
        assert b" 101 " in self.status, head
        return self

    @staticmethod
    def frame(opcode, payload, fin=True):
        mask = os.urandom(4)
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return head + mask + masked

    def send_text(self, text):
        self.sock.sendall(self.frame(0x1, text.encode()))

    def send_raw(self, data):
        self.sock.sendall(data)

    def abort(self):
        """Closes with RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def read_to_eof(self, timeout=10.0):
        """Reads until EOF or reset.  Returns (bytes read, how it ended):
        "eof", "reset" or "timeout"."""
        end = time.time() + timeout
        total = len(self.extra)
        self.extra = b""
        while True:
            remaining = end - time.time()
            if remaining <= 0:
                return total, "timeout"
            self.sock.settimeout(min(remaining, 1.0))
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return total, "reset"
            if not chunk:
                return total, "eof"
            total += len(chunk)
