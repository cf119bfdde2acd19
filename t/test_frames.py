"""RFC 6455 framing on the wire (DESIGN.md 1.2, "Frames", "Heartbeats and
limits"), with hand-made frames from rawws: fragmentation, control frames,
the closing handshake, every protocol error, UTF-8, size limits,
byte-at-a-time input and the server's heartbeat.
"""

import time

import pytest

import rawws
from conftest import Api, uids
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                   frame)


# -- helpers --------------------------------------------------------------

def login(ngx, **kw):
    """A fresh registered user, connected over a raw socket."""
    api = Api(ngx)
    uid = uids(1)[0]
    api.register(uid)
    ws = rawws.connect(ngx.port, rawws.ws_path(uid, api.user_token(uid)),
                       **kw)
    assert ws.status == 101, ws.body
    return ws


@pytest.fixture
def ws(stack):
    w = login(stack)
    yield w
    w.close()


def newest(incr):
    """A GetNewestSeq request (answered after a Redis round trip)."""
    return rawws.request_json(1001, {}, incr=incr, operation="op-" + incr)


def assert_newest(resp, incr):
    assert resp["reqIdentifier"] == 1001, resp
    assert resp["operationID"] == "op-" + incr, resp
    assert resp["msgIncr"] == incr, resp
    assert resp["errCode"] == 0, resp
    assert "maxSeqs" in resp["data"], resp


def assert_usable(ws, incr="after"):
    ws.send(frame(OP_TEXT, newest(incr)))
    assert_newest(ws.recv_json(), incr)


def split(data, n):
    """data cut into n pieces, the middle ones possibly empty."""
    step = -(-len(data) // n)
    return [data[i * step:(i + 1) * step] for i in range(n)]


def fragments(opcode, pieces, **kw):
    """The frames of one fragmented message."""
    out = b""
    for i, piece in enumerate(pieces):
        out += frame(opcode if i == 0 else OP_CONT, piece,
                     fin=(i == len(pieces) - 1), **kw)
    return out


def assert_closed_with(ws, code):
    f = ws.expect_close()
    assert f.close_code == code, (f, f.close_reason)
    assert f.fin == 1 and not f.masked and f.rsv == 0
    assert ws.skipped == [], ws.skipped


# -- fragmentation --------------------------------------------------------

@pytest.mark.parametrize("n", [3, 4, 7])
def test_fragmented_text(ws, n):
    ws.send(fragments(OP_TEXT, split(newest("f%d" % n), n)))
    assert_newest(ws.recv_json(), "f%d" % n)
    assert_usable(ws)


def test_fragmented_text_with_empty_fragments(ws):
    body = newest("e1")
    ws.send(fragments(OP_TEXT, [b"", body[:10], b"", b"", body[10:], b""]))
    assert_newest(ws.recv_json(), "e1")


def test_fragments_in_separate_writes(ws):
    for f in (frame(OP_TEXT, newest("s1")[:5], fin=False),
              frame(OP_CONT, newest("s1")[5:20], fin=False),
              frame(OP_CONT, newest("s1")[20:], fin=True)):
        ws.send(f)
        time.sleep(0.02)
    assert_newest(ws.recv_json(), "s1")


def test_fragmented_binary(ws):
    """Binary frames are not served yet: the message gets one answer (no
    close) and the connection stays usable."""
    ws.send(fragments(OP_BINARY, [b"\x08\x01", b"\x12\x00", b"\xff\x00"]))
    f = ws.recv_data()
    assert f.opcode in (OP_TEXT, OP_BINARY), f
    if f.opcode == OP_TEXT:
        assert f.json()["errCode"] == 1001, f
    assert_usable(ws)


# -- control frames -------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"hello", b"\x00\xff\x80 bin",
                                     bytes(range(125))],
                         ids=["empty", "text", "binary", "125"])
def test_ping_pong(ws, payload):
    ws.send(frame(OP_PING, payload))
    f = ws.recv_frame()
    assert f.opcode == OP_PONG, f
    assert f.payload == payload
    assert f.fin == 1 and f.rsv == 0 and not f.masked
    assert_usable(ws)


def test_unsolicited_pong_is_ignored(ws):
    ws.send(frame(OP_PONG, b"whatever"))
    assert_usable(ws)


