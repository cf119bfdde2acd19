"""The WebSocket upgrade (DESIGN.md 1.2, "Connecting"), over raw sockets.

Authentication happens before the upgrade: every refusal is a plain HTTP
answer with a JSON body {errCode, errMsg}, never a 101.
"""

import base64
import hashlib
import hmac
import json
import socket
import struct
import time

import pytest

import rawws
from conftest import SECRET, Api, Nginx, Redis, uids


# -- HS256 tokens of our own making ---------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret=SECRET, header=None, sign=True):
    header = header or {"alg": "HS256", "typ": "JWT"}
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signed = head + "." + body
    if not sign:
        return signed + "."
    mac = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64url(mac)


def claims(uid, platform=1, exp_in=3600):
    now = int(time.time())
    return {"UserID": uid, "PlatformID": platform, "exp": now + exp_in,
            "nbf": now - 5, "iat": now - 5}


# -- fixtures and helpers -------------------------------------------------

@pytest.fixture
def user(api):
    """A registered user and a token for platform 1."""
    uid = uids(1)[0]
    api.register(uid)
    return uid, api.user_token(uid, platform=1)


@pytest.fixture(scope="module")
def iso(base_dir):
    """A private stack for refusals that have logged [alert]s: a bug there
    must fail those tests only, not every later user of the shared stack.
    The tests check its log themselves."""
    redis = Redis(base_dir).start()
    ngx = Nginx(base_dir, redis.addr).start()
    yield ngx
    ngx.stop()
    redis.stop()


@pytest.fixture
def iso_user(iso):
    api = Api(iso)
    uid = uids(1)[0]
    api.register(uid)
    return uid, api.user_token(uid, platform=1)


def refused_cleanly(ngx, path, wait=0.25, **kw):
    """Does a handshake that must be refused, and checks that the server
    left it at that: a refused request must not go on to log in (which
    ends in "[alert] header already sent" when it tries to send 101)."""
    before = len(ngx.bad_log_lines())
    ws = rawws.connect(ngx.port, path, **kw)
    try:
        end = time.time() + wait
        while time.time() < end and len(ngx.bad_log_lines()) == before:
            time.sleep(0.02)
        assert ngx.bad_log_lines()[before:] == []
    finally:
        ws.close()
    return ws


def handshake(stack, path, **kw):
    ws = rawws.connect(stack.port, path, **kw)
    ws.close()
    return ws


def assert_refused(ws, status, code):
    """An HTTP refusal with a JSON {errCode, errMsg} body."""
    assert ws.status == status, (ws.status, ws.body)
    assert "sec-websocket-accept" not in ws.headers
    assert ws.headers.get("content-type", "").startswith("application/json")
    body = ws.body_json()
    assert body["errCode"] == code, body
    assert isinstance(body["errMsg"], str) and body["errMsg"]


def newest_request(incr):
    body = rawws.request_json(1001, {}, incr=incr, operation="op-" + incr)
    return rawws.frame(rawws.OP_TEXT, body)


def assert_newest_response(resp, incr):
    assert resp["reqIdentifier"] == 1001, resp
    assert resp["msgIncr"] == incr, resp
    assert resp["operationID"] == "op-" + incr, resp
    assert resp["errCode"] == 0, resp


# -- the good handshake ---------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    # Firefox sends "keep-alive, Upgrade"; header names are case-blind
    {"connection": "keep-alive, Upgrade", "upgrade": "WebSocket"},
])
def test_good_handshake(stack, user, headers):
    uid, token = user
    with rawws.connect(stack.port, rawws.ws_path(uid, token),
                       **headers) as ws:
        assert ws.status == 101, ws.body
        assert ws.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in ws.headers["connection"].lower()
        assert ws.headers["sec-websocket-accept"] == rawws.accept_for(ws.key)
        assert ws.buf == b""            # nothing after the head
        # the session is live
        ws.send(newest_request("h1"))
        assert_newest_response(ws.recv_json(), "h1")


def test_accept_rfc6455_sample_key(stack, user):
    uid, token = user
    with rawws.connect(stack.port, rawws.ws_path(uid, token),
                       key="dGhlIHNhbXBsZSBub25jZQ==") as ws:
        assert ws.status == 101
        # RFC 6455 section 1.3
        assert ws.headers["sec-websocket-accept"] == \
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_lowercase_header_names(stack, user):
    """Header names are case-insensitive (HTTP/1.1)."""
    uid, token = user
    key = rawws.new_key()
    with rawws.connect(stack.port, rawws.ws_path(uid, token), key=None,
                       version=None, upgrade=None, connection=None,
                       headers=[("upgrade", "websocket"),
                                ("connection", "upgrade"),
                                ("sec-websocket-key", key),
                                ("sec-websocket-version", "13")]) as ws:
        assert ws.status == 101, ws.body
        assert ws.headers["sec-websocket-accept"] == rawws.accept_for(key)


