-- The tokens of users' online sessions, across all hosts.
-- KEYS: the users' presence hashes (field "platform:worker:session",
--       value "<time> <token>", time prefixed "b" in the background)
-- ARGV: 1 "1" in a Redis Cluster
-- As online.lua, entries of crashed workers are removed (one Redis only).
-- Returns, per user, a flat array: platform ID, token, platform ID, ...
-- (a session written before tokens were recorded has token "").
local cluster = ARGV[1] == '1'
local out = {}
for i = 1, #KEYS do
    local all = redis.call('HGETALL', KEYS[i])
    local list = {}
    for j = 1, #all, 2 do
        local platform, worker = string.match(all[j], '^(%d+):(.*):%d+$')
        if worker and (cluster or redis.call('EXISTS', worker) == 1) then
            list[#list + 1] = tonumber(platform)
            list[#list + 1] = string.match(all[j + 1], '^b?%d+ (.+)$') or ''
        else
            redis.call('HDEL', KEYS[i], all[j])
        end
    end
    out[i] = list
end
return out