def test_ping_inside_fragmented_message(ws):
    body = newest("pi")
    ws.send(frame(OP_TEXT, body[:7], fin=False)
            + frame(OP_PING, b"mid")
            + frame(OP_CONT, body[7:15], fin=False)
            + frame(OP_PONG, b"unsolicited")
            + frame(OP_CONT, body[15:], fin=True))
    f = ws.recv_frame()
    assert f.opcode == OP_PONG and f.payload == b"mid", f
    assert_newest(ws.recv_json(), "pi")


@pytest.mark.parametrize("code,reason", [(1000, b""), (1000, b"bye"),
                                         (1001, b"going"),
                                         (3000, b""), (4999, "\u00e9t\u00e9")])
def test_close_handshake(ws, code, reason):
    ws.send(frame(OP_CLOSE, rawws.close_payload(code, reason)))
    f = ws.expect_close()
    assert f.close_code == code, f
    assert f.fin == 1 and not f.masked
    assert ws.skipped == []


def test_close_without_code(ws):
    ws.send(frame(OP_CLOSE, b""))
    f = ws.expect_close()
    assert f.payload == b"", f


def test_close_inside_fragmented_message(ws):
    """Control frames may come between fragments, Close included."""
    ws.send(frame(OP_TEXT, b'{"reqIdentifier":', fin=False)
            + frame(OP_CLOSE, rawws.close_payload(1000)))
    f = ws.expect_close()
    assert f.close_code == 1000 and ws.skipped == []


def test_nothing_answered_after_close(ws):
    """Frames glued behind the client's Close are not served."""
    ws.send(frame(OP_CLOSE, rawws.close_payload(1000))
            + frame(OP_TEXT, rawws.request_json(9999, incr="late"))
            + frame(OP_PING, b"late"))
    f = ws.expect_close()
    assert f.close_code == 1000 and ws.skipped == [], ws.skipped


def test_close_after_pending_request(ws):
    """A request sent right before Close is answered before the Close."""
    ws.send(frame(OP_TEXT, rawws.request_json(9999, incr="c1"))
            + frame(OP_CLOSE, rawws.close_payload(1000)))
    f = ws.expect_close()
    assert f.close_code == 1000
    assert [s.json()["msgIncr"] for s in ws.skipped] == ["c1"]


# -- protocol errors: close 1002 ------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked": frame(OP_TEXT, b"{}", mask=False),
    "unmasked-ping": frame(OP_PING, b"", mask=False),
    "rsv1": frame(OP_TEXT, b"{}", rsv=4),
    "rsv2": frame(OP_TEXT, b"{}", rsv=2),
    "rsv3": frame(OP_TEXT, b"{}", rsv=1),
    "rsv-on-ping": frame(OP_PING, b"", rsv=4),
    "ping-126": frame(OP_PING, b"x" * 126),
    "close-126": frame(OP_CLOSE, rawws.close_payload(1000, b"x" * 124)),
    "pong-200": frame(OP_PONG, b"x" * 200),
    "fragmented-ping": frame(OP_PING, b"x", fin=False),
    "fragmented-close": frame(OP_CLOSE, rawws.close_payload(1000), fin=False),
    "opcode-3": frame(0x3, b"{}"),
    "opcode-7": frame(0x7, b"{}"),
    "opcode-b": frame(0xB, b""),
    "opcode-f": frame(0xF, b""),
    "cont-without-start": frame(OP_CONT, b"{}"),
    "cont-without-start-nofin": frame(OP_CONT, b"{}", fin=False),
    "text-inside-fragmented": frame(OP_TEXT, b"{", fin=False)
                              + frame(OP_TEXT, b"}"),
    "binary-inside-fragmented": frame(OP_TEXT, b"{", fin=False)
                                + frame(OP_BINARY, b"}"),
    "cont-after-complete": frame(OP_TEXT, b'{"type":"ping"}')
                           + frame(OP_CONT, b"x"),
    "64bit-len-top-bit": frame(OP_TEXT, b"", length=1 << 63,
                               length_bytes=8),
    "close-1-byte": frame(OP_CLOSE, b"\x03"),
    "close-code-999": frame(OP_CLOSE, rawws.close_payload(999)),
    "close-code-1004": frame(OP_CLOSE, rawws.close_payload(1004)),
    "close-code-1005": frame(OP_CLOSE, rawws.close_payload(1005)),
    "close-code-1006": frame(OP_CLOSE, rawws.close_payload(1006)),
    "close-code-1015": frame(OP_CLOSE, rawws.close_payload(1015)),
    "close-code-2999": frame(OP_CLOSE, rawws.close_payload(2999)),
    "close-code-5000": frame(OP_CLOSE, rawws.close_payload(5000)),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_protocol_error(ws, name):
    ws.send(PROTOCOL_ERRORS[name])
    if name == "cont-after-complete":
        assert ws.recv_json() == {"type": "pong"}
    assert_closed_with(ws, 1002)