# -- malformed upgrade requests -------------------------------------------

@pytest.mark.parametrize("token", ["good", "garbage"])
def test_missing_key(iso, iso_user, token):
    """With a garbage token too: a handshake refused for its key must not
    go on to check the token (and answer a second time)."""
    uid, good = iso_user
    path = rawws.ws_path(uid, good if token == "good" else "garbage")
    ws = refused_cleanly(iso, path, key=None)
    assert_refused(ws, 400, 1602)


@pytest.mark.parametrize("key", [
    "abc",
    "",
    base64.b64encode(b"x" * 15).decode(),     # 15 bytes
    base64.b64encode(b"x" * 17).decode(),     # 17 bytes
    base64.b64encode(b"x" * 16).decode()[:22] + "AA",   # no padding
    "!!!!!!!!!!!!!!!!!!!!!!==",                # not base64
    "dGhlIHNhbXBsZSBub25jZQ",                  # padding stripped
    "dGhlIHNhbXBsZSBub25jZQ==x",
])
def test_bad_key(iso, iso_user, key):
    ws = refused_cleanly(iso, rawws.ws_path(*iso_user), key=key)
    assert_refused(ws, 400, 1602)


@pytest.mark.parametrize("version", ["8", "12", "14", "1", "", None])
def test_wrong_version(iso, iso_user, version):
    ws = refused_cleanly(iso, rawws.ws_path(*iso_user), version=version)
    assert_refused(ws, 426, 1602)
    assert ws.headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_not_get(stack, user, method):
    ws = handshake(stack, rawws.ws_path(*user), method=method,
                   headers=[("Content-Length", "0")])
    assert ws.status == 405, ws.body
    assert "sec-websocket-accept" not in ws.headers


@pytest.mark.parametrize("kw", [
    {"upgrade": None},
    {"connection": None},
    {"upgrade": "h2c"},
    {"connection": "keep-alive"},
    {"http": "HTTP/1.0"},
], ids=["no-upgrade", "no-connection", "upgrade-h2c", "conn-keepalive",
        "http10"])
def test_not_an_upgrade(stack, user, kw):
    ws = handshake(stack, rawws.ws_path(*user), **kw)
    assert ws.status == 400, ws.body
    assert "sec-websocket-accept" not in ws.headers


# -- query arguments ------------------------------------------------------

@pytest.mark.parametrize("uid,platform", [
    (None, 1),          # no sendID
    ("", 1),            # empty sendID
    ("a_b", 1),         # not a valid user ID
    ("OWN", None),      # no platformID
    ("OWN", ""),
    ("OWN", 0),
    ("OWN", 12),
    ("OWN", -1),
    ("OWN", "x"),
], ids=["no-sendID", "empty-sendID", "bad-sendID", "no-platformID",
        "empty-platformID", "platform-0", "platform-12", "platform-neg",
        "platform-x"])
def test_missing_or_bad_args(stack, user, uid, platform):
    own, token = user
    path = rawws.ws_path(own if uid == "OWN" else uid, token, platform)
    ws = handshake(stack, path)
    assert_refused(ws, 400, 1602)


def test_missing_token(stack, user):
    uid, _ = user
    ws = handshake(stack, rawws.ws_path(uid, None))
    assert_refused(ws, 401, 1602)


# -- tokens ---------------------------------------------------------------

def test_garbage_token(stack, user):
    uid, _ = user
    for token in ("garbage", "a.b.c", "a.b", "...", "x" * 5000):
        ws = handshake(stack, rawws.ws_path(uid, token))
        assert_refused(ws, 401, 1503)


def test_expired_token(stack, user):
    uid, _ = user
    token = make_jwt(claims(uid, exp_in=-10))
    ws = handshake(stack, rawws.ws_path(uid, token))
    assert_refused(ws, 401, 1501)


def test_token_of_another_secret(stack, user):
    uid, _ = user
    token = make_jwt(claims(uid), secret="not-the-secret")
    ws = handshake(stack, rawws.ws_path(uid, token))
    assert_refused(ws, 401, 1502)


def test_token_alg_none(stack, user):
    uid, _ = user
    token = make_jwt(claims(uid), header={"alg": "none", "typ": "JWT"},
                     sign=False)
    ws = handshake(stack, rawws.ws_path(uid, token))
    assert_refused(ws, 401, 1502)


