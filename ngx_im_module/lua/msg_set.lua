-- Replaces a stored message (a revoke), while Redis still holds it.
-- KEYS: 1 the conversation's messages (hash seq -> MsgData)
-- ARGV: 1 seq, 2 the new MsgData
-- Returns 1 when replaced, 0 when Redis no longer holds the message.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