def test_protocol_error_ignores_later_input(ws):
    """After the bad frame nothing else is answered: the request glued
    behind it gets no response."""
    ws.send(frame(OP_TEXT, b"{}", rsv=4) + frame(OP_TEXT, newest("late"))
            + frame(OP_PING, b"late"))
    assert_closed_with(ws, 1002)


# -- UTF-8: close 1007 ----------------------------------------------------

BAD_UTF8 = {
    "ff": b'{"a":"\xff"}',
    "overlong-slash": b'{"a":"\xc0\xaf"}',
    "overlong-3byte": b'{"a":"\xe0\x80\xaf"}',
    "surrogate": b'{"a":"\xed\xa0\x80"}',
    "above-10ffff": b'{"a":"\xf4\x90\x80\x80"}',
    "lone-continuation": b'{"a":"\x80"}',
    "truncated-at-end": b'{"a":"x"}\xe2\x82',
}


@pytest.mark.parametrize("name", sorted(BAD_UTF8))
def test_invalid_utf8(ws, name):
    ws.send(frame(OP_TEXT, BAD_UTF8[name]))
    assert_closed_with(ws, 1007)


def test_invalid_utf8_split_across_fragments(ws):
    """Each fragment alone is a valid prefix; together they are not."""
    ws.send(frame(OP_TEXT, b'{"a":"\xe2\x82', fin=False)
            + frame(OP_CONT, b'(", "b":1}', fin=True))
    assert_closed_with(ws, 1007)


def test_invalid_utf8_fails_before_the_message_ends(ws):
    """A bad first fragment is refused at once, not when FIN arrives."""
    ws.send(frame(OP_TEXT, b'{"a":"\xff', fin=False))
    assert_closed_with(ws, 1007)


def test_truncated_utf8_at_last_fragment(ws):
    ws.send(frame(OP_TEXT, b'{"reqIdentifier":1001}', fin=False)
            + frame(OP_CONT, b"\xf0\x9f\x98", fin=True))
    assert_closed_with(ws, 1007)


def test_valid_utf8_split_across_fragments(ws):
    """A 4-byte character cut in three places is fine."""
    body = rawws.request_json(1001, {}, incr="\U0001F600\u20ac",
                              operation="op-x")
    body = body.replace(b"\\ud83d\\ude00\\u20ac",
                        "\U0001F600\u20ac".encode())
    cut = body.index(b"\xf0")
    ws.send(frame(OP_TEXT, body[:cut + 1], fin=False)
            + frame(OP_CONT, body[cut + 1:cut + 2], fin=False)
            + frame(OP_CONT, body[cut + 2:cut + 5], fin=False)
            + frame(OP_CONT, body[cut + 5:], fin=True))
    resp = ws.recv_json()
    assert resp["msgIncr"] == "\U0001F600\u20ac", resp
    assert resp["errCode"] == 0, resp


def test_invalid_utf8_close_reason(ws):
    ws.send(frame(OP_CLOSE, rawws.close_payload(1000, b"\xff\xfe")))
    assert_closed_with(ws, 1007)


def test_binary_is_not_utf8_checked(ws):
    ws.send(frame(OP_BINARY, b"\xff\xfe\xc0"))
    f = ws.recv_data()
    assert f.opcode != OP_CLOSE, f
    assert_usable(ws)


# -- size limits: close 1009 ----------------------------------------------

SMALL = "im_ws_max_message 4k; im_ws_max_frame 4k;"


