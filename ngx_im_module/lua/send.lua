-- Stores the messages of a batch, each atomically, in order: the sends
-- that reached a worker in one event-loop turn (store_msg.c).  Each
-- message has 11 keys and 18 arguments, below; KEYS and ARGV are the
-- messages' lists one after the other, and the reply is the list of
-- the messages' replies, in the same order.
-- Per message:
-- KEYS: 1 conv seq, 2 conv msgs (hash seq -> MsgData JSON),
--       3 dedup key of the sender's clientMsgID,
--       4 sender's conversation index,
--       5 recipient's conversation index, 6 sender's read seqs,
--       7 recipient's profile (checked when ARGV[6] is "1"),
--       8 persistence stream, 9 conv reserved seq, 10 conv persisted-
--       and-hot seqs, 11 recipient's presence hash
-- ARGV: 1 JSON up to "seq":, 2 JSON after the seq digits, 3 now (ms),
--       4 conversation ID, 5 dedup TTL (s), 6 check recipient,
--       7 "1" with MongoDB, 8 hot window, 9 persistence backlog bound,
--       10 "1" to allocate past the reservation (MongoDB unreachable),
--       11 serverMsgID, 12 delivery header ("m <origin> <session> <conv>\n"),
--       13 recipient's channel, 14 sender's channel ("" for none),
--       15 sender's key prefix "im:{u:<uid>}:", 16 recipient's,
--       17 "1" the recipient's blacklist applies, "2" and its friend list
--       (im_friend_verify), "0" neither, 18 "1" when MongoDB holds the
--       recipient's relations and this Redis may not have them yet
-- A recipient with recvMsgOpt 1 gets no delivery, and with 1 or 2 no
-- offline push (the reply counts it as reached); its globalRecvMsgOpt
-- stands for a conversation without one.
-- A new message is published to both channels here, so its delivery is
-- never refused after the ack.
-- Returns {1, seq, workers the recipient's channel reached, or 0 when
-- every session of the recipient is in the background} for a new
-- message, {0, seq, sendTime, serverMsgID} for
-- a resend of a known clientMsgID (from the dedup key alone: the message
-- may have left Redis), -1101 when the recipient is not registered,
-- -1302 when the recipient blacklisted the sender, -1303 when it is not
-- the sender's friend, {-5} when the recipient's profile and relations
-- must first be loaded from MongoDB (friend.lua),
-- -90004 when the persistence backlog is full, {-2} when the seq must
-- first be seeded from MongoDB (never skipped: seqs must not repeat),
-- {-3, seq} when MongoDB must first reserve seqs past seq (skipped with
-- ARGV[10] while MongoDB is unreachable).
local NK, NA, MAX = 11, 18, 64

