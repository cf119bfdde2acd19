"""Shared fixtures: real redis-server and nginx instances with the module.

Every server gets free loopback ports and its own directory under the
pytest tmp dir, so suites never collide with ./build.sh run.  Each nginx
is checked at teardown: its error log must hold no [alert], [crit] or
[emerg] line.
"""

import asyncio
import json
import linecache
import os
import pwd
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.environ.get("IM_MODULE",
                        os.path.join(ROOT, "build/nginx/ngx_http_im_module.so"))
SECRET = "openIM123"
ADMIN = "imAdmin"
BAD_LOG = re.compile(r"\[(alert|crit|emerg)\]")
# ./build.sh asan: the directory where ASan and UBSan write their reports
# (asan.<pid>, ubsan.<pid>) from the nginx processes; none otherwise
SANITIZER_LOGS = os.environ.get("IM_SANITIZER_LOGS")


def nginx_user():
    """nginx's "user" line (conf/nginx.conf): as root, the checkout's
    owner, so that the workers can read the chat page in build/web."""
    if os.geteuid() != 0:
        return ""
    return "user %s;" % pwd.getpwuid(os.stat(ROOT).st_uid).pw_name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    """False once pid is gone or a zombie (nobody may reap it here)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


class Redis:
    """A redis-server with AOF on, in its own directory."""

    def __init__(self, base):
        self.dir = os.path.join(base, "redis-%s" % uuid.uuid4().hex[:6])
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes", "--save", "",
             "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port)] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


class Mongo:
    """FerretDB (t/ferretdb, built by build.sh deps): MongoDB's protocol."""

    BINARY = os.path.join(ROOT, "build/bin/imferret")

    def __init__(self, base):
        self.dir = os.path.join(base, "mongo-%s" % uuid.uuid4().hex[:6])
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None

    def start(self):
        if not os.path.exists(self.BINARY):
            subprocess.run([os.path.join(ROOT, "t/ferretdb/build.sh"),
                            os.path.dirname(self.BINARY)], check=True)
        self.proc = subprocess.Popen(
            [self.BINARY, "-listen", "127.0.0.1:%d" % self.port,
             "-dir", self.dir, "-log-level", "error"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d/" % self.port

    def db(self):
        import pymongo
        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000).im


class Nginx:
    """One nginx instance ("host") with the module, from conf/nginx.conf."""

    def __init__(self, base, redis_addr, workers=2, http="", ws="",
                 mongo=None):
        self.dir = os.path.join(base, "nginx-%s" % uuid.uuid4().hex[:6])
        self.port = free_port()
        for sub in ("conf", "logs", "temp"):
            os.makedirs(os.path.join(self.dir, sub))
        with open(os.path.join(ROOT, "conf/nginx.conf")) as f:
            conf = f.read()
        # "a:1 b:2" (several seeds) is a Redis Cluster
        redis = ("im_redis_cluster %s;" % redis_addr if " " in redis_addr
                 else "im_redis %s;" % redis_addr)
        # the suite's load tests push thousands of requests through one
        # connection or token: the rate limits are off unless a test
        # sets them (t/test_rate_limit.py; the fuzzer sets the defaults)
        if "_rate" not in http:
            http += " im_ws_rate 0; im_api_rate 0;"
        for key, val in (("MODULE", MODULE), ("WORKERS", str(workers)),
                         ("LOG_LEVEL", "info"), ("REDIS", redis),
                         ("LISTEN", "127.0.0.1:%d" % self.port),
                         ("EXTRA_HTTP", http), ("EXTRA_WS", ws),
                         ("DEMO", os.path.join(ROOT, "build/web/demo/")),
                         ("USER", nginx_user()),
                         ("MONGO", "im_mongo %s;" % mongo if mongo else "")):
            conf = conf.replace("@%s@" % key, val)
        with open(os.path.join(self.dir, "conf/nginx.conf"), "w") as f:
            f.write(conf)
        self.error_log = os.path.join(self.dir, "logs/error.log")

    def nginx(self, *args):
        return subprocess.run(
            ["nginx", "-p", self.dir, "-c", "conf/nginx.conf",
             "-e", self.error_log] + list(args),
            capture_output=True, text=True, timeout=30)

    def start(self):
        out = self.nginx()
        assert out.returncode == 0, out.stderr
        wait_port(self.port)
        self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        """Until both Redis connections of every worker are up."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                Api(self).post("/auth/get_admin_token",
                               {"secret": SECRET, "userID": ADMIN})
                if self.redis_ready():
                    return
            except (OSError, AssertionError):
                pass
            time.sleep(0.05)
        raise RuntimeError("nginx on %d not ready" % self.port)

    def redis_ready(self):
        log = self.log()
        n = self.worker_count()
        return (log.count("subscriber connected") >= n
                and len(re.findall(r"command connection to \S+ connected",
                                   log)) >= n)

    def worker_count(self):
        return len(self.worker_pids()) or 1

    def master_pid(self):
        with open(os.path.join(self.dir, "logs/nginx.pid")) as f:
            return int(f.read())

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.master_pid())],
                             capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def reload(self):
        out = self.nginx("-s", "reload")
        assert out.returncode == 0, out.stderr

    def stop(self):
        try:
            pid = self.master_pid()
        except (OSError, ValueError):
            return
        self.nginx("-s", "quit")
        end = time.time() + 15
        while time.time() < end:
            if not alive(pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def bad_log_lines(self):
        return [l for l in self.log().splitlines() if BAD_LOG.search(l)]

    def ws_url(self, uid, token, platform=1, operation="op"):
        return ("ws://127.0.0.1:%d/im/ws?sendID=%s&token=%s&platformID=%d"
                "&operationID=%s" % (self.port, uid, token, platform,
                                     operation))


class Api:
    """A REST client for one nginx instance."""

    def __init__(self, ngx):
        self.ngx = ngx
        self._admin = None

    def post(self, path, body, token=None, operation="test-op",
             raw=None, headers=None):
        h = {"Content-Type": "application/json"}
        if operation is not None:
            h["operationID"] = operation
        if token is not None:
            h["token"] = token
        h.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(
            "http://127.0.0.1:%d/im/api%s" % (self.ngx.port, path),
            data=data, headers=h, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            return json.load(resp)

    def admin_token(self):
        if self._admin is None:
            r = self.post("/auth/get_admin_token",
                          {"secret": SECRET, "userID": ADMIN})
            assert r["errCode"] == 0, r
            self._admin = r["data"]["token"]
        return self._admin

    def register(self, *uids):
        r = self.post("/user/user_register",
                      {"users": [{"userID": u, "nickname": u}
                                 for u in uids]},
                      token=self.admin_token())
        assert r["errCode"] == 0, r

    def user_token(self, uid, platform=1):
        r = self.post("/auth/get_user_token",
                      {"userID": uid, "platformID": platform},
                      token=self.admin_token())
        assert r["errCode"] == 0, r
        return r["data"]["token"]


def uids(n=2, prefix="u"):
    """Fresh user IDs, so tests never share conversations."""
    tag = uuid.uuid4().hex[:8]
    return ["%s%s-%d" % (prefix, tag, i) for i in range(n)]


def single_conv(a, b):
    a, b = sorted([a, b], key=lambda s: s.encode())
    return "si_%s_%s" % (a, b)


def run(coro, timeout=60):
    """Runs a coroutine to completion from a synchronous test."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Client:
    """A logged-in WebSocket client (python3-websockets) speaking JSON."""

    def __init__(self, ngx, uid, token, platform=1):
        self.url = ngx.ws_url(uid, token, platform)
        self.uid = uid
        self.ws = None
        self.incr = 0
        self.pushes = []
        self.responses = {}

    async def connect(self):
        self.ws = await websockets.connect(self.url, max_size=None,
                                           max_queue=None,
                                           ping_interval=None)
        return self

    async def close(self):
        if self.ws:
            await self.ws.close()

    async def _read_one(self, timeout):
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if frame.get("reqIdentifier") == 2001:
            self.pushes.append(frame)
        else:
            self.responses[frame.get("msgIncr")] = frame
        return frame

    async def request(self, req_id, data, timeout=10):
        self.incr += 1
        incr = "%s-%d" % (self.uid, self.incr)
        await self.ws.send(json.dumps({"reqIdentifier": req_id,
                                       "operationID": "op-%d" % self.incr,
                                       "msgIncr": incr, "data": data}))
        end = time.time() + timeout
        while incr not in self.responses:
            await self._read_one(max(0.01, end - time.time()))
        return self.responses.pop(incr)

    async def push(self, timeout=5):
        """The next 2001 push's messages, flattened."""
        end = time.time() + timeout
        while not self.pushes:
            await self._read_one(max(0.01, end - time.time()))
        frame = self.pushes.pop(0)
        return [m for msgs in frame["data"]["msgs"].values() for m in msgs]

    async def send_text(self, recv, text, client_msg_id=None, **extra):
        data = {"sendID": self.uid, "recvID": recv, "sessionType": 1,
                "contentType": 101,
                "content": json.dumps({"content": text})}
        if client_msg_id:
            data["clientMsgID"] = client_msg_id
        data.update(extra)
        return await self.request(1003, data)

    async def pull(self, conv, begin, end, num=100):
        r = await self.request(1002, {"seqRanges": [
            {"conversationID": conv, "begin": begin, "end": end,
             "num": num}]})
        return r

    async def newest(self):
        return await self.request(1001, {})


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("im"))


