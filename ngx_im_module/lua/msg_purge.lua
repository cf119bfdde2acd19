-- delete_msg_physical: a conversation's messages sent before a time leave
-- Redis, oldest first, at most 10,000 seqs per call.  Seqs follow send
-- time, so the walk stops at the first message at or after the time.
-- KEYS: 1 the conversation's messages, 2 its purge mark (the last seq
--       passed), 3 its seq, 4 its persisted-and-hot seqs
-- ARGV: 1 the time (ms)
-- Returns the number of seqs passed.
local t = tonumber(ARGV[1]) or 0
local seq = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local max = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local n = 0
while seq < max and n < 10000 do
    local m = redis.call('HGET', KEYS[1], seq + 1)
    if m then
        local sent = tonumber(string.match(m, '"sendTime":(%d+)'))
        if sent and sent >= t then
            break
        end
        redis.call('HDEL', KEYS[1], seq + 1)
        redis.call('HDEL', KEYS[4], seq + 1)
    end
    seq = seq + 1
    n = n + 1
end
if n > 0 then
    redis.call('SET', KEYS[2], seq)
end
return n
