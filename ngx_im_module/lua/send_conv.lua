-- Stores one message of a conversation, atomically, in the
-- conversation's slot only (in a Redis Cluster, and for every group) (the users' parts are conv_index.lua
-- before it and deliver.lua after it; the persistence queue entry is
-- added by the caller after it).
-- KEYS: 1 conv seq, 2 conv msgs (hash seq -> MsgData JSON),
--       3 dedup key of the sender's clientMsgID, 4 conv reserved seq,
--       5 conv persisted-and-hot seqs, 6 conv hole (seq_seed.lua);
--       for a group (sg_), also 7 the group's record, 8 its members
-- ARGV: 1 JSON up to "seq":, 2 JSON after the seq digits, 3 now (ms),
--       4 dedup TTL (s), 5 serverMsgID, 6 "1" with MongoDB,
--       7 hot window, 8 "1" to allocate past the reservation (MongoDB
--       unreachable); for a group, also 9 the sender, 10 "1" for a
--       system sender (not a member), 11 the group's channel, 12 PUBLISH
--       or SPUBLISH, 13 the delivery header, 14 "1" for an @all
-- Returns {1, seq, the hole or ""} for a new message, {0, seq,
-- sendTime, serverMsgID} for a resend of a known clientMsgID, {-2} when
-- the seq must first be seeded from MongoDB, {-3, seq} when MongoDB must
-- first reserve seqs past seq (as send.lua), {-1, errCode} when the
-- group refuses the sender (1201 no group, 1204 dismissed, 1203 not a
-- member, 1402 muted member, 1403 muted group), {-4} when the group must
-- first be loaded from MongoDB.
-- A group message is published once, on the group's channel: every
-- worker holding members fans it out (docs/architecture.md).
local group = #KEYS > 6
if group then
    local s = redis.call('HGET', KEYS[7], 'info')
    if not s then
        -- with MongoDB, a group this Redis never had is loaded first
        if ARGV[6] == '1' and redis.call('EXISTS', string.sub(KEYS[7], 1, -2)
                                                   .. 'loaded') == 0 then
            return {-4}
        end
        return {-1, 1201}
    end
    local g = cjson.decode(s)
    local system = ARGV[10] == '1'
    if g.status == 2 and not system then
        return {-1, 1204}
    end
    if not system then
        local m = redis.call('HGET', KEYS[8], ARGV[9])
        if not m then
            return {-1, 1203}
        end
        m = cjson.decode(m)
        if m.roleLevel < 60 then
            if g.status == 3 then
                return {-1, 1403}
            end
            if (tonumber(m.muteEndTime) or 0) > tonumber(ARGV[3]) then
                return {-1, 1402}
            end
        end
    end
end

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
if group then
    if ARGV[14] == '1' then
        redis.call('HSET', KEYS[7], 'atall', seq)
    end
    redis.call(ARGV[12], ARGV[11], ARGV[13] .. ARGV[1] .. seq .. ARGV[2])
end
return {1, seq, redis.call('GET', KEYS[6]) or ''}
