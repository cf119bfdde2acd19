"""CORS for the REST API and the Origin check of the WebSocket handshake
(im_cors_origins; docs/api.md, CORS; docs/protocol.md, Connecting).

Browsers are played by http.client and python3-websockets sending the
headers a browser sends: Origin on every cross-origin call, and an
OPTIONS preflight with Access-Control-Request-Method/-Headers before a
POST with the SDK's headers (token, operationID, reqFuncName)."""

import http.client
import json
import socket
import time

import pytest
import websockets

from conftest import ADMIN, SECRET, Api, Nginx, run, uids

APP = "https://app.example"
OTHER = "http://127.0.0.1:9"
LISTED = "im_cors_origins %s HTTP://Other.Example:8080 %s;" % (APP, OTHER)
CORS_HEADERS = ("access-control-allow-origin",
                "access-control-allow-methods",
                "access-control-allow-headers", "access-control-max-age")
# what a browser must never accept as APP: prefixes, suffixes, other
# schemes or ports, a path
NOT_APP = ("https://app.example.evil", "https://evil.app.example",
           "https://app.example:8443", "http://app.example",
           "https://app.exampl", "https://app.example/", "null",
           "https://app.example, https://app.example")


def start(base_dir, redis_server, http="", ws=""):
    ngx = Nginx(base_dir, redis_server.addr, http=http, ws=ws).start()
    return ngx


@pytest.fixture(scope="module")
def listed(base_dir, redis_server):
    """Two origins allowed; REST limited to 1 call a second per user."""
    ngx = start(base_dir, redis_server,
                http=LISTED + " im_api_rate 1 1; im_ws_rate 0;")
    yield ngx
    ngx.stop()
    assert ngx.bad_log_lines() == []


@pytest.fixture(scope="module")
def anyone(base_dir, redis_server):
    """"*" for the API; the WebSocket location lists one origin only."""
    ngx = start(base_dir, redis_server, http="im_cors_origins *;",
                ws="im_cors_origins https://ws.example;")
    yield ngx
    ngx.stop()
    assert ngx.bad_log_lines() == []


def call(ngx, method, path, headers=None, body=None):
    """(status, headers with lower-case names, body bytes)"""
    c = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=10)
    try:
        c.request(method, "/im/api" + path, body=body, headers=headers or {})
        resp = c.getresponse()
        data = resp.read()
        hdrs = {}
        for k, v in resp.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        return resp.status, hdrs, data
    finally:
        c.close()


def preflight(ngx, origin, path="/auth/get_admin_token"):
    return call(ngx, "OPTIONS", path, {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers":
            "content-type,operationid,reqfuncname,token"})


def post(ngx, path, body, origin=None, token=None):
    h = {"Content-Type": "application/json", "operationID": "cors-op",
         "reqFuncName": "test"}
    if origin is not None:
        h["Origin"] = origin
    if token is not None:
        h["token"] = token
    return call(ngx, "POST", path, h, json.dumps(body).encode())


def admin_body():
    return {"secret": SECRET, "userID": ADMIN}


def assert_allowed(hdrs, origin):
    assert hdrs.get("access-control-allow-origin") == [origin], hdrs
    assert "Origin" in hdrs.get("vary", []), hdrs


def assert_no_cors(hdrs):
    for k in CORS_HEADERS:
        assert k not in hdrs, hdrs
    assert "Origin" not in hdrs.get("vary", []), hdrs


# ---------------------------------------------------------------------------
# preflight


def test_preflight_from_listed_origins(listed):
    for origin in (APP, OTHER, "http://other.example:8080",
                   "HTTPS://APP.EXAMPLE", "https://app.example:443"):
        status, h, body = preflight(listed, origin)
        assert status == 204, (origin, status)
        assert body == b""
        # the header echoes the Origin as the browser sent it
        assert_allowed(h, origin)
        assert h["access-control-allow-methods"] == ["POST, GET, OPTIONS"]
        allowed = [x.strip().lower() for x in
                   h["access-control-allow-headers"][0].split(",")]
        for need in ("token", "operationid", "reqfuncname", "content-type",
                     "authorization"):
            assert need in allowed, allowed
        assert int(h["access-control-max-age"][0]) > 0

    # on every route of the location, not only the first table's
    status, h, _ = preflight(listed, APP, "/friend/get_full_friend_user_ids")
    assert status == 204 and h["access-control-allow-origin"] == [APP]


