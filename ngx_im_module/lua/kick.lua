-- Marks every token of one platform of a user as kicked.
-- KEYS: 1 the user's token registry (hash token -> "state:exp:platform")
-- ARGV: 1 platform
-- Returns how many tokens were kicked.
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
    local state, exp, platform = string.match(all[i + 1],
                                              '^(%d+):(%d+):(%d+)$')
    if platform == ARGV[1] and state ~= '2' then
        redis.call('HSET', KEYS[1], all[i], '2:' .. exp .. ':' .. platform)
        n = n + 1
    end
end
return n
