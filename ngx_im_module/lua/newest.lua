-- Max and read seqs of a user's most recent conversations.
-- KEYS: 1 the user's conversation index, 2 the user's read seqs,
--       3 the user's max seqs (Redis Cluster)
-- ARGV: 1 at most this many conversations (1..10000), 2 "1" in a cluster
-- Returns {conv, max seq, read seq, ...}.
-- One Redis: the conversations' seq keys, derived here.  A cluster: the
-- user's copy of them, which deliver.lua keeps (the seq keys live in
-- other slots).
local n = tonumber(ARGV[1]) or 0
if n ~= n or n < 0 then n = 0 end
if n > 10000 then n = 10000 end
local convs = {}
if n > 0 then
    convs = redis.call('ZREVRANGE', KEYS[1], 0, n - 1)
end
local out = {}
for i = 1, #convs do
    local c = convs[i]
    local max
    if ARGV[2] == '1' then
        max = redis.call('HGET', KEYS[3], c)
    else
        max = redis.call('GET', 'im:{c:' .. c .. '}:seq')
    end
    out[#out + 1] = c
    out[#out + 1] = tonumber(max or '0')
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], c) or '0')
end
return out
