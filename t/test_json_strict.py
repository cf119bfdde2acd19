"""Strict JSON text (RFC 8259) on both surfaces: the three defects the
protocol fuzzer found in the shared parser (they were fuzzgen.KNOWN),
each as a regression test.

- a whole JSON text followed by a string that never ends ('{..} "abc')
  was accepted: yajl took the open string for text still to come;
- vertical tab and form feed were taken for whitespace (RFC 8259 has
  only space, tab, LF and CR);
- REST bodies were not UTF-8 validated: overlong forms, surrogates and
  code points above U+10FFFF reached Redis.  WebSocket text frames are
  validated by the frame codec, which closes with 1007.

Each is errCode 1001 with the parser's text, over REST and in a
WebSocket text frame (message content too), nothing is stored, and the
server keeps serving: the same call without the damage succeeds, on the
same WebSocket connection.
"""

import json
import time

import pytest

import rawws
from conftest import ADMIN, SECRET, single_conv, uids
from rawws import OP_TEXT, frame
from test_frames import assert_closed_with, login
from test_frames import ws  # noqa: F401 (a fixture)
from test_hardening import nothing_stored, rest_msg, rest_send

UNTERMINATED = "invalid JSON: unterminated string"
WHITESPACE = "invalid JSON: invalid whitespace"
BAD_UTF8 = "invalid JSON: invalid UTF-8"

# Each damage turns valid JSON text (an object with a string "MARK" in
# it) into text the server must refuse, with the errMsg it must give.
STRICT = {
    "open-string": (lambda t: t + b' "abc', UNTERMINATED),
    "open-quote": (lambda t: t + b'"', UNTERMINATED),
    "open-string-escaped-quote": (lambda t: t + b'\n"ab\\"', UNTERMINATED),
    "open-string-backslash": (lambda t: t + b' "ab\\', UNTERMINATED),
    "vt-after": (lambda t: t + b"\x0b", WHITESPACE),
    "ff-after": (lambda t: t + b"\x0c", WHITESPACE),
    "vt-inside": (lambda t: b"{\x0b" + t[1:], WHITESPACE),
    "ff-inside": (lambda t: t.replace(b":", b":\x0c", 1), WHITESPACE),
}

# bytes that valid UTF-8 never holds, put in place of "MARK"
BAD_BYTES = {
    "overlong-slash": b"\xc0\xaf",
    "overlong-nul": b"\xc0\x80",
    "overlong-3byte": b"\xe0\x80\xaf",
    "overlong-4byte": b"\xf0\x8f\xbf\xbf",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "ff": b"\xff",
    "lone-continuation": b"\x80",
    "truncated": b"\xe2\x82",
}

CASES = dict(STRICT, **{
    "utf8-" + name: ((lambda bad: lambda t: t.replace(b"MARK", bad))(bad),
                     BAD_UTF8)
    for name, bad in BAD_BYTES.items()})
TEXT_CASES = sorted(STRICT)
UTF8_CASES = sorted(n for n in CASES if n.startswith("utf8-"))


def admin_body():
    """A valid /auth/get_admin_token body; the unknown "x" is ignored."""
    return json.dumps({"secret": SECRET, "userID": ADMIN,
                       "x": "MARK"}).encode()


def envelope(incr, req_id=1001, data=None):
    """A valid request (GetNewestSeq by default) holding "MARK"."""
    return json.dumps({"reqIdentifier": req_id, "operationID": "op-MARK",
                       "msgIncr": incr,
                       "data": {} if data is None else data}).encode()


def post_raw(api, path, body, token=None):
    return api.post(path, None, token=token, raw=body)


def test_damage_is_all_that_is_wrong():
    """Each case is valid JSON before its damage, and invalid after it
    (what Python's strict decoder says)."""
    for text in (admin_body(), envelope("x")):
        json.loads(text)
        for name, (damage, _) in CASES.items():
            bad = damage(text)
            assert bad != text, name
            with pytest.raises(ValueError):
                json.loads(bad.decode("utf-8"))


# ---------------------------------------------------------------------------
# REST: errCode 1001 with the parser's text


@pytest.mark.parametrize("name", sorted(CASES))
def test_rest_body_refused(api, name):
    damage, msg = CASES[name]
    r = post_raw(api, "/auth/get_admin_token", damage(admin_body()))
    assert (r["errCode"], r["errMsg"]) == (1001, msg), r
    assert r["data"] in (None, {}), r
    # the same body undamaged: served
    r = post_raw(api, "/auth/get_admin_token", admin_body())
    assert r["errCode"] == 0 and r["data"]["token"], r


@pytest.mark.parametrize("name", sorted(CASES))
def test_rest_send_refused_nothing_stored(api, redis_server, name):
    """A send whose body is damaged stores nothing, on each send path."""
    damage, msg = CASES[name]
    a, b = uids(2)
    api.register(b)
    body = json.dumps(rest_msg(a, b, ex="MARK")).encode()
    for path in ("/msg/send_msg", "/manager/send_msg"):
        r = post_raw(api, path, damage(body), token=api.admin_token())
        assert (r["errCode"], r["errMsg"]) == (1001, msg), (path, r)
    batch = json.dumps(rest_msg(a, b, ex="MARK", recvIDs=[b])).encode()
    r = post_raw(api, "/msg/batch_send_msg", damage(batch),
                 token=api.admin_token())
    assert (r["errCode"], r["errMsg"]) == (1001, msg), r
    assert nothing_stored(redis_server, single_conv(a, b))
    r = rest_send(api, "/msg/send_msg", rest_msg(a, b, ex="MARK"))
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r


# ---------------------------------------------------------------------------
# WebSocket: errCode 1001 on the same connection, which keeps serving