def padded(incr, size):
    """A GetNewestSeq request of exactly `size` bytes (JSON whitespace)."""
    body = newest(incr)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_default_frame_limit(ws):
    """64k by default: a frame announcing more is refused on its header,
    before any payload is sent."""
    ws.send(frame(OP_TEXT, b"", length=65537))
    assert_closed_with(ws, 1009)


def test_default_limit_exactly(ws):
    """A 64k message is served: as one frame and as two fragments."""
    ws.send(frame(OP_TEXT, padded("d1", 65536)))
    assert_newest(ws.recv_json(), "d1")
    ws.send(fragments(OP_TEXT, split(padded("d2", 65536), 2)))
    assert_newest(ws.recv_json(), "d2")
    ws.send(fragments(OP_TEXT, split(padded("d3", 65537), 2)))
    assert_closed_with(ws, 1009)


def test_huge_announced_length(ws):
    ws.send(frame(OP_BINARY, b"", length=(1 << 62), length_bytes=8))
    assert_closed_with(ws, 1009)


def test_limits(own_stack):
    """One private stack with 4k limits for all the size checks."""
    _, ngx = own_stack(ws=SMALL)

    # exactly the limit, as one frame and as fragments: served
    with login(ngx) as ws:
        ws.send(frame(OP_TEXT, padded("at1", 4096)))
        assert_newest(ws.recv_json(), "at1")
        ws.send(fragments(OP_TEXT, split(padded("at2", 4096), 3)))
        assert_newest(ws.recv_json(), "at2")
        # control frames inside do not count toward the message
        body = padded("at3", 4096)
        ws.send(frame(OP_TEXT, body[:4000], fin=False)
                + frame(OP_PING, b"p" * 125)
                + frame(OP_CONT, body[4000:]))
        assert ws.recv_frame().opcode == OP_PONG
        assert_newest(ws.recv_json(), "at3")

    # one frame over the frame limit
    with login(ngx) as ws:
        ws.send(frame(OP_TEXT, padded("big", 4097)))
        assert_closed_with(ws, 1009)

    # the frame limit also holds for a continuation frame
    with login(ngx) as ws:
        ws.send(frame(OP_TEXT, b"{", fin=False) + frame(OP_CONT, b" " * 4097))
        assert_closed_with(ws, 1009)

    # every fragment under the frame limit, the message over
    with login(ngx) as ws:
        ws.send(fragments(OP_TEXT, split(padded("big", 4500), 3)))
        assert_closed_with(ws, 1009)

    # binary messages have the same bound
    with login(ngx) as ws:
        ws.send(fragments(OP_BINARY, [b"\0" * 3000, b"\0" * 3000]))
        assert_closed_with(ws, 1009)

    # the header alone is enough to refuse: no payload ever sent
    with login(ngx) as ws:
        ws.send(frame(OP_TEXT, b"", length=5000))
        assert_closed_with(ws, 1009)


# -- input in pieces ------------------------------------------------------

def test_one_byte_at_a_time(stack):
    """Handshake and frames, each byte in its own TCP segment."""
    api = Api(stack)
    uid = uids(1)[0]
    api.register(uid)
    path = rawws.ws_path(uid, api.user_token(uid))
    first = fragments(OP_TEXT, split(newest("b1"), 3))
    with rawws.connect(stack.port, path, extra=first, pace=0.0005) as ws:
        assert ws.status == 101
        assert_newest(ws.recv_json(), "b1")
        ws.send(frame(OP_PING, b"pp") + frame(OP_TEXT, newest("b2")),
                pace=0.0005)
        f = ws.recv_frame()
        assert f.opcode == OP_PONG and f.payload == b"pp", f
        assert_newest(ws.recv_json(), "b2")
        ws.send(frame(OP_CLOSE, rawws.close_payload(1000)), pace=0.0005)
        assert ws.expect_close().close_code == 1000


def test_length_forms_and_many_requests_in_one_write(ws):
    """Payloads in the 7-, 16- and 64-bit length forms (a longer form than
    needed is legal for data frames), all in one write."""
    ws.send(frame(OP_TEXT, newest("l7"))
            + frame(OP_TEXT, padded("l16", 300))
            + frame(OP_TEXT, newest("l16x"), length_bytes=2)
            + frame(OP_TEXT, newest("l64x"), length_bytes=8))
    for incr in ("l7", "l16", "l16x", "l64x"):
        assert_newest(ws.recv_json(), incr)


