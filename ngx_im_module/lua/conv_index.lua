-- Redis Cluster: puts a conversation in a user's index before its
-- message is stored, so that a stored message is never out of the
-- user's sync (1001) even if the send stops halfway.  Idempotent.
-- KEYS: 1 the user's profile, 2 the user's conversation index
-- ARGV: 1 "1" when the user must be registered, 2 now (ms), 3 conv
-- Returns 0, or -1101 when the user is not registered.
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
    return -1101
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 0