-- Is a session of the user in the foreground: a presence entry that is
-- not "b..." (2004 background), of a worker that is alive?  No entry
-- yet means a login is just landing: yes.  A user's sessions are not
-- bounded, so a send's cost must not grow with them: at most PAGES
-- pages of HSCAN, after which the user counts as in the foreground (no
-- offline push).  A hash of up to 128 entries (Redis's listpack) comes
-- in one page.
local PAGES, COUNT = 8, 16

local function foreground(key)
    local cursor, seen = '0', 0
    for _ = 1, PAGES do
        local page = redis.call('HSCAN', key, cursor, 'COUNT', COUNT)
        local e = page[2]
        for i = 1, #e, 2 do
            local worker = string.match(e[i], '^%d+:(.*):%d+$')
            if string.sub(e[i + 1], 1, 1) ~= 'b' and worker
               and redis.call('EXISTS', worker) == 1 then
                return true
            end
        end
        seen = seen + #e
        cursor = page[1]
        if cursor == '0' then
            return seen == 0
        end
    end
    return true
end

local function send(K, A)
    local R = A[16]
    if A[18] == '1' and redis.call('EXISTS', R .. 'f:loaded') == 0 then
        return {-5}
    end
    if A[6] == '1' and redis.call('EXISTS', K[7]) == 0 then
        return -1101
    end
    if A[17] ~= '0' then
        local sender = string.match(A[15], '^im:{u:(.*)}:$')
        if redis.call('HEXISTS', R .. 'f:blacks', sender) == 1 then
            return -1302
        end
        if A[17] == '2'
           and redis.call('HEXISTS', R .. 'f:friends', sender) == 0 then
            return -1303
        end
    end

    local old = redis.call('GET', K[3])
    if old then
        local seq, t, id = string.match(old, '^(%d+) (%d+) (%S+)$')
        return {0, tonumber(seq), tonumber(t), id}
    end

    local persist = A[7] == '1'
    if persist then
        if redis.call('XLEN', K[8]) >= tonumber(A[9]) then
            return -90004
        end
        local cur = redis.call('GET', K[1])
        local reserved = redis.call('GET', K[9])
        -- a missing reservation means Redis lost data, perhaps only the last
        -- second of it, and the seq key may lag behind seqs already used:
        -- re-seed from MongoDB, which jumps past them
        if not cur or not reserved then
            return {-2}
        end
        cur = tonumber(cur)
        if A[10] ~= '1' and cur + 1 > tonumber(reserved) then
            return {-3, cur}
        end
    end

    local seq = redis.call('INCR', K[1])
    redis.call('HSET', K[2], seq, A[1] .. seq .. A[2])
    redis.call('SET', K[3], seq .. ' ' .. A[3] .. ' ' .. A[11], 'EX',
               A[5])
    local msg = A[1] .. seq .. A[2]
    -- a conversation new to a user enters its version log (conv.lua reads
    -- the max seq and latest message from the conversation's own keys)
    local function logged(p, new)
        if new == 1 then
            local v = redis.call('HINCRBY', p .. 'ver', 'v', 1)
            redis.call('ZADD', p .. 'vlog', v, A[4])
            redis.call('HSET', p .. 'vins', A[4], v)
            redis.call('ZREM', p .. 'vdel', A[4])
        end
    end
    logged(A[15], redis.call('ZADD', K[4], A[3], A[4]))
    logged(A[16], redis.call('ZADD', K[5], A[3], A[4]))

    -- a sender has read its own message; no read seq is above the
    -- conversation's max (conv.lua refuses one), so this one is the
    -- highest and needs no comparison
    redis.call('HSET', K[6], A[4], seq)

    if persist then
        redis.call('XADD', K[8], '*', 'c', A[4], 's', seq)
        -- the window passed this one; it left Redis if it is persisted
        local t = seq - tonumber(A[8])
        if t >= 1 and redis.call('HDEL', K[10], t) == 1 then
            redis.call('HDEL', K[2], t)
        end
    end

    local delivery = A[12] .. msg
    -- the conversation's option, else the user's global one (friend.lua)
    local ropt = redis.call('HGET', A[16] .. 'ropt', A[4])
                   or redis.call('HGET', K[7], 'globalRecvMsgOpt')
    if ropt == '0' then
        ropt = nil
    end
    local online = 0
    if ropt ~= '1' then
        online = redis.call('PUBLISH', A[13], delivery)
    end
    if A[14] ~= '' then
        redis.call('PUBLISH', A[14], delivery)
    end
    if ropt then
        return {1, seq, 1}
    end

    -- sessions in the background (2004) do not count as online for the
    -- offline push
    if online > 0 and not foreground(K[11]) then
        online = 0
    end

    return {1, seq, online}
end

-- the batch is bounded before the loop starts (the C side sends <= MAX)
local n = #KEYS / NK
if n < 1 or n > MAX or n ~= math.floor(n) or #ARGV ~= n * NA then
    return redis.error_reply('ERR send.lua: a batch of 1..64 messages')
end
local out = {}
for i = 0, n - 1 do
    out[i + 1] = send({unpack(KEYS, i * NK + 1, i * NK + NK)},
                      {unpack(ARGV, i * NA + 1, i * NA + NA)})
end
return out
