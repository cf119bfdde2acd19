"""Generators for the protocol fuzzer (t/test_protocol_fuzz.py).

Everything here is pure: no sockets, no clock.  Every case is made from a
random.Random seeded with a string ("<seed>/<stream>/<worker>/<session>"),
so one case can be regenerated on its own from the numbers printed in a
report, byte for byte (WebSocket mask keys included).

The grammar follows the real protocol:

- the request envelope {reqIdentifier, operationID, msgIncr, data} and
  the data of every reqIdentifier (docs/protocol.md), plus unknown ones;
- MsgData with its fields' types and documented bounds; seqRanges,
  conversations and conversation IDs (si_/sg_/sn_, own and others');
- the protobuf forms, encoded by a small schema-driven wire encoder built
  from ngx_im_module/im.proto (so a wrong type is encoded with its own
  wire type), then mutated: unknown and reserved fields, truncation,
  overlong varints, bad lengths, groups, byte flips;
- WebSocket framing (fragments, control frames, every protocol error of
  docs/protocol.md "Close codes");
- the handshake's query and headers;
- a body per REST endpoint (docs/api.md), with token and header variants.

Each generated item carries what the server must do with it (an Expect),
as far as the documents say: a reply (and, for untouched valid requests,
its errCode), a pong, or a close with given codes.

KNOWN lists defects the fuzzer found that are not fixed yet (none at
present): a case whose input hits one carries its key in .known, set by
a recogniser of such inputs, so a run can tell a new problem from a
reported one.

    python3 -c 'import fuzzgen as f; print(f.gen_session(1, "json", 0, 5,
        lambda t: f.Ctx("me", 1, ["p"], ["c"], ["a", "b"], t)).actions)'
"""

import base64
import hashlib
import hmac
import json
import os
import random
import re
import struct
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "ngx_im_module/im.proto")

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

MAX_FRAME = 64 * 1024            # im_ws_max_frame, im_ws_max_message
MAX_CONTENT = 16 * 1024          # im_max_content
REST_MAX_BODY = 1024 * 1024      # im_api_max_body

# errCodes the documents allow (docs/protocol.md, docs/api.md)
# (groups: 1201 no such group, 1203 not a member, 1204 dismissed, 1402/1403
# muted, for a sessionType 3 message or a pull of an sg_ conversation)
GROUP_CODES = {1201, 1203, 1204, 1402, 1403}
# (friends: 1301 yourself, 1302 blacklisted, 1303 not a friend, 1304
# already friends, 1305 application handled)
FRIEND_CODES = {1301, 1302, 1303, 1304, 1305}
WS_CODES = {0, 1001, 1002, 1010, 1101, 90004} | GROUP_CODES | FRIEND_CODES
REST_CODES = {0, 1001, 1002, 1004, 1010, 1101, 1102, 1501, 1502, 1503, 1504, 1506,
              1507, 90004} | GROUP_CODES | FRIEND_CODES
HANDSHAKE_CODES = {1101, 1501, 1502, 1503, 1504, 1506, 1507, 1602}
KNOWN_REQ = (1001, 1002, 1003, 1005, 1006, 2003, 2004, 2005)
WS_CONTENT_TYPES = list(range(101, 113)) + [114]


def rng_for(seed, *path):
    """The generator of one case: str seeds hash with SHA-512, so this is
    stable across processes and Python's hash randomization."""
    return random.Random("/".join(str(p) for p in (seed,) + path))


# ---------------------------------------------------------------------------
# values


class Raw:
    """A JSON token written verbatim (may be invalid JSON)."""

    __slots__ = ("b",)

    def __init__(self, b):
        self.b = b if isinstance(b, bytes) else b.encode()

    def __repr__(self):
        return "Raw(%r)" % self.b[:60]


class Obj:
    """A JSON object as ordered pairs: duplicate keys allowed."""

    __slots__ = ("pairs",)

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __repr__(self):
        return "Obj(%r)" % self.pairs[:5]


INTS = [0, 1, -1, 2, 7, 100, 101, 1000, 1001, 1003, 1400, 65535, 65536,
        2 ** 31 - 1, 2 ** 31, -2 ** 31, -2 ** 31 - 1, 2 ** 32, 2 ** 32 + 1,
        2 ** 53 - 1, 2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 2 ** 63,
        2 ** 64 - 1, 2 ** 64, 10 ** 30, -10 ** 30]
FLOATS = [0.0, -0.0, 1.0, 1.5, -1.5, 101.0, 1e308, -1e308, 5e-324,
          2.0 ** 53, 9.2e18, 3.0e10]
RAW_NUMS = [b"1e999", b"-1e999", b"-0", b"1E2", b"1.0e+2", b"0.1e-400",
            b"123456789012345678901234567890", b"-123456789012345678901",
            b"00", b"01", b"+1", b".5", b"1.", b"0x10", b"NaN",
            b"Infinity", b"-Infinity", b"1e", b"--1", b"1_000", b"true1",
            b"nul", b"9" * 400]
LENS = [63, 64, 65, 127, 128, 129, 254, 255, 256, 1023, 1024, 1025, 4095,
        4096, 4097, 16383, 16384, 16385, 32767, 32768, 32769]
ODD_STRINGS = ["", " ", "a", "0", "1", "-1", "9223372036854775808", "true",
               "null", "{}", "[]", '{"content":"x"}', "h\u00e9llo",
               "\u65e5\u672c\u8a9e", "\U0001F600", "\u202egnp.exe",
               "a\u0000b", "\u0000", "\u0001\u001f\u007f", '"\\/\b\f\n\r\t',
               "\ud800", "\udfff", "\ufeff", "\uffff", "x" * 10,
               "../../etc/passwd", "%00%ff", "si_", "sg_", "sn_", "_",
               "a_b", "a b", "a\r\nb", "<script>", "\\u0000"]
BAD_BYTES = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
             b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xfe\xfe"]


def pick(r, seq):
    return seq[r.randrange(len(seq))]


def gen_int(r):
    x = r.random()
    if x < 0.55:
        return pick(r, INTS)
    if x < 0.8:
        return r.randint(-5, 200)
    return r.getrandbits(r.choice((8, 31, 32, 53, 63, 64, 70))) * \
        r.choice((1, -1))