def assert_served(ws, incr):
    r = ws.request(1001, {}, incr=incr, operation="op-" + incr)
    assert r["errCode"] == 0 and r["msgIncr"] == incr, r


@pytest.mark.parametrize("name", TEXT_CASES)
def test_ws_request_refused(ws, name):
    damage, msg = CASES[name]
    ws.send(frame(OP_TEXT, damage(envelope("bad"))))
    r = ws.recv_json()
    assert (r["errCode"], r["errMsg"]) == (1001, msg), r
    assert_served(ws, "after")


def test_ws_all_refused_in_a_row(ws):
    """One connection takes every damaged request, each answered 1001 in
    order, and is then served as before."""
    for i, name in enumerate(TEXT_CASES):
        damage, msg = CASES[name]
        ws.send(frame(OP_TEXT, damage(envelope("bad-%d" % i))))
    for name in TEXT_CASES:
        r = ws.recv_json()
        assert (r["errCode"], r["errMsg"]) == (1001, CASES[name][1]), r
    assert_served(ws, "after")


@pytest.mark.parametrize("name", UTF8_CASES)
def test_ws_invalid_utf8_closes_1007(stack, name):
    """The frame codec refuses the text before the parser sees it: close
    1007, as before; a new connection is served."""
    damage, _ = CASES[name]
    with login(stack) as ws:
        ws.send(frame(OP_TEXT, damage(envelope("bad"))))
        assert_closed_with(ws, 1007)
    with login(stack) as ws:
        assert_served(ws, "fresh")


@pytest.mark.parametrize("name", TEXT_CASES)
def test_ws_content_refused_nothing_stored(stack, api, redis_server, name):
    """A 1003 whose content string (JSON text itself) is damaged: 1001,
    nothing stored, and the same send undamaged succeeds."""
    damage, _ = CASES[name]
    a, b = uids(2)
    api.register(a, b)
    content = json.dumps({"content": "MARK"}).encode()
    data = {"sendID": a, "recvID": b, "sessionType": 1, "contentType": 101,
            "content": damage(content).decode()}
    with rawws.connect(stack.port, rawws.ws_path(
            a, api.user_token(a))) as ws:
        assert ws.status == 101, ws.body
        ws.send(frame(OP_TEXT, envelope("bad", 1003, data)))
        r = ws.recv_json()
        assert r["errCode"] == 1001 and r["msgIncr"] == "bad", r
        assert r["errMsg"] == ("content must be a JSON object for "
                               "contentType 101"), r
        assert nothing_stored(redis_server, single_conv(a, b))
        ws.send(frame(OP_TEXT, envelope("good", 1003, dict(
            data, content=content.decode()))))
        r = ws.recv_json()
        assert r["errCode"] == 0 and r["data"]["seq"] == 1, r


# ---------------------------------------------------------------------------
# escapes: the text is valid UTF-8, but yajl decodes a lone low surrogate
# escape into bytes that are not; the string fields refuse them, so they
# never reach Redis or the im:push stream


LONE = ("\udc00", "x\udfff", "\ude00\ud83d")


def push_jobs_for(redis_server, uid, least=0, timeout=2.0):
    """How many im:push jobs name uid; waits up to timeout for at least
    "least" of them (jobs are appended after the answer)."""
    end = time.monotonic() + timeout
    while True:
        n = redis_server.cli("XRANGE", "im:push", "-", "+").count(uid)
        if n >= least or time.monotonic() > end:
            return n
        time.sleep(0.05)


@pytest.mark.parametrize("field", ["senderNickname", "ex", "title", "desc"])
def test_rest_lone_surrogate_escape_refused(api, redis_server, field):
    a, b = uids(2)
    api.register(b)
    where = "offlinePushInfo." + field if field in ("title", "desc") \
        else field
    for text in LONE:
        if field in ("title", "desc"):
            body = rest_msg(a, b, offlinePushInfo={field: text})
        else:
            body = rest_msg(a, b, **{field: text})
        raw = json.dumps(body).encode()          # ASCII, with escapes
        assert b"\\ud" in raw and raw.isascii()
        r = post_raw(api, "/msg/send_msg", raw, token=api.admin_token())
        assert (r["errCode"], r["errMsg"]) == (
            1001, 'field "%s" is not valid UTF-8' % where), r
    assert nothing_stored(redis_server, single_conv(a, b))
    assert push_jobs_for(redis_server, b) == 0
    # a pair is one character: stored, pushed (b is offline)
    body = rest_msg(a, b, offlinePushInfo={"title": "\U0001F600"})
    r = post_raw(api, "/msg/send_msg", json.dumps(body).encode(),
                 token=api.admin_token())
    assert r["errCode"] == 0 and r["data"]["seq"] == 1, r
    assert push_jobs_for(redis_server, b, least=1) >= 1


def test_ws_lone_surrogate_escape_refused(stack, api, redis_server):
    a, b = uids(2)
    api.register(a, b)
    data = {"sendID": a, "recvID": b, "sessionType": 1, "contentType": 101,
            "content": '{"content":"x"}',
            "offlinePushInfo": {"title": "t\udc00"}}
    with rawws.connect(stack.port, rawws.ws_path(
            a, api.user_token(a))) as ws:
        assert ws.status == 101, ws.body
        ws.send(frame(OP_TEXT, envelope("bad", 1003, data)))
        r = ws.recv_json()
        assert (r["errCode"], r["errMsg"]) == (
            1001, 'field "offlinePushInfo.title" is not valid UTF-8'), r
        assert nothing_stored(redis_server, single_conv(a, b))
        ws.send(frame(OP_TEXT, envelope("good", 1003, dict(
            data, offlinePushInfo={"title": "t"}))))
        r = ws.recv_json()
        assert r["errCode"] == 0 and r["data"]["seq"] == 1, r
