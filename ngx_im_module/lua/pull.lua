-- The newest ARGV[3] messages with seq in [ARGV[1], ARGV[2]].
-- KEYS: 1 conv msgs, 2 conv seq
-- Returns {max seq, isEnd (1 when the range start was reached), JSON...};
-- a missing message is a nil element.
local max = tonumber(redis.call('GET', KEYS[2]) or '0')
local first, last, num = tonumber(ARGV[1]), tonumber(ARGV[2]),
                         tonumber(ARGV[3])

if first < 1 then first = 1 end
if last > max then last = max end
if last < first or num < 1 then
    return {max, 1}
end

local from = last - num + 1
if from < first then from = first end

local seqs = {}
for s = from, last do
    seqs[#seqs + 1] = s
end

local msgs = redis.call('HMGET', KEYS[1], unpack(seqs))
local out = {max, from == first and 1 or 0}
for i = 1, #seqs do
    out[i + 2] = msgs[i]
end
return out
