-- A group conversation's head, for a user's records in a Redis Cluster
-- (conv.lua cannot read the group's slot there): the group's seq, the
-- seq of its last @all and its latest message while Redis holds it.
-- KEYS: 1 the conversation's seq, 2 the group's record, 3 its messages
-- Returns {seq, @all seq, MsgData JSON or ""}.
local seq = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local atall = tonumber(redis.call('HGET', KEYS[2], 'atall') or '0') or 0
local last = seq > 0 and redis.call('HGET', KEYS[3], seq) or ''
return {seq, atall, last or ''}
