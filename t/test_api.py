"""The admin REST API: auth and user endpoints, their errors, and metrics.

Every endpoint's happy path and error paths (docs/api.md, DESIGN.md 1.1):
token problems (1501/1502/1503/1506/1507), non-admin tokens (1002),
missing operationID, bad JSON, wrong types naming the field, oversize
bodies, wrong methods and paths.  Then GET /im/metrics: counters change
by exactly what a known sequence of operations does.
"""

import asyncio
import base64
import hashlib
import hmac
import http.client
import os
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from conftest import ADMIN, SECRET, Api, Client, run, single_conv, uids


TOKEN_EXPIRE = 7776000          # im_token_expire default: 90 days

# every route that needs a token: path, admin-only, a valid body (filled
# in per test where it needs real users)
TOKEN_ROUTES = [
    ("/auth/get_user_token", True),
    ("/auth/parse_token", True),
    ("/auth/force_logout", True),
    ("/user/user_register", True),
    ("/user/get_users_info", False),
    ("/user/get_users_online_status", True),
    ("/user/get_users_online_token_detail", True),
    ("/user/get_users_status", False),
    ("/user/subscribe_users_status", False),
    ("/third/update_push_token", False),
    ("/msg/send_msg", True),
    ("/msg/batch_send_msg", True),
    ("/manager/send_msg", True),
]
ALL_ROUTES = ["/auth/get_admin_token"] + [p for p, _ in TOKEN_ROUTES]
ADMIN_ROUTES = [p for p, admin in TOKEN_ROUTES if admin]


