-- A batch is in MongoDB: acknowledge it and let the hot window shrink.
-- KEYS: 1 the persistence stream
-- ARGV: 1 group, 2 hot window (messages kept per conversation), then
--       triples: entry ID, conversation, seq; a hot window of -1 (Redis
--       Cluster, where the conversations live in other slots) only
--       acknowledges: persist_trim.lua does the rest there
-- A persisted message older than the window leaves Redis now; a newer
-- one is marked in im:{c:<conv>}:done, and send.lua drops it once the
-- window has passed it.  Entries are deleted, so XLEN is the backlog.
local w = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    local conv, seq = ARGV[i + 1], tonumber(ARGV[i + 2])
    if conv ~= '' and w >= 0 then
        local k = 'im:{c:' .. conv .. '}:'
        local max = tonumber(redis.call('GET', k .. 'seq') or '0')
        if seq <= max - w then
            redis.call('HDEL', k .. 'msgs', seq)
        else
            redis.call('HSET', k .. 'done', seq, 1)
        end
    end
end
return 0
