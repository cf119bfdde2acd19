-- Max and read seqs of a user's most recent conversations.
-- KEYS: 1 the user's conversation index, 2 the user's read seqs
-- ARGV: 1 at most this many conversations
-- Returns {conv, max seq, read seq, ...}.
-- The conversations' seq keys are derived here: single-instance Redis, or
-- a cluster-aware caller (see docs/architecture.md).
local convs = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for i = 1, #convs do
    local c = convs[i]
    out[#out + 1] = c
    out[#out + 1] = tonumber(redis.call('GET', 'im:{c:' .. c .. '}:seq')
                             or '0')
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], c) or '0')
end
return out
