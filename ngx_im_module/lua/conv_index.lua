-- Redis Cluster: puts a conversation in a user's index before its
-- message is stored, so that a stored message is never out of the
-- user's sync (1001) even if the send stops halfway.  Idempotent.  A
-- conversation new to the user enters its version log (conv.lua).
-- KEYS: 1 the user's profile, 2 the user's conversation index
-- ARGV: 1 "1" when the user must be registered, 2 now (ms), 3 conv,
--       4 the user's key prefix "im:{u:<uid>}:", 5 the sender's rules and
--       6 "1" to load the user's relations first (as send.lua's 17, 18),
--       7 the sender
-- Returns 0, -1101 when the user is not registered, -1302 or -1303 as
-- send.lua, or -5 when the user's relations must be loaded first.
local R = ARGV[4]
if ARGV[6] == '1' and redis.call('EXISTS', R .. 'f:loaded') == 0 then
    return -5
end
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
    return -1101
end
if ARGV[5] ~= '0' then
    if redis.call('HEXISTS', R .. 'f:blacks', ARGV[7]) == 1 then
        return -1302
    end
    if ARGV[5] == '2'
       and redis.call('HEXISTS', R .. 'f:friends', ARGV[7]) == 0 then
        return -1303
    end
end
if redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) == 1 then
    local p = ARGV[4]
    local v = redis.call('HINCRBY', p .. 'ver', 'v', 1)
    redis.call('ZADD', p .. 'vlog', v, ARGV[3])
    redis.call('HSET', p .. 'vins', ARGV[3], v)
    redis.call('ZREM', p .. 'vdel', ARGV[3])
end
return 0
