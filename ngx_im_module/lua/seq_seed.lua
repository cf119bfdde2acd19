-- Seeds a conversation's seq from MongoDB's high-water mark, or raises
-- its reservation.
-- KEYS: 1 conv seq, 2 conv reserved seq
-- ARGV: 1 the mark to seed from ("" to leave the seq), 2 new reservation
-- The seq only moves forward: past the mark, every seq ever reserved or
-- stored, so a seq is never used twice even if the key lagged behind.
-- Missing keys are created.  Returns 0.
local function raise(key, value)
    local cur = redis.call('GET', key)
    if not cur or tonumber(cur) < tonumber(value) then
        redis.call('SET', key, value)
    end
end

if ARGV[1] ~= '' then
    raise(KEYS[1], ARGV[1])
end
raise(KEYS[2], ARGV[2])
return 0
