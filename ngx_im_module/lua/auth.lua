-- Checks a signed token against the user's token registry at login.
-- KEYS: 1 the user's token registry (hash token -> "state:exp:platform"),
--       2 the user's profile
-- ARGV: 1 token, 2 "1" when the user must be registered
-- Returns 0, or an error code: 1507 unknown token, 1506 kicked,
-- 1101 user no longer registered.
local t = redis.call('HGET', KEYS[1], ARGV[1])
if not t then
    return 1507
end
if string.sub(t, 1, 2) == '2:' then
    return 1506
end
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
    return 1101
end
return 0
