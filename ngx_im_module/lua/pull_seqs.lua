-- The messages of the seqs ARGV[2..], in that order, at most ARGV[1]
-- bytes of them (the first message always).
-- KEYS: 1 conv msgs
-- Returns one element per seq: the JSON, nil when the seq is outside the
-- hot window, or 0 when it was left out to keep within the budget.
-- The caller sends at most 1000 seqs; this script loops once per seq.
local budget = tonumber(ARGV[1]) or 0
if budget ~= budget then budget = 0 end
local n = #ARGV - 1
if n > 1000 then n = 1000 end
if n < 1 then return {} end

local seqs = {}
for i = 1, n do
    seqs[i] = ARGV[i + 1]
end

local msgs = redis.call('HMGET', KEYS[1], unpack(seqs))
local out, used = {}, 0
for i = 1, n do
    local m = msgs[i]
    local len = m and #m or 0
    if used + len > budget and i > 1 then
        out[i] = 0
    else
        used = used + len
        out[i] = m
    end
end
return out
