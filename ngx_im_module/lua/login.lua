-- Admits a WebSocket login under the multi-login policy, atomically:
-- checks the token as auth.lua does, records the session in the user's
-- presence, and takes its seat from the older sessions there.
-- KEYS: 1 the user's token registry (hash token -> "state:exp:platform"),
--       2 the user's profile,
--       3 the user's presence (field "platform:worker:session",
--         value "<time> <token>", time prefixed "b" in the background)
-- ARGV: 1 token, 2 "1" when the user must be registered,
--       3 the new session's presence field, 4 its value,
--       5 the seats: one letter per platform 1..11 (sessions on platforms
--         with the same letter share a seat; empty: nobody is kicked),
--       6 "1" in a Redis Cluster (the channels are sharded), 7 the user's
--       channel, 8 the user's presence channel (see presence.lua: the
--       platforms are published there when they changed)
-- Publishes on the user's channel "l n<field>", then a line per session
-- that loses its seat: "k<field>" kicked (its token is marked kicked), or
-- "r<field>" replaced (it used the same token, which stays valid).  The
-- new session goes live when its worker reads that line, and the others
-- close when theirs do: one order for every worker, so no push reaches
-- both.
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

local function platforms()
    local seen, list = {}, {}
    local fields = redis.call('HKEYS', KEYS[3])
    for i = 1, #fields do
        local p = tonumber(string.match(fields[i], '^(%d+):'))
        if p and not seen[p] then
            seen[p] = true
            list[#list + 1] = p
        end
    end
    table.sort(list)
    return table.concat(list, ' ')
end

local before = platforms()
local seats = ARGV[5]
local mine = string.match(ARGV[3], '^(%d+):')
local seat = seats ~= '' and string.sub(seats, tonumber(mine), tonumber(mine))
local line = 'l n' .. ARGV[3]

if seat and seat ~= '' then
    -- a seat holds one session, so under a policy the hash is small;
    -- the bound only guards against a policy switched on late
    local all = redis.call('HGETALL', KEYS[3])
    local n = math.min(#all, 2048)
    for i = 1, n, 2 do
        local f, v = all[i], all[i + 1]
        local p, worker = string.match(f, '^(%d+):(.*):%d+$')
        p = tonumber(p)
        if not p or (ARGV[6] ~= '1' and redis.call('EXISTS', worker) == 0)
        then
            -- malformed, or of a worker that died: not a session
            redis.call('HDEL', KEYS[3], f)
        elseif p >= 1 and p <= 11 and string.sub(seats, p, p) == seat then
            redis.call('HDEL', KEYS[3], f)
            local tok = string.match(v, '^b?%d+ (.+)$')
            if tok == ARGV[1] then
                line = line .. '\nr' .. f
            else
                if tok then
                    local old = redis.call('HGET', KEYS[1], tok)
                    local rest = old and string.match(old, '^%d+:(.*)$')
                    if rest then
                        redis.call('HSET', KEYS[1], tok, '2:' .. rest)
                    end
                end
                line = line .. '\nk' .. f
            end
        end
    end
end

redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
local publish = ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH'
redis.call(publish, ARGV[7], line)
local after = platforms()
if after ~= before then
    redis.call(publish, ARGV[8], after)
end
return 0
