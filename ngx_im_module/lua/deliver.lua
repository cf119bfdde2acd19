-- Redis Cluster: a stored message reaches one of its users, in that
-- user's slot: the conversation's last activity, max seq and latest
-- message in the user's view (conv.lua reads it), the sender's own read
-- seq, and the delivery on the user's sharded channel.  Idempotent but
-- for the delivery.  A user with recvMsgOpt 1 gets no delivery, and
-- with 1 or 2 no offline push (the reply counts it as reached).
-- KEYS: 1 conversation index, 2 max seqs (conv -> seq), 3 read seqs,
--       4 presence hash, 5 latest messages, 6 recvMsgOpts, 7 holes of
--       the user's conversations (conv -> "from to", seq_seed.lua)
-- ARGV: 1 conv, 2 now (ms), 3 seq, 4 "1" for the sender, 5 channel,
--       6 delivery header ("" for no delivery), 7 the MsgData, 8 the
--       conversation's hole ("" for none)
-- Returns the workers the delivery reached, 0 when every session of the
-- user is in the background (2004).
local seq = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') < seq then
    redis.call('HSET', KEYS[2], ARGV[1], seq)
    redis.call('HSET', KEYS[5], ARGV[1], ARGV[7])
end
if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[7], ARGV[1], ARGV[8])
end
if ARGV[4] == '1'
   and tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') < seq then
    redis.call('HSET', KEYS[3], ARGV[1], seq)
end
-- the conversation's option, else the user's global one (friend.lua:
-- the profile, in this slot)
local ropt = ARGV[4] ~= '1'
             and (redis.call('HGET', KEYS[6], ARGV[1])
                  or redis.call('HGET', string.gsub(KEYS[6], 'ropt$',
                                                    'profile'),
                                'globalRecvMsgOpt'))
if ropt == '0' then
    ropt = false
end
if ARGV[6] == '' or ropt == '1' then
    return ropt and 1 or 0
end

local online = redis.call('SPUBLISH', ARGV[5], ARGV[6] .. ARGV[7])
if ropt then
    return 1
end
-- a session in the foreground (not "b...", 2004), or no entry yet (a
-- login landing)?  No worker liveness here: those keys live in other
-- slots.  A user's sessions are not bounded, so at most PAGES pages of
-- HSCAN (a hash of up to 128 entries comes in one), after which the user
-- counts as in the foreground
local PAGES, COUNT = 8, 16
local function foreground()
    local cursor, seen = '0', 0
    for _ = 1, PAGES do
        local page = redis.call('HSCAN', KEYS[4], cursor, 'COUNT', COUNT)
        local e = page[2]
        for i = 2, #e, 2 do
            if string.sub(e[i], 1, 1) ~= 'b' then
                return true
            end
        end
        seen = seen + #e
        cursor = page[1]
        if cursor == '0' then
            return seen == 0
        end
    end
    return true
end
if online > 0 and not foreground() then
    online = 0
end
return online
