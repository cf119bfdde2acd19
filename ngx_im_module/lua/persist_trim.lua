-- Redis Cluster: one persisted message and the hot window of its
-- conversation (persist_done.lua does this for all entries on one
-- Redis).  A persisted message older than the window leaves Redis now; a
-- newer one is marked in done, and send_conv.lua drops it once the
-- window has passed it.
-- KEYS: 1 conv seq, 2 conv msgs, 3 conv persisted-and-hot seqs
-- ARGV: 1 seq, 2 hot window
local seq, w = tonumber(ARGV[1]), tonumber(ARGV[2])
if not seq or not w then
    return 0
end
local max = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq <= max - w then
    redis.call('HDEL', KEYS[2], seq)
else
    redis.call('HSET', KEYS[3], seq, 1)
end
return 0
