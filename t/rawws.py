"""A raw-socket WebSocket client for tests: no library, nothing hidden.

It speaks just enough HTTP/1.1 to send an upgrade request of our making
(any method, any headers, a broken or missing key, extra bytes glued to
the request) and to read the answer.  After a 101 it sends frames built
by frame(), which can encode anything RFC 6455 forbids, and parses the
server's frames.  Every read has a deadline.

    ws = rawws.connect(port, rawws.ws_path(uid, token))
    assert ws.status == 101
    ws.send(rawws.frame(rawws.OP_TEXT, b'{"type":"ping"}'))
    f = ws.recv_frame()
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.parse

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT = object()          # "use the normal value" for handshake headers
TIMEOUT = 5.0


class Closed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def ws_path(uid, token, platform=1, operation="op", path="/im/ws"):
    """The endpoint path with its query; None leaves an argument out."""
    args = [("sendID", uid), ("token", token), ("platformID", platform),
            ("operationID", operation)]
    query = urllib.parse.urlencode([(k, v) for k, v in args if v is not None],
                                   safe="")
    return path + ("?" + query if query else "")


def handshake_request(path, host="127.0.0.1", method="GET", key=DEFAULT,
                      version=DEFAULT, upgrade="websocket",
                      connection="Upgrade", http="HTTP/1.1", headers=None):
    """The upgrade request.  key/version: DEFAULT, None (omit) or a string;
    upgrade/connection: None omits them; headers: extra (name, value)
    pairs appended in order."""
    if key is DEFAULT:
        key = new_key()
    if version is DEFAULT:
        version = "13"
    lines = ["%s %s %s" % (method, path, http), "Host: %s" % host]
    for name, value in (("Upgrade", upgrade), ("Connection", connection),
                        ("Sec-WebSocket-Key", key),
                        ("Sec-WebSocket-Version", version)):
        if value is not None:
            lines.append("%s: %s" % (name, value))
    for name, value in headers or ():
        lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None,
          length_bytes=None):
    """A client frame, as it goes on the wire.

    opcode: any 4-bit value.  rsv: the three RSV bits as 0..7.
    mask: True (random key), False (unmasked: illegal from a client) or
    a 4-byte key.  length: the length to announce, when it should differ
    from len(payload).  length_bytes: force the length encoding, 0 (7-bit),
    2 (16-bit) or 8 (64-bit), even where a shorter one would do.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask is not False else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else (2 if n < 65536 else 8)
    if length_bytes == 0:
        head = struct.pack("!BB", b0, mbit | n)
    elif length_bytes == 2:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is False:
        return head + payload
    key = os.urandom(4) if mask is True else bytes(mask)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def request_json(req_id, data=None, incr="1", operation="op-1"):
    """The JSON text of a request envelope, as bytes."""
    return json.dumps({"reqIdentifier": req_id, "operationID": operation,
                       "msgIncr": incr,
                       "data": {} if data is None else data}).encode()


class Frame:
    """A frame received from the server."""

    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode = fin, rsv, opcode
        self.masked, self.payload = masked, payload

    @property
    def close_code(self):
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return None

    @property
    def close_reason(self):
        return self.payload[2:].decode("utf-8", "replace")

    def json(self):
        return json.loads(self.payload.decode())

    def __repr__(self):
        return "Frame(fin=%d rsv=%d op=%#x masked=%d %r)" % (
            self.fin, self.rsv, self.opcode, self.masked, self.payload[:200])


class RawWS:
    """One TCP connection: an HTTP upgrade, then frames."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.status = None
        self.reason = None
        self.headers = {}
        self.body = b""
        self.key = None

    # -- bytes ---------------------------------------------------------

    def send(self, data, pace=None):
        """Sends data; with pace (seconds), one byte at a time."""
        if pace is None:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if pace:
                time.sleep(pace)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no data before the deadline")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            raise Closed("connection reset")
        if not chunk:
            raise Closed("connection closed")
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    # -- HTTP ----------------------------------------------------------

    def handshake(self, path, extra=b"", pace=None, **kw):
        """Sends the upgrade request with `extra` in the same write and
        reads the response head (and body, when it has a length)."""
        req, self.key = handshake_request(path, **kw)
        self.send(req + extra, pace=pace)
        return self.read_response()

    def read_response(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.body = b""
        lines = head.decode("latin-1").split("\r\n")
        _, status, *reason = lines[0].split(" ", 2)
        self.status = int(status)
        self.reason = reason[0] if reason else ""
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status != 101:
            self.body = self._read_body(deadline)
        return self.status

    def _read_body(self, deadline):
        if "content-length" in self.headers:
            return self._take(int(self.headers["content-length"]), deadline)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill(deadline)
                size, self.buf = self.buf.split(b"\r\n", 1)
                n = int(size.split(b";")[0], 16)
                body += self._take(n + 2, deadline)[:n]
                if n == 0:
                    return body
        try:                                  # until the server closes
            while True:
                self._fill(deadline)
        except Closed:
            pass
        body, self.buf = self.buf, b""
        return body

    def body_json(self):
        return json.loads(self.body.decode())

    # -- frames --------------------------------------------------------

    def send_frame(self, opcode, payload=b"", pace=None, **kw):
        self.send(frame(opcode, payload, **kw), pace=pace)

    def send_text(self, text, **kw):
        self.send_frame(OP_TEXT, text, **kw)

    def recv_frame(self, timeout=None):
        """The next server frame; raises Closed on EOF, socket.timeout
        when none arrives in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self._take(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
        key = self._take(4, deadline) if b1 & 0x80 else None
        payload = self._take(n, deadline)
        if key:
            payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        return Frame(b0 >> 7, (b0 >> 4) & 7, b0 & 0x0F, key is not None,
                     payload)

    def recv_data(self, timeout=None, pong=True):
        """The next frame that is not a ping; server pings on the way are
        answered (with pong=True) or dropped."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if pong:
                    self.send_frame(OP_PONG, f.payload)
                continue
            return f

    def recv_json(self, timeout=None):
        f = self.recv_data(timeout)
        assert f.opcode == OP_TEXT, f
        return f.json()

    def request(self, req_id, data=None, incr="1", operation="op-1",
                timeout=None):
        """Sends one JSON request and returns the response to it."""
        self.send_text(request_json(req_id, data, incr, operation))
        return self.recv_json(timeout)

    def expect_close(self, timeout=None):
        """Reads frames up to the server's Close frame, then waits for the
        TCP connection to end.  Returns the Close frame; data frames
        before it are kept in self.skipped."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self.skipped = []
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                break
            self.skipped.append(f)
        self.expect_eof(max(0.01, deadline - time.monotonic()))
        return f

    def expect_eof(self, timeout=None):
        """Waits until the server ends the TCP connection, with no more
        bytes before that."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._fill(deadline)
                assert False, "bytes after the end: %r" % self.buf[:100]
        except Closed:
            pass

    def is_open(self, wait=0.2):
        """False if the server ends the connection within `wait` seconds
        (bytes that arrive meanwhile are kept for the next read)."""
        try:
            self._fill(time.monotonic() + wait)
        except socket.timeout:
            return True
        except Closed:
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(port, path, extra=b"", pace=None, timeout=TIMEOUT, **kw):
    """Opens a connection and does the handshake; check .status."""
    ws = RawWS(port, timeout=timeout)
    try:
        ws.handshake(path, extra=extra, pace=pace, **kw)
    except BaseException:
        ws.close()
        raise
    return ws
