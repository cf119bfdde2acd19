-- Without MongoDB: a page of the registered users, from the indexes the
-- registrations and profile changes keep (MongoDB, when configured, is
-- asked instead: docs/api.md, "Users").
-- KEYS: 1 users by registration time (zset uid -> createTime ms),
--       2 nicknames (zset, score 0, "<nickname>\0<uid>")
-- ARGV: 1 "id" (exact user ID), "nick" (nickname prefix) or "" (all),
--       2 the user ID or nickname prefix, 3 skip, 4 at most this many
--       (the caller bounds it: <= 1000)
-- Returns {total, {uid, ...}}.
local how, what = ARGV[1], ARGV[2]
local skip, limit = tonumber(ARGV[3]), tonumber(ARGV[4])

if how == 'id' then
    if redis.call('ZSCORE', KEYS[1], what) and skip == 0 then
        return {1, {what}}
    end
    return {redis.call('ZSCORE', KEYS[1], what) and 1 or 0, {}}
end

if how == 'nick' then
    local lo, hi = '[' .. what, '[' .. what .. '\255'
    local total = redis.call('ZLEXCOUNT', KEYS[2], lo, hi)
    local entries = redis.call('ZRANGEBYLEX', KEYS[2], lo, hi, 'LIMIT',
                               skip, limit)
    local out = {}
    for i = 1, #entries do
        out[i] = string.match(entries[i], '%z(.*)$')
    end
    return {total, out}
end

return {redis.call('ZCARD', KEYS[1]),
        redis.call('ZRANGE', KEYS[1], skip, skip + limit - 1)}
