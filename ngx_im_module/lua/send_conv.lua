-- Redis Cluster: stores one message of a conversation, atomically, in
-- the conversation's slot only (the users' parts are conv_index.lua
-- before it and deliver.lua after it; the persistence queue entry is
-- added by the caller after it).
-- KEYS: 1 conv seq, 2 conv msgs (hash seq -> MsgData JSON),
--       3 dedup key of the sender's clientMsgID, 4 conv reserved seq,
--       5 conv persisted-and-hot seqs, 6 conv hole (seq_seed.lua)
-- ARGV: 1 JSON up to "seq":, 2 JSON after the seq digits, 3 now (ms),
--       4 dedup TTL (s), 5 serverMsgID, 6 "1" with MongoDB,
--       7 hot window, 8 "1" to allocate past the reservation (MongoDB
--       unreachable)
-- Returns {1, seq, the hole or ""} for a new message, {0, seq,
-- sendTime, serverMsgID} for a resend of a known clientMsgID, {-2} when
-- the seq must first be seeded from MongoDB, {-3, seq} when MongoDB must
-- first reserve seqs past seq (as send.lua).
local old = redis.call('GET', KEYS[3])
if old then
    local seq, t, id = string.match(old, '^(%d+) (%d+) (%S+)$')
    return {0, tonumber(seq), tonumber(t), id}
end

local persist = ARGV[6] == '1'
if persist then
    local cur = redis.call('GET', KEYS[1])
    local reserved = redis.call('GET', KEYS[4])
    if not cur or not reserved then
        return {-2}
    end
    cur = tonumber(cur)
    if ARGV[8] ~= '1' and cur + 1 > tonumber(reserved) then
        return {-3, cur}
    end
end

local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1] .. seq .. ARGV[2])
redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[5], 'EX',
           ARGV[4])

if persist then
    -- the window passed this one; it left Redis if it is persisted
    local t = seq - tonumber(ARGV[7])
    if t >= 1 and redis.call('HDEL', KEYS[5], t) == 1 then
        redis.call('HDEL', KEYS[2], t)
    end
end
return {1, seq, redis.call('GET', KEYS[6]) or ''}
