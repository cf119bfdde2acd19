-- Adds an offline-push job for a recipient with no online session.
-- KEYS: 1 the recipient's push tokens (hash platform -> device token),
--       2 the job stream (im:push)
-- ARGV: 1 the stream's approximate maximum length, then field/value pairs
-- The job gets two more fields: "platforms" ("1,2") and "tokens" (JSON
-- object platform -> device token).  Returns the entry ID.
local all = redis.call('HGETALL', KEYS[1])
local platforms, tokens = {}, {}
for i = 1, #all, 2 do
    platforms[#platforms + 1] = all[i]
    tokens[all[i]] = all[i + 1]
end

local fields = {}
for i = 2, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
fields[#fields + 1] = 'platforms'
fields[#fields + 1] = table.concat(platforms, ',')
fields[#fields + 1] = 'tokens'
fields[#fields + 1] = #all > 0 and cjson.encode(tokens) or '{}'

return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
                  unpack(fields))
