-- Registers users, all or none.
-- KEYS: the users' profile keys
-- ARGV: per user: nickname, faceURL, ex; then the time (ms)
-- Returns 0, or the 1-based index of a user that already exists.
for i = 1, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
        return i
    end
end
local now = ARGV[#ARGV]
for i = 1, #KEYS do
    redis.call('HSET', KEYS[i], 'nickname', ARGV[3 * i - 2],
               'faceURL', ARGV[3 * i - 1], 'ex', ARGV[3 * i],
               'createTime', now)
    -- a new user has nothing in MongoDB to load but its profile, which
    -- the caller wrote there first as friend.lua's document rev 1
    local F = string.gsub(KEYS[i], 'profile$', 'f:')
    redis.call('SET', F .. 'loaded', now)
    redis.call('HSET', F .. 'rev',
               'p:' .. string.match(KEYS[i], '^im:{u:(.*)}:profile$'), 1)
end
return 0
