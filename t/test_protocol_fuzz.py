"""A protocol fuzzer against the running server (issue "Hardening").

Random and mutated WebSocket frames, JSON and protobuf requests,
handshakes and REST bodies, made from the grammar in t/fuzzgen.py, are
thrown at a private nginx + Redis for a fixed time, while a pair of
well-behaved clients keeps exchanging messages.

Streams (threads), each with its own user and its own seeded sessions:
  json x3   text frames: envelopes and data of every reqIdentifier
  pb   x2   binary frames: Req envelopes and data messages, wire-mutated
  wire x2   framing: fragments, control frames, bursts, protocol errors,
            closes, hang-ups, handshake variants
  rest x2   every REST endpoint: valid, mutated, wrong types, oversize,
            admin / user / bad tokens, odd headers, methods and paths
  kick x1   /auth/force_logout against live sessions of its own users (two
            sessions of the platform kicked, one of another platform), and
            against upgrades still in flight

Checked while it runs and after:
  - no worker crash: worker pids unchanged, no [alert]/[crit]/[emerg];
  - no hang: every request answered (within REPLY_TIMEOUT), or the
    connection closed with the close code the documents give;
  - every errCode is a documented one (docs/api.md, docs/protocol.md),
    an untouched valid request gets the code it should, text that is not
    JSON never succeeds, answers echo the envelope;
  - Redis answers PING throughout;
  - the two observers' messages flow: every acked message is pushed to
    the peer and pullable, with bounded latency (the observers and the
    PING run in a process of their own, so the fuzzer's Python work
    cannot delay them);
  - afterwards no session is left over (im_connections back to 0) and a
    fresh client is served.

Every finding names its session (stream:worker:session) and the seed:
IM_FUZZ_SEED=<seed> IM_FUZZ_REPLAY=<session> replays exactly those bytes
on a fresh stack and prints each frame both ways.  The report
(report.json, with the bytes of every finding in finding-NNN.bin) also
holds counts per errCode and errMsg (what the run reached), Redis' slow
log, and stalls.txt: stacks of our own threads when the fuzzer itself
stalled (then latencies measured in it are not the server's).

Known defects (fuzzgen.KNOWN) are recognised from the input and reported
as "known" without failing, so that the suite stays useful until they
are fixed; IM_FUZZ_STRICT=1 fails on them too.

Environment:
  IM_FUZZ_SECONDS   fuzzing time (default 20, so the test takes ~30 s)
  IM_FUZZ_SEED      the seed (default: random, printed)
  IM_FUZZ_REPLAY    "json:0:17,rest:1:5": run only these sessions
                    (stream:worker:session), verbosely, on a fresh stack
  IM_FUZZ_MAX_LATENCY  observer ack/push bound in seconds (default 2)
  IM_FUZZ_STRICT=1  known defects (fuzzgen.KNOWN) fail the test too
  IM_FUZZ_DIR       where the report and the bytes of each finding go
                    (default: the pytest tmp dir, fuzz-<seed>/)
"""

import collections
import faulthandler
import http.client
import importlib
import json
import multiprocessing
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

import redis as redis_py

import fuzzgen as fg
import rawws
from conftest import ADMIN, ROOT, SECRET, Api, single_conv

SECONDS = float(os.environ.get("IM_FUZZ_SECONDS", "20"))
SEED = int(os.environ.get("IM_FUZZ_SEED") or
           random.SystemRandom().randrange(10 ** 9))
REPLAY = os.environ.get("IM_FUZZ_REPLAY", "")
MAX_LATENCY = float(os.environ.get("IM_FUZZ_MAX_LATENCY", "2.0"))
REPLY_TIMEOUT = 10.0
STREAMS = {"json": 3, "pb": 2, "wire": 2, "rest": 2, "kick": 1}
WS_STREAMS = ("json", "pb", "wire")
N_COLD = 4

# finding kinds that fail the test; "note" only goes into the report
FAILING = {"crash", "log", "hang", "drop", "bad-close", "unexpected-code",
           "oracle", "bad-frame", "extra-frame", "handshake", "rest-status",
           "observer", "redis", "leak", "error"}
# "known": a defect already reported (fuzzgen.KNOWN), recognised from the
# input itself; it fails the test only with IM_FUZZ_STRICT=1
STRICT = os.environ.get("IM_FUZZ_STRICT") == "1"
if STRICT:
    FAILING.add("known")


def known_kind(known):
    return "known" if known else "oracle"


def known_text(known):
    return " [known: %s]" % fg.KNOWN[known] if known else ""


# ---------------------------------------------------------------------------
# protobuf classes from im.proto (protoc at test time)


