-- Online platforms of users, across all hosts.
-- KEYS: the users' presence hashes (field "platform:worker:session")
-- ARGV: 1 "1" in a Redis Cluster
-- A session counts only while its worker's liveness key exists; entries
-- of crashed workers are removed here.  In a cluster those keys live in
-- other slots, so every entry counts (docs/architecture.md).
-- Returns, per user, an array of platform IDs (each once, ascending, as
-- presence.lua publishes them).
local cluster = ARGV[1] == '1'
local out = {}
for i = 1, #KEYS do
    local fields = redis.call('HKEYS', KEYS[i])
    local seen, list = {}, {}
    for j = 1, #fields do
        local platform, worker = string.match(fields[j], '^(%d+):(.*):%d+$')
        if worker and (cluster or redis.call('EXISTS', worker) == 1) then
            if not seen[platform] then
                seen[platform] = true
                list[#list + 1] = tonumber(platform)
            end
        else
            redis.call('HDEL', KEYS[i], fields[j])
        end
    end
    table.sort(list)
    out[i] = list
end
return out