# ---------------------------------------------------------------------------
# helpers


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_jwt(claims, secret=SECRET):
    """An HS256 JWT of our making, in the server's exact header form."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"},
                             separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64url(mac))


def claims(uid=ADMIN, platform=10, exp_in=3600, now=None):
    now = int(now or time.time())
    return {"UserID": uid, "PlatformID": platform, "exp": now + exp_in,
            "nbf": now - 10, "iat": now - 10}


def http_call(ngx, method, path, body=b"", headers=None):
    """(HTTP status, body bytes) of any request, errors included."""
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=10)
    try:
        h = {"operationID": "op"}
        h.update(headers or {})
        conn.request(method, path, body=body or None, headers=h)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ws_handshake(ngx, uid, token, platform):
    """A raw upgrade request: (HTTP status, JSON body or None)."""
    path = "/im/ws?sendID=%s&token=%s&platformID=%d&operationID=op" % (
        uid, token, platform)
    key = base64.b64encode(b"0123456789abcdef").decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: %s\r\n\r\n" % (path, key)).encode()
    with socket.create_connection(("127.0.0.1", ngx.port), 5) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status == 101:
            return status, None
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, json.loads(rest[:n]) if n else None


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metrics(ngx):
    """GET /im/metrics as {"name{labels}": value}; checks the format."""
    status, body = http_call(ngx, "GET", "/im/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def rest_key(path, code):
    return 'im_rest_requests_total{path="%s",code="%s"}' % (path, code)


def delta(before, after, key):
    return after.get(key, 0) - before.get(key, 0)


def wait_until(fn, timeout=5.0, step=0.05):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(step)


# ---------------------------------------------------------------------------
# get_admin_token


def test_admin_token_happy_and_parsed(api):
    r = api.post("/auth/get_admin_token", {"secret": SECRET, "userID": ADMIN})
    assert r["errCode"] == 0, r
    assert r["errMsg"] == "" and r["errDlt"] == ""
    assert r["data"]["expireTimeSeconds"] == TOKEN_EXPIRE
    tok = r["data"]["token"]
    assert tok.count(".") == 2
    p = api.post("/auth/parse_token", {"token": tok}, token=tok)
    assert p["errCode"] == 0, p
    assert p["data"]["userID"] == ADMIN
    assert p["data"]["platformID"] == 10
    assert abs(p["data"]["expireTimeSeconds"]
               - (time.time() + TOKEN_EXPIRE)) < 30


def test_admin_token_second_admin_id(api):
    """DESIGN.md 1: openIM123456 (the seed's sender) is a dev admin, and
    conf/nginx.conf says `im_admin imAdmin openIM123456;`."""
    r = api.post("/auth/get_admin_token",
                 {"secret": SECRET, "userID": "openIM123456"})
    assert r["errCode"] == 0, r
    tok = r["data"]["token"]
    p = api.post("/auth/parse_token", {"token": tok}, token=tok)
    assert p["errCode"] == 0, p
    assert p["data"]["userID"] == "openIM123456"


@pytest.mark.parametrize("body,code,field", [
    ({"secret": "wrong", "userID": ADMIN}, 1002, None),
    ({"secret": SECRET, "userID": "notAnAdmin"}, 1002, None),
    ({"secret": SECRET + "x", "userID": ADMIN}, 1002, None),
    ({"userID": ADMIN}, 1001, "secret"),
    ({"secret": SECRET}, 1001, "userID"),
    ({"secret": 123, "userID": ADMIN}, 1001, "secret"),
    ({"secret": SECRET, "userID": ["imAdmin"]}, 1001, "userID"),
])
def test_admin_token_errors(api, body, code, field):
    r = api.post("/auth/get_admin_token", body)
    assert r["errCode"] == code, r
    assert r["data"] == {}
    if field:
        assert '"%s"' % field in r["errMsg"], r


# ---------------------------------------------------------------------------
# token header problems, on every route that takes a token


def bad_tokens(api):
    user = uids(1, "tk")[0]
    api.register(user)
    now = int(time.time())
    real = api.admin_token()
    head, body, sig = real.split(".")
    tampered_claims = b64url(json.dumps(
        claims(ADMIN, 10, 999999), separators=(",", ":")).encode())
    return [
        ("garbage", "not-a-jwt", 1503),
        ("two dots garbage", "a.b.c", 1503),
        ("expired", forge_jwt(claims(ADMIN, 10, -100, now)), 1501),
        ("expired long ago", forge_jwt({"UserID": ADMIN, "PlatformID": 10,
                                        "exp": now - 86400,
                                        "nbf": now - 90000,
                                        "iat": now - 90000}), 1501),
        ("wrong signature", forge_jwt(claims(ADMIN, 10), "otherSecret"),
         1502),
        ("tampered claims", "%s.%s.%s" % (head, tampered_claims, sig), 1502),
        ("never issued", forge_jwt(claims(ADMIN, 10)), 1507),
        # a user's token: on an admin route the role is refused first
        ("user never issued", forge_jwt(claims(user, 1)), None),
    ]


@pytest.mark.parametrize("path", [p for p, _ in TOKEN_ROUTES])
def test_token_errors_on_every_route(api, path):
    r = api.post(path, {})
    assert r["errCode"] == 1507, (path, r)
    assert '"token"' in r["errMsg"], r
    admin = dict(TOKEN_ROUTES)[path]
    for name, tok, code in bad_tokens(api):
        if code is None:
            code = 1002 if admin else 1507
        r = api.post(path, {}, token=tok)
        assert r["errCode"] == code, (path, name, r)
        assert r["data"] == {}


@pytest.mark.parametrize("path", ADMIN_ROUTES)
def test_user_token_on_admin_route(api, path):
    u = uids(1, "nu")[0]
    api.register(u)
    tok = api.user_token(u, 3)
    r = api.post(path, {"userID": u, "platformID": 3, "token": tok,
                        "userIDs": [u]}, token=tok)
    assert r["errCode"] == 1002, (path, r)
    assert r["data"] == {}


def test_user_token_cannot_be_forged_admin(api):
    """A validly signed token for an admin ID on a user platform is not
    admin; neither is platform 10 for a non-admin user."""
    u = uids(1, "fa")[0]
    api.register(u)
    # issued by the server, platform 10 refused for users
    r = api.post("/auth/get_user_token", {"userID": ADMIN, "platformID": 10},
                 token=api.admin_token())
    assert r["errCode"] == 1001, r
    forged = forge_jwt(claims(u, 10))
    r = api.post("/auth/get_user_token", {"userID": u, "platformID": 1},
                 token=forged)
    assert r["errCode"] == 1002, r


@pytest.mark.parametrize("path", ALL_ROUTES)
def test_missing_operation_id(api, path):
    tok = api.admin_token()
    r = api.post(path, {"secret": SECRET, "userID": ADMIN}, token=tok,
                 operation=None)
    assert r["errCode"] == 1001, (path, r)
    assert "operationID" in r["errMsg"], r


def test_empty_operation_id(api):
    r = api.post("/user/get_users_info", {"userIDs": ["x"]},
                 token=api.admin_token(), operation="")
    assert r["errCode"] == 1001, r
    assert "operationID" in r["errMsg"], r
    # any non-empty value will do, and the header name is case-insensitive
    r = api.post("/user/get_users_info", {"userIDs": ["x"]},
                 token=api.admin_token(), operation=None,
                 headers={"OPERATIONID": "op-x"})
    assert r["errCode"] == 0, r


@pytest.mark.parametrize("path", ALL_ROUTES)
@pytest.mark.parametrize("raw", [b"{", b"not json", b"[1,2]", b"",
                                 b'"str"', b"123", b'{"a":1}garbage',
                                 b'{"a":}'])
def test_malformed_json(api, path, raw):
    r = api.post(path, None, token=api.admin_token(), raw=raw)
    assert r["errCode"] == 1001, (path, raw, r)
    assert r["data"] == {}


def post_big(ngx, api, path, size):
    """POSTs a JSON body of exactly size bytes: (HTTP status, answer)."""
    body = {"userIDs": ["x"], "pad": ""}
    body["pad"] = "x" * (size - len(json.dumps(body)))
    raw = json.dumps(body).encode()
    assert len(raw) == size
    status, data = http_call(ngx, "POST", "/im/api" + path, body=raw,
                             headers={"token": api.admin_token(),
                                      "Content-Type": "application/json"})
    return status, (json.loads(data) if status == 200 else data[:100])


@pytest.mark.parametrize("path", ALL_ROUTES)
def test_body_one_byte_over_limit(stack, api, path):
    status, r = post_big(stack, api, path, 1024 * 1024 + 1)
    assert status == 200, (path, status, r)
    assert r["errCode"] == 1001, (path, r)
    assert r["errMsg"] == "request body too large", r


def test_oversize_body(stack, api):
    """docs/api.md: a body over im_api_max_body (1 MiB) gets errCode 1001
    "request body too large" in the usual HTTP 200 envelope, whatever its
    size, on every route."""
    bad = []
    for path in ALL_ROUTES:
        for size in (1024 * 1024 + 100, 2 * 1024 * 1024):
            status, r = post_big(stack, api, path, size)
            if status != 200 or r["errCode"] != 1001:
                bad.append((path, size, status,
                            r if status == 200 else r[:60]))
    # the workers are fine afterwards
    assert api.post("/auth/get_admin_token",
                    {"secret": SECRET, "userID": ADMIN})["errCode"] == 0
    assert bad == []


def test_oversize_body_chunked(own_stack):
    """Without Content-Length (chunked), a body over 1 MiB is refused the
    same way.  (A private stack: a failure here may log [crit].)"""
    _, ngx = own_stack(workers=1)
    api = Api(ngx)
    big = json.dumps({"userIDs": ["x"], "pad": "y" * (1100 * 1024)}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=10)

    def chunks():
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]

    try:
        conn.request("POST", "/im/api/user/get_users_info", body=chunks(),
                     headers={"operationID": "op",
                              "token": api.admin_token(),
                              "Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200, (status, body[:100])
    r = json.loads(body)
    assert r["errCode"] == 1001, r
    assert "too large" in r["errMsg"], r


def test_small_chunked_body(stack, api):
    """A chunked body under the limit is read like any other."""
    u = uids(1, "ch")[0]
    api.register(u)
    raw = json.dumps({"userIDs": [u]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.request("POST", "/im/api/user/get_users_info",
                     body=iter([raw[:5], raw[5:]]),
                     headers={"operationID": "op",
                              "token": api.admin_token()},
                     encode_chunked=True)
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200
    r = json.loads(body)
    assert r["errCode"] == 0, r
    assert [i["userID"] for i in r["data"]["usersInfo"]] == [u]


def test_body_just_under_limit(api):
    u = uids(1, "big")[0]
    api.register(u)
    body = {"userIDs": [u], "pad": ""}
    size = len(json.dumps(body))
    body["pad"] = "z" * (1024 * 1024 - size - 10)
    raw = json.dumps(body).encode()
    assert len(raw) < 1024 * 1024
    r = api.post("/user/get_users_info", None, token=api.admin_token(),
                 raw=raw)
    assert r["errCode"] == 0, r
    assert [i["userID"] for i in r["data"]["usersInfo"]] == [u]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("path", ["/auth/get_admin_token", "/msg/send_msg",
                                  "/user/get_users_info"])
def test_wrong_method_405(stack, api, method, path):
    status, _ = http_call(stack, method, "/im/api" + path,
                          headers={"token": api.admin_token()})
    assert status == 405, (method, path, status)


@pytest.mark.parametrize("path", ["/auth/nope", "/msg/send", "/",
                                  "/user/get_users_info/extra",
                                  "/auth/get_admin_tokenx", "/msg",
                                  "/group/nope"])
def test_unknown_path_404(stack, api, path):
    for method in ("POST", "GET"):
        status, _ = http_call(stack, method, "/im/api" + path,
                              body=b"{}" if method == "POST" else b"",
                              headers={"token": api.admin_token()})
        assert status == 404, (method, path, status)


# ---------------------------------------------------------------------------
# field types: errCode 1001 naming the field


@pytest.mark.parametrize("path,body,field", [
    ("/auth/get_user_token", {"userID": 5, "platformID": 1}, "userID"),
    ("/auth/get_user_token", {"userID": "a", "platformID": "1"},
     "platformID"),
    ("/auth/get_user_token", {"userID": "a", "platformID": 1.5},
     "platformID"),
    ("/auth/get_user_token", {"userID": "a"}, "platformID"),
    ("/auth/get_user_token", {"platformID": 1}, "userID"),
    ("/auth/parse_token", {"token": 5}, "token"),
    ("/auth/parse_token", {}, "token"),
    ("/auth/force_logout", {"userID": "a", "platformID": "x"},
     "platformID"),
    ("/auth/force_logout", {"userID": None, "platformID": 1}, "userID"),
    ("/user/user_register", {"users": "alice"}, "users"),
    ("/user/user_register", {"users": [{"userID": 7}]}, "userID"),
    ("/user/user_register", {"users": [{"userID": "ok1", "nickname": 3}]},
     "nickname"),
    ("/user/user_register", {"users": [{"userID": "ok1", "faceURL": {}}]},
     "faceURL"),
    ("/user/user_register", {"users": [{"userID": "ok1", "ex": []}]}, "ex"),
    ("/user/get_users_info", {"userIDs": "alice"}, "userIDs"),
    ("/user/get_users_info", {"userIDs": [1]}, "userIDs"),
    ("/user/get_users_info", {}, "userIDs"),
    ("/user/get_users_online_status", {"userIDs": {"a": 1}}, "userIDs"),
    ("/third/update_push_token", {"platformID": "1", "token": "t"},
     "platformID"),
    ("/third/update_push_token", {"platformID": 1, "token": 1}, "token"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": "101",
                       "sessionType": 1, "content": {"content": "x"}},
     "contentType"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": 1, "content": "plain"}, "content"),
    ("/msg/send_msg", {"sendID": "s", "recvID": 5, "contentType": 101,
                       "sessionType": 1, "content": {"content": "x"}},
     "recvID"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": "1", "content": {"content": "x"}},
     "sessionType"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": 1, "content": {"content": "x"},
                       "isOnlineOnly": "yes"}, "isOnlineOnly"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": 1, "content": {"content": "x"},
                       "notOfflinePush": 1}, "notOfflinePush"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": 1, "content": {"content": "x"},
                       "offlinePushInfo": "t"}, "offlinePushInfo"),
    ("/msg/send_msg", {"sendID": "s", "recvID": "r", "contentType": 101,
                       "sessionType": 1, "content": {"content": "x"},
                       "pushClass": 3}, "pushClass"),
    ("/manager/send_msg", {"sendID": 1, "recvID": "r", "contentType": 101,
                           "sessionType": 1, "content": {"content": "x"}},
     "sendID"),
    ("/msg/batch_send_msg", {"sendID": "s", "recvIDs": "r",
                             "contentType": 101, "sessionType": 1,
                             "content": {"content": "x"}}, "recvIDs"),
])
def test_wrong_field_types(api, path, body, field):
    r = api.post(path, body, token=api.admin_token())
    assert r["errCode"] == 1001, (path, body, r)
    assert field in r["errMsg"], (field, r)


def test_wrong_types_with_user_token_routes(api):
    """The user-token routes check types too, with the user's token."""
    u = uids(1, "ty")[0]
    api.register(u)
    tok = api.user_token(u, 2)
    r = api.post("/third/update_push_token", {"platformID": [2],
                                              "token": "t"}, token=tok)
    assert r["errCode"] == 1001 and "platformID" in r["errMsg"], r
    r = api.post("/user/get_users_info", {"userIDs": None}, token=tok)
    assert r["errCode"] == 1001 and "userIDs" in r["errMsg"], r


# ---------------------------------------------------------------------------
# get_user_token and parse_token


def test_user_token_and_parse(api):
    u = uids(1, "ut")[0]
    api.register(u)
    for platform in (1, 2, 5, 9, 11):
        r = api.post("/auth/get_user_token",
                     {"userID": u, "platformID": platform},
                     token=api.admin_token())
        assert r["errCode"] == 0, r
        assert r["data"]["expireTimeSeconds"] == TOKEN_EXPIRE
        p = api.post("/auth/parse_token", {"token": r["data"]["token"]},
                     token=api.admin_token())
        assert p["errCode"] == 0, p
        assert p["data"]["userID"] == u
        assert p["data"]["platformID"] == platform
        assert abs(p["data"]["expireTimeSeconds"]
                   - (time.time() + TOKEN_EXPIRE)) < 30


@pytest.mark.parametrize("body,code", [
    ({"userID": "REGISTERED", "platformID": 10}, 1001),
    ({"userID": "REGISTERED", "platformID": 0}, 1001),
    ({"userID": "REGISTERED", "platformID": 12}, 1001),
    ({"userID": "REGISTERED", "platformID": -1}, 1001),
    ({"userID": "bad_id", "platformID": 1}, 1001),
    ({"userID": "", "platformID": 1}, 1001),
    ({"userID": "x" * 65, "platformID": 1}, 1001),
    ({"userID": "UNREGISTERED", "platformID": 1}, 1101),
])
def test_user_token_errors(api, body, code):
    reg, unreg = uids(2, "ue")
    api.register(reg)
    body = dict(body)
    body["userID"] = {"REGISTERED": reg, "UNREGISTERED": unreg}.get(
        body["userID"], body["userID"])
    r = api.post("/auth/get_user_token", body, token=api.admin_token())
    assert r["errCode"] == code, (body, r)
    assert r["data"] == {}
    if code == 1001 and body["userID"] == reg:
        assert "platformID" in r["errMsg"], r


def test_parse_token_errors(api):
    u = uids(1, "pt")[0]
    api.register(u)
    adm = api.admin_token()
    now = int(time.time())
    cases = [
        (forge_jwt(claims(u, 1, -5, now)), 1501),
        (forge_jwt(claims(u, 1), "nope"), 1502),
        ("garbage", 1503),
        (forge_jwt(claims(u, 1)), 1507),
    ]
    for tok, code in cases:
        r = api.post("/auth/parse_token", {"token": tok}, token=adm)
        assert r["errCode"] == code, (tok, r)
    # kicked
    tok = api.user_token(u, 4)
    assert api.post("/auth/parse_token", {"token": tok},
                    token=adm)["errCode"] == 0
    r = api.post("/auth/force_logout", {"userID": u, "platformID": 4},
                 token=adm)
    assert r["errCode"] == 0, r
    r = api.post("/auth/parse_token", {"token": tok}, token=adm)
    assert r["errCode"] == 1506, r


def test_token_of_unregistered_user_cannot_be_issued(api, redis_server):
    """The user must exist at issue time; tokens then live in the
    registry im:{u:<uid>}:tok."""
    u = uids(1, "rg")[0]
    r = api.post("/auth/get_user_token", {"userID": u, "platformID": 1},
                 token=api.admin_token())
    assert r["errCode"] == 1101, r
    assert redis_server.cli("EXISTS", "im:{u:%s}:tok" % u) == "0"
    api.register(u)
    tok = api.user_token(u, 1)
    assert redis_server.cli("HEXISTS", "im:{u:%s}:tok" % u, tok) == "1"


# ---------------------------------------------------------------------------
# user_register and get_users_info


def test_register_and_info(api):
    a, b, c = uids(3, "ri")
    r = api.post("/user/user_register", {"users": [
        {"userID": a, "nickname": "Alice", "faceURL": "http://f/a.png",
         "ex": "{\"k\":1}"},
        {"userID": b, "nickname": "Bob"},
        {"userID": c}]}, token=api.admin_token())
    assert r["errCode"] == 0, r
    assert r["data"] == {}
    before = int(time.time() * 1000)
    nobody = uids(1, "nb")[0]
    # any token: a user's own token works
    tok = api.user_token(b, 2)
    r = api.post("/user/get_users_info", {"userIDs": [a, nobody, b, c]},
                 token=tok)
    assert r["errCode"] == 0, r
    info = r["data"]["usersInfo"]
    assert [i["userID"] for i in info] == [a, b, c]
    assert info[0]["nickname"] == "Alice"
    assert info[0]["faceURL"] == "http://f/a.png"
    assert info[0]["ex"] == "{\"k\":1}"
    assert info[1]["nickname"] == "Bob" and info[1]["faceURL"] == ""
    assert info[2]["nickname"] == "" and info[2]["ex"] == ""
    for i in info:
        assert isinstance(i["createTime"], int)
        assert abs(i["createTime"] - before) < 60000
    # and an admin token
    r = api.post("/user/get_users_info", {"userIDs": [nobody]},
                 token=api.admin_token())
    assert r["errCode"] == 0 and r["data"]["usersInfo"] == [], r


def test_register_duplicate_all_or_none(api):
    old, new1, new2 = uids(3, "dup")
    api.register(old)
    r = api.post("/user/user_register",
                 {"users": [{"userID": new1}, {"userID": old},
                            {"userID": new2}]}, token=api.admin_token())
    assert r["errCode"] == 1102, r
    # nothing of that call was registered
    r = api.post("/user/get_users_info", {"userIDs": [new1, old, new2]},
                 token=api.admin_token())
    assert [i["userID"] for i in r["data"]["usersInfo"]] == [old]
    r = api.post("/auth/get_user_token", {"userID": new1, "platformID": 1},
                 token=api.admin_token())
    assert r["errCode"] == 1101, r
    # alone, the same duplicate again gets 1102; the profile is unchanged
    r = api.post("/user/user_register",
                 {"users": [{"userID": old, "nickname": "changed"}]},
                 token=api.admin_token())
    assert r["errCode"] == 1102, r
    r = api.post("/user/get_users_info", {"userIDs": [old]},
                 token=api.admin_token())
    assert r["data"]["usersInfo"][0]["nickname"] == old
    # the new ones register fine afterwards
    api.register(new1, new2)


@pytest.mark.parametrize("users,text", [
    ([], "users"),
    ([{"userID": "SAME"}, {"userID": "SAME"}], "twice"),
    ([{"userID": "has_underscore"}], "userID"),
    ([{"userID": "has space"}], "userID"),
    ([{"userID": ""}], "userID"),
    ([{"userID": "y" * 65}], "userID"),
    ([{"nickname": "no id"}], "userID"),
    (["justastring"], "users"),
])
def test_register_invalid(api, users, text):
    same = uids(1, "same")[0]
    users = [dict(u, userID=same) if isinstance(u, dict)
             and u.get("userID") == "SAME" else u for u in users]
    r = api.post("/user/user_register", {"users": users},
                 token=api.admin_token())
    assert r["errCode"] == 1001, r
    assert text in r["errMsg"], r
    if users and users[0] == {"userID": same}:
        r = api.post("/user/get_users_info", {"userIDs": [same]},
                     token=api.admin_token())
        assert r["data"]["usersInfo"] == []


def test_register_limits(api):
    ok = uids(1000, "lim")
    r = api.post("/user/user_register",
                 {"users": [{"userID": u} for u in ok + uids(1, "x")]},
                 token=api.admin_token())
    assert r["errCode"] == 1001, r
    assert "1000" in r["errMsg"]
    r = api.post("/user/user_register",
                 {"users": [{"userID": u} for u in ok]},
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    r = api.post("/user/get_users_info", {"userIDs": ok},
                 token=api.admin_token())
    assert r["errCode"] == 0
    assert [i["userID"] for i in r["data"]["usersInfo"]] == ok
    r = api.post("/user/get_users_info", {"userIDs": ok + ["one-more"]},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "userIDs" in r["errMsg"], r
    r = api.post("/user/get_users_info", {"userIDs": []},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "userIDs" in r["errMsg"], r


def test_user_id_charset(api):
    """A-Z a-z 0-9 . @ + - are allowed, 1..64 bytes."""
    tag = uids(1, "")[0].replace("-0", "")
    ids = ["A.b@c+d-" + tag, "9" + tag, ("m" + tag + "z" * 64)[:64]]
    api.register(*ids)
    r = api.post("/user/get_users_info", {"userIDs": ids},
                 token=api.admin_token())
    assert [i["userID"] for i in r["data"]["usersInfo"]] == ids


# ---------------------------------------------------------------------------
# get_users_online_status


def online_status(api, ids):
    r = api.post("/user/get_users_online_status", {"userIDs": ids},
                 token=api.admin_token())
    assert r["errCode"] == 0, r
    return {s["userID"]: s for s in r["data"]["statusList"]}


def test_online_status_across_hosts(stack, stack2, api):
    a, b = uids(2, "on")
    api.register(a, b)
    api2 = Api(stack2)
    t2, t5 = api.user_token(a, 2), api.user_token(a, 5)

    st = online_status(api, [a, b])
    assert st[a] == {"userID": a, "status": "offline",
                     "detailPlatformStatus": []}
    assert st[b]["status"] == "offline"

    async def scenario():
        c2 = await Client(stack2, a, t2, 2).connect()
        c5 = await Client(stack2, a, t5, 5).connect()
        # asked through the OTHER host (stack), in list order.  A session
        # issues its presence write just before its 101, but that write
        # and this query travel on different Redis connections, so allow
        # it a moment to land.
        t0 = time.time()
        while True:
            r = api.post("/user/get_users_online_status",
                         {"userIDs": [b, a]}, token=api.admin_token())
            assert r["errCode"] == 0, r
            lst = r["data"]["statusList"]
            if (len(lst[1]["detailPlatformStatus"]) == 2
                    or time.time() - t0 > 2):
                break
            await asyncio.sleep(0.02)
        assert [s["userID"] for s in lst] == [b, a]
        assert lst[0]["status"] == "offline"
        assert lst[0]["detailPlatformStatus"] == []
        assert lst[1]["status"] == "online"
        assert sorted(p["platformID"]
                      for p in lst[1]["detailPlatformStatus"]) == [2, 5]
        assert all(p["status"] == "online"
                   for p in lst[1]["detailPlatformStatus"])
        # the same from stack2 with its own admin token
        st2 = online_status(api2, [a])
        assert st2[a]["status"] == "online"

        await c5.close()
        t0 = time.time()
        while time.time() - t0 < 3:
            plats = [p["platformID"]
                     for p in online_status(api, [a])[a]
                     ["detailPlatformStatus"]]
            if plats == [2]:
                break
            await asyncio.sleep(0.05)
        assert plats == [2]

        await c2.close()
        t0 = time.time()
        while time.time() - t0 < 3:
            s = online_status(api, [a])[a]
            if s["status"] == "offline":
                break
            await asyncio.sleep(0.05)
        assert s == {"userID": a, "status": "offline",
                     "detailPlatformStatus": []}

    run(scenario())


def test_online_status_same_platform_twice(stack, stack2, api):
    """Two sessions of one platform on two hosts: platform listed once,
    online until the last one leaves."""
    a = uids(1, "tw")[0]
    api.register(a)
    tok = api.user_token(a, 1)

    async def scenario():
        c1 = await Client(stack, a, tok, 1).connect()
        c2 = await Client(stack2, a, tok, 1).connect()
        s = online_status(api, [a])[a]
        assert s["status"] == "online"
        assert [p["platformID"] for p in s["detailPlatformStatus"]] == [1]
        await c1.close()
        await asyncio.sleep(0.5)
        s = online_status(api, [a])[a]
        assert s["status"] == "online", s
        await c2.close()
        t0 = time.time()
        while time.time() - t0 < 3:
            s = online_status(api, [a])[a]
            if s["status"] == "offline":
                break
            await asyncio.sleep(0.05)
        assert s["status"] == "offline"

    run(scenario())


def test_online_status_errors(api):
    r = api.post("/user/get_users_online_status", {"userIDs": []},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "userIDs" in r["errMsg"], r
    r = api.post("/user/get_users_online_status", {"userIDs": ["bad_id"]},
                 token=api.admin_token())
    assert r["errCode"] == 1001 and "userIDs" in r["errMsg"], r
    nobody = uids(1, "nob")[0]
    st = online_status(api, [nobody])
    assert st[nobody]["status"] == "offline"


# ---------------------------------------------------------------------------
# update_push_token and force_logout (argument checks; the kick itself is in
# test_notify.py)


def test_update_push_token(api, redis_server):
    u = uids(1, "pu")[0]
    api.register(u)
    tok = api.user_token(u, 2)
    r = api.post("/third/update_push_token",
                 {"platformID": 2, "token": "fcm-token-1"}, token=tok)
    assert r["errCode"] == 0, r
    assert r["data"] == {}
    key = "im:{u:%s}:push" % u
    assert redis_server.cli("HGET", key, "2") == "fcm-token-1"
    # replaced, not appended
    r = api.post("/third/update_push_token",
                 {"platformID": 2, "token": "fcm-token-2"}, token=tok)
    assert r["errCode"] == 0, r
    assert redis_server.cli("HGET", key, "2") == "fcm-token-2"
    assert redis_server.cli("HLEN", key) == "1"
    for body, field in [({"platformID": 0, "token": "t"}, "platformID"),
                        ({"platformID": 12, "token": "t"}, "platformID"),
                        ({"platformID": 1, "token": ""}, "token"),
                        ({"platformID": 1, "token": "t" * 4097}, "token"),
                        ({"token": "t"}, "platformID"),
                        ({"platformID": 1}, "token")]:
        r = api.post("/third/update_push_token", body, token=tok)
        assert r["errCode"] == 1001, (body, r)
        assert field in r["errMsg"], (body, r)
    assert redis_server.cli("HGET", key, "2") == "fcm-token-2"


def test_force_logout_args(api):
    u = uids(1, "fl")[0]
    api.register(u)
    adm = api.admin_token()
    for body in ({"userID": u, "platformID": 0},
                 {"userID": u, "platformID": 12},
                 {"userID": "bad_id", "platformID": 1},
                 {"userID": u}, {"platformID": 1}):
        r = api.post("/auth/force_logout", body, token=adm)
        assert r["errCode"] == 1001, (body, r)
    # no session, no token: still fine
    r = api.post("/auth/force_logout", {"userID": u, "platformID": 1},
                 token=adm)
    assert r["errCode"] == 0, r
    # tokens of other platforms survive; the kicked platform's are refused
    t1, t2 = api.user_token(u, 1), api.user_token(u, 2)
    r = api.post("/auth/force_logout", {"userID": u, "platformID": 1},
                 token=adm)
    assert r["errCode"] == 0, r
    assert api.post("/user/get_users_info", {"userIDs": [u]},
                    token=t1)["errCode"] == 1506
    assert api.post("/user/get_users_info", {"userIDs": [u]},
                    token=t2)["errCode"] == 0
    # a token issued after the kick works
    t1b = api.user_token(u, 1)
    assert api.post("/user/get_users_info", {"userIDs": [u]},
                    token=t1b)["errCode"] == 0


# ---------------------------------------------------------------------------
# metrics


def test_metrics_format(stack):
    status, body = http_call(stack, "GET", "/im/metrics")
    assert status == 200
    text = body.decode()
    names = ["im_connections", "im_logins_total", "im_login_failures_total",
             "im_frames_in_total", "im_frames_out_total", "im_pushes_total",
             "im_kicks_total", "im_offline_push_jobs_total",
             "im_messages_sent_total", "im_ws_responses_total",
             "im_rest_requests_total", "im_redis_reconnects_total",
             "im_redis_errors_total", "im_redis_busy_total",
             "im_send_queue_overflows_total", "im_protocol_errors_total"]
    for n in names:
        assert "# TYPE %s " % n in text, n
        assert "# HELP %s " % n in text, n
    assert "# TYPE im_connections gauge" in text
    m = metrics(stack)
    for kind in ("single", "group", "notification", "online_only"):
        assert 'im_messages_sent_total{kind="%s"}' % kind in m


def test_metrics_known_sequence(stack, api, redis_server):
    a, b, off = uids(3, "me")
    api.register(a, b, off)
    ta, tb = api.user_token(a, 1), api.user_token(b, 2)
    adm = api.admin_token()
    before = metrics(stack)

    def send(recv, **extra):
        body = {"sendID": "system", "recvID": recv, "contentType": 101,
                "sessionType": 1, "content": {"content": "m"}}
        body.update(extra)
        return api.post("/msg/send_msg", body, token=adm)

    async def scenario():
        ca = await Client(stack, a, ta, 1).connect()
        cb = await Client(stack, b, tb, 2).connect()
        mid = metrics(stack)
        assert delta(before, mid, "im_logins_total") == 2
        assert delta(before, mid, "im_connections") == 2

        # 3 single messages through REST to online a: 3 pushes, no jobs
        for i in range(3):
            r = send(a)
            assert r["errCode"] == 0, r
        for i in range(3):
            await ca.push()
        # 1 notification to b
        r = send(b, sessionType=4)
        assert r["errCode"] == 0, r
        await cb.push()
        # 1 online-only to b
        r = send(b, isOnlineOnly=True)
        assert r["errCode"] == 0 and r["data"]["online"] is True, r
        await cb.push()
        # 2 messages to the offline user: 2 jobs
        for i in range(2):
            assert send(off)["errCode"] == 0
        # errors
        assert send("nobody-" + a)["errCode"] == 1101
        assert send(a, sessionType=3)["errCode"] == 1001
        # 2 WebSocket requests from a: a send to b and a GetNewestSeq
        ack = await ca.send_text(b, "ws")
        assert ack["errCode"] == 0
        await cb.push()
        assert (await ca.newest())["errCode"] == 0
        # one refused handshake
        status, body = ws_handshake(stack, a, "garbage", 1)
        assert status == 401 and body["errCode"] == 1503
        # kick b
        r = api.post("/auth/force_logout", {"userID": b, "platformID": 2},
                     token=adm)
        assert r["errCode"] == 0
        frame = json.loads(await asyncio.wait_for(cb.ws.recv(), 5))
        assert frame["reqIdentifier"] == 2002
        await ca.close()
        await asyncio.sleep(0)

    run(scenario())

    def settled():
        m = metrics(stack)
        if (delta(before, m, "im_offline_push_jobs_total") >= 2
                and delta(before, m, "im_connections") == 0):
            return m
        return None

    after = wait_until(settled, 5) or metrics(stack)
    assert delta(before, after, "im_logins_total") == 2
    assert delta(before, after, "im_connections") == 0
    assert delta(before, after, "im_login_failures_total") == 1
    assert delta(before, after, 'im_messages_sent_total{kind="single"}') == 6
    assert delta(before, after,
                 'im_messages_sent_total{kind="notification"}') == 1
    assert delta(before, after,
                 'im_messages_sent_total{kind="online_only"}') == 1
    assert delta(before, after, 'im_messages_sent_total{kind="group"}') == 0
    # pushes: 3 to a, 1 notification + 1 online-only + 1 ws message to b
    assert delta(before, after, "im_pushes_total") == 6
    assert delta(before, after, "im_kicks_total") == 1
    assert delta(before, after, "im_offline_push_jobs_total") == 2
    assert delta(before, after, rest_key("/msg/send_msg", "0")) == 7
    assert delta(before, after, rest_key("/msg/send_msg", "1101")) == 1
    assert delta(before, after, rest_key("/msg/send_msg", "1001")) == 1
    assert delta(before, after, rest_key("/auth/force_logout", "0")) == 1
    assert delta(before, after, 'im_ws_responses_total{code="0"}') == 2
    # frames in: 2 requests (the close frame is not a data message)
    assert delta(before, after, "im_frames_in_total") == 2
    # frames out: 6 pushes + 2 responses + one 2002, and two Close frames
    # (the kick's and the echo of a's close)
    assert delta(before, after, "im_frames_out_total") == 11
    assert delta(before, after, "im_redis_errors_total") == 0
    assert delta(before, after, "im_protocol_errors_total") == 0


def test_metrics_rest_codes(stack, api):
    """Every REST answer is counted under its path and errCode."""
    before = metrics(stack)
    adm = api.admin_token()
    api.post("/auth/parse_token", {"token": adm}, token=adm)
    api.post("/auth/parse_token", {"token": adm}, token=adm)
    api.post("/auth/parse_token", {}, token=adm)
    api.post("/auth/parse_token", {"token": adm})
    api.post("/auth/parse_token", {"token": adm}, token="garbage")
    api.post("/auth/parse_token", {"token": adm},
             token=forge_jwt(claims(ADMIN, 10, -10)))
    api.post("/auth/get_admin_token", {"secret": "x", "userID": ADMIN})
    after = metrics(stack)
    assert delta(before, after, rest_key("/auth/parse_token", "0")) == 2
    assert delta(before, after, rest_key("/auth/parse_token", "1001")) == 1
    assert delta(before, after, rest_key("/auth/parse_token", "1507")) == 1
    assert delta(before, after, rest_key("/auth/parse_token", "1503")) == 1
    assert delta(before, after, rest_key("/auth/parse_token", "1501")) == 1
    assert delta(before, after,
                 rest_key("/auth/get_admin_token", "1002")) == 1
    # metrics itself is not a REST route
    assert not any("/im/metrics" in k for k in after)


def test_metrics_summed_over_workers(stack, api):
    """Logins land on both workers (reuseport); the gauge counts all."""
    u = uids(1, "mw")[0]
    api.register(u)
    tok = api.user_token(u, 1)
    before = metrics(stack)

    async def scenario():
        cs = [await Client(stack, u, tok, 1).connect() for _ in range(12)]
        mid = metrics(stack)
        for c in cs:
            await c.close()
        return mid

    mid = run(scenario())
    assert delta(before, mid, "im_connections") == 12
    assert delta(before, mid, "im_logins_total") == 12
    after = wait_until(
        lambda: (lambda m: m if delta(before, m, "im_connections") == 0
                 else None)(metrics(stack)), 5) or metrics(stack)
    assert delta(before, after, "im_connections") == 0


def test_metrics_method(stack):
    status, _ = http_call(stack, "POST", "/im/metrics", body=b"{}")
    assert status == 405


def test_im_ws_without_im_redis_is_a_config_error(base_dir):
    """A location with im_ws (or im_api) but no im_redis once crashed on
    the first request; nginx now refuses the configuration."""
    from conftest import Nginx
    ngx = Nginx(base_dir, "127.0.0.1:1")
    conf = os.path.join(ngx.dir, "conf/nginx.conf")
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("im_redis 127.0.0.1:1;", ""))
    out = ngx.nginx("-t")
    assert out.returncode != 0
    assert "need \"im_redis\"" in out.stderr, out.stderr