def test_many_requests_in_one_write(ws):
    """More requests than may be in flight at once (64 by default): the
    rest waits, and every one is answered exactly once."""
    n = 300
    ws.send(b"".join(frame(OP_TEXT, newest("m%d" % i)) for i in range(n)))
    got = [ws.recv_json(timeout=10) for _ in range(n)]
    assert sorted(r["msgIncr"] for r in got) == \
        sorted("m%d" % i for i in range(n))
    assert all(r["errCode"] == 0 for r in got)
    assert_usable(ws)


# -- requests -------------------------------------------------------------

def test_unknown_req_identifier(ws):
    ws.send(frame(OP_TEXT, rawws.request_json(9999, {"x": 1}, incr="u1",
                                              operation="op-u1")))
    resp = ws.recv_json()
    assert resp["errCode"] == 1001, resp
    assert resp["reqIdentifier"] == 9999
    assert resp["operationID"] == "op-u1"
    assert resp["msgIncr"] == "u1"
    assert isinstance(resp["errMsg"], str)
    assert_usable(ws)


@pytest.mark.parametrize("text", [
    b"{", b"not json", b"[]", b"", b"null", b'"str"',
    b'{"reqIdentifier":"x","msgIncr":"1","operationID":"o","data":{}}',
    b'{"reqIdentifier":1001,"msgIncr":1,"operationID":"o","data":{}}',
    b'{"reqIdentifier":1001} trailing',
], ids=["open-brace", "words", "array", "empty", "null", "string",
        "reqid-string", "incr-int", "trailing"])
def test_malformed_json(ws, text):
    ws.send(frame(OP_TEXT, text))
    resp = ws.recv_json()
    assert resp["errCode"] == 1001, resp
    assert isinstance(resp["errMsg"], str) and resp["errMsg"]
    assert_usable(ws)


@pytest.mark.parametrize("text", [b'{"type":"ping"}',
                                  b' { "type" : "ping" } '])
def test_browser_ping(ws, text):
    ws.send(frame(OP_TEXT, text))
    f = ws.recv_frame()
    assert f.opcode == OP_TEXT, f
    assert f.json() == {"type": "pong"}
    assert_usable(ws)


# -- the server's heartbeat -----------------------------------------------

HEARTBEAT = "im_ws_ping_interval 1s; im_ws_timeout 1s;"


@pytest.fixture
def hb_stack(own_stack):
    return own_stack(ws=HEARTBEAT)[1]


def test_heartbeat_silent_client_is_closed(hb_stack):
    """A client that sends nothing gets a ping after ~1 s, and is closed
    (1001) once the pong is overdue, ~1 s later."""
    with login(hb_stack) as ws:
        t0 = time.monotonic()
        f = ws.recv_frame(timeout=3)
        assert f.opcode == OP_PING, f
        assert 0.7 <= time.monotonic() - t0 <= 1.8
        assert not f.masked and len(f.payload) <= 125
        f = ws.expect_close(timeout=3)
        assert f.close_code == 1001, f
        assert ws.skipped == []          # no second ping before the close
        assert 1.7 <= time.monotonic() - t0 <= 3.2


def test_heartbeat_pong_keeps_open(hb_stack):
    with login(hb_stack) as ws:
        pings = 0
        end = time.monotonic() + 4
        while time.monotonic() < end:
            try:
                f = ws.recv_frame(timeout=max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            assert f.opcode == OP_PING, f
            pings += 1
            ws.send(frame(OP_PONG, f.payload))
        assert pings >= 2
        assert_usable(ws)


def test_heartbeat_any_frame_counts(hb_stack):
    """A client that never pongs but keeps sending is not idle."""
    with login(hb_stack) as ws:
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            ws.send(frame(OP_TEXT, b'{"type":"ping"}'))
            f = ws.recv_data(pong=False)          # drops server pings
            assert f.opcode == OP_TEXT and f.json() == {"type": "pong"}, f
            time.sleep(0.4)
        assert_usable(ws)
