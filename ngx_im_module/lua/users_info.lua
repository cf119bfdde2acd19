-- Profiles of users.
-- KEYS: the users' profile keys
-- Returns, per user, {} when unknown or {nickname, faceURL, ex, createTime}.
local out = {}
for i = 1, #KEYS do
    out[i] = redis.call('HMGET', KEYS[i], 'nickname', 'faceURL', 'ex',
                        'createTime')
    if not out[i][4] then
        out[i] = {}
    end
end
return out