def test_token_with_tampered_claims(stack, api, user):
    """An issued token whose payload was swapped keeps a stale signature."""
    uid, token = user
    other = uids(1)[0]
    head, _, sig = token.split(".")
    body = b64url(json.dumps(claims(other), separators=(",", ":")).encode())
    ws = handshake(stack, rawws.ws_path(other, head + "." + body + "." + sig))
    assert_refused(ws, 401, 1502)


def test_token_of_another_user(stack, api, user):
    uid, _ = user
    other = uids(1)[0]
    api.register(other)
    ws = handshake(stack, rawws.ws_path(uid, api.user_token(other)))
    assert_refused(ws, 401, 1502)


def test_token_of_another_platform(stack, api, user):
    uid, token = user                       # issued for platform 1
    ws = handshake(stack, rawws.ws_path(uid, token, platform=2))
    assert_refused(ws, 401, 1502)
    # and the same token works on its own platform
    with rawws.connect(stack.port, rawws.ws_path(uid, token, 1)) as ws:
        assert ws.status == 101


def test_token_never_issued(stack, user):
    """Correctly signed, valid claims, but not in the server's registry."""
    uid, _ = user
    token = make_jwt(claims(uid, exp_in=7200))
    ws = handshake(stack, rawws.ws_path(uid, token))
    assert_refused(ws, 401, 1507)


def test_unregistered_user_gets_no_token(api):
    uid = uids(1)[0]
    r = api.post("/auth/get_user_token", {"userID": uid, "platformID": 1},
                 token=api.admin_token())
    assert r["errCode"] == 1101, r


# -- the pipelined first frame --------------------------------------------

@pytest.mark.parametrize("pad", [0, 3000], ids=["small", "large-header"])
def test_pipelined_first_frame(stack, user, pad):
    """A request sent in the same TCP write as the handshake is answered:
    the bytes after the request head are the first frames."""
    uid, token = user
    headers = [("X-Pad", "p" * pad)] if pad else None
    with rawws.connect(stack.port, rawws.ws_path(uid, token),
                       extra=newest_request("p1") + newest_request("p2"),
                       headers=headers) as ws:
        assert ws.status == 101, ws.body
        assert_newest_response(ws.recv_json(), "p1")
        assert_newest_response(ws.recv_json(), "p2")
        ws.send(newest_request("p3"))
        assert_newest_response(ws.recv_json(), "p3")


def test_frame_sent_before_101_arrives(stack, user):
    """A frame written right after the request, before the answer is in
    (the login is still waiting for Redis), is not lost."""
    uid, token = user
    ws = rawws.RawWS(stack.port)
    with ws:
        req, ws.key = rawws.handshake_request(rawws.ws_path(uid, token))
        ws.send(req)
        ws.send(newest_request("b1"))
        assert ws.read_response() == 101
        assert_newest_response(ws.recv_json(), "b1")


def test_pipelined_protocol_error(stack, user):
    """A bad first frame glued to the handshake: 101, then close 1002."""
    uid, token = user
    bad = rawws.frame(rawws.OP_TEXT, b"{}", mask=False)
    with rawws.connect(stack.port, rawws.ws_path(uid, token),
                       extra=bad) as ws:
        assert ws.status == 101
        assert ws.expect_close().close_code == 1002


# -- connection lifecycle -------------------------------------------------

@pytest.mark.parametrize("kind", ["never-issued", "garbage"])
def test_upgrade_after_refusal_on_same_connection(stack, user, kind):
    """A refusal is a normal HTTP answer: the client may try again on the
    same keep-alive connection (refused after the Redis check, or before)."""
    uid, token = user
    bad = make_jwt(claims(uid)) if kind == "never-issued" else "garbage"
    with rawws.RawWS(stack.port) as ws:
        assert ws.handshake(rawws.ws_path(uid, bad)) == 401
        assert ws.body_json()["errCode"] == \
            (1507 if kind == "never-issued" else 1503)
        assert ws.handshake(rawws.ws_path(uid, token)) == 101
        assert ws.headers["sec-websocket-accept"] == rawws.accept_for(ws.key)
        ws.send(newest_request("k1"))
        assert_newest_response(ws.recv_json(), "k1")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_during_login(stack, api, user, how):
    """Clients that vanish while their login waits for Redis, with a frame
    already sent: nothing breaks (the log check runs after the test), and
    the user can still log in (on another platform, so that no login
    policy can mix the two up)."""
    uid, token = user
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", stack.port), 5)
        req, _ = rawws.handshake_request(rawws.ws_path(uid, token))
        s.sendall(req + newest_request("gone"))
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        s.close()
    token2 = api.user_token(uid, platform=2)
    with rawws.connect(stack.port, rawws.ws_path(uid, token2, 2)) as ws:
        assert ws.status == 101
        ws.send(newest_request("k2"))
        assert_newest_response(ws.recv_json(), "k2")