def test_preflight_from_other_origins(listed, stack):
    for origin in NOT_APP + ("https://app.example.evil:443",):
        status, h, _ = preflight(listed, origin)
        assert status == 403, (origin, status)
        assert_no_cors(h)

    # the default: no origin at all, not even the server's own
    for origin in (APP, "http://127.0.0.1:%d" % stack.port):
        status, h, _ = preflight(stack, origin)
        assert status == 403, (origin, status)
        assert_no_cors(h)


def test_options_that_is_no_preflight_is_still_405(listed, stack):
    for ngx in (listed, stack):
        status, h, _ = call(ngx, "OPTIONS", "/auth/get_admin_token")
        assert status == 405, status
        assert_no_cors(h)

    # an Origin without Access-Control-Request-Method: a plain OPTIONS,
    # whose (error) answer still tells the allowed origin
    status, h, _ = call(listed, "OPTIONS", "/auth/get_admin_token",
                        {"Origin": APP})
    assert status == 405
    assert_allowed(h, APP)

    # unknown paths stay 404
    status, _, _ = preflight(listed, APP, "/no/such/path")
    assert status == 404


# ---------------------------------------------------------------------------
# actual calls


def test_answers_to_a_listed_origin_say_so(listed):
    api = Api(listed)
    (a,) = uids(1)
    api.register(a)
    tok = api.user_token(a)

    # success
    status, h, body = post(listed, "/auth/get_admin_token", admin_body(),
                           origin=APP)
    assert status == 200 and json.loads(body)["errCode"] == 0
    assert_allowed(h, APP)

    # a JSON error answer (wrong secret), a missing token
    status, h, body = post(listed, "/auth/get_admin_token",
                           {"secret": "wrong-secret", "userID": ADMIN},
                           origin=OTHER)
    assert json.loads(body)["errCode"] == 1002
    assert_allowed(h, OTHER)
    status, h, body = post(listed, "/user/get_users_info",
                           {"userIDs": [a]}, origin=APP)
    assert json.loads(body)["errCode"] != 0
    assert_allowed(h, APP)

    # the rate limit's answer (im_api_rate 1 1 here)
    codes = []
    for _ in range(3):
        status, h, body = post(listed, "/user/get_users_info",
                               {"userIDs": [a]}, origin=APP, token=tok)
        codes.append(json.loads(body)["errCode"])
        assert_allowed(h, APP)
    assert 1010 in codes, codes

    # nginx's own 4xx pages: unknown path, wrong method
    status, h, _ = post(listed, "/no/such/path", {}, origin=APP)
    assert status == 404
    assert_allowed(h, APP)
    status, h, _ = call(listed, "GET", "/auth/get_admin_token",
                        {"Origin": APP})
    assert status == 405
    assert_allowed(h, APP)


def test_answers_to_other_origins_say_nothing(listed, stack):
    for origin in NOT_APP + (None,):
        status, h, body = post(listed, "/auth/get_admin_token",
                               admin_body(), origin=origin)
        # the call itself is served: CORS is the browser's to enforce
        assert status == 200 and json.loads(body)["errCode"] == 0
        assert_no_cors(h)

    # the default, same origin included
    for origin in (APP, "http://127.0.0.1:%d" % stack.port, None):
        status, h, _ = post(stack, "/auth/get_admin_token", admin_body(),
                            origin=origin)
        assert status == 200
        assert_no_cors(h)

    # an error answer to a foreign origin
    status, h, _ = post(stack, "/no/such/path", {}, origin=APP)
    assert status == 404
    assert_no_cors(h)


def test_any_origin(anyone):
    for origin in (APP, "http://localhost:3000", "null",
                   "capacitor://localhost"):
        status, h, _ = preflight(anyone, origin)
        assert status == 204, origin
        assert_allowed(h, origin)
        status, h, body = post(anyone, "/auth/get_admin_token",
                               admin_body(), origin=origin)
        assert json.loads(body)["errCode"] == 0
        assert_allowed(h, origin)

    # what is no origin is never echoed, not even under "*"
    for origin in ("https://app.example/path", "*", "https://a b",
                   "javascript:alert(1)"):
        status, h, _ = preflight(anyone, origin)
        assert status == 403, origin
        assert_no_cors(h)
        status, h, _ = post(anyone, "/auth/get_admin_token", admin_body(),
                            origin=origin)
        assert_no_cors(h)


