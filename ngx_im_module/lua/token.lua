-- Records a newly issued token in the user's registry.
-- KEYS: 1 the user's token registry, 2 the user's profile
-- ARGV: 1 token, 2 expiry (unix s), 3 platform, 4 now (unix s),
--       5 "1" when the user must be registered
-- Returns 0, or 1101 when the user is not registered.
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
    return 1101
end

-- forget expired tokens, so the registry stays small
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
    local exp = tonumber(string.match(all[i + 1], '^%d+:(%d+):'))
    if exp and exp <= tonumber(ARGV[4]) then
        redis.call('HDEL', KEYS[1], all[i])
    end
end

redis.call('HSET', KEYS[1], ARGV[1], '0:' .. ARGV[2] .. ':' .. ARGV[3])
local ttl = redis.call('TTL', KEYS[1])
local want = tonumber(ARGV[2]) - tonumber(ARGV[4])
if ttl < want then
    redis.call('EXPIRE', KEYS[1], want)
end
return 0