def gen_long_string(r, n=None):
    n = pick(r, LENS) if n is None else n
    ch = r.choice(("x", "x", "\u00e9", "\u65e5", "\U0001F600"))
    if ch == "x":
        return "x" * n
    return ch * max(1, n // len(ch.encode()))


def gen_string(r, ctx=None):
    x = r.random()
    if x < 0.35 and ctx is not None:
        return pick(r, ctx.strings())
    if x < 0.7:
        return pick(r, ODD_STRINGS)
    if x < 0.9:
        return gen_long_string(r)
    if x < 0.97:
        return "".join(chr(r.randrange(1, 0x3000)) for _ in
                       range(r.randrange(1, 20)))
    # invalid UTF-8 inside a string
    return b"ok" + pick(r, BAD_BYTES) + b"ok"


def deep_raw(r, n=None):
    n = n or r.choice((63, 64, 65, 100, 1000, 10000, 30000))
    kind = r.randrange(4)
    if kind == 0:
        return Raw(b"[" * n + b"]" * n)
    if kind == 1:
        return Raw(b'{"a":' * n + b"1" + b"}" * n)
    if kind == 2:
        return Raw(b"[" * n)                               # unbalanced
    return Raw(b'[{"x":' * (n // 2) + b"null" + b"}]" * (n // 2))


def deep_tree(n):
    v = 1
    for _ in range(n):
        v = [v]
    return v


def gen_any(r, ctx=None, depth=0):
    x = r.random()
    if x < 0.2:
        return gen_int(r)
    if x < 0.27:
        return pick(r, FLOATS)
    if x < 0.32:
        return Raw(pick(r, RAW_NUMS))
    if x < 0.55:
        return gen_string(r, ctx)
    if x < 0.62:
        return r.choice((True, False))
    if x < 0.67:
        return None
    if x < 0.8 and depth < 4:
        return [gen_any(r, ctx, depth + 1) for _ in range(r.randrange(4))]
    if x < 0.92 and depth < 4:
        return {gen_key(r): gen_any(r, ctx, depth + 1)
                for _ in range(r.randrange(4))}
    if x < 0.97:
        return deep_raw(r)
    return deep_tree(r.choice((10, 63, 64, 65, 70)))


FIELD_NAMES = ["reqIdentifier", "operationID", "msgIncr", "data", "sendID",
               "recvID", "groupID", "clientMsgID", "serverMsgID",
               "senderPlatformID", "senderNickname", "senderFaceURL",
               "sessionType", "msgFrom", "contentType", "content", "seq",
               "sendTime", "createTime", "status", "options",
               "offlinePushInfo", "atUserIDList", "ex", "seqRanges",
               "conversationID", "begin", "end", "num", "conversations",
               "seqs", "conversationIDs", "userID", "isBackground", "type",
               "token", "userIDs", "platformID", "users", "recvIDs",
               "isOnlineOnly", "notOfflinePush", "pushClass", "secret",
               "nickname", "faceURL", "Msgs", "isEnd"]


def gen_key(r):
    x = r.random()
    if x < 0.6:
        return pick(r, FIELD_NAMES)
    if x < 0.8:
        return pick(r, ["", "a", "\u0000", "x" * 300, "\u00e9",
                        "reqidentifier", "REQIDENTIFIER", "data "])
    return "k%d" % r.randrange(1000)


# ---------------------------------------------------------------------------
# JSON text of our making


_ESC = re.compile(rb'[\\"\x00-\x1f]')


def _esc_bytes(b):
    return b'"' + _ESC.sub(lambda m: b"\\u%04x" % m.group()[0]
                           if m.group()[0] < 0x20 else b"\\" + m.group(),
                           b) + b'"'


def _str(s, ascii_only):
    if isinstance(s, (bytes, bytearray)):
        return _esc_bytes(bytes(s))
    if not ascii_only:
        try:
            return json.dumps(s, ensure_ascii=False).encode()
        except UnicodeEncodeError:                  # a lone surrogate
            pass
    return json.dumps(s).encode()


def dumps(v, ascii_only=False, space=False):
    """JSON bytes for a tree of dict/Obj/list/str/bytes/int/float/bool/None/
    Raw.  bytes inside strings are written raw (may be invalid UTF-8)."""
    sep, colon = (b", ", b": ") if space else (b",", b":")
    if isinstance(v, Raw):
        return v.b
    if v is None:
        return b"null"
    if v is True:
        return b"true"
    if v is False:
        return b"false"
    if isinstance(v, int):
        return str(v).encode()
    if isinstance(v, float):
        return json.dumps(v).encode()
    if isinstance(v, (str, bytes, bytearray)):
        return _str(v, ascii_only)
    if isinstance(v, (dict, Obj)):
        items = v.pairs if isinstance(v, Obj) else v.items()
        return b"{" + sep.join(_str(k, ascii_only) + colon +
                               dumps(x, ascii_only, space)
                               for k, x in items) + b"}"
    if isinstance(v, (list, tuple)):
        return b"[" + sep.join(dumps(x, ascii_only, space) for x in v) + b"]"
    raise TypeError(type(v))


def utf8_ok(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------------------
# tree mutation


def _paths(v, path=(), out=None, limit=400):
    """(path, value) of every node, containers included."""
    if out is None:
        out = []
    if len(out) >= limit:
        return out
    out.append((path, v))
    if isinstance(v, dict):
        for k in list(v)[:50]:
            _paths(v[k], path + (k,), out, limit)
    elif isinstance(v, Obj):
        for i, (_, x) in enumerate(v.pairs[:50]):
            _paths(x, path + (("#", i),), out, limit)
    elif isinstance(v, list):
        for i, x in enumerate(v[:20]):
            _paths(x, path + (i,), out, limit)
    return out


def _get_parent(root, path):
    cur = root
    for p in path[:-1]:
        cur = cur.pairs[p[1]][1] if isinstance(p, tuple) else cur[p]
    return cur


def _set(root, path, value):
    if not path:
        return value
    parent = _get_parent(root, path)
    p = path[-1]
    if isinstance(p, tuple):
        parent.pairs[p[1]] = (parent.pairs[p[1]][0], value)
    else:
        parent[p] = value
    return root


def _delete(root, path):
    if not path:
        return root
    parent = _get_parent(root, path)
    p = path[-1]
    if isinstance(p, tuple):
        del parent.pairs[p[1]]
    elif isinstance(parent, dict):
        del parent[p]
    else:
        del parent[p]
    return root


def wrong_type(r, v, ctx):
    """A value of another JSON type than v."""
    options = []
    if not isinstance(v, int) or isinstance(v, bool):
        options += [lambda: gen_int(r), lambda: pick(r, FLOATS)]
    if not isinstance(v, str):
        options += [lambda: str(v)[:50] if not isinstance(v, (dict, list))
                    else "x", lambda: gen_string(r, ctx)]
    if not isinstance(v, bool):
        options.append(lambda: r.choice((True, False)))
    if not isinstance(v, list):
        options.append(lambda: [v] if not isinstance(v, (dict, Obj)) else [])
    if not isinstance(v, dict):
        options.append(lambda: {"v": v} if not isinstance(v, Obj) else {})
    options += [lambda: None, lambda: Raw(pick(r, RAW_NUMS))]
    return pick(r, options)()


def mutate_tree(r, tree, ctx, n=1):
    """n structural mutations of a JSON-like tree (copied first)."""
    tree = json_copy(tree)
    for _ in range(n):
        nodes = _paths(tree)
        path, v = pick(r, nodes)
        op = r.randrange(12)
        if op == 0 and path:
            tree = _delete(tree, path)
        elif op == 1:
            tree = _set(tree, path, wrong_type(r, v, ctx))
        elif op == 2:
            tree = _set(tree, path, gen_any(r, ctx))
        elif op == 3:
            tree = _set(tree, path, gen_int(r) if r.random() < 0.7
                        else pick(r, FLOATS))
        elif op == 4:
            tree = _set(tree, path, gen_string(r, ctx))
        elif op == 5 and isinstance(v, dict):
            v[gen_key(r)] = gen_any(r, ctx)
        elif op == 6 and isinstance(v, dict) and v:
            k = pick(r, list(v))
            pairs = list(v.items()) + [(k, r.choice((gen_any(r, ctx),
                                                     v[k])))]
            if r.random() < 0.5:
                pairs.insert(0, (k, gen_any(r, ctx)))
            tree = _set(tree, path, Obj(pairs))
        elif op == 7 and isinstance(v, list) and v:
            n_ = r.choice((2, 99, 100, 101, 999, 1000, 1001, 1500))
            # bounded: a list of big elements only needs to pass 64 KiB
            # (WebSocket) or 1 MiB (REST) once, not by megabytes
            each = len(dumps(v[0])) + 1
            n_ = min(n_, max(2, 300000 // each))
            tree = _set(tree, path, [json_copy(v[i % len(v)])
                                     for i in range(n_)])
        elif op == 8:
            tree = _set(tree, path, None)
        elif op == 9:
            tree = _set(tree, path, deep_raw(r) if r.random() < 0.5
                        else deep_tree(r.choice((63, 64, 65))))
        elif op == 10 and isinstance(v, str):
            tree = _set(tree, path, v + pick(r, ["\u0000", "\u0000x", "_",
                                                 " ", "\ud800", "\U0001F600"])
                        if r.random() < 0.7
                        else v.encode("utf-8", "surrogatepass") +
                        pick(r, BAD_BYTES))
        elif op == 11 and isinstance(v, (str, int)) and \
                not isinstance(v, bool):
            tree = _set(tree, path, str(v) if isinstance(v, int) else
                        gen_long_string(r))
        else:
            tree = _set(tree, path, wrong_type(r, v, ctx))
    return tree


def json_copy(v):
    if isinstance(v, dict):
        return {k: json_copy(x) for k, x in v.items()}
    if isinstance(v, Obj):
        return Obj((k, json_copy(x)) for k, x in v.pairs)
    if isinstance(v, list):
        return [json_copy(x) for x in v]
    return v


TRAILERS = [b' "', b'"', b' "abc', b' x', b' "\\', b" 1", b" {", b" tru",
            b" ,", b" null", b" //", b" /*"]


def byte_mutate(r, b, n=None):
    """Byte-level damage: flips, inserts, deletes, truncation, splices."""
    b = bytearray(b)
    if r.random() < 0.1:                    # garbage after a whole value
        return bytes(b) + pick(r, TRAILERS)
    for _ in range(n or r.randint(1, 4)):
        op = r.randrange(7)
        i = r.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << r.randrange(8)
        elif op == 1:
            b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 4)))
        elif op == 2 and b:
            del b[i:i + r.randint(1, 8)]
        elif op == 3:
            del b[i:]
        elif op == 4:
            b[i:i] = pick(r, [b"{", b"}", b"[", b"]", b'"', b"\\", b",",
                              b":", b"\x00", b"\\u0000", b"\\ud800", b"null",
                              b"1e999", b"-", b"\xff", b"\xc3"])
        elif op == 5 and b:
            j = r.randrange(len(b))
            b[i:i] = b[j:j + r.randint(1, 64)]
        else:                                 # whitespace, RFC 8259's or not
            b[i:i] = pick(r, [b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c",
                              b"\xc2\xa0", b"\xef\xbb\xbf"])
    return bytes(b)


# ---------------------------------------------------------------------------
# context: the users and conversations a case may name


def single_conv(a, b):
    a, b = sorted([a, b], key=lambda s: s.encode())
    return "si_%s_%s" % (a, b)


class Ctx:
    """What one fuzzing client knows: itself, registered peers, cold
    (registered, never online) users, unregistered IDs, and the observers
    whose conversation it must not read."""

    def __init__(self, me, platform, peers, cold, observers, tag):
        self.me = me
        self.platform = platform
        self.peers = list(peers)
        self.cold = list(cold)
        self.observers = list(observers)
        self.tag = tag              # unique per session: clientMsgIDs
        self.unregistered = ["nobody-" + tag, "zz" + tag[-20:]]
        self.counter = 0
        self._strings = None

    def uniq(self, prefix="c"):
        self.counter += 1
        return "%s-%s-%d" % (prefix, self.tag, self.counter)

    def own_convs(self):
        if getattr(self, "_own", None) is None:
            self._own = [single_conv(self.me, p)
                         for p in self.peers + self.cold]
        return self._own

    def foreign_convs(self):
        a, b = self.observers
        return [single_conv(a, b)]

    def convs(self, r):
        x = r.random()
        if x < 0.5:
            return pick(r, self.own_convs())
        if x < 0.6:
            return pick(r, self.foreign_convs())
        a, b = r.choice(self.peers), r.choice(self.cold + self.observers)
        return pick(r, [
            "si_%s_%s" % (self.me, self.me),
            "si_%s_%s" % tuple(sorted([self.me, a])[::-1]),   # wrong order
            "sn_%s_%s" % ("system", self.me), "sn_%s_%s" % (self.me, a),
            "sn_%s_%s" % (a, b), "sg_g1", "sg_", "si_", "si_%s" % self.me,
            "si_%s_%s_x" % (self.me, a), "si__%s" % self.me,
            "xx_%s_%s" % (self.me, a), "", "si_%s_%s" % (a, b),
            single_conv(self.me, self.unregistered[0]),
            "si_%s_%s\u0000" % (self.me, a), gen_long_string(r, 200)])

    def users(self, r):
        x = r.random()
        if x < 0.4:
            return pick(r, self.peers)
        if x < 0.55:
            return self.me
        if x < 0.7:
            return pick(r, self.cold)
        if x < 0.8:
            return pick(r, self.unregistered)
        return pick(r, ["", "a_b", "a b", "x" * 64, "x" * 65, "\u00e9",
                        "a\u0000", "@", ".", "+-", "-" * 64, "A.b@c+d-e"])

    def strings(self):
        if self._strings is None:
            self._strings = [self.me] + self.peers + self.cold + \
                self.unregistered + self.own_convs()[:2] + \
                self.foreign_convs()
        return self._strings


# ---------------------------------------------------------------------------
# message content and MsgData


CONTENTS = {
    101: {"content": "hi"},
    102: {"sourcePicture": {"url": "http://x/p.png", "width": 1,
                            "height": 1, "size": 10, "uuid": "u",
                            "type": "png"},
          "bigPicture": {}, "sourcePath": ""},
    103: {"sourceUrl": "http://x/a.mp3", "duration": 3, "dataSize": 1},
    104: {"videoUrl": "http://x/v.mp4", "duration": 3, "videoSize": 5},
    105: {"sourceUrl": "http://x/f", "fileName": "f.txt", "fileSize": 1},
    106: {"text": "@x hi", "atUserList": ["x"], "isAtSelf": False},
    107: {"title": "", "multiMessage": [{}], "abstractList": ["a"]},
    108: {"userID": "x", "nickname": "n"},
    109: {"longitude": 1.5, "latitude": -2},
    110: {"data": "d", "description": ""},
    111: {},
    112: {},
    114: {"text": "q", "quoteMessage": {}},
    1400: {"notificationName": "n", "text": "t", "mixType": 0,
           "notificationType": 1, "pictureElem": {}, "soundElem": {},
           "videoElem": {}, "fileElem": {}, "ex": ""},
}


def gen_content_obj(r, ctx, ctype):
    base = json_copy(CONTENTS.get(ctype, CONTENTS[101]))
    if r.random() < 0.3:
        base = mutate_tree(r, base, ctx, r.randint(1, 3))
    return base


def gen_msgdata(r, ctx, pristine):
    """(tree, valid): a MsgData as a user sends it (1003)."""
    ctype = pick(r, WS_CONTENT_TYPES)
    m = {"sendID": ctx.me, "recvID": pick(r, ctx.peers + ctx.cold),
         "sessionType": 1, "contentType": ctype,
         "clientMsgID": ctx.uniq("m"),
         "content": dumps(CONTENTS[ctype]).decode()}
    opt = {"groupID": "", "serverMsgID": "", "senderPlatformID": ctx.platform,
           "senderNickname": "nick", "senderFaceURL": "http://x/f.png",
           "msgFrom": 100, "seq": 0, "sendTime": 0, "createTime": 0,
           "status": 1, "options": {"history": True, "unreadCount": False},
           "offlinePushInfo": {"title": "t", "desc": "", "ex": "",
                               "iOSPushSound": "", "iOSBadgeCount": False},
           "atUserIDList": [pick(r, ctx.peers)], "ex": ""}
    for k, v in opt.items():
        if r.random() < 0.3:
            m[k] = v
    if r.random() < 0.1:
        del m["clientMsgID"]
    if pristine:
        return m, True
    # targeted changes near the documented bounds, then generic ones
    for _ in range(r.randint(0, 2)):
        field = pick(r, list(MSG_BOUNDS))
        m[field] = MSG_BOUNDS[field](r, ctx)
    if r.random() < 0.4:
        m["content"] = content_variant(r, ctx, m.get("contentType"))
    if r.random() < 0.6:
        m = mutate_tree(r, m, ctx, r.randint(1, 3))
    return m, False


def _near(n):
    return lambda r, ctx: gen_long_string(r, n + r.choice((-1, 0, 1)))


MSG_BOUNDS = {
    "groupID": _near(64), "clientMsgID": _near(128),
    "serverMsgID": _near(128), "senderNickname": _near(255),
    "senderFaceURL": _near(1024), "ex": _near(4096),
    "senderPlatformID": lambda r, c: r.choice((0, 1, 10, 11, 12, -1,
                                               2 ** 31, 1.0)),
    "sessionType": lambda r, c: r.choice((0, 1, 2, 3, 4, 5, -1, 2 ** 31)),
    "msgFrom": lambda r, c: r.choice((100, 200, 0, -1, 2 ** 31 - 1, 2 ** 31,
                                      2 ** 53 + 1)),
    "contentType": lambda r, c: r.choice((101, 113, 115, 118, 1400, 1000,
                                          0, -101, 2 ** 31, 101.5, "101")),
    "status": lambda r, c: r.choice((0, 2, 2 ** 31, -2 ** 31 - 1, 2 ** 63)),
    "seq": lambda r, c: gen_int(r), "sendTime": lambda r, c: gen_int(r),
    "createTime": lambda r, c: gen_int(r),
    "options": lambda r, c: gen_options(r),
    "offlinePushInfo": lambda r, c: {
        "title": gen_long_string(r, r.choice((255, 256))),
        "desc": gen_long_string(r, r.choice((1024, 1025))),
        "ex": gen_long_string(r, r.choice((4096, 4097))),
        "iOSPushSound": gen_long_string(r, r.choice((255, 256))),
        "iOSBadgeCount": r.choice((True, False, 1, "true"))},
    "atUserIDList": lambda r, c: gen_at_list(r, c),
    "sendID": lambda r, c: c.users(r), "recvID": lambda r, c: c.users(r),
}


def gen_options(r):
    n = r.choice((0, 1, 15, 16, 17, 100))
    out = {}
    for i in range(n):
        k = r.choice(("history", "k%d" % i, "x" * 64 + str(i)[:0],
                      "x" * 65, "a-b%d" % i, "", "\u00e9%d" % i,
                      "a_%d" % i))
        out[k] = r.choice((True, False, True, 1, "true", None))
    return out


def gen_at_list(r, ctx):
    n = r.choice((0, 1, 2, 999, 1000, 1001, 1200))
    lst = [pick(r, ctx.peers) for _ in range(n)]
    if lst and r.random() < 0.3:
        lst[r.randrange(len(lst))] = ctx.users(r)
    return lst


def content_variant(r, ctx, ctype):
    x = r.random()
    ct = ctype if isinstance(ctype, int) and ctype in CONTENTS else 101
    if x < 0.3:
        return dumps(gen_content_obj(r, ctx, ct)).decode("utf-8", "replace")
    if x < 0.45:                         # around im_max_content
        body = {"content": ""}
        n = MAX_CONTENT + r.choice((-1, 0, 1, 100)) - len(dumps(body))
        body["content"] = "x" * max(1, n)
        return dumps(body).decode()
    if x < 0.55:
        return gen_content_obj(r, ctx, ct)   # an object, not a string
    if x < 0.65:
        return pick(r, ["", "not json", "{", "[]", "null", "1", '"s"',
                        '{"content":""}', '{"content":"a\\u0000b"}',
                        '{"content":"x"} trailing', '{"content":"x"} "',
                        '{"content":"x"}"abc', '{"content":"x"} "\\',
                        '{"content":"x"}{}', '{"content":"x"} /*'])
    if x < 0.75:
        return deep_raw(r).b.decode()
    return gen_any(r, ctx)


# ---------------------------------------------------------------------------
# the data of every request


def gen_seq_range(r, ctx, conv=None, sane=False):
    if sane:
        return {"conversationID": conv or pick(r, ctx.own_convs()),
                "begin": r.choice((0, 1)), "end": r.choice((1, 10, 100)),
                "num": r.choice((1, 10, 100))}
    return {"conversationID": conv or ctx.convs(r), "begin": gen_int(r),
            "end": gen_int(r), "num": gen_int(r)}


def gen_data(r, ctx, req_id, pristine):
    """(data tree, expected errCodes or None)."""
    own = ctx.own_convs()
    if req_id == 1001:
        return {}, {0}
    if req_id == 1002:
        if pristine:
            n = r.randint(1, min(5, len(own)))
            convs = r.sample(own, n)
            foreign = r.random() < 0.3
            if foreign:
                convs.append(pick(r, ctx.foreign_convs()))
            return ({"seqRanges": [gen_seq_range(r, ctx, c, True)
                                   for c in convs]},
                    {1002} if foreign else {0})
        n = r.choice((0, 1, 2, 3, 5, 99, 100, 101, 150))
        ranges = [gen_seq_range(r, ctx, sane=r.random() < 0.3)
                  for _ in range(n)]
        if ranges and r.random() < 0.2:
            ranges.append(json_copy(pick(r, ranges)))
        return {"seqRanges": ranges}, None
    if req_id == 1003:
        m, valid = gen_msgdata(r, ctx, pristine)
        return m, ({0} if valid else None)
    if req_id == 1005:
        if pristine:
            convs = r.sample(own, r.randint(1, min(4, len(own))))
            foreign = r.random() < 0.3
            if foreign:
                convs.append(pick(r, ctx.foreign_convs()))
            return ({"conversations": [
                {"conversationID": c,
                 "seqs": sorted(r.sample(range(1, 50), r.randint(0, 5)))}
                for c in convs]}, {1002} if foreign else {0})
        n = r.choice((0, 1, 2, 5, 100, 101))
        convs = []
        big = r.random() < 0.3            # about 1000 seqs in all
        for j in range(n):
            k = r.choice((0, 1, 3, 10))
            if big and j == 0:
                k = r.choice((999, 1000, 1001)) - 3 * (n - 1)
            seqs = [gen_int(r) for _ in range(min(k, 5))]
            s0 = r.randint(-2, 5)
            seqs += list(range(s0, s0 + max(0, k - 5)))
            convs.append({"conversationID": ctx.convs(r), "seqs": seqs})
        if big:
            for c in convs[1:]:
                c["seqs"] = [1, 2, 3]
        return {"conversations": convs}, None
    if req_id == 1006:
        if pristine:
            ids = r.sample(own, r.randint(1, len(own)))
            foreign = r.random() < 0.3
            if foreign:
                ids.append(pick(r, ctx.foreign_convs()))
            return {"conversationIDs": ids}, {1002} if foreign else {0}
        n = r.choice((0, 1, 2, 10, 100, 101, 1000, 1001, 5000))
        return {"conversationIDs": [ctx.convs(r) for _ in range(n)]}, None
    if req_id == 2003:
        return {}, {0}
    if req_id == 2004:
        if pristine:
            x = r.random()
            if x < 0.2:
                return {"userID": pick(r, ctx.peers),
                        "isBackground": r.choice((True, False))}, {1002}
            d = {"isBackground": r.choice((True, False))}
            if x < 0.7:
                d["userID"] = ctx.me
            return d, {0}
        return {"userID": ctx.users(r), "isBackground": gen_any(r, ctx)}, None
    if req_id == 2005:
        # only users that never connect are watched (the cold users get
        # tokens and log in elsewhere in the fuzz): no push comes, so
        # every 2005 frame is an answer
        never = ["%s-never%d" % (ctx.me, k) for k in range(4)]
        if pristine:
            d = {}
            for key in ("subscribeUserID", "unsubscribeUserID"):
                if r.random() < 0.6:
                    d[key] = r.sample(never, r.randint(0, 3))
            return d, {0}
        n = r.choice((0, 1, 2, 10, 1000, 1001, 5000))
        junk = never + ["a_b", "", "x" * 65, 7, None, [], "a:b"]
        key = r.choice(("subscribeUserID", "unsubscribeUserID"))
        if r.random() < 0.3:
            return {key: gen_any(r, ctx)}, None
        return {key: [r.choice(junk) for _ in range(n)]}, None
    # an unknown reqIdentifier: the data does not matter
    return gen_any(r, ctx), {1001}


UNKNOWN_REQ = [0, 1, 1000, 1004, 1007, 2001, 2002, 2006, 3001, 9999, -1,
               -1001, 2 ** 31 - 1, -2 ** 31, 65536 + 1001, 4294967296 + 1001]


def gen_req_id(r):
    x = r.random()
    if x < 0.9:
        return r.choices(KNOWN_REQ, weights=(10, 12, 30, 10, 10, 1, 6, 4))[0]
    return pick(r, UNKNOWN_REQ)


# ---------------------------------------------------------------------------
# expectations


class Reply:
    """One answer the server owes: its encoding and what it must say."""

    def __init__(self, binary, req_id=None, incr=None, op=None, codes=None,
                 nonzero=False, ping=False, maybe_ping=False):
        self.binary = binary
        self.req_id = req_id          # echo checks, when the envelope is clean
        self.incr = incr
        self.op = op
        self.codes = codes            # exact expectation (untouched request)
        self.nonzero = nonzero        # the request is known to be invalid
        self.ping = ping              # {"type":"pong"} expected
        self.maybe_ping = maybe_ping  # a pong or an error reply
        self.gen_req_id = req_id      # as generated (req_id may be unset)
        self.content_bad = False      # a send whose content is not JSON
        self.known = None             # a KNOWN defect explains a success


class Expect:
    """What one action must produce.  close: None (stays open) or the set
    of acceptable close codes (then EOF); hangup: we dropped the TCP
    connection ourselves."""

    def __init__(self, replies=(), pongs=(), close=None, hangup=False,
                 maybe_pongs=()):
        self.replies = list(replies)
        self.pongs = list(pongs)
        self.maybe_pongs = list(maybe_pongs)   # may come before the close
        self.close = close
        self.hangup = hangup


class Action:
    """Bytes to send (chunks, each optionally paced byte by byte) and what
    must come back."""

    def __init__(self, name, chunks, expect, note=""):
        self.name = name
        self.chunks = chunks          # [(bytes, pace)]
        self.expect = expect
        self.note = note

    @property
    def wire(self):
        return b"".join(c for c, _ in self.chunks)


# ---------------------------------------------------------------------------
# JSON requests (text frames)


def gen_json_request(r, ctx):
    """(payload bytes, Reply or None, close codes or None, note)."""
    x = r.random()
    if x < 0.03:
        return gen_browser_ping(r)
    req_id = gen_req_id(r)
    pristine = r.random() < 0.3
    data, codes = gen_data(r, ctx, req_id, pristine)
    incr = ctx.uniq("i")
    op = "op-" + incr
    env = {"reqIdentifier": req_id, "operationID": op, "msgIncr": incr,
           "data": data}
    items = list(env.items())
    if r.random() < 0.2:
        r.shuffle(items)
    env = dict(items)
    clean = True
    if not pristine and r.random() < 0.3:
        env = mutate_envelope(r, ctx, env)
        clean = False
        codes = None
    payload = dumps(env, ascii_only=r.random() < 0.3,
                    space=r.random() < 0.2)
    raw_mutated = False
    if not pristine and r.random() < 0.12:
        payload = byte_mutate(r, payload)
        clean, codes, raw_mutated = False, None, True
    note = "req %s%s%s" % (req_id, " pristine" if pristine else "",
                           " raw-mutated" if raw_mutated else "")
    reply = Reply(False, req_id if clean else None,
                  incr if clean else None, op if clean else None, codes,
                  nonzero=(req_id not in KNOWN_REQ and clean))
    reply.gen_req_id = req_id
    if req_id == 1003 and clean:
        reply.content_bad = content_bad(data)
    return text_expect(payload, reply, note)


def text_expect(payload, reply, note):
    """A text message must be valid UTF-8 and within the message bound;
    otherwise the close code follows from the bytes."""
    ok = utf8_ok(payload)
    big = len(payload) > MAX_FRAME
    if not ok and big:
        return payload, None, {1007, 1009}, note + " bad-utf8 oversize"
    if not ok:
        return payload, None, {1007}, note + " bad-utf8"
    if big:
        return payload, None, {1009}, note + " oversize"
    if reply is not None and not reply.ping and not reply.maybe_ping:
        ok, v = syntax(payload)
        if ok is False:
            # nothing can be echoed from text that is not JSON
            reply.req_id = reply.incr = reply.op = None
            reply.codes = None
        if ok is False or (ok and not isinstance(v, dict)):
            reply.nonzero = True
        elif ok and not isinstance(v, Dups):
            rid = v.get("reqIdentifier")
            if rid is None or isinstance(rid, (str, list, dict, bool)):
                reply.nonzero = True
            elif type(rid) is int and rid not in KNOWN_REQ:
                reply.nonzero = True
    return payload, reply, None, note


JSON_MAX_DEPTH = 64          # NGX_HTTP_IM_JSON_MAX_DEPTH: deeper is "invalid"
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_DEPTH = bytes.maketrans(b"[{]}", b"\x01\x01\x02\x02")


def json_depth(b):
    """Nesting depth of JSON text (strings skipped)."""
    body = _STRINGS.sub(b"", b)
    depth = top = 0
    for c in body.translate(_DEPTH):
        if c == 1:
            depth += 1
            if depth > top:
                top = depth
        elif c == 2:
            depth -= 1
    return top


class Dups(dict):
    """A JSON object that had a key twice."""


def _pairs(pairs):
    d = dict(pairs)
    return Dups(d) if len(d) != len(pairs) else d


# defects found and not fixed yet: key -> description (see the top)
KNOWN = {}


def content_bad(data):
    """True when a MsgData's content is a string that is not a JSON object
    (docs/protocol.md: content holds the content's JSON object), so the
    send must not succeed."""
    if not isinstance(data, dict) or not isinstance(data.get("content"),
                                                    str):
        return False
    try:
        text = data["content"].encode()
    except UnicodeEncodeError:                     # a lone surrogate
        return False
    ok, v = syntax(text)
    return not ok or not isinstance(v, dict)


def syntax(b):
    """(True, value) for JSON text the server reads (RFC 8259: no
    NaN/Infinity; nesting at most 64; duplicate keys allowed: objects with
    them come back as Dups), (False, None) for text it must refuse as
    JSON."""
    def bad_const(c):
        raise ValueError("constant %s" % c)
    try:
        v = json.loads(b.decode("utf-8"), parse_constant=bad_const,
                       object_pairs_hook=_pairs)
    except (RecursionError, ValueError):
        return False, None
    if json_depth(b) > JSON_MAX_DEPTH:
        return False, None
    return True, v


def gen_browser_ping(r):
    exact = [b'{"type":"ping"}', b' { "type" : "ping" } ',
             b'{"type":"ping"}\n']
    fuzzy = [b'{"type":"PING"}', b'{"type":"ping","x":1}',
             b'{"type":"ping"', b'{"type":"pong"}', b'{"type":null}',
             b'{"type":"ping","type":"ping"}', b'{"Type":"ping"}',
             b'{"type":"ping\\u0000"}', b'{"type":1}']
    if r.random() < 0.5:
        return pick(r, exact), Reply(False, ping=True), None, "browser ping"
    return (pick(r, fuzzy), Reply(False, maybe_ping=True), None,
            "browser ping variant")


def mutate_envelope(r, ctx, env):
    env = dict(env)
    for _ in range(r.randint(1, 3)):
        op = r.randrange(8)
        key = pick(r, ["reqIdentifier", "operationID", "msgIncr", "data"])
        if op == 0:
            env.pop(key, None)
        elif op == 1:
            env[key] = wrong_type(r, env.get(key), ctx)
        elif op == 2:
            env[key] = pick(r, [
                1001.0, 1001.5, "1001", 2 ** 31 + 1001, 2 ** 64 + 1001,
                -1001, True, None, Raw(b"1e3"), Raw(b"1001e0"),
                gen_long_string(r, r.choice((100, 1000, 5000, 60000))),
                "a\u0000b", b"\xff", "", {}, []])
        elif op == 3:
            env[gen_key(r)] = gen_any(r, ctx)
        elif op == 4:
            return Obj(list(env.items()) +
                       [(key, gen_any(r, ctx) if r.random() < 0.5
                         else env.get(key))])
        elif op == 5:
            return pick(r, [[env], "s", 1, None, Raw(b""), Raw(b"{}"),
                            Raw(b"{}{}"), deep_raw(r)])
        elif op == 6:
            env["data"] = pick(r, [[], "x", 1, None, True, deep_raw(r),
                                   [env.get("data")]])
        else:
            env = mutate_tree(r, env, ctx, 1)
            if not isinstance(env, dict):
                return env
    return env


# ---------------------------------------------------------------------------
# protobuf: a schema from im.proto and a wire encoder that also writes
# wrong things


def load_schema(path=PROTO):
    """{message: {"fields": {name: (number, type, label, (k, v))},
    "reserved": [numbers]}} from the .proto (flat messages only)."""
    with open(path) as f:
        text = re.sub(r"//[^\n]*", "", f.read())
    schema = {}
    field_re = re.compile(r"(repeated\s+)?(map\s*<\s*(\w+)\s*,\s*(\w+)\s*>|"
                          r"\w+)\s+(\w+)\s*=\s*(\d+)\s*;")
    for m in re.finditer(r"message\s+(\w+)\s*\{([^{}]*)\}", text):
        fields, reserved = {}, []
        for line in m.group(2).split(";"):
            line = line.strip()
            if not line:
                continue
            if line.startswith("reserved"):
                reserved += [int(x) for x in re.findall(r"\d+", line)]
                continue
            fm = field_re.match(line + ";")
            assert fm, "cannot read %r in %s" % (line, m.group(1))
            if fm.group(3):
                fields[fm.group(5)] = (int(fm.group(6)), "map", "map",
                                       (fm.group(3), fm.group(4)))
            else:
                fields[fm.group(5)] = (int(fm.group(6)), fm.group(2),
                                       "repeated" if fm.group(1)
                                       else "single", None)
        schema[m.group(1)] = {"fields": fields, "reserved": reserved}
    return schema


SCHEMA = load_schema()
REQ_MESSAGE = {1001: "GetMaxSeqReq", 1002: "PullMessageBySeqsReq",
               1003: "MsgData", 1005: "GetSeqMessageReq",
               1006: "GetConversationsHasReadAndMaxSeqReq",
               2003: "DelUserPushTokenReq", 2004: "SetAppBackgroundStatusReq",
               2005: "SubUserOnlineStatus"}
RESP_MESSAGE = {1001: "GetMaxSeqResp", 1002: "PullMessageBySeqsResp",
                1003: "SendMsgResp", 1005: "GetSeqMessageResp",
                1006: "GetConversationsHasReadAndMaxSeqResp",
                2003: "DelUserPushTokenResp",
                2004: "SetAppBackgroundStatusResp",
                2005: "SubUserOnlineStatusTips"}
INT_TYPES = {"int32", "int64", "uint32", "uint64", "sint32", "sint64",
             "bool"}


def varint(n):
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(num, wt):
    return varint((num << 3) | wt)


def ld(num, data):
    return tag(num, 2) + varint(len(data)) + data


def _pb_str(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return v.encode("utf-8", "surrogatepass")


def enc_natural(r, num, v, depth=0):
    """v written with the wire type its own type suggests."""
    if v is None:
        return b""
    if isinstance(v, bool):
        return tag(num, 0) + varint(int(v))
    if isinstance(v, int):
        return tag(num, 0) + varint(v)
    if isinstance(v, float):
        if r.random() < 0.5:
            return tag(num, 1) + struct.pack("<d", v)
        return tag(num, 5) + struct.pack("<f", max(-3e38, min(3e38, v)))
    if isinstance(v, (str, bytes, bytearray)):
        return ld(num, _pb_str(v))
    if isinstance(v, Raw):
        return ld(num, v.b)
    if isinstance(v, (list, tuple)):
        return b"".join(enc_natural(r, num, x, depth + 1) for x in v)
    if isinstance(v, (dict, Obj)):
        items = v.pairs if isinstance(v, Obj) else list(v.items())
        body = b"".join(enc_natural(r, i + 1, x, depth + 1)
                        for i, (_, x) in enumerate(items) if depth < 20)
        return ld(num, body)
    raise TypeError(type(v))


def enc_value(r, num, ftype, v, depth):
    if v is None:
        return b""
    if ftype in INT_TYPES:
        if isinstance(v, int):
            return tag(num, 0) + varint(int(v))
    elif ftype in ("string", "bytes"):
        if isinstance(v, (str, bytes, bytearray)):
            return ld(num, _pb_str(v))
    elif ftype in SCHEMA:
        if isinstance(v, (dict, Obj)):
            return ld(num, enc_message(r, ftype, v, depth + 1))
    return enc_natural(r, num, v, depth)


def enc_message(r, name, tree, depth=0):
    """The protobuf encoding of a JSON-like tree as message `name`; keys
    the message lacks become unknown (or reserved) fields, or are left
    out."""
    spec = SCHEMA[name]
    if not isinstance(tree, (dict, Obj)):
        return enc_natural(r, r.randint(1, 30), tree, depth)
    items = tree.pairs if isinstance(tree, Obj) else list(tree.items())
    out = []
    for key, v in items:
        f = spec["fields"].get(key)
        if f is None:
            if r.random() < 0.5:
                num = r.choice(spec["reserved"] + [7, 99, 1000, 2 ** 29 - 1]
                               if spec["reserved"] else
                               [7, 99, 1000, 2 ** 29 - 1])
                out.append(enc_natural(r, num, v, depth))
            continue
        num, ftype, label, kv = f
        if label == "map" and isinstance(v, (dict, Obj)):
            entries = v.pairs if isinstance(v, Obj) else v.items()
            for k, x in entries:
                out.append(ld(num, enc_value(r, 1, kv[0], k, depth) +
                              enc_value(r, 2, kv[1], x, depth)))
        elif label == "repeated" and isinstance(v, list):
            if ftype in INT_TYPES and all(isinstance(x, int) for x in v) \
                    and r.random() < 0.7:
                out.append(ld(num, b"".join(varint(int(x)) for x in v)))
            else:
                out += [enc_value(r, num, ftype, x, depth) for x in v]
        else:
            out.append(enc_value(r, num, ftype, v, depth))
    return b"".join(out)


def pb_mutate(r, data, reserved=()):
    """Wire-level damage to a protobuf encoding."""
    b = bytearray(data)
    for _ in range(r.randint(1, 3)):
        op = r.randrange(12)
        i = r.randrange(len(b) + 1)
        if op == 0:
            del b[i:]                                     # truncation
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = r.choice((0x00, 0xFF, 0x80, 0x7F,
                                              r.randrange(256)))
        elif op == 2:                                     # unknown field
            num = r.choice(list(reserved) + [0, 1, 2, 15, 16, 99, 2 ** 29 - 1,
                                             2 ** 29, 2 ** 32])
            wt = r.randrange(8)
            body = {0: varint(gen_int(r)), 1: os.urandom(0) + bytes(8),
                    2: varint(3) + b"abc", 3: b"", 4: b"",
                    5: bytes(4)}.get(wt, b"\x01")
            b[i:i] = tag(num, wt) + body
        elif op == 3:                                     # overlong varint
            b[i:i] = tag(r.randint(1, 6), 0) + b"\xff" * r.choice((9, 10,
                                                                  11, 20)) \
                + b"\x01"
        elif op == 4:                                     # bad length
            n = r.choice((1, 100, 2 ** 31 - 1, 2 ** 31, 2 ** 32,
                          2 ** 63 - 1, 2 ** 64 - 1))
            b[i:i] = tag(r.randint(1, 23), 2) + varint(n) + b"xy"
        elif op == 5:                                     # a varint cut off
            b[i:] = tag(r.randint(1, 23), 0) + b"\x80\x80"
        elif op == 6:                                     # groups
            n = r.choice((1, 2, 100, 5000))
            b[i:i] = tag(r.randint(1, 23), 3) * n + \
                (tag(r.randint(1, 23), 4) if r.random() < 0.5 else b"")
        elif op == 7 and b:                               # duplicate part
            j = r.randrange(len(b))
            b[i:i] = b[j:j + r.randint(1, 40)]
        elif op == 8:                                     # nested deep LEN
            inner = b"x"
            for _ in range(r.choice((10, 100, 1000))):
                inner = ld(r.randint(1, 23), inner)
            b[i:i] = inner
        elif op == 9:                                     # wrong wire type
            num = r.randint(1, 23)
            b[i:i] = r.choice((tag(num, 0) + varint(gen_int(r)),
                               tag(num, 1) + bytes(8), tag(num, 5) + bytes(4),
                               ld(num, b"\xff\xfe")))
        elif op == 10:
            b = b + b                                     # merge twice
        elif b:
            del b[i:i + r.randint(1, 8)]
    return bytes(b)


def gen_pb_request(r, ctx):
    """A binary Req: (payload, Reply, None, note)."""
    req_id = gen_req_id(r)
    pristine = r.random() < 0.3
    data, codes = gen_data(r, ctx, req_id, pristine)
    name = REQ_MESSAGE.get(req_id)
    if name is None:
        name = pick(r, list(REQ_MESSAGE.values()))
    data_b = enc_message(r, name, data) if isinstance(data, (dict, Obj)) \
        else enc_natural(r, 1, data)
    note = "req %s %s" % (req_id, name)
    if not pristine and r.random() < 0.3:
        data_b = pb_mutate(r, data_b, SCHEMA[name]["reserved"])
        codes = None
        note += " data-mutated"
    if pristine:
        note += " pristine"
    incr = ctx.uniq("p")
    op = "op-" + incr
    env = {"reqIdentifier": req_id, "operationID": op, "msgIncr": incr,
           "data": data_b}
    if r.random() < 0.2:
        env["sendID"] = ctx.me
    clean = True
    if not pristine and r.random() < 0.2:
        env["sendID"] = ctx.users(r)
        codes, clean = None, False
    if not pristine and r.random() < 0.1:
        env["token"] = r.choice(("", "x", gen_long_string(r, 300)))
        codes, clean = None, False
    # int32 on the wire: a wider varint is cut to its low 32 bits
    wire_id = ((req_id + 2 ** 31) % 2 ** 32) - 2 ** 31
    if wire_id != req_id:
        codes = None if wire_id in KNOWN_REQ else {1001}
        req_id = wire_id
    if not pristine and r.random() < 0.25:
        env = mutate_envelope(r, ctx, env)
        clean, codes = False, None
    if isinstance(env, (dict, Obj)):
        payload = enc_message(r, "Req", env)
    else:
        payload = enc_natural(r, 6, env)
        clean, codes = False, None
    if not pristine and r.random() < 0.15:
        payload = pb_mutate(r, payload)
        clean, codes = False, None
        note += " req-mutated"
    if len(payload) > MAX_FRAME:
        return payload, None, {1009}, note + " oversize"
    reply = Reply(True, req_id if clean else None, incr if clean else None,
                  op if clean else None, codes,
                  nonzero=(clean and req_id not in KNOWN_REQ))
    reply.gen_req_id = req_id
    if req_id == 1003 and clean and "data-mutated" not in note:
        reply.content_bad = content_bad(data)
    return payload, reply, None, note


# ---------------------------------------------------------------------------
# WebSocket frames


def mask_bytes(key, data):
    n = len(data)
    if not n:
        return b""
    k = (key * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "big") ^
            int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(r, opcode, payload=b"", fin=True, rsv=0, mask=True, length=None,
          length_bytes=None):
    """A client frame; the mask key comes from r (reproducible)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else (2 if n < 65536 else 8)
    if length_bytes == 0:
        head = struct.pack("!BB", b0, mbit | n)
    elif length_bytes == 2:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = bytes(r.randrange(256) for _ in range(4))
    return head + key + mask_bytes(key, payload)


def split_pieces(r, data, k):
    if k <= 1 or not data:
        return [data] + [b""] * max(0, k - 1)
    cuts = sorted(r.randrange(len(data) + 1) for _ in range(k - 1))
    out, last = [], 0
    for c in cuts + [len(data)]:
        out.append(data[last:c])
        last = c
    return out


def frame_message(r, opcode, payload, style=None):
    """(chunks, extra pongs expected): one data message framed one of
    several legal ways."""
    style = style or r.choices(
        ("single", "long-len", "fragments", "fragments-ctrl", "writes",
         "bytewise"), weights=(70, 5, 10, 6, 6, 3))[0]
    if style == "bytewise" and len(payload) > 300:
        style = "single"
    if style == "single":
        return [(frame(r, opcode, payload), None)], []
    if style == "long-len":
        return [(frame(r, opcode, payload,
                       length_bytes=r.choice((2, 8)) if len(payload) < 65536
                       else 8), None)], []
    if style == "bytewise":
        return [(frame(r, opcode, payload), 0.0)], []
    pieces = split_pieces(r, payload, r.choice((2, 3, 5, 10, 40)))
    frames, pongs = [], []
    for i, p in enumerate(pieces):
        frames.append(frame(r, opcode if i == 0 else OP_CONT, p,
                            fin=i == len(pieces) - 1))
        if style == "fragments-ctrl" and i < len(pieces) - 1 and \
                r.random() < 0.5:
            if r.random() < 0.6:
                pl = bytes(r.randrange(256) for _ in range(r.randint(0, 125)))
                frames.append(frame(r, OP_PING, pl))
                pongs.append(pl)
            else:
                frames.append(frame(r, OP_PONG, b"unsolicited"))
    if style == "writes":
        return [(f, None) for f in frames], pongs
    return [(b"".join(frames), None)], pongs


def message_action(r, opcode, payload, reply, close, note, style=None):
    chunks, pongs = frame_message(r, opcode, payload, style)
    if close is not None:
        return Action("msg", chunks, Expect(close=close, maybe_pongs=pongs),
                      note)
    return Action("msg", chunks, Expect([reply] if reply else [], pongs),
                  note)


# protocol errors and their close codes (docs/protocol.md, "Close codes")


def violation(r, ctx):
    """A terminal action: a frame the server must refuse by closing."""
    body = b'{"reqIdentifier":1001,"operationID":"v","msgIncr":"v","data":{}}'
    kinds = [
        ("unmasked", lambda: frame(r, OP_TEXT, body, mask=False), {1002}),
        ("unmasked-ping", lambda: frame(r, OP_PING, b"", mask=False), {1002}),
        ("rsv", lambda: frame(r, r.choice((OP_TEXT, OP_BINARY, OP_PING)),
                              body if r.random() < 0.7 else b"",
                              rsv=r.randint(1, 7)), {1002}),
        ("opcode", lambda: frame(r, r.choice((3, 4, 5, 6, 7, 0xB, 0xC, 0xD,
                                              0xE, 0xF)), body), {1002}),
        ("ctrl-long", lambda: frame(r, r.choice((OP_PING, OP_PONG)),
                                    b"x" * r.choice((126, 200, 1000))),
         {1002}),
        ("ctrl-long-close", lambda: frame(r, OP_CLOSE, struct.pack(
            "!H", 1000) + b"x" * r.choice((124, 200))), {1002}),
        ("ctrl-fragmented", lambda: frame(r, r.choice((OP_PING, OP_PONG,
                                                       OP_CLOSE)),
                                          b"\x03\xe8", fin=False), {1002}),
        ("cont-first", lambda: frame(r, OP_CONT, body,
                                     fin=r.random() < 0.5), {1002}),
        ("data-inside-fragmented", lambda: frame(r, OP_TEXT, b"{", fin=False)
         + frame(r, r.choice((OP_TEXT, OP_BINARY)), b"}"), {1002}),
        ("len-top-bit", lambda: frame(r, OP_TEXT, b"", length=1 << 63 |
                                      r.getrandbits(20), length_bytes=8),
         {1002, 1009}),
        ("frame-too-big", lambda: frame(r, r.choice((OP_TEXT, OP_BINARY)),
                                        b"", length=MAX_FRAME + r.choice(
                                            (1, 2, 1000, 1 << 40)),
                                        length_bytes=8), {1009}),
        ("message-too-big", lambda: b"".join(
            frame(r, OP_BINARY if i == 0 else OP_CONT, b"\0" * 30000,
                  fin=i == 2) for i in range(3)), {1009}),
        ("cont-too-big", lambda: frame(r, OP_TEXT, b"{", fin=False)
         + frame(r, OP_CONT, b" " * (MAX_FRAME + 1)), {1009}),
        ("bad-utf8", lambda: frame(r, OP_TEXT, b'{"a":"' + pick(r, BAD_BYTES)
                                   + b'"}'), {1007}),
        ("bad-utf8-split", lambda: frame(r, OP_TEXT, b'{"a":"\xe2\x82',
                                         fin=False)
         + frame(r, OP_CONT, b'(", "b":1}'), {1007}),
        ("bad-utf8-first-fragment", lambda: frame(r, OP_TEXT, b'{"a":"\xff',
                                                  fin=False), {1007}),
        ("bad-utf8-truncated", lambda: frame(r, OP_TEXT, body, fin=False)
         + frame(r, OP_CONT, b"\xf0\x9f\x98"), {1007}),
        ("close-1-byte", lambda: frame(r, OP_CLOSE, b"\x03"), {1002}),
        ("close-bad-code", lambda: frame(r, OP_CLOSE, struct.pack(
            "!H", r.choice((0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999,
                            5000, 65535)))), {1002}),
        ("close-bad-reason", lambda: frame(r, OP_CLOSE, struct.pack(
            "!H", 1000) + pick(r, BAD_BYTES)), {1007}),
    ]
    name, make, codes = pick(r, kinds)
    return Action("violation:" + name, [(make(), None)], Expect(close=codes),
                  name)


def close_action(r):
    x = r.random()
    if x < 0.2:
        return Action("close-empty", [(frame(r, OP_CLOSE, b""), None)],
                      Expect(close={None}))
    code = r.choice((1000, 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                     1011, 3000, 3999, 4000, 4999))
    reason = r.choice((b"", b"bye", "\u00e9t\u00e9".encode(), b"x" * 123))
    return Action("close-%d" % code,
                  [(frame(r, OP_CLOSE, struct.pack("!H", code) + reason),
                    None)], Expect(close={code}))


def hangup_action(r, ctx):
    """Part of a frame, then we drop the connection."""
    payload, _, _, _ = gen_json_request(r, ctx)
    f = frame(r, OP_TEXT, payload)
    cut = r.randrange(1, max(2, len(f)))
    return Action("hangup", [(f[:cut], None)], Expect(hangup=True),
                  "cut at %d of %d" % (cut, len(f)))


def burst_action(r, ctx, binary=False):
    """Many clean requests in one write, answered by msgIncr."""
    n = r.choice((2, 5, 20, 64, 65, 100, 200))
    chunks, replies = [], []
    for _ in range(n):
        req_id = r.choice((1001, 1006, 9999, 2004, 1002))
        data, codes = gen_data(r, ctx, req_id, True)
        if req_id == 9999:
            data, codes = {"x": [1, "y"]}, {1001}
        incr = ctx.uniq("b")
        env = {"reqIdentifier": req_id, "operationID": "op-" + incr,
               "msgIncr": incr, "data": data}
        if binary:
            env["data"] = enc_message(r, REQ_MESSAGE.get(req_id,
                                                         "GetMaxSeqReq"),
                                      data)
            chunks.append(frame(r, OP_BINARY, enc_message(r, "Req", env)))
        else:
            chunks.append(frame(r, OP_TEXT, dumps(env)))
        replies.append(Reply(binary, req_id, incr, "op-" + incr, codes))
    return Action("burst-%d" % n, [(b"".join(chunks), None)],
                  Expect(replies), "%d requests in one write" % n)


def mixed_burst_action(r, ctx):
    """Random requests, valid or not, glued in one write: each one still
    gets exactly one answer (a request refused early must not keep its
    in-flight or pull slot: 64 requests, 4 pulls at once)."""
    n = r.choice((5, 20, 65, 130))
    chunks, replies = [], []
    unmatched = set()     # at most one answer per encoding without an echo
    for _ in range(n):
        for _ in range(10):
            if r.random() < 0.5:
                payload, reply, close, _ = gen_json_request(r, ctx)
                op = OP_TEXT
            else:
                payload, reply, close, _ = gen_pb_request(r, ctx)
                op = OP_BINARY
            if close is None and reply is not None and len(payload) < 4000 \
                    and not reply.ping and not reply.maybe_ping \
                    and reply.gen_req_id != 2003 and b"2003" not in payload \
                    and (reply.incr is not None or op not in unmatched):
                break
        else:
            continue
        if reply.incr is None:
            unmatched.add(op)
        chunks.append(frame(r, op, payload))
        replies.append(reply)
    # pulls that fail early, then one that must still be served
    for _ in range(r.choice((0, 5))):
        incr = ctx.uniq("fp")
        chunks.append(frame(r, OP_TEXT, dumps(
            {"reqIdentifier": 1002, "operationID": "op-" + incr,
             "msgIncr": incr, "data": {"seqRanges": [
                 {"conversationID": pick(r, ctx.foreign_convs()),
                  "begin": 1, "end": 5, "num": 5}]}})))
        replies.append(Reply(False, 1002, incr, "op-" + incr, {1002}))
    return Action("mixed-burst-%d" % len(replies),
                  [(b"".join(chunks), None)], Expect(replies),
                  "%d mixed requests in one write" % len(replies))


def ping_action(r):
    pl = bytes(r.randrange(256) for _ in range(r.choice((0, 1, 4, 125))))
    return Action("ping", [(frame(r, OP_PING, pl), None)], Expect(pongs=[pl]))


def pong_action(r):
    pl = bytes(r.randrange(256) for _ in range(r.choice((0, 5, 125))))
    return Action("pong", [(frame(r, OP_PONG, pl), None)], Expect())


# ---------------------------------------------------------------------------
# sessions


class Session:
    """One connection's worth of actions; handshake is None (the normal
    upgrade) or a dict of rawws handshake arguments, with `auth_ok`
    telling whether the server may answer 101."""

    def __init__(self, key, handshake, actions, end):
        self.key = key
        self.handshake = handshake
        self.actions = actions
        self.end = end               # "close", "drop" or "" (terminal action)


def gen_session(seed, stream, worker, index, ctx_factory):
    """The session `index` of one fuzzing worker of a stream ("json",
    "pb" or "wire").  ctx_factory(tag) gives the worker's Ctx."""
    r = rng_for(seed, stream, worker, index)
    ctx = ctx_factory("%s%d-%d" % (stream[0], worker, index))
    actions = []
    handshake = None
    if stream == "wire" and r.random() < 0.25:
        handshake = gen_handshake(r, ctx)
    n = r.choice((1, 2, 3, 5, 8, 12, 12, 70))
    for _ in range(n):
        a = gen_action(r, ctx, stream)
        actions.append(a)
        if a.expect.close is not None or a.expect.hangup:
            break
    end = ""
    if not actions or (actions[-1].expect.close is None and
                       not actions[-1].expect.hangup):
        end = "close" if r.random() < 0.8 else "drop"
    return Session((stream, worker, index), handshake, actions, end)


def gen_action(r, ctx, stream):
    if stream == "json":
        x = r.random()
        if x < 0.01:
            return logout_action(r, ctx, False)
        payload, reply, close, note = gen_json_request(r, ctx)
        return message_action(r, OP_TEXT, payload, reply, close, note)
    if stream == "pb":
        x = r.random()
        if x < 0.01:
            return logout_action(r, ctx, True)
        payload, reply, close, note = gen_pb_request(r, ctx)
        return message_action(r, OP_BINARY, payload, reply, close, note)
    # wire: everything, with odd framing and terminal errors
    x = r.random()
    if x < 0.35:
        if r.random() < 0.6:
            payload, reply, close, note = gen_json_request(r, ctx)
            op = OP_TEXT
        else:
            payload, reply, close, note = gen_pb_request(r, ctx)
            op = OP_BINARY
        style = r.choice(("fragments", "fragments-ctrl", "writes",
                          "bytewise", "long-len", "single"))
        return message_action(r, op, payload, reply, close, note, style)
    if x < 0.5:
        return ping_action(r)
    if x < 0.55:
        return pong_action(r)
    if x < 0.6:
        return burst_action(r, ctx, binary=r.random() < 0.4)
    if x < 0.65:
        return mixed_burst_action(r, ctx)
    if x < 0.85:
        return violation(r, ctx)
    if x < 0.93:
        return close_action(r)
    if x < 0.97:
        return hangup_action(r, ctx)
    return logout_action(r, ctx, r.random() < 0.5)


def logout_action(r, ctx, binary):
    incr = ctx.uniq("lo")
    env = {"reqIdentifier": 2003, "operationID": "op-" + incr,
           "msgIncr": incr, "data": {}}
    if binary:
        env["data"] = b""
        payload, op = enc_message(r, "Req", env), OP_BINARY
    else:
        payload, op = dumps(env), OP_TEXT
    return Action("logout", frame_message(r, op, payload, "single")[0],
                  Expect([Reply(binary, 2003, incr, "op-" + incr, {0})],
                         close={1000}), "2003")


# ---------------------------------------------------------------------------
# the handshake


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret, header=None, sign=True):
    header = header or {"alg": "HS256", "typ": "JWT"}
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signed = head + "." + body
    if not sign:
        return signed + "."
    mac = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64url(mac)


def bad_token(r, uid, platform, secret, now=None):
    """(token, kind) of a token the server must refuse (1501..1507)."""
    now = int(now or time.time())
    c = {"UserID": uid, "PlatformID": platform, "exp": now + 3600,
         "nbf": now - 5, "iat": now - 5}
    kinds = [
        ("junk", lambda: pick(r, ["x", "a.b.c", "...", "eyJ", "a" * 5000,
                                  "\u00e9", "%00", "a.b", "a.b.c.d"])),
        ("forged-unissued", lambda: make_jwt(c, secret)),
        ("wrong-secret", lambda: make_jwt(c, "not-the-secret")),
        ("expired", lambda: make_jwt(dict(c, exp=now - 10), secret)),
        ("not-yet", lambda: make_jwt(dict(c, nbf=now + 3600), secret)),
        ("alg-none", lambda: make_jwt(c, secret, {"alg": "none",
                                                  "typ": "JWT"}, sign=False)),
        ("claims-types", lambda: make_jwt(dict(c, UserID=123,
                                               PlatformID="1",
                                               exp=1e300), secret)),
        ("claims-missing", lambda: make_jwt({"UserID": uid}, secret)),
        ("claims-huge", lambda: make_jwt(dict(c, exp=2 ** 70,
                                              x="y" * 3000), secret)),
        ("header-odd", lambda: make_jwt(c, secret, {"alg": "HS512"})),
        ("not-json", lambda: b64url(b"{") + "." + b64url(b"[") + "." +
         b64url(b"sig")),
    ]
    kind, make = pick(r, kinds)
    return make(), kind


LEGAL_UPGRADE = ("websocket", "WebSocket", " websocket ,h2c")
LEGAL_CONNECTION = ("Upgrade", "keep-alive, Upgrade", "UPGRADE")
HARMLESS_QUERY = ("", "&x=" + "y" * 3000, "&&&", "&=", "&%zz=1")


def gen_handshake(r, ctx):
    """rawws handshake arguments, mostly one thing wrong at a time;
    auth_ok says what the server must do with the final request."""
    hs = {"sendID": ctx.me, "token": None, "platformID": str(ctx.platform),
          "operationID": "op", "method": "GET", "version": "13",
          "key": None, "upgrade": "websocket", "connection": "Upgrade",
          "http": "HTTP/1.1", "extra_query": "", "headers": []}
    for _ in range(r.choice((1, 1, 1, 2))):
        what = r.randrange(13)
        if what == 0:
            hs["sendID"] = r.choice((None, "", pick(r, ctx.peers),
                                     ctx.me + "x", "a_b", "x" * 65,
                                     ctx.me.upper(), "%00", ctx.me + "%00",
                                     ctx.me + "%20"))
        elif what in (1, 2):
            hs["token"] = ("bad", r.randrange(1 << 30))
        elif what == 3:
            hs["token"] = r.choice(("", "peer", "none"))
        elif what == 4:
            hs["platformID"] = r.choice((None, "", "0", "12", "-1", "abc",
                                         "1x", "99999999999999999999", "10",
                                         " 1", "1.0", "0x1", "2", "01",
                                         "4294967297"))
        elif what == 5:
            hs["method"] = r.choice(("POST", "PUT", "get", "OPTIONS"))
        elif what == 6:
            hs["version"] = r.choice((None, "8", "14", "", "13, 8", "abc"))
        elif what == 7:
            hs["key"] = r.choice(("", "short", "AAAA", "x" * 100,
                                  b64url(bytes(15)),
                                  base64.b64encode(b"0123456789abcdef")
                                  .decode() + "=", "!!!!!!!!!!!!!!!!!!!!!!=="))
        elif what == 8:
            hs["upgrade"] = r.choice((None, "", "notwebsocket", "websocket2",
                                      "WebSocket", " websocket ,h2c"))
        elif what == 9:
            hs["connection"] = r.choice((None, "", "upgrades", "close",
                                         "keep-alive, Upgrade", "UPGRADE"))
        elif what == 10:
            hs["http"] = r.choice(("HTTP/1.0", "HTTP/2.0", "HTTP/1.2"))
        elif what == 11:
            hs["extra_query"] = r.choice(("&sendID=other", "&platformID=2",
                                          "&x=" + "y" * 3000, "&&&", "&=",
                                          "&token=", "&%zz=1"))
        else:
            hs["headers"] = [(r.choice(("X-Junk", "Sec-WebSocket-Protocol",
                                        "Sec-WebSocket-Extensions", "Origin",
                                        "Cookie")),
                              r.choice(("a", "permessage-deflate", "x" * 2000,
                                        "chat, superchat")))]
    bad, ambiguous = [], []
    if hs["sendID"] != ctx.me:
        (ambiguous if hs["sendID"] in (ctx.me + "%00", ctx.me + "%20")
         else bad).append("sendID %r" % hs["sendID"])
    if hs["token"] is not None:
        bad.append("token %r" % (hs["token"],))
    if hs["platformID"] != str(ctx.platform):
        (ambiguous if hs["platformID"] in (" 1", "1.0", "0x1", "01", "1x",
                                           "4294967297")
         else bad).append("platformID %r" % hs["platformID"])
    if hs["method"] != "GET":
        bad.append("method")
    if hs["version"] != "13":
        bad.append("version")
    if hs["key"] is not None:
        (ambiguous if hs["key"].endswith("==") and len(hs["key"]) == 25
         else bad).append("key %r" % hs["key"][:30])
    if hs["upgrade"] not in LEGAL_UPGRADE:
        bad.append("upgrade")
    if hs["connection"] not in LEGAL_CONNECTION:
        bad.append("connection")
    if hs["http"] != "HTTP/1.1":
        (ambiguous if hs["http"] == "HTTP/1.2" else bad).append(hs["http"])
    if hs["extra_query"] not in HARMLESS_QUERY:
        ambiguous.append("query %r" % hs["extra_query"][:20])
    if any(k == "Origin" for k, _ in hs["headers"]):
        # none of the fuzzer's Origin values is the server's own origin,
        # and the default im_cors_origins allows only that (403)
        bad.append("origin")
    # auth_ok: True (must be 101), False (must be refused), None (either)
    hs["auth_ok"] = False if bad else (None if ambiguous else True)
    hs["why"] = bad + ambiguous
    return hs


# ---------------------------------------------------------------------------
# REST


ROUTES = ["/auth/get_admin_token", "/auth/get_user_token",
          "/user/user_register", "/auth/parse_token", "/auth/force_logout",
          "/user/get_users_info", "/user/get_users_online_status",
          "/third/update_push_token", "/msg/send_msg",
          "/msg/batch_send_msg", "/manager/send_msg",
          "/friend/add_friend", "/friend/get_friend_list",
          "/friend/add_black", "/friend/get_incremental_friends",
          "/friend/update_friends", "/user/update_user_info",
          "/user/get_users"]
ADMIN_ROUTES = set(ROUTES) - {"/auth/get_admin_token",
                              "/user/get_users_info",
                              "/third/update_push_token",
                              "/friend/add_friend", "/friend/get_friend_list",
                              "/friend/add_black",
                              "/friend/get_incremental_friends",
                              "/friend/update_friends",
                              "/user/update_user_info"}


class RestCtx:
    """The REST fuzzer's world.  force_logout only ever names `victims`;
    no route names the observers."""

    def __init__(self, admin, admin_token, user, user_token, user_platform,
                 victims, recipients, cold, secret, tag):
        self.admin = admin
        self.admin_token = admin_token
        self.user = user
        self.user_token = user_token
        self.user_platform = user_platform
        self.victims = victims
        self.recipients = recipients
        self.cold = cold
        self.secret = secret
        self.tag = tag
        self.counter = 0
        self.unregistered = ["nobody-" + tag]
        self.protected = [admin, user] + list(recipients)

    def names_protected(self, raw):
        return any(dumps(u)[1:-1] in raw for u in self.protected)

    def uniq(self, prefix="n"):
        self.counter += 1
        return "%s-%s-%d" % (prefix, self.tag, self.counter)

    def users(self, r):
        x = r.random()
        if x < 0.4:
            return pick(r, self.recipients + self.cold)
        if x < 0.5:
            return self.user
        if x < 0.65:
            return pick(r, self.unregistered)
        return pick(r, ["", "a_b", "a b", "x" * 64, "x" * 65, "\u00e9",
                        "a\u0000", "A.b@c+d-e", "system", "imAdmin"])

    def strings(self):
        return [self.user] + self.recipients + self.cold + self.unregistered


def rest_msg_body(r, ctx):
    ctype = r.choice((101, 101, 102, 106, 109, 110, 1400))
    body = {"sendID": r.choice(("system", "openIM123456", ctx.user,
                                pick(r, ctx.cold))),
            "recvID": pick(r, ctx.recipients + ctx.cold),
            "senderNickname": "Ops", "senderFaceURL": "",
            "senderPlatformID": 10, "content": json_copy(CONTENTS[ctype]),
            "contentType": ctype, "sessionType": 4 if ctype == 1400 else
            r.choice((1, 4)), "isOnlineOnly": r.random() < 0.2,
            "notOfflinePush": r.random() < 0.2,
            "offlinePushInfo": {"title": "", "desc": "", "ex": "",
                                "iOSPushSound": "", "iOSBadgeCount": False},
            "ex": "", "clientMsgID": ctx.uniq("rm"),
            "pushClass": r.choice(("im", "notification", "order",
                                   "marketing"))}
    for k in ("senderFaceURL", "notOfflinePush", "ex", "pushClass",
              "clientMsgID", "offlinePushInfo"):
        if r.random() < 0.3:
            del body[k]
    return body


def rest_pristine(r, ctx, path):
    """(body, token kind, expected codes) of a valid call."""
    if path == "/auth/get_admin_token":
        return ({"secret": ctx.secret, "userID": ctx.admin}, "none", {0})
    if path == "/auth/get_user_token":
        return ({"userID": pick(r, [ctx.user] + ctx.cold),
                 "platformID": r.choice((1, 2, 3, 5, 9, 11))}, "admin", {0})
    if path == "/user/user_register":
        n = r.choice((1, 1, 2, 10))
        return ({"users": [{"userID": ctx.uniq("ru"), "nickname": "n",
                            "faceURL": "", "ex": ""} for _ in range(n)]},
                "admin", {0})
    if path == "/auth/parse_token":
        return {"token": ctx.user_token}, "admin", {0}
    if path == "/auth/force_logout":
        return ({"userID": pick(r, ctx.victims),
                 "platformID": r.choice((1, 2, 5))}, "admin", {0})
    if path == "/user/get_users_info":
        return ({"userIDs": [ctx.users(r) for _ in range(r.randint(1, 5))]},
                r.choice(("admin", "user")), None)
    if path == "/user/get_users_online_status":
        return ({"userIDs": [pick(r, ctx.recipients + ctx.cold)
                             for _ in range(r.randint(1, 5))]}, "admin", {0})
    if path == "/third/update_push_token":
        return ({"platformID": ctx.user_platform, "token": "dev-" +
                 ctx.uniq("t")}, "user", {0})
    if path in ("/msg/send_msg", "/manager/send_msg"):
        body = rest_msg_body(r, ctx)
        if path == "/manager/send_msg":
            body["operationID"] = "ignored"
        return body, "admin", {0}
    if path == "/msg/batch_send_msg":
        body = rest_msg_body(r, ctx)
        body["recvIDs"] = [pick(r, ctx.recipients + ctx.cold)
                           for _ in range(r.randint(1, 5))]
        body["recvIDs"] = sorted(set(body["recvIDs"]))
        return body, "admin", {0}
    return rest_pristine_friend(r, ctx, path)


def rest_pristine_friend(r, ctx, path):
    """The friend and profile routes, as the fuzzer's own user (never
    naming the observers)."""
    page = {"pageNumber": 1, "showNumber": r.choice((1, 10, 1000))}
    if path == "/friend/add_friend":
        return ({"fromUserID": ctx.user, "toUserID": pick(r, ctx.cold),
                 "reqMsg": "hi"}, "user", None)
    if path == "/friend/get_friend_list":
        return {"userID": ctx.user, "pagination": page}, "user", {0}
    if path == "/friend/add_black":
        return ({"ownerUserID": ctx.user, "blackUserID": pick(r, ctx.cold)},
                "user", None)
    if path == "/friend/get_incremental_friends":
        return ({"userID": ctx.user, "versionID": "", "version": 0},
                "user", {0})
    if path == "/friend/update_friends":
        return ({"ownerUserID": ctx.user, "friendUserIDs": [
            pick(r, ctx.cold)], "isPinned": True}, "user", None)
    if path == "/user/update_user_info":
        return ({"userInfo": {"userID": ctx.user, "nickname": "n"}}, "user",
                {0})
    if path == "/user/get_users":
        return {"pagination": page}, "admin", {0}
    raise KeyError(path)


REST_BOUNDS = {
    "users": lambda r, c: [{"userID": c.uniq("ru")} for _ in range(
        r.choice((0, 999, 1000, 1001)))],
    "friendUserIDs": lambda r, c: [pick(r, c.cold) for _ in range(
        r.choice((0, 1000, 1001)))],
    "remark": _near(255), "reqMsg": _near(1024),
    "userIDs": lambda r, c: [c.users(r) for _ in range(
        r.choice((0, 1000, 1001)))],
    "recvIDs": lambda r, c: [pick(r, c.cold) for _ in range(
        r.choice((0, 1, 1000, 1001)))],
    "platformID": lambda r, c: r.choice((0, 10, 11, 12, -1, 2 ** 31, 2 ** 63,
                                         1.0, "1", True)),
    "senderPlatformID": lambda r, c: r.choice((0, 11, 12, -1, 2 ** 31)),
    "sessionType": lambda r, c: r.choice((0, 1, 2, 3, 4, 5, 2 ** 31)),
    "contentType": lambda r, c: r.choice((101, 113, 118, 1400, 1401, 0,
                                          2 ** 31)),
    "content": lambda r, c: content_variant(r, c, 101),
    "senderNickname": _near(255), "senderFaceURL": _near(1024),
    "ex": _near(4096), "clientMsgID": _near(128), "groupID": _near(64),
    "pushClass": lambda r, c: r.choice(("", "IM", "x" * 300, 1, None)),
    "token": lambda r, c: r.choice(("", gen_long_string(r, 5000), 1)),
    "secret": lambda r, c: r.choice(("", c.secret + "\u0000junk",
                                     c.secret + "x", c.secret[:-1], 1)),
    "atUserIDList": lambda r, c: [pick(r, c.cold) for _ in range(
        r.choice((1000, 1001)))],
    "options": lambda r, c: gen_options(r),
}


class RestCase:
    def __init__(self, method, path, headers, body, chunked, codes,
                 nonzero, statuses, note):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.codes = codes          # exact errCodes (untouched valid call)
        self.nonzero = nonzero      # must not succeed
        self.statuses = statuses    # acceptable HTTP statuses
        self.note = note
        self.known = None           # a KNOWN defect explains a success


def rest_token(r, ctx, kind):
    """(header value or None, is it the right kind of valid token)."""
    if kind == "admin":
        return ctx.admin_token
    if kind == "user":
        return ctx.user_token
    return None


def gen_rest(seed, worker, index, ctx):
    r = rng_for(seed, "rest", worker, index)
    path = pick(r, ROUTES)
    body, tok_kind, codes = rest_pristine(r, ctx, path)
    pristine = r.random() < 0.25
    notes = [path]
    nonzero = False
    token = rest_token(r, ctx, tok_kind)
    headers = {"Content-Type": "application/json", "operationID": "op-f"}
    statuses = {200}
    method = "POST"
    chunked = False
    if not pristine:
        codes = None
        x = r.random()
        if x < 0.35:
            for _ in range(r.randint(0, 2)):
                k = pick(r, list(REST_BOUNDS))
                if r.random() < 0.7 and k not in body and \
                        isinstance(body, dict):
                    continue
                body[k] = REST_BOUNDS[k](r, ctx)
            body = mutate_tree(r, body, ctx, r.randint(1, 3))
            notes.append("mutated")
        elif x < 0.5:
            body = pick(r, [[], "s", 1, None, Raw(b""), Raw(b"{"),
                            Raw(b'{"a":1}garbage'), Raw(b"{}{}"),
                            deep_raw(r), deep_tree(70), Obj([("userIDs", []),
                                                             ("userIDs",
                                                              ["x"])])])
            notes.append("not-an-object")
            nonzero = True
        elif x < 0.65:
            # token trouble: never a success on a token route
            t = r.randrange(4)
            if t == 0:
                token = None
            elif t == 1:
                token, kind = bad_token(r, ctx.admin, 10, ctx.secret)
                notes.append("bad-token:" + kind)
            elif t == 2:
                token, kind = bad_token(r, ctx.user, ctx.user_platform,
                                        ctx.secret)
                notes.append("bad-token:" + kind)
            else:
                token = ctx.user_token if tok_kind == "admin" else None
                notes.append("user-token" if path not in ADMIN_ROUTES else
                             "user-token-on-admin-route")
            if path != "/auth/get_admin_token" and (
                    t != 3 or path in ADMIN_ROUTES or token is None):
                nonzero = True
        elif x < 0.72:
            r_h = r.randrange(4)
            if r_h == 0:
                del headers["operationID"]
                nonzero = True
            elif r_h == 1:
                headers["operationID"] = ""
            elif r_h == 2:
                headers["operationID"] = "x" * r.choice((100, 4000))
            else:
                headers["Content-Type"] = r.choice(("text/plain", "",
                                                    "application/x-www-form"
                                                    "-urlencoded"))
            notes.append("headers")
        elif x < 0.76:
            method = r.choice(("GET", "PUT", "DELETE", "PATCH"))
            statuses = {405}
            notes.append("method")
        elif x < 0.8:
            path = path + r.choice(("x", "/", "/extra", "%00", "?a=1#"))
            if path.endswith("?a=1#"):
                statuses = {200, 404}
            elif path.endswith("%00"):
                statuses = {400, 404}          # nginx refuses %00 itself
            else:
                statuses = {404}
            notes.append("path")
        elif x < 0.82:
            chunked = True
            notes.append("chunked")
        elif x < 0.84:
            notes.append("oversize")
            nonzero = True
            pad = REST_MAX_BODY + r.choice((1, 100, 500000))
            body = {"pad": "x" * pad, "userIDs": ["x"]}
        elif x < 0.9:
            notes.append("raw-mutated")
            raw = byte_mutate(r, dumps(body))
            if path == "/auth/force_logout" and ctx.names_protected(raw):
                raw = b"{}"
            ok, v = syntax(raw)
            return RestCase(method, path, _tok(headers, token), raw, chunked,
                            None, not ok or not isinstance(v, dict),
                            statuses, " ".join(notes))
        else:
            for k in list(body)[:r.randint(1, 2)] if isinstance(body, dict) \
                    else []:
                del body[k]
            notes.append("field-missing")
    else:
        notes.append("pristine")
    raw = dumps(body, ascii_only=r.random() < 0.3)
    if path.startswith("/auth/force_logout") and ctx.names_protected(raw):
        # a kick must only ever hit the victims: fall back to a valid call
        body, _, _ = rest_pristine(r, ctx, "/auth/force_logout")
        raw = dumps(body)
        notes.append("(protected user replaced)")
    if len(raw) > REST_MAX_BODY:
        nonzero = True
    if len(raw) < 200000:
        ok, v = syntax(raw)
        if not ok or not isinstance(v, dict):   # docs/api.md: 1001
            nonzero = True
    return RestCase(method, path, _tok(headers, token), raw, chunked, codes,
                    nonzero, statuses, " ".join(notes))


def _tok(headers, token):
    h = dict(headers)
    if token is not None:
        h["token"] = token
    return h


def describe(b, limit=600):
    """A printable, bounded form of bytes for reports."""
    if len(b) <= limit:
        return repr(b)
    return "%r...(%d bytes)...%r" % (b[:limit // 2], len(b),
                                     b[-limit // 4:])
