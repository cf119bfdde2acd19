-- Records (ARGV[1] "1") or removes ("0") a session in its user's
-- presence, and tells the workers watching the user (WS 2005) when the
-- set of platforms it is online on changed.
-- KEYS: 1 the user's presence (field "platform:worker:session")
-- ARGV: 1 "1" record / "0" remove, 2 the field, 3 the value (record),
--       4 the user's presence channel, 5 "1" in a Redis Cluster (the
--       channel is sharded, in the user's slot)
-- Publishes the platform IDs, ascending, space-separated ("" offline).
-- Returns 1 when they changed, else 0.
local function platforms()
    local seen, list = {}, {}
    local fields = redis.call('HKEYS', KEYS[1])
    for i = 1, #fields do
        local p = tonumber(string.match(fields[i], '^(%d+):'))
        if p and not seen[p] then
            seen[p] = true
            list[#list + 1] = p
        end
    end
    table.sort(list)
    return table.concat(list, ' ')
end

local before = platforms()
if ARGV[1] == '1' then
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
    redis.call('HDEL', KEYS[1], ARGV[2])
end
local after = platforms()
if before == after then
    return 0
end
redis.call(ARGV[5] == '1' and 'SPUBLISH' or 'PUBLISH', ARGV[4], after)
return 1
