-- Profiles of users.
-- KEYS: the users' profile keys
-- Returns, per user, {nickname, faceURL, ex, createTime}; for an unknown
-- user {} or, when its relations were never loaded into this Redis
-- (friend.lua's "loaded" key is missing), {"load"}: with MongoDB the
-- caller loads it and asks again.
local out = {}
for i = 1, #KEYS do
    out[i] = redis.call('HMGET', KEYS[i], 'nickname', 'faceURL', 'ex',
                        'createTime')
    if not out[i][4] then
        local loaded = string.gsub(KEYS[i], 'profile$', 'f:loaded')
        out[i] = redis.call('EXISTS', loaded) == 1 and {} or {'load'}
    end
end
return out