def load_pb(tmpdir):
    if "im_pb2" in sys.modules:
        return sys.modules["im_pb2"]
    out = os.path.join(tmpdir, "pb")
    os.makedirs(out, exist_ok=True)
    subprocess.run(["protoc", "--python_out=" + out,
                    "--proto_path=" + os.path.join(ROOT, "ngx_im_module"),
                    "im.proto"], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("im_pb2")


# ---------------------------------------------------------------------------
# findings and statistics


class Findings:
    def __init__(self, seed, report_dir):
        self.seed = seed
        self.dir = report_dir
        self.items = []
        self.lock = threading.Lock()
        self.inflight = {}           # thread name -> what it is doing now
        os.makedirs(report_dir, exist_ok=True)

    def add(self, kind, detail, key=None, index=None, action=None,
            wire=None, extra=None):
        with self.lock:
            n = len(self.items)
            item = {"kind": kind, "detail": detail, "time": time.time()}
            if key is not None:
                item["session"] = "%s:%s:%s" % key
                item["repro"] = "IM_FUZZ_SEED=%d IM_FUZZ_REPLAY=%s:%s:%s" % (
                    (self.seed,) + tuple(key))
            if index is not None:
                item["action"] = index
            if action is not None:
                item["action_name"] = action.name
                item["note"] = action.note
                wire = action.wire if wire is None else wire
            if wire is not None:
                path = os.path.join(self.dir, "finding-%03d.bin" % n)
                with open(path, "wb") as f:
                    f.write(wire)
                item["wire_file"] = path
                item["wire"] = fg.describe(wire)
            if extra:
                item.update(extra)
            self.items.append(item)
            return item

    def failing(self):
        return [i for i in self.items if i["kind"] in FAILING]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()

    def inc(self, *keys):
        with self.lock:
            for k in keys:
                self.c[k] += 1


# ---------------------------------------------------------------------------
# the stack's users


class World:
    """Users derived from the seed (so a replay names the same ones), all
    registered at the start, with a platform-1 token each."""

    def __init__(self, ngx, seed):
        self.ngx = ngx
        self.api = Api(ngx)
        p = "fz%d-" % seed
        self.ws_users = {(s, w): p + "%s%d" % (s[0], w)
                         for s in WS_STREAMS for w in range(STREAMS[s])}
        self.cold = [p + "c%d" % i for i in range(N_COLD)]
        self.observers = [p + "obsA", p + "obsB"]
        self.rest_user = p + "ru"
        self.victims = [p + "v%d" % i for i in range(3)]
        self.kicked = [p + "k%d" % i for i in range(STREAMS["kick"])]
        everyone = (list(self.ws_users.values()) + self.cold +
                    self.observers + [self.rest_user] + self.victims +
                    self.kicked)
        self.api.register(*everyone)
        self.tokens = {u: self.api.user_token(u) for u in
                       list(self.ws_users.values()) + self.observers +
                       [self.rest_user]}
        self.admin_token = self.api.admin_token()

    def ctx_factory(self, stream, worker):
        me = self.ws_users[(stream, worker)]
        peers = [u for u in self.ws_users.values() if u != me]

        def make(tag):
            return fg.Ctx(me, 1, peers, self.cold, self.observers, tag)
        return make

    def rest_ctx(self, worker, index):
        return fg.RestCtx(ADMIN, self.admin_token, self.rest_user,
                          self.tokens[self.rest_user], 1, self.victims,
                          list(self.ws_users.values()), self.cold, SECRET,
                          "r%d-%d" % (worker, index))


# ---------------------------------------------------------------------------
# one WebSocket session


class Broken(Exception):
    """The session cannot go on (a finding was recorded)."""


def ws_query(hs, token):
    args = []
    for name in ("sendID", "token", "platformID", "operationID"):
        v = token if name == "token" else hs[name]
        if v is not None:
            args.append("%s=%s" % (name, urllib.parse.quote(v, safe="%@.-")))
    return "/im/ws?" + "&".join(args) + hs.get("extra_query", "")


class WsRunner:
    def __init__(self, ngx, world, pb, findings, stats, verbose=False):
        self.ngx = ngx
        self.world = world
        self.pb = pb
        self.f = findings
        self.stats = stats
        self.verbose = verbose

    def log(self, *a):
        if self.verbose:
            print(*a, flush=True)

    # -- the session ----------------------------------------------------

    def run(self, sess, stream, worker):
        me = self.world.ws_users[(stream, worker)]
        token = self.world.tokens[me]
        key = sess.key
        self.stats.inc("%s.sessions" % stream)
        hs = sess.handshake
        try:
            if hs is None:
                ws = rawws.connect(self.ngx.port,
                                   rawws.ws_path(me, token), timeout=10)
                if ws.status != 101:
                    self.f.add("handshake", "valid handshake refused: %d %r"
                               % (ws.status, ws.body[:200]), key)
                    ws.close()
                    return
            else:
                ws = self.fuzz_handshake(sess, me, token)
                if ws is None:
                    return
        except (OSError, rawws.Closed) as e:
            self.f.add("handshake", "connect failed: %r" % e, key)
            return
        self.state = {"closed": False}
        try:
            for i, a in enumerate(sess.actions):
                self.f.inflight[threading.current_thread().name] = (key, i, a)
                self.stats.inc("%s.actions" % stream, "action." +
                               a.name.split(":")[0])
                self.log("-> [%d] %s %s %s" % (i, a.name, a.note,
                                               fg.describe(a.wire, 300)))
                self.do_action(ws, a, key, i)
                if self.state["closed"]:
                    return
            if sess.end == "close":
                end = fg.Action("end-close", [(fg.frame(
                    fg.rng_for(SEED, "end", *key), fg.OP_CLOSE,
                    struct.pack("!H", 1000)), None)],
                    fg.Expect(close={1000}))
                self.do_action(ws, end, key, len(sess.actions))
        except Broken:
            pass
        finally:
            self.f.inflight.pop(threading.current_thread().name, None)
            ws.close()

    def fuzz_handshake(self, sess, me, token):
        hs = sess.handshake
        key = sess.key
        tok = hs["token"]
        if tok is None:
            tok = token
        elif isinstance(tok, tuple):
            tok, kind = fg.bad_token(fg.rng_for(SEED, "tok", tok[1]), me, 1,
                                     SECRET)
            hs["token_kind"] = kind
        elif tok == "peer":
            tok = self.world.tokens[self.world.observers[0]]
        elif tok == "none":
            tok = None
        path = ws_query(hs, tok)
        kw = {"method": hs["method"], "http": hs["http"],
              "upgrade": hs["upgrade"], "connection": hs["connection"],
              "headers": hs["headers"]}
        if hs["version"] != "13":
            kw["version"] = hs["version"]
        if hs["key"] is not None:
            kw["key"] = hs["key"]
        self.stats.inc("wire.handshakes")
        desc = "handshake %s" % {k: v for k, v in hs.items()
                                 if k not in ("auth_ok",)}
        desc = desc[:600]
        ws = rawws.RawWS(self.ngx.port, timeout=10)
        try:
            status = ws.handshake(path, **kw)
        except (socket.timeout, TimeoutError):
            self.f.add("hang", "no answer to the upgrade request: " + desc,
                       key)
            ws.close()
            return None
        except rawws.Closed:
            # nginx may drop what it cannot parse (e.g. HTTP/2.0 lines)
            self.stats.inc("handshake.eof")
            if hs["auth_ok"]:
                self.f.add("handshake", "valid upgrade dropped: " + desc,
                           key)
            ws.close()
            return None
        except (OSError, ValueError, IndexError) as e:
            self.f.add("handshake", "bad answer %r: %s" % (e, desc), key)
            ws.close()
            return None
        self.stats.inc("handshake.%d" % status)
        if status == 101:
            if hs["auth_ok"] is False:
                self.f.add("handshake", "upgrade accepted though it must be "
                           "refused: " + desc, key)
            elif hs["auth_ok"] is None:
                self.f.add("note", "ambiguous upgrade accepted: " + desc,
                           key)
            return ws
        ws.close()
        if hs["auth_ok"]:
            self.f.add("handshake", "valid upgrade refused %d %r: %s"
                       % (status, ws.body[:200], desc), key)
            return None
        if status not in (400, 401, 403, 405, 414, 426, 505):
            self.f.add("handshake", "status %d %r: %s"
                       % (status, ws.body[:200], desc), key)
            return None
        try:
            body = json.loads(ws.body)
        except ValueError:
            body = None
        if isinstance(body, dict) and "errCode" in body:
            self.stats.inc("handshake.code.%s" % body["errCode"])
            if body["errCode"] not in fg.HANDSHAKE_CODES:
                self.f.add("unexpected-code", "handshake %d errCode %r: %s"
                           % (status, body, desc), key)
        elif status in (401, 426):
            self.f.add("handshake", "status %d without errCode body %r: %s"
                       % (status, ws.body[:200], desc), key)
        return None

    # -- one action ------------------------------------------------------

    def do_action(self, ws, a, key, i):
        exp = a.expect
        try:
            for chunk, pace in a.chunks:
                ws.send(chunk, pace=pace)
        except OSError as e:
            if exp.close is not None or exp.hangup:
                # the server may close while a big refused frame is
                # still on its way; the close frame may be lost to a reset
                self.stats.inc("send-refused")
                self.state["closed"] = True
                return
            self.f.add("drop", "send failed: %r" % e, key, i, a)
            raise Broken()
        if exp.hangup:
            self.state["closed"] = True
            return
        self.expect(ws, a, key, i)

    def expect(self, ws, a, key, i):
        exp = a.expect
        replies = list(exp.replies)
        pongs = list(exp.pongs)
        maybe_pongs = list(exp.maybe_pongs)
        close = exp.close
        # a logout that succeeds owes a close 1000 after its answer
        deadline = time.monotonic() + REPLY_TIMEOUT
        while replies or pongs or close is not None:
            left = deadline - time.monotonic()
            try:
                f = ws.recv_frame(max(0.01, left))
            except (socket.timeout, TimeoutError):
                self.f.add("hang", "nothing within %.0fs; still owed: "
                           "%d replies %s, pongs %d, close %s"
                           % (REPLY_TIMEOUT, len(replies),
                              [(r.req_id, r.incr) for r in replies],
                              len(pongs), close), key, i, a)
                raise Broken()
            except rawws.Closed as e:
                if close is not None and not replies:
                    # a reset can overtake the close frame (we were still
                    # sending); count it, it is not a silent drop
                    self.stats.inc("close.reset")
                    self.state["closed"] = True
                    return
                self.f.add("drop", "connection ended without a close frame "
                           "(%s); owed %d replies, close %s"
                           % (e, len(replies), close), key, i, a)
                raise Broken()
            except OSError as e:
                self.f.add("drop", "read failed: %r" % e, key, i, a)
                raise Broken()
            self.log("   <- %r" % f)
            if f.rsv or f.masked or not f.fin or f.opcode not in (
                    1, 2, 8, 9, 10):
                self.f.add("bad-frame", "server frame %r" % f, key, i, a)
            if f.opcode == fg.OP_PING:
                try:
                    ws.send(fg.frame(random, fg.OP_PONG, f.payload))
                except OSError:
                    pass
                continue
            if f.opcode == fg.OP_PONG:
                if f.payload in pongs:
                    pongs.remove(f.payload)
                elif f.payload in maybe_pongs:
                    maybe_pongs.remove(f.payload)
                else:
                    self.f.add("extra-frame", "unexpected pong %r" % f,
                               key, i, a)
                continue
            if f.opcode == fg.OP_CLOSE:
                self.on_close(ws, f, close, replies, pongs, key, i, a)
                return
            r = self.take_reply(f, replies, key, i, a)
            if r is None:
                continue
            spec, resp = r
            if resp.get("reqIdentifier") == 2003 and \
                    resp.get("errCode") == 0:
                close = {1000}
                self.state["logged_out"] = True

    def on_close(self, ws, f, close, replies, pongs, key, i, a):
        code = f.close_code
        self.stats.inc("close.%s" % code)
        self.state["closed"] = True
        if close is None or code not in close:
            self.f.add("bad-close", "close %s %r; expected %s; owed %d "
                       "replies" % (code, f.close_reason, close,
                                    len(replies)), key, i, a)
        elif replies and not (code == 1000 and
                              self.state.get("logged_out")):
            # (requests glued behind a logout are not served)
            self.f.add("bad-close", "closed (%s) with %d replies owed"
                       % (code, len(replies)), key, i, a)
        if len(f.payload) > 125 or (len(f.payload) > 2 and
                                    not fg.utf8_ok(f.payload[2:])):
            self.f.add("bad-frame", "close payload %r" % f.payload, key, i, a)
        try:
            ws.expect_eof(5)
        except (socket.timeout, TimeoutError):
            self.f.add("hang", "TCP not closed within 5s after the close "
                       "frame", key, i, a)
        except AssertionError as e:
            self.f.add("extra-frame", "bytes after close: %s" % e, key, i, a)
        except OSError:
            pass

    # -- answers ---------------------------------------------------------

    def take_reply(self, f, replies, key, i, a):
        """Matches a data frame to an owed reply and checks it; pushes
        are counted and skipped.  Returns (spec, decoded) or None."""
        binary = f.opcode == fg.OP_BINARY
        if binary:
            resp = self.decode_pb(f.payload, key, i, a)
        else:
            try:
                resp = json.loads(f.payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                self.f.add("bad-frame", "text frame that is not JSON (%s): %s"
                           % (e, fg.describe(f.payload)), key, i, a)
                return None
        if not isinstance(resp, dict):
            self.f.add("bad-frame", "answer is not an object: %r"
                       % (resp,), key, i, a)
            return None
        rid = resp.get("reqIdentifier")
        # a push or a kick has no msgIncr and errCode 0; an error answer to
        # a request that named 2001 or 2002 echoes that identifier
        server_side = rid in (2001, 2002) and resp.get("errCode") == 0 and \
            resp.get("msgIncr") == ""
        if server_side and rid == 2001:
            self.stats.inc("push.%s" % ("pb" if binary else "json"))
            return None
        # a presence change of a user this session watches (a mutated 2005
        # may name anyone) is a 2005 with no msgIncr, like the success of
        # a 2005 request without one: the push only where no such answer
        # is owed (an answer taken for the push comes later as a push)
        if rid == 2005 and resp.get("errCode") == 0 and \
                resp.get("msgIncr") == "" and not any(
                    r.incr is None and r.binary == binary and
                    r.req_id in (2005, None) and not r.nonzero and
                    (r.codes is None or 0 in r.codes) for r in replies):
            self.stats.inc("presence.%s" % ("pb" if binary else "json"))
            return None
        if server_side:
            self.f.add("extra-frame", "kicked (2002) though nobody kicks "
                       "this user", key, i, a)
            return None
        spec = None
        for r in replies:
            if r.incr is not None and r.incr == resp.get("msgIncr") and \
                    r.binary == binary:
                spec = r
                break
        if spec is None:
            for r in replies:
                if r.incr is None and r.binary == binary:
                    spec = r
                    break
            if spec is not None and rid == 2005 and \
                    resp.get("errCode") == 0 and resp.get("msgIncr") == "":
                # perhaps a presence push: the answer may come after it
                self.state["borrowed"] = self.state.get("borrowed", 0) + 1
        if spec is None and self.state.get("borrowed", 0) > 0:
            self.state["borrowed"] -= 1
            self.stats.inc("presence.late")
            return None
        if spec is None and resp.get("msgIncr") == "" and resp.get(
                "errCode") not in (0, None):
            same = [r for r in replies if r.binary == binary]
            if len(same) == 1:
                # one request owed: this error is its answer, without the
                # msgIncr the request carried
                spec = same[0]
                self.f.add("no-echo-pb" if binary else "oracle",
                           "error answer without the msgIncr %r sent: %s"
                           % (spec.incr, fg.describe(json.dumps(
                               resp, default=repr).encode(), 300)),
                           key, i, a)
                spec.req_id = spec.incr = spec.op = None
        if spec is None:
            self.f.add("extra-frame", "answer nobody asked for (or in the "
                       "wrong encoding): %s" % fg.describe(
                           json.dumps(resp, default=repr).encode(), 400),
                       key, i, a)
            return None
        replies.remove(spec)
        self.check_reply(spec, resp, binary, key, i, a)
        return spec, resp

    def decode_pb(self, payload, key, i, a):
        m = self.pb.Resp()
        try:
            m.ParseFromString(payload)
        except Exception as e:  # noqa: BLE001 (DecodeError and friends)
            self.f.add("bad-frame", "binary frame that is not a Resp (%s): "
                       "%s" % (e, fg.describe(payload)), key, i, a)
            return None
        return {"reqIdentifier": m.reqIdentifier, "msgIncr": m.msgIncr,
                "operationID": m.operationID, "errCode": m.errCode,
                "errMsg": m.errMsg, "_data": m.data}

    def check_reply(self, spec, resp, binary, key, i, a):
        enc = "pb" if binary else "json"
        if spec.ping or spec.maybe_ping:
            if resp == {"type": "pong"}:
                self.stats.inc("browser-pong")
                return
            if spec.ping:
                self.f.add("oracle", "browser ping answered %r" % resp,
                           key, i, a)
                return
        need = ("reqIdentifier", "operationID", "msgIncr", "errCode",
                "errMsg") + (() if binary else ("data",))
        missing = [k for k in need if k not in resp]
        if missing:
            self.f.add("bad-frame", "answer lacks %s: %r" % (missing, resp),
                       key, i, a)
            return
        code = resp["errCode"]
        self.stats.inc("%s.code.%s" % (enc, code))
        if code:
            self.stats.inc("errMsg.%s" % errmsg_class(resp["errMsg"]))
        if code not in fg.WS_CODES:
            self.f.add("unexpected-code", "errCode %r (%r) for %s"
                       % (code, resp["errMsg"], a.note), key, i, a,
                       extra={"errMsg": resp["errMsg"]})
        if code != 0 and not resp["errMsg"]:
            self.f.add("bad-frame", "errCode %s with an empty errMsg" % code,
                       key, i, a)
        # a valid request may meet the rate limit (1010) like any other
        if spec.codes is not None and code not in spec.codes | {1010}:
            self.f.add("oracle", "valid request (%s) got %s %r, expected %s"
                       % (a.note, code, resp["errMsg"], sorted(spec.codes)),
                       key, i, a, extra={"errMsg": resp["errMsg"]})
        if spec.nonzero and code == 0:
            self.f.add(known_kind(spec.known), "invalid request (%s) "
                       "succeeded%s: %s" % (a.note, known_text(spec.known),
                                            fg.describe(json.dumps(
                           resp, default=repr).encode(), 300)), key, i, a,
                       extra={"known": spec.known})
        if spec.content_bad and code == 0:
            self.f.add(known_kind(spec.known), "a send whose content is not "
                       "a JSON object was accepted (%s)%s" % (
                           a.note, known_text(spec.known)), key, i, a,
                       extra={"known": spec.known})
        if spec.req_id is not None:
            for k, want in (("reqIdentifier", spec.req_id),
                            ("msgIncr", spec.incr),
                            ("operationID", spec.op)):
                if resp[k] != want:
                    self.f.add("oracle", "%s not echoed: sent %r got %r"
                               % (k, want, resp[k]), key, i, a)
        if code == 0 and spec.req_id is not None:
            self.check_success(spec.req_id, resp, binary, key, i, a)

    SHAPES = {1001: "maxSeqs", 1002: "msgs", 1003: "serverMsgID",
              1005: "msgs", 1006: "seqs"}

    def check_success(self, req_id, resp, binary, key, i, a):
        if binary:
            name = fg.RESP_MESSAGE.get(req_id)
            if name is None:
                return
            m = getattr(self.pb, name)()
            try:
                m.ParseFromString(resp["_data"])
            except Exception as e:  # noqa: BLE001
                self.f.add("bad-frame", "data of a %d answer is not a %s: %s"
                           % (req_id, name, e), key, i, a)
            return
        field = self.SHAPES.get(req_id)
        data = resp.get("data")
        if not isinstance(data, dict) or (field and field not in data):
            self.f.add("bad-frame", "answer to %d lacks data.%s: %s"
                       % (req_id, field, fg.describe(json.dumps(resp)
                                                     .encode(), 300)),
                       key, i, a)
        elif req_id == 1003 and not (isinstance(data.get("seq"), int) and
                                     (data["seq"] > 0 or "online" in data)):
            self.f.add("bad-frame", "send ack without a seq: %r" % data,
                       key, i, a)


# ---------------------------------------------------------------------------
# REST


class RestRunner:
    def __init__(self, ngx, findings, stats, verbose=False):
        self.ngx = ngx
        self.f = findings
        self.stats = stats
        self.verbose = verbose
        self.conn = None

    def call(self, case):
        body = case.body
        if case.chunked:
            body = iter([case.body[i:i + 1000]
                         for i in range(0, len(case.body), 1000)] or [b""])
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.ngx.port, timeout=REPLY_TIMEOUT)
            try:
                self.conn.request(case.method, "/im/api" + case.path,
                                  body=body, headers=case.headers,
                                  encode_chunked=case.chunked)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.conn.close()
                    self.conn = None
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                self.conn.close()
                self.conn = None
                if fresh or attempt:
                    raise
                if case.chunked:
                    body = iter([case.body])
            except BaseException:
                self.conn.close()
                self.conn = None
                raise

    def run(self, case, key):
        self.stats.inc("rest.requests")
        if self.verbose:
            print("-> %s %s %s headers=%s %s" % (
                case.method, case.path, case.note,
                {k: v[:60] for k, v in case.headers.items()},
                fg.describe(case.body, 300)), flush=True)
        action = fg.Action("rest", [(case.body, None)], None,
                           "%s %s" % (case.method, case.note))
        try:
            status, data = self.call(case)
        except (socket.timeout, TimeoutError):
            self.f.add("hang", "no answer within %.0fs" % REPLY_TIMEOUT, key,
                       action=action)
            return
        except (OSError, http.client.HTTPException) as e:
            self.f.add("drop", "HTTP exchange failed: %r" % e, key,
                       action=action)
            return
        if self.verbose:
            print("   <- %d %s" % (status, fg.describe(data, 400)),
                  flush=True)
        self.stats.inc("rest.status.%d" % status)
        if status not in case.statuses:
            self.f.add("rest-status", "HTTP %d %s (expected %s)"
                       % (status, fg.describe(data, 200),
                          sorted(case.statuses)), key, action=action)
            return
        if status != 200:
            return
        try:
            resp = json.loads(data)
            code = resp["errCode"]
            assert isinstance(resp.get("errMsg"), str), "errMsg"
            assert isinstance(resp.get("data"), dict), "data"
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            self.f.add("bad-frame", "REST answer not the envelope (%r): %s"
                       % (e, fg.describe(data, 300)), key, action=action)
            return
        path = case.path.split("?")[0]
        self.stats.inc("rest.code.%s" % code)
        if code:
            self.stats.inc("errMsg.rest.%s" % errmsg_class(resp["errMsg"]))
        if code not in fg.REST_CODES:
            self.f.add("unexpected-code", "errCode %r (%r) on %s"
                       % (code, resp["errMsg"], case.note), key,
                       action=action, extra={"errMsg": resp["errMsg"],
                                             "path": path})
        if case.codes is not None and code not in case.codes | {1010}:
            self.f.add("oracle", "valid call %s got %s %r, expected %s"
                       % (case.note, code, resp["errMsg"],
                          sorted(case.codes)), key, action=action)
        if case.nonzero and code == 0:
            self.f.add(known_kind(case.known), "invalid call %s succeeded%s: "
                       "%s" % (case.note, known_text(case.known),
                               fg.describe(data, 300)), key, action=action,
                       extra={"known": case.known})

    def metrics(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.ngx.port,
                                          timeout=REPLY_TIMEOUT)
        try:
            conn.request("GET", "/im/metrics")
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()


def errmsg_class(msg):
    """An errMsg with its numbers and indices folded, for coverage."""
    msg = re.sub(r"\[\d+\]", "[i]", str(msg))
    msg = re.sub(r"-?\d+", "N", msg)
    return msg[:80]


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    return None


# ---------------------------------------------------------------------------
# kicks


class KickRunner:
    """One round: sessions a1, a2 (platform p) and b (platform q) of one
    user; force_logout(p) must end a1 and a2 with 2002 + Close 1000 within
    KICK_BOUND, leave b served, and make p's token refused (401/1506).
    Half the rounds also race an upgrade of platform p against the kick:
    refused with 401/1506, or opened and then kicked, never left open."""

    KICK_BOUND = 3.0

    def __init__(self, ngx, world, findings, stats):
        self.ngx = ngx
        self.world = world
        self.api = Api(ngx)
        self.f = findings
        self.stats = stats

    def connect(self, uid, tok, plat):
        ws = rawws.connect(self.ngx.port, rawws.ws_path(uid, tok, plat),
                           timeout=10)
        if ws.status != 101:
            raise AssertionError("upgrade refused %d %r" % (ws.status,
                                                           ws.body[:200]))
        return ws

    def served(self, ws, incr):
        r = ws.request(1001, {}, incr=incr, timeout=REPLY_TIMEOUT)
        if r.get("errCode") != 0:
            raise AssertionError("1001 answered %r" % r)

    def wait_kicked(self, ws, what, key):
        """2002 then Close 1000 then EOF, within the bound."""
        end = time.monotonic() + self.KICK_BOUND
        got_2002 = False
        try:
            while True:
                f = ws.recv_frame(max(0.01, end - time.monotonic()))
                if f.opcode == fg.OP_CLOSE:
                    if f.close_code != 1000 or not got_2002:
                        self.f.add("bad-close", "%s: close %s after the kick"
                                   " (2002 seen: %s)" % (what, f.close_code,
                                                         got_2002), key)
                    ws.expect_eof(3)
                    return
                if f.opcode == fg.OP_TEXT:
                    v = json.loads(f.payload)
                    if v.get("reqIdentifier") == 2002:
                        got_2002 = True
        except (socket.timeout, TimeoutError):
            self.f.add("hang", "%s: still open %.0fs after force_logout "
                       "answered (2002 seen: %s)" % (what, self.KICK_BOUND,
                                                     got_2002), key)
        except rawws.Closed:
            self.f.add("drop", "%s: TCP ended without a close frame after "
                       "the kick" % what, key)

    def race_upgrade(self, uid, tok, plat, key):
        """The upgrade request is on its way when the kick lands."""
        ws = rawws.RawWS(self.ngx.port, timeout=10)
        req, _ = rawws.handshake_request(rawws.ws_path(uid, tok, plat))
        ws.send(req)
        return ws

    def round(self, index):
        key = ("kick", 0, index)
        r = fg.rng_for(SEED, "kick", 0, index)
        uid = self.world.kicked[0]
        p, q = r.sample([1, 2, 3, 4, 5, 6, 7, 8, 9, 11], 2)
        self.stats.inc("kick.rounds")
        admin = self.world.admin_token
        tp = self.api.user_token(uid, p)
        tq = self.api.user_token(uid, q)
        socks = []
        try:
            a1, a2 = self.connect(uid, tp, p), self.connect(uid, tp, p)
            b = self.connect(uid, tq, q)
            socks += [a1, a2, b]
            for n, ws in enumerate((a1, a2, b)):
                self.served(ws, "k%d-%d" % (index, n))
            race = self.race_upgrade(uid, tp, p, key) if r.random() < 0.5 \
                else None
            if race:
                socks.append(race)
            t0 = time.monotonic()
            out = self.api.post("/auth/force_logout",
                                {"userID": uid, "platformID": p},
                                token=admin)
            if out["errCode"] != 0:
                self.f.add("oracle", "force_logout answered %r" % out, key)
                return
            self.wait_kicked(a1, "session 1 of platform %d" % p, key)
            self.wait_kicked(a2, "session 2 of platform %d" % p, key)
            self.stats.inc("kick.kicked")
            if race:
                st = race.read_response(10)
                self.stats.inc("kick.race.%d" % st)
                if st == 101:
                    self.wait_kicked(race, "upgrade racing the kick", key)
                elif st != 401 or race.body_json().get("errCode") != 1506:
                    self.f.add("handshake", "upgrade racing the kick: %d %r"
                               % (st, race.body[:200]), key)
            self.served(b, "k%d-b" % index)
            late = rawws.connect(self.ngx.port, rawws.ws_path(uid, tp, p))
            socks.append(late)
            if late.status != 401 or late.body_json().get("errCode") != 1506:
                self.f.add("handshake", "kicked token: %d %r"
                           % (late.status, late.body[:200]), key)
            self.stats.inc("kick.latency.%s" % (
                "<0.1s" if time.monotonic() - t0 < 0.1 else ">=0.1s"))
        except (AssertionError, OSError, rawws.Closed, ValueError) as e:
            self.f.add("error" if isinstance(e, AssertionError) else "drop",
                       "kick round: %r" % e, key)
        finally:
            for ws in socks:
                ws.close()


def kick_worker(runner, deadline, stop, only=None):
    index = 0
    while not stop.is_set() and time.monotonic() < deadline:
        if only is not None:
            if not only:
                return
            index = only.pop(0)
        try:
            runner.round(index)
        except Exception as e:  # noqa: BLE001
            runner.f.add("error", "fuzzer error %r\n%s" % (
                e, traceback.format_exc()[-2000:]), ("kick", 0, index))
        index += 1
        if only is None:
            stop.wait(0.1)


# ---------------------------------------------------------------------------
# the well-behaved pair


class Observer(threading.Thread):
    """Sends a message to its peer every `interval`, waits for each ack,
    and records the peer's messages as they are pushed."""

    def __init__(self, ngx, me, token, peer, shared, findings, stop,
                 ready, interval=0.05):
        super().__init__(name="observer-" + me, daemon=True)
        self.ngx, self.me, self.token, self.peer = ngx, me, token, peer
        self.conv = single_conv(me, peer)
        self.shared = shared
        self.f = findings
        self.stop = stop
        self.interval = interval
        self.ready = ready           # both connected before the first send
        self.acked = {}              # clientMsgID -> seq
        self.ack_lat = []
        self.pushed = {}             # clientMsgID -> (monotonic, seq)
        self.ws = None
        self.n = 0

    def fail(self, what):
        self.f.add("observer", "%s: %s" % (self.me, what))

    def on_frame(self, f):
        if f.opcode == fg.OP_PING:
            self.ws.send(fg.frame(random, fg.OP_PONG, f.payload))
            return None
        if f.opcode == fg.OP_CLOSE:
            raise rawws.Closed("close %s" % f.close_code)
        if f.opcode != fg.OP_TEXT:
            return None
        v = json.loads(f.payload)
        if v.get("reqIdentifier") == 2001:
            now = time.monotonic()
            for m in v["data"]["msgs"].get(self.conv, []):
                self.pushed.setdefault(m["clientMsgID"], (now, m["seq"]))
            return None
        return v

    def request(self, req_id, data, incr, timeout=REPLY_TIMEOUT):
        self.ws.send(fg.frame(random, fg.OP_TEXT, fg.dumps(
            {"reqIdentifier": req_id, "operationID": "op-" + incr,
             "msgIncr": incr, "data": data})))
        end = time.monotonic() + timeout
        while True:
            f = self.ws.recv_frame(max(0.01, end - time.monotonic()))
            v = self.on_frame(f)
            if v is not None and v.get("msgIncr") == incr:
                return v

    def idle(self, seconds):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                self.on_frame(self.ws.recv_frame(left))
            except (socket.timeout, TimeoutError):
                return

    def run(self):
        try:
            self.ws = rawws.connect(self.ngx.port,
                                    rawws.ws_path(self.me, self.token),
                                    timeout=10)
            assert self.ws.status == 101, self.ws.body
            self.ready.wait(10)
            while not self.stop.is_set():
                self.n += 1
                cmid = "obs-%s-%d" % (self.me, self.n)
                t0 = time.monotonic()
                self.shared[cmid] = t0
                r = self.request(1003, {
                    "sendID": self.me, "recvID": self.peer, "sessionType": 1,
                    "contentType": 101, "clientMsgID": cmid,
                    "content": json.dumps({"content": "m%d" % self.n})},
                    cmid)
                lat = time.monotonic() - t0
                if r["errCode"] != 0:
                    self.fail("send %s refused: %r" % (cmid, r))
                    continue
                self.acked[cmid] = r["data"]["seq"]
                self.ack_lat.append(lat)
                self.idle(self.interval)
        except (socket.timeout, TimeoutError):
            self.fail("no ack within %.0fs (message %d)" % (REPLY_TIMEOUT,
                                                           self.n))
        except (OSError, rawws.Closed, ValueError, KeyError,
                AssertionError, threading.BrokenBarrierError) as e:
            self.fail("connection failed: %r" % e)

    def drain(self, expected, timeout=5.0):
        """Waits for the pushes of the peer's acked messages."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not set(expected) <= set(
                self.pushed):
            try:
                self.on_frame(self.ws.recv_frame(0.2))
            except (socket.timeout, TimeoutError):
                pass

    def pull_all(self):
        """{clientMsgID: seq} of the conversation, by GetNewestSeq and
        paged pulls."""
        r = self.request(1001, {}, "newest")
        top = r["data"]["maxSeqs"].get(self.conv, 0)
        out, end, page = {}, top, 0
        while end >= 1:
            page += 1
            r = self.request(1002, {"seqRanges": [{
                "conversationID": self.conv, "begin": 1, "end": end,
                "num": 100}]}, "pull-%d" % page)
            assert r["errCode"] == 0, r
            msgs = r["data"]["msgs"].get(self.conv, {}).get("Msgs", [])
            if not msgs:
                break
            for m in msgs:
                out[m["clientMsgID"]] = m["seq"]
            end = min(m["seq"] for m in msgs) - 1
        return out, top

    def close(self):
        if self.ws:
            try:
                self.ws.send(fg.frame(random, fg.OP_CLOSE,
                                      struct.pack("!H", 1000)))
                self.ws.expect_close(3)
            except (OSError, rawws.Closed, AssertionError):
                pass
            self.ws.close()


def check_observers(a, b, shared, findings):
    """Every acked message of each side pushed to the other and pullable,
    within the latency bound."""
    summary = {}
    for me, peer in ((a, b), (b, a)):
        peer.drain(me.acked)
    for me, peer in ((a, b), (b, a)):
        missing_push = [c for c in me.acked if c not in peer.pushed]
        if missing_push:
            findings.add("observer", "%d of %s's %d acked messages never "
                         "pushed to %s, e.g. %s" % (
                             len(missing_push), me.me, len(me.acked), peer.me,
                             missing_push[:5]))
        lat = [peer.pushed[c][0] - shared[c] for c in me.acked
               if c in peer.pushed]
        wrong_seq = [c for c in me.acked if c in peer.pushed and
                     peer.pushed[c][1] != me.acked[c]]
        if wrong_seq:
            findings.add("observer", "pushed with another seq than acked: "
                         "%s" % wrong_seq[:5])
        summary[me.me] = {"sent": me.n, "acked": len(me.acked),
                          "ack_latency": lat_summary(me.ack_lat),
                          "push_latency": lat_summary(lat)}
        for what, values in (("ack", me.ack_lat), ("push", lat)):
            if values and max(values) > MAX_LATENCY:
                findings.add("observer", "%s %s latency %.3fs over %.1fs "
                             "(%s)" % (me.me, what, max(values), MAX_LATENCY,
                                       lat_summary(values)))
    pulled, top = a.pull_all()
    acked = dict(a.acked)
    acked.update(b.acked)
    lost = {c: s for c, s in acked.items() if pulled.get(c) != s}
    if lost:
        findings.add("observer", "%d acked messages not pullable with their "
                     "seq (top %d), e.g. %s" % (len(lost), top,
                                                list(lost.items())[:5]))
    summary["pulled"] = len(pulled)
    summary["maxSeq"] = top
    return summary


class ListFindings:
    """Findings of the observer process, sent back to the fuzzer."""

    def __init__(self):
        self.items = []

    def add(self, kind, detail, *a, **kw):
        self.items.append((kind, detail))


class Port:
    def __init__(self, port):
        self.port = port


def observer_main(port, a, ta, b, tb, redis_port, stop, pipe):
    """The well-behaved pair and the Redis PING probe, in a process of
    their own: the fuzzing threads' Python work (the GIL) cannot delay
    them, so their latencies are the server's and Redis'."""
    f = ListFindings()
    shared = {}
    ready = threading.Barrier(2)
    ngx = Port(port)
    obs = [Observer(ngx, a, ta, b, shared, f, stop, ready),
           Observer(ngx, b, tb, a, shared, f, stop, ready)]
    for o in obs:
        o.start()
    pings = []
    r = redis_py.Redis(port=redis_port, socket_timeout=10)
    while not stop.wait(0.25):
        t = time.monotonic()
        try:
            r.ping()
            dt = time.monotonic() - t
            if dt > 1.0:
                f.add("redis", "PING took %.2fs" % dt)
        except Exception as e:  # noqa: BLE001
            dt = time.monotonic() - t
            f.add("redis", "PING failed: %r" % e)
        pings.append(dt)
    for o in obs:
        o.join(REPLY_TIMEOUT + 5)
    summary = {}
    try:
        summary = check_observers(obs[0], obs[1], shared, f)
    except Exception as e:  # noqa: BLE001
        f.add("observer", "final check failed: %r" % e)
    for o in obs:
        o.close()
    pipe.send({"findings": f.items, "summary": summary,
               "pings": lat_summary(pings)})
    pipe.close()


def lat_summary(values):
    if not values:
        return {}
    v = sorted(values)
    return {"n": len(v), "p50": round(v[len(v) // 2], 4),
            "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 4),
            "max": round(v[-1], 4)}


# ---------------------------------------------------------------------------
# the watchdog


class Monitor(threading.Thread):
    """Every 0.25 s: the workers are the same processes and the error log
    has no alert/crit/emerg line.  (Redis PING is timed by the observer
    process.)  Keeps Redis' slow log as evidence, and our own stalls."""

    def __init__(self, ngx, redis_port, findings, stop):
        super().__init__(name="monitor", daemon=True)
        self.ngx = ngx
        self.f = findings
        self.stop = stop
        self.pids = sorted(ngx.worker_pids())
        self.offset = 0
        self.redis_port = redis_port
        self.lag = 0.0               # our own stalls (GIL, CPU): not Redis
        self.crashed = False
        self.log_counts = collections.Counter()
        self.redis = redis_py.Redis(port=redis_port, socket_timeout=10)
        try:
            # evidence for slow PINGs: which commands, which events
            self.redis.config_set("slowlog-log-slower-than", 20000)
            self.redis.config_set("slowlog-max-len", 1024)
            self.redis.config_set("latency-monitor-threshold", 100)
            self.redis.slowlog_reset()
        except Exception:  # noqa: BLE001
            pass

    def snapshot(self):
        """What every fuzzing thread is doing right now."""
        out = {}
        for name, (key, i, a) in list(self.f.inflight.items()):
            out[name] = {"session": "%s:%s:%s" % key, "action": i,
                         "name": a.name, "note": a.note,
                         "wire": fg.describe(a.wire, 300)}
        return out

    def scan_log(self):
        try:
            with open(self.ngx.error_log, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        for line in data[:cut].decode("utf-8", "replace").splitlines():
            m = re.search(r"\[(\w+)\]", line)
            level = m.group(1) if m else "?"
            self.log_counts[level] += 1
            if level in ("alert", "crit", "emerg"):
                self.f.add("log", line[:500], extra={
                    "inflight": self.snapshot()})
            elif level == "error":
                self.log_counts["error: " + re.sub(
                    r"^\S+ \S+ \[error\] \d+#\d+: (\*\d+ )?", "",
                    line)[:90]] += 1

    def check(self):
        self.scan_log()
        pids = sorted(self.ngx.worker_pids())
        if pids != self.pids and not self.crashed:
            self.crashed = True
            self.f.add("crash", "worker pids %s -> %s" % (self.pids, pids),
                       extra={"inflight": self.snapshot()})

    def slowlog(self, n):
        """The slowest commands Redis has logged, slowest first."""
        try:
            entries = self.redis.slowlog_get(1024)
        except Exception as e:  # noqa: BLE001
            return repr(e)
        entries.sort(key=lambda e: -e["duration"])
        return [{"ms": round(e["duration"] / 1000.0, 1),
                 "at": e["start_time"],
                 "command": fg.describe(e["command"], 200)}
                for e in entries[:n]]

    def redis_summary(self):
        try:
            info = self.redis.info()
            return {"used_memory_human": info.get("used_memory_human"),
                    "used_memory_peak_human":
                        info.get("used_memory_peak_human"),
                    "aof_delayed_fsync": info.get("aof_delayed_fsync"),
                    "keys": self.redis.dbsize(),
                    "latency_latest": self.redis.execute_command(
                        "LATENCY", "LATEST"),
                    "slowlog_top": self.slowlog(10)}
        except Exception as e:  # noqa: BLE001
            return {"error": repr(e)}

    def run(self):
        # a watchdog without the GIL: if this thread misses its heartbeat
        # for STALL seconds, every thread's stack goes to stalls.txt
        stalls = open(os.path.join(self.f.dir, "stalls.txt"), "w")
        last = time.monotonic()
        try:
            while not self.stop.wait(0.25):
                faulthandler.dump_traceback_later(self.STALL, file=stalls)
                now = time.monotonic()
                self.lag = max(self.lag, now - last - 0.25)
                self.check()
                last = time.monotonic()
        finally:
            faulthandler.cancel_dump_traceback_later()
            stalls.close()
        self.check()

    STALL = 1.5


# ---------------------------------------------------------------------------
# the run


def ws_worker(runner, world, stream, worker, deadline, stop, only=None):
    factory = world.ctx_factory(stream, worker)
    index = 0
    while not stop.is_set() and time.monotonic() < deadline:
        if only is not None:
            if not only:
                return
            index = only.pop(0)
        try:
            sess = fg.gen_session(SEED, stream, worker, index, factory)
            runner.run(sess, stream, worker)
        except Exception as e:  # noqa: BLE001 (a bug of the fuzzer itself)
            runner.f.add("error", "fuzzer error %r\n%s" % (
                e, traceback.format_exc()[-2000:]), (stream, worker, index))
        index += 1


def rest_worker(runner, world, worker, deadline, stop, only=None):
    index = 0
    while not stop.is_set() and time.monotonic() < deadline:
        if only is not None:
            if not only:
                return
            index = only.pop(0)
        try:
            case = fg.gen_rest(SEED, worker, index,
                               world.rest_ctx(worker, index))
            runner.run(case, ("rest", worker, index))
        except Exception as e:  # noqa: BLE001
            runner.f.add("error", "fuzzer error %r\n%s" % (
                e, traceback.format_exc()[-2000:]), ("rest", worker, index))
        if only is None and random.random() < 0.01:
            status, text = runner.metrics()
            if status != 200 or metric(text, "im_connections") is None:
                runner.f.add("rest-status", "GET /im/metrics: %d" % status)
        index += 1


def push_stream_bad_utf8(redis_port):
    """The offline-push jobs (docs/api.md, im:push) whose fields are not
    UTF-8: what a push gateway would have to parse."""
    r = redis_py.Redis(port=redis_port, socket_timeout=10)
    out = {"jobs": 0, "invalid": 0, "example": None}
    for _, fields in r.xrange("im:push", count=200000):
        out["jobs"] += 1
        for k, v in fields.items():
            if not fg.utf8_ok(v):
                out["invalid"] += 1
                if out["example"] is None:
                    out["example"] = "%s=%r" % (k.decode(), v[:80])
                break
    return out


def stall_count(report_dir):
    """How often the fuzzing process itself stalled for Monitor.STALL s
    (stack dumps in stalls.txt): latencies measured in it are ours."""
    try:
        with open(os.path.join(report_dir, "stalls.txt")) as f:
            return f.read().count("Timeout (")
    except OSError:
        return None


def parse_replay(spec):
    out = collections.defaultdict(list)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        stream, worker, index = item.split(":")
        out[(stream, int(worker))].append(int(index))
    return out


def fuzz(ngx, redis, tmpdir, say):
    pb = load_pb(tmpdir)
    report_dir = os.environ.get("IM_FUZZ_DIR") or os.path.join(
        tmpdir, "fuzz-%d" % SEED)
    findings = Findings(SEED, report_dir)
    stats = Stats()
    world = World(ngx, SEED)
    replay = parse_replay(REPLAY) if REPLAY else None
    verbose = replay is not None
    stop = threading.Event()
    oa, ob = world.observers
    # forked before any thread of ours runs
    mp = multiprocessing.get_context("fork")
    obs_stop = mp.Event()
    obs_pipe, child_pipe = mp.Pipe(duplex=False)
    obs_proc = mp.Process(target=observer_main, args=(
        ngx.port, oa, world.tokens[oa], ob, world.tokens[ob], redis.port,
        obs_stop, child_pipe), daemon=True)
    obs_proc.start()
    monitor = Monitor(ngx, redis.port, findings, stop)
    monitor.start()
    t0 = time.monotonic()
    deadline = t0 + (SECONDS if replay is None else 600)
    threads = []
    for stream, n in STREAMS.items():
        for w in range(n):
            only = None
            if replay is not None:
                only = list(replay.get((stream, w), []))
                if not only:
                    continue
            if stream == "rest":
                runner = RestRunner(ngx, findings, stats, verbose)
                target = rest_worker
                args = (runner, world, w, deadline, stop, only)
            elif stream == "kick":
                runner = KickRunner(ngx, world, findings, stats)
                target = kick_worker
                args = (runner, deadline, stop, only)
            else:
                runner = WsRunner(ngx, world, pb, findings, stats, verbose)
                target = ws_worker
                args = (runner, world, stream, w, deadline, stop, only)
            t = threading.Thread(target=target, args=args,
                                 name="%s-%d" % (stream, w), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + REPLY_TIMEOUT + 30))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        findings.add("hang", "fuzzing threads still busy at the end: %s"
                     % stuck, extra={"inflight": monitor.snapshot()})
    if replay is not None:
        time.sleep(1.0)               # observers run a little longer
    stop.set()
    fuzz_time = time.monotonic() - t0
    monitor.join(5)

    # after: deliveries, leftovers, a fresh client
    obs_stop.set()
    obs_summary, pings = {}, {}
    if obs_pipe.poll(REPLY_TIMEOUT + 40):
        out = obs_pipe.recv()
        obs_summary, pings = out["summary"], out["pings"]
        for kind, detail in out["findings"]:
            findings.add(kind, detail)
    else:
        findings.add("observer", "the observer process gave no result")
    obs_proc.join(10)
    rest = RestRunner(ngx, findings, stats)
    left = None
    end = time.monotonic() + 10
    while time.monotonic() < end:
        status, text = rest.metrics()
        left = metric(text, "im_connections")
        if left == 0:
            break
        time.sleep(0.1)
    if left != 0:
        findings.add("leak", "im_connections is %s after every client "
                     "closed" % left)
    try:
        with rawws.connect(ngx.port, rawws.ws_path(
                oa, world.tokens[oa])) as ws:
            r = ws.request(1001, {}, incr="final")
            assert r["errCode"] == 0, r
    except Exception as e:  # noqa: BLE001
        findings.add("error", "a fresh client is not served: %r" % e)
    monitor.check()
    if sorted(ngx.worker_pids()) != monitor.pids and not monitor.crashed:
        findings.add("crash", "worker pids changed")
    bad_jobs = push_stream_bad_utf8(redis.port)
    if bad_jobs["invalid"]:
        findings.add("error", "%d of %d im:push jobs hold fields that are "
                     "not UTF-8, e.g. %s" % (
                         bad_jobs["invalid"], bad_jobs["jobs"],
                         bad_jobs["example"]))

    report = {
        "seed": SEED, "seconds": SECONDS, "replay": REPLAY,
        "fuzz_time": round(fuzz_time, 1),
        "stats": dict(sorted(stats.c.items())),
        "observers": obs_summary,
        "redis_ping": pings,
        "monitor_max_lag": round(monitor.lag, 3),
        "client_stalls": stall_count(report_dir),
        "redis": monitor.redis_summary(),
        "log_levels": dict(monitor.log_counts.most_common(40)),
        "findings": findings.items,
    }
    path = os.path.join(report_dir, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    c = stats.c
    say("protocol fuzz: seed %d, %.1fs: ws sessions json %d pb %d wire %d, "
        "actions %d, REST calls %d, handshakes %d, kick rounds %d; findings "
        "%d (%d failing); report %s" % (
            SEED, fuzz_time, c["json.sessions"], c["pb.sessions"],
            c["wire.sessions"], c["json.actions"] + c["pb.actions"] +
            c["wire.actions"], c["rest.requests"], c["wire.handshakes"],
            c["kick.rounds"],
            len(findings.items), len(findings.failing()), path))
    return findings, report


def test_protocol_fuzz(own_stack, base_dir, capsys):
    # with the default rate limits: their 1010s are part of the protocol
    redis, ngx = own_stack(workers=2,
                           http="im_ws_rate 100 200; im_api_rate 50 100;")
    with capsys.disabled():
        print("\nprotocol fuzz: IM_FUZZ_SEED=%d IM_FUZZ_SECONDS=%g%s"
              % (SEED, SECONDS, " IM_FUZZ_REPLAY=" + REPLAY if REPLAY
                 else ""), flush=True)

    def say(text):
        with capsys.disabled():
            print(text, flush=True)
    findings, report = fuzz(ngx, redis, base_dir, say)
    known = [i for i in findings.items if i["kind"] == "known"]
    if known:
        say("protocol fuzz: %d inputs hit known defects (%s; see "
            "fuzzgen.KNOWN); IM_FUZZ_STRICT=1 fails on them, e.g. %s" % (
                len(known), ", ".join(sorted({i["known"] for i in known})),
                next((i["repro"] for i in known if "repro" in i), "-")))
    bad = findings.failing()
    if bad:
        with capsys.disabled():
            for item in bad[:30]:
                print(json.dumps(item, default=str)[:3000])
    assert bad == [], "seed %d: %d findings, e.g. %s" % (
        SEED, len(bad), json.dumps(bad[:5], default=str)[:4000])


# ---------------------------------------------------------------------------
# the generator itself (no server)


def test_fuzzgen_reproducible_and_in_sync_with_proto(tmp_path):
    """The same seed makes the same bytes; the grammar's schema is the one
    protoc reads from im.proto; untouched protobuf requests decode with
    the generated classes to what the JSON grammar says."""
    pb = load_pb(str(tmp_path))

    def factory(tag):
        return fg.Ctx("me", 1, ["p1", "p2"], ["c1"], ["oa", "ob"], tag)

    for stream in ("json", "pb", "wire"):
        for i in range(150):
            a = fg.gen_session(7, stream, 0, i, factory)
            b = fg.gen_session(7, stream, 0, i, factory)
            assert [x.wire for x in a.actions] == [x.wire for x in b.actions]
            assert a.handshake == b.handshake
    def rctx():
        return fg.RestCtx("imAdmin", "t", "ru", "tu", 1, ["v"], ["p1"],
                          ["c1"], SECRET, "x")
    for i in range(300):
        a, b = fg.gen_rest(7, 0, i, rctx()), fg.gen_rest(7, 0, i, rctx())
        assert (a.path, a.body, a.headers) == (b.path, b.body, b.headers)

    for name, spec in fg.SCHEMA.items():
        desc = getattr(pb, name).DESCRIPTOR
        assert {f.name: f.number for f in desc.fields} == \
            {k: v[0] for k, v in spec["fields"].items()}, name

    r = random.Random(1)
    ctx = factory("t")
    for req_id, name in fg.REQ_MESSAGE.items():
        for _ in range(20):
            data, _ = fg.gen_data(r, ctx, req_id, True)
            m = getattr(pb, name)()
            m.ParseFromString(fg.enc_message(r, name, data))
            if req_id == 1003:
                assert m.sendID == data["sendID"]
                assert m.content.decode() == data["content"]
            if req_id == 1002:
                assert [x.conversationID for x in m.seqRanges] == \
                    [x["conversationID"] for x in data["seqRanges"]]
