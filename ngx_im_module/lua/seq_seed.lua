-- Seeds a conversation's seq from MongoDB's high-water mark, or raises
-- its reservation.
-- KEYS: 1 conv seq, 2 conv reserved seq, 3 conv hole
-- ARGV: 1 the mark to seed from ("" to leave the seq), 2 new reservation,
--       3 the highest seq MongoDB stores a message under (-1: unknown)
-- The seq only moves forward: past the mark, every seq ever reserved or
-- stored, so a seq is never used twice even if the key lagged behind.
-- The seqs a seed jumps over, above the highest stored one, hold no
-- message: they are the conversation's hole ("from to"), which unread
-- counts leave out (conv.lua).  Missing keys are created.  Returns 0.
local function raise(key, value)
    local cur = redis.call('GET', key)
    if not cur or tonumber(cur) < tonumber(value) then
        redis.call('SET', key, value)
        return true
    end
    return false
end

if ARGV[1] ~= '' and raise(KEYS[1], ARGV[1]) then
    local stored = tonumber(ARGV[3]) or -1
    if stored >= 0 and stored < tonumber(ARGV[1]) then
        redis.call('SET', KEYS[3], stored .. ' ' .. ARGV[1])
    end
end
raise(KEYS[2], ARGV[2])
return 0
