-- The newest ARGV[3] messages with seq in [ARGV[1], ARGV[2]].
-- KEYS: 1 conv msgs, 2 conv seq
-- ARGV: 1 begin, 2 end, 3 num, 4 "1" when MongoDB holds the history
-- Returns {max seq, isEnd (1 when the range start was reached), first
-- seq, JSON...}, one element per seq from the first on; a message outside
-- the hot window is a nil element.  Without a seq key (Redis lost it) but
-- with MongoDB, the client's end is taken as it is.
local cur = redis.call('GET', KEYS[2])
local max = tonumber(cur or '0')
local first, last, num = tonumber(ARGV[1]), tonumber(ARGV[2]),
                         tonumber(ARGV[3])

if first < 1 then first = 1 end
if last > max and not (cur == false and ARGV[4] == '1') then
    last = max
end
if last < first or num < 1 then
    return {max, 1, first}
end

local from = last - num + 1
if from < first then from = first end

local seqs = {}
for s = from, last do
    seqs[#seqs + 1] = s
end

local msgs = redis.call('HMGET', KEYS[1], unpack(seqs))
local out = {max, from == first and 1 or 0, from}
for i = 1, #seqs do
    out[i + 3] = msgs[i]
end
return out
