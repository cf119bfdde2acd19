-- Takes a batch of messages to persist, for one worker (consumer).
-- KEYS: 1 the persistence stream (entries {c = conversation, s = seq})
-- ARGV: 1 group, 2 consumer, 3 count, 4 idle ms after which another
--       consumer's unacknowledged entries are claimed, 5 "1" to delete
--       consumers that have nothing pending and were idle for an hour,
--       6 "1" in a Redis Cluster, where the messages live in other
--       slots: the caller reads them, and the JSON is always ""
-- First this consumer's own pending entries (a retry after a failed
-- insert), else entries of crashed consumers, else new ones.
-- Returns {id, conversation, seq, MsgData JSON or "", ...}.
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')

if ARGV[5] == '1' then
    local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
    for i = 1, #consumers do
        local c, name, pending, idle = consumers[i], nil, 0, 0
        for j = 1, #c, 2 do
            if c[j] == 'name' then name = c[j + 1] end
            if c[j] == 'pending' then pending = c[j + 1] end
            if c[j] == 'idle' then idle = c[j + 1] end
        end
        if name and name ~= ARGV[2] and pending == 0 and idle > 3600000 then
            redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
        end
    end
end

local entries = {}
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT',
                     ARGV[3], 'STREAMS', KEYS[1], '0')
if r and r[1] then
    entries = r[1][2]
end

if #entries == 0 then
    local c = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4],
                         '0-0', 'COUNT', ARGV[3])
    entries = c[2]
end

if #entries == 0 then
    r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT',
                   ARGV[3], 'STREAMS', KEYS[1], '>')
    if r and r[1] then
        entries = r[1][2]
    end
end

local out = {}
for i = 1, #entries do
    local id, f = entries[i][1], entries[i][2]
    local conv, seq = '', '0'
    if f then
        for j = 1, #f, 2 do
            if f[j] == 'c' then conv = f[j + 1] end
            if f[j] == 's' then seq = f[j + 1] end
        end
    end
    local json = ''
    if conv ~= '' and ARGV[6] ~= '1' then
        json = redis.call('HGET', 'im:{c:' .. conv .. '}:msgs', seq) or ''
    end
    out[#out + 1] = id
    out[#out + 1] = conv
    out[#out + 1] = seq
    out[#out + 1] = json
end
return out
