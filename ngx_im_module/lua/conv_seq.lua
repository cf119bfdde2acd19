-- Max seq, read seq and last-message time of the given conversations.
-- KEYS: 1 the user's read seqs, 2 the user's conversation index,
--       3 the user's max seqs (Redis Cluster)
-- ARGV: 1 "1" in a cluster, then conversation IDs (at most 1000: the
--       caller's bound)
-- Returns {max, read, time, ...} in ARGV order.  See newest.lua for where
-- the max seqs come from.
local out = {}
for i = 2, #ARGV do
    local c = ARGV[i]
    local max
    if ARGV[1] == '1' then
        max = redis.call('HGET', KEYS[3], c)
    else
        max = redis.call('GET', 'im:{c:' .. c .. '}:seq')
    end
    out[#out + 1] = tonumber(max or '0')
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], c) or '0')
    out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], c) or '0')
end
return out
