-- The newest ARGV[3] messages with seq in [ARGV[1], ARGV[2]], at most
-- ARGV[5] bytes of them (the newest message always, so a client can
-- page past one that is larger).
-- KEYS: 1 conv msgs, 2 conv seq
-- ARGV: 1 begin, 2 end, 3 num, 4 "1" when MongoDB holds the history,
--       5 byte budget
-- Returns {max seq, isEnd (1 when the range start was reached), first
-- seq, JSON...}, one element per seq from the first on; a message outside
-- the hot window is a nil element.  Without a seq key (Redis lost it) but
-- with MongoDB, the client's end is taken as it is.
-- Every bound is applied here again (the caller clamps too): seqs stay
-- below 2^53, where Lua numbers are exact, and the loop runs at most
-- 1000 times whatever the arguments.
local LIMIT = 9007199254740991

-- an integer in [lo, hi]; anything else (nil, NaN, text) is dflt
local function int(v, lo, hi, dflt)
    local n = tonumber(v)
    if n == nil or n ~= n then return dflt end
    if n < lo then return lo end
    if n > hi then return hi end
    return math.floor(n)
end

local cur = redis.call('GET', KEYS[2])
local max = int(cur, 0, LIMIT, 0)
local first = int(ARGV[1], 1, LIMIT, 1)
local last = int(ARGV[2], 0, LIMIT, 0)
local num = int(ARGV[3], 0, 1000, 0)
local budget = int(ARGV[5], 0, LIMIT, 0)

if last > max and not (cur == false and ARGV[4] == '1') then
    last = max
end
if last < first or num < 1 then
    return {max, 1, first}
end

local from = last - num + 1
if from < first then from = first end

local seqs = {}
for i = 0, last - from do
    seqs[i + 1] = from + i
end

local msgs = redis.call('HMGET', KEYS[1], unpack(seqs))

-- drop the oldest while the rest exceeds the budget
local keep, used = #seqs, 0
for i = #seqs, 1, -1 do
    local m = msgs[i]
    local n = m and #m or 0
    if used + n > budget and i < #seqs then
        break
    end
    used = used + n
    keep = #seqs - i + 1
end

local skip = #seqs - keep
from = from + skip
local out = {max, from == first and 1 or 0, from}
for i = 1, keep do
    out[i + 3] = msgs[i + skip]
end
return out
