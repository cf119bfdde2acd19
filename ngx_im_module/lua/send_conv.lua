-- Redis Cluster: stores one message of a conversation, atomically, in
-- the conversation's slot only (the users' parts are conv_index.lua
-- before it and deliver.lua after it).
-- KEYS: 1 conv seq, 2 conv msgs (hash seq -> MsgData JSON),
--       3 dedup key of the sender's clientMsgID
-- ARGV: 1 JSON up to "seq":, 2 JSON after the seq digits, 3 now (ms),
--       4 dedup TTL (s), 5 serverMsgID
-- Returns {1, seq} for a new message, {0, seq, sendTime, serverMsgID}
-- for a resend of a known clientMsgID.
local old = redis.call('GET', KEYS[3])
if old then
    local seq, t, id = string.match(old, '^(%d+) (%d+) (%S+)$')
    return {0, tonumber(seq), tonumber(t), id}
end

local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1] .. seq .. ARGV[2])
redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[5], 'EX',
           ARGV[4])
return {1, seq}
