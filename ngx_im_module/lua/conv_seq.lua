-- Max seq, read seq and last-message time of the given conversations.
-- KEYS: 1 the user's read seqs, 2 the user's conversation index
-- ARGV: conversation IDs
-- Returns {max, read, time, ...} in ARGV order.
local out = {}
for i = 1, #ARGV do
    local c = ARGV[i]
    out[#out + 1] = tonumber(redis.call('GET', 'im:{c:' .. c .. '}:seq')
                             or '0')
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], c) or '0')
    out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], c) or '0')
end
return out
