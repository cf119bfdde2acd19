-- Seeds a conversation's seq from MongoDB's high-water mark, and raises
-- its reservation.
-- KEYS: 1 conv seq, 2 conv reserved seq
-- ARGV: 1 seq to seed when the key is missing ("" to leave it),
--       2 new reservation
-- Returns 0.
if ARGV[1] ~= '' then
    redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
local r = tonumber(redis.call('GET', KEYS[2]) or '0')
if r < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[2])
end
return 0
