"""The module's files call each other in layers, never in a circle
(docs/architecture.md draws them): pure codecs -> transports (redis,
mongo) -> store -> domain (sessions, send, pull) -> surfaces (ws, api,
metrics).  Upward calls go through handlers registered at init."""

import os
import subprocess
import sys

from conftest import ROOT


def test_no_circle_of_calls_among_the_module_files():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "t/callgraph.py"),
         os.path.join(ROOT, "ngx_im_module")],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no cycles" in out.stdout + out.stderr


def test_only_the_store_speaks_redis():
    """No file above the store includes the Redis transport's header or
    names a key: the store layer owns them."""
    src = os.path.join(ROOT, "ngx_im_module")
    allowed = {"ngx_http_im_redis.c", "ngx_http_im_store.c",
               "ngx_http_im_store_msg.c", "ngx_http_im_store_conv.c",
               "ngx_http_im_store_batch.c",
               "ngx_http_im_store_group.c", "ngx_http_im_store_user.c",
               "ngx_http_im_store_int.h",
               "ngx_http_im_store.h",
               "ngx_http_im_redis.h", "ngx_http_im_module.c",
               "ngx_http_im_slot.c", "ngx_http_im_slot.h",
               "ngx_http_im_redis_sub.c"}
    for name in sorted(os.listdir(src)):
        if not name.endswith((".c", ".h")) or name in allowed:
            continue
        with open(os.path.join(src, name)) as f:
            text = f.read()
        assert "ngx_http_im_redis.h" not in text, name
        assert "redisReply" not in text, name
        assert '"im:{' not in text and '"im:user' not in text, name
