-- Online platforms of users, across all hosts.
-- KEYS: the users' presence hashes (field "platform:worker:session")
-- A session counts only while its worker's liveness key exists; entries
-- of crashed workers are removed here.
-- Returns, per user, an array of platform IDs (each once).
local out = {}
for i = 1, #KEYS do
    local fields = redis.call('HKEYS', KEYS[i])
    local seen, list = {}, {}
    for j = 1, #fields do
        local platform, worker = string.match(fields[j], '^(%d+):(.*):%d+$')
        if worker and redis.call('EXISTS', worker) == 1 then
            if not seen[platform] then
                seen[platform] = true
                list[#list + 1] = tonumber(platform)
            end
        else
            redis.call('HDEL', KEYS[i], fields[j])
        end
    end
    out[i] = list
end
return out