class ClusterRedis:
    """The shared stacks' Redis as a 3+3 Redis Cluster (IM_TEST_REDIS=
    cluster): the same face as Redis for the tests that look inside."""

    def __init__(self, base):
        from helpers_cluster import RedisCluster
        self.cluster = RedisCluster(base, masters=3, replicas=1)

    def start(self):
        self.cluster.start()
        return self

    def stop(self):
        self.cluster.stop()

    def cli(self, *args):
        """redis-cli -c on a master: key commands follow MOVED; KEYS and
        PUBSUB see that node only."""
        port = self.cluster.masters()[0]
        out = subprocess.run(["redis-cli", "-c", "-p", str(port)]
                             + list(args), capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()

    @property
    def port(self):
        """The master of im:push, for clients reading the job stream."""
        return self.cluster.master_of_slot(self.cluster.slot_of("im:push"))

    @property
    def addr(self):
        return self.cluster.seeds


CLUSTER = os.environ.get("IM_TEST_REDIS") == "cluster"


def channel(uid):
    """A user's delivery channel (docs/architecture.md)."""
    return "im:{u:%s}:ch" % uid if CLUSTER else "im:u:%s" % uid


@pytest.fixture(scope="session")
def redis_server(base_dir):
    r = (ClusterRedis if CLUSTER else Redis)(base_dir).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def stack(base_dir, redis_server):
    """The shared default stack: one nginx with 2 workers."""
    ngx = Nginx(base_dir, redis_server.addr).start()
    yield ngx
    ngx.stop()
    assert ngx.bad_log_lines() == []


@pytest.fixture(scope="session")
def stack2(base_dir, redis_server):
    """A second nginx "host" sharing the same Redis."""
    ngx = Nginx(base_dir, redis_server.addr).start()
    yield ngx
    ngx.stop()
    assert ngx.bad_log_lines() == []


@pytest.fixture
def api(stack):
    return Api(stack)


@pytest.fixture(autouse=True)
def no_bad_log_lines(request):
    """Every test leaves the shared nginx logs free of alert/crit/emerg."""
    yield
    for name in ("stack", "stack2"):
        if name in request.fixturenames:
            ngx = request.getfixturevalue(name)
            assert ngx.bad_log_lines() == []


def sanitizer_reports():
    try:
        return set(os.listdir(SANITIZER_LOGS))
    except (OSError, TypeError):
        return set()


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    """./build.sh asan: a test during which (setup and teardown included)
    a sanitizer reported fails, with the report.  (A worker aborts on a
    report, which the error log checks see too, but not always: one
    that is already exiting leaves with code 1, a mere [notice].)"""
    if not SANITIZER_LOGS:
        yield
        return
    before = sanitizer_reports()
    yield
    new = sorted(sanitizer_reports() - before)
    if new:
        texts = []
        for name in new:
            with open(os.path.join(SANITIZER_LOGS, name),
                      errors="replace") as f:
                texts.append("==== %s\n%s" % (name, f.read()))
        pytest.fail("sanitizer reports:\n" + "\n".join(texts),
                    pytrace=False)


# ./build.sh asan: assertions about what ASan itself changes, excused
# (reported as xfail) when, and only when, they are the one that fails:
# {test name: text of the failing source line}
ASAN_EXCUSED = {
    # a worker's VmRSS: ASan keeps freed memory in quarantine (256 MB),
    # pads every block with redzones and does not give memory back, so
    # RSS grows by far more than 10 MB under the 16 MB flood (measured:
    # +290 MB; +12 MB even with no quarantine) whatever the module does
    "test_slow_reader_is_disconnected": "rss1[p] - rss0[p]",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    text = ASAN_EXCUSED.get(item.originalname)
    if not (SANITIZER_LOGS and text and call.when == "call" and rep.failed):
        return
    crash = getattr(rep.longrepr, "reprcrash", None)
    if crash and text in linecache.getline(crash.path, crash.lineno):
        rep.outcome = "skipped"
        rep.wasxfail = "under ASan: %s" % text


@pytest.fixture
def own_stack(base_dir):
    """A private Redis + nginx for tests that break things."""
    made = []

    def make(workers=2, http="", ws="", redis=None, mongo=None):
        r = redis or Redis(base_dir).start()
        ngx = Nginx(base_dir, r.addr, workers=workers, http=http,
                    ws=ws, mongo=mongo).start()
        made.append((r, ngx))
        return r, ngx

    yield make
    for r, ngx in made:
        ngx.stop()
        r.stop()
        assert ngx.bad_log_lines() == []
