-- Redis Cluster: puts a conversation in a user's index before its
-- message is stored, so that a stored message is never out of the
-- user's sync (1001) even if the send stops halfway.  Idempotent.  A
-- conversation new to the user enters its version log (conv.lua).
-- KEYS: 1 the user's profile, 2 the user's conversation index
-- ARGV: 1 "1" when the user must be registered, 2 now (ms), 3 conv,
--       4 the user's key prefix "im:{u:<uid>}:"
-- Returns 0, or -1101 when the user is not registered.
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
    return -1101
end
if redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) == 1 then
    local p = ARGV[4]
    local v = redis.call('HINCRBY', p .. 'ver', 'v', 1)
    redis.call('ZADD', p .. 'vlog', v, ARGV[3])
    redis.call('HSET', p .. 'vins', ARGV[3], v)
    redis.call('ZREM', p .. 'vdel', ARGV[3])
end
return 0