# ---------------------------------------------------------------------------
# the WebSocket handshake


def ws_connect(ngx, origin, host=None):
    """The handshake as python3-websockets makes it; returns the HTTP
    status (101 when it connected)."""
    api = Api(ngx)
    (a,) = uids(1)
    api.register(a)
    url = ngx.ws_url(a, api.user_token(a))
    if host:
        url = url.replace("127.0.0.1", host)

    async def go():
        try:
            ws = await websockets.connect(url, origin=origin,
                                          ping_interval=None)
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
        await ws.close()
        return 101

    return run(go())


def ws_refusal(ngx, origin):
    """A raw handshake with an Origin: (status line, JSON body)."""
    api = Api(ngx)
    (a,) = uids(1)
    api.register(a)
    path = ngx.ws_url(a, api.user_token(a)).split(str(ngx.port), 1)[1]
    s = socket.create_connection(("127.0.0.1", ngx.port), 5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Origin: %s\r\nConnection: close\r\n\r\n"
               % (path, ngx.port, origin)).encode())
    data = b""
    end = time.time() + 5
    while time.time() < end:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


def test_ws_default_same_origin_only(stack):
    own = "http://127.0.0.1:%d" % stack.port
    assert ws_connect(stack, None) == 101               # native clients
    assert ws_connect(stack, own) == 101
    assert ws_connect(stack, "HTTP://127.0.0.1:%d" % stack.port) == 101
    for origin in (APP, "https://127.0.0.1:%d" % stack.port,
                   "http://127.0.0.1:%d" % (stack.port + 1),
                   "http://127.0.0.1", own + "/", "null"):
        assert ws_connect(stack, origin) == 403, origin
    # the Host decides what "own" is: localhost is another origin
    assert ws_connect(stack, own, host="localhost") == 403

    status, body = ws_refusal(stack, APP)
    assert " 403 " in status, status
    assert body["errCode"] == 1602 and body["errMsg"] == "origin not allowed"


def test_ws_listed_origins(listed, anyone):
    assert ws_connect(listed, APP) == 101
    assert ws_connect(listed, "HTTPS://App.Example:443") == 101
    assert ws_connect(listed, OTHER) == 101
    assert ws_connect(listed, None) == 101
    assert ws_connect(listed, "http://127.0.0.1:%d" % listed.port) == 101
    for origin in NOT_APP:
        assert ws_connect(listed, origin) == 403, origin

    # a location's own list wins over the http block's "*"
    assert ws_connect(anyone, "https://ws.example") == 101
    assert ws_connect(anyone, APP) == 403
    status, body = ws_refusal(anyone, APP)
    assert " 403 " in status and body["errCode"] == 1602


# ---------------------------------------------------------------------------
# the directive


def test_bad_origins_fail_the_configuration(base_dir, redis_server):
    many = " ".join("https://h%d.example" % i for i in range(65))
    for bad in ("https://app.example/", "https://*.app.example",
                "*.app.example", "app.example", "null", "* " + APP,
                APP + " *", "https://app.example:0",
                "https://app.example:65536", "https://app.example/path",
                "https://u@app.example", "https://app.example?x", many):
        ngx = Nginx(base_dir, redis_server.addr,
                    http="im_cors_origins %s;" % bad)
        out = ngx.nginx("-t")
        assert out.returncode != 0, bad
        assert "im_cors_origins" in out.stderr, out.stderr

    ngx = Nginx(base_dir, redis_server.addr,
                http="im_cors_origins %s; im_cors_origins %s;" % (APP, APP))
    out = ngx.nginx("-t")
    assert out.returncode != 0 and "is duplicate" in out.stderr, out.stderr

    many = " ".join("https://h%d.example" % i for i in range(64))
    for good in (LISTED, "im_cors_origins *;", "im_cors_origins %s;" % many,
                 "im_cors_origins http://[::1]:8080 wss://a.example;"):
        ngx = Nginx(base_dir, redis_server.addr, http=good)
        out = ngx.nginx("-t")
        assert out.returncode == 0, (good, out.stderr)
