-- A user's conversation records, read state and version log: every
-- conversation call of the REST API (and 1006), in the user's slot.
-- KEYS: 1 the user's conversation index; the others are ARGV[2] .. name,
--       in the same slot (see docs/architecture.md, Redis keys)
-- ARGV: 1 op, 2 key prefix "im:{u:<uid>}:", 3 uid, 4 now (ms),
--       5 "1" when MongoDB holds the records (they are loaded first),
--       6 "1" in a Redis Cluster, 7 the op's arguments as JSON, built and
--       bounded by the caller (lists <= 1000, conversations <= maxc)
-- Returns {0, answer JSON, changed records (JSON array, for MongoDB),
--          extra}, {-1, errCode, errMsg}, {-2} when the records must
-- first be loaded from MongoDB (op "restore" does that), or in a Redis
-- Cluster {-3, JSON array of the user's groups} when the op needs their
-- heads (group_head.lua): the caller runs it again with A.gh =
-- {"sg_<gid>": [seq, @all seq, latest MsgData or ""]}.
local op, P, uid = ARGV[1], ARGV[2], ARGV[3]
local now, cluster = tonumber(ARGV[4]), ARGV[6] == '1'
local A = cjson.decode(ARGV[7])

if ARGV[5] == '1' and op ~= 'restore'
   and redis.call('EXISTS', P .. 'loaded') == 0 then
    return {-2}
end

-- a cluster's group heads: the ops that read a group's seq ask for them
local HEADS = {list = 1, all = 1, get = 1, owner = 1, read = 1, seqs = 1,
               hide = 1, clear = 1, delete = 1, incr = 1, set = 1}
local GH = type(A.gh) == 'table' and A.gh or {}
if cluster and HEADS[op] and A.gh == nil then
    local groups = redis.call('ZRANGE', P .. 'groups', 0, 1999)
    if #groups > 0 then
        return {-3, cjson.encode(groups)}
    end
end

local MAXC = math.min(math.max(tonumber(A.maxc) or 1000, 1), 10000)
local MAXHIDE, MAXPIN, MAXLOG, MAXGROUPS = 10000, 1000, 10000, 2000
local BUDGET = 4 * 1024 * 1024             -- NGX_HTTP_IM_CONV_BUDGET
local changed = {}

local function fail(code, msg)
    return {-1, code, msg}
end

-- type, peer and group of a conversation ID (user IDs hold no "_")
local function kind(c)
    local t, a, b = string.match(c, '^(s[in])_([^_]+)_([^_]+)$')
    if t then
        return t == 'si' and 1 or 4, a == uid and b or a, ''
    end
    local g = string.match(c, '^sg_(.+)$')
    if g then
        return 3, '', g
    end
    return 4, '', ''
end

local function num(h, c)
    return tonumber(redis.call('HGET', P .. h, c) or '0') or 0
end

-- the seqs of a group conversation the user may see: "from to" (to 0
-- while a member), or nil for a group the user never joined
local function range(c)
    local r = string.sub(c, 1, 3) == 'sg_'
              and redis.call('HGET', P .. 'grange', c)
    if not r then
        return nil
    end
    local lo, hi = string.match(r, '^(%d+) (%d+)$')
    return tonumber(lo), tonumber(hi)
end

-- a cluster keeps the user's copy (deliver.lua); one Redis reads the
-- conversation's seq, or what a load from MongoDB found; a former
-- member of a group sees it up to their leave
local function maxseq(c)
    local m = tonumber(redis.call('HGET', P .. 'max', c) or '0') or 0
    if not cluster then
        m = math.max(m, tonumber(redis.call('GET', 'im:{c:' .. c .. '}:seq')
                                 or '0') or 0)
    elseif GH[c] then
        m = math.max(m, tonumber(GH[c][1]) or 0)
    end
    -- (the group's seq only grows, so a former member's is its leave)
    local _, hi = range(c)
    if hi and hi > 0 then
        m = hi
    end
    return m
end

-- likewise the latest message
local function latest(c, max)
    local m
    if not cluster and max > 0 then
        m = redis.call('HGET', 'im:{c:' .. c .. '}:msgs', max)
    elseif GH[c] and type(GH[c][3]) == 'string' and GH[c][3] ~= '' then
        m = GH[c][3]
    end
    return m or redis.call('HGET', P .. 'last', c)
end

-- the seqs a re-seed after a Redis loss jumped over hold no message
-- (seq_seed.lua); a cluster keeps the user's copy (deliver.lua)
local function hole(c)
    local h
    if cluster then
        h = redis.call('HGET', P .. 'holes', c)
    else
        h = redis.call('GET', 'im:{c:' .. c .. '}:hole')
    end
    local lo, hi = string.match(h or '', '^(%d+) (%d+)$')
    return tonumber(lo) or 0, tonumber(hi) or 0
end

local function unread(c, max, read, floor)
    local base = math.max(read, floor)
    if max <= base then
        return 0
    end
    local hidden = 0
    if redis.call('SISMEMBER', P .. 'hides', c) == 1 then
        hidden = redis.call('ZCOUNT', P .. 'hide:' .. c, '(' .. base, max)
    end
    local lo, hi = hole(c)
    local gap = math.max(math.min(max, hi) - math.max(base, lo), 0)
    return math.max(max - base - hidden - gap, 0)
end

local function settings(c)
    local s = redis.call('HGET', P .. 'conf', c)
    return s and cjson.decode(s) or {}
end

-- the record's fields (without latestMsg) as a table
-- @ of this user (1), @all (2), both (3): mentions above hasReadSeq
local function at_type(c, gid, read)
    if gid == '' then
        return 0
    end
    local t = num('atme', c) > read and 1 or 0
    local all
    if cluster then
        all = GH[c] and tonumber(GH[c][2])
    else
        all = tonumber(redis.call('HGET', 'im:{c:' .. c .. '}:g', 'atall'))
    end
    if (all or 0) > read then
        t = t + 2
    end
    return t
end

local function fields(c)
    local s = settings(c)
    local t, peer, gid = kind(c)
    local max, read, floor = maxseq(c), num('read', c), num('floor', c)
    local at = at_type(c, gid, read)
    return {
        ownerUserID = uid, conversationID = c, conversationType = t,
        userID = peer, groupID = gid, recvMsgOpt = s.recvMsgOpt or 0,
        isPinned = s.isPinned or false,
        isPrivateChat = s.isPrivateChat or false,
        burnDuration = s.burnDuration or 0,
        groupAtType = at > 0 and at or (s.groupAtType or 0),
        attachedInfo = s.attachedInfo or '', ex = s.ex or '',
        minSeq = floor, maxSeq = max, hasReadSeq = read,
        unreadCount = unread(c, max, read, floor)
    }
end

local function record(c)
    local o = fields(c)
    local last = latest(c, o.maxSeq)
    o.latestMsgSendTime = last
        and tonumber(string.match(last, '"sendTime":(%d+)')) or 0
    local j = cjson.encode(o)
    return string.sub(j, 1, -2) .. ',"latestMsg":' .. (last or 'null') .. '}'
end

local function records(list)
    local out, size = {}, 0
    for i = 1, #list do
        local r = record(list[i])
        size = size + #r
        if size > BUDGET then
            break
        end
        out[#out + 1] = r
    end
    return '[' .. table.concat(out, ',') .. ']'
end

local function strings(list)
    if #list == 0 then
        return '[]'
    end
    return cjson.encode(list)
end

-- the MongoDB document of a record that changed
local function mark(c, deleted)
    local o = fields(c)
    o.unreadCount, o.maxSeq = nil, nil
    o._id = uid .. ':' .. c
    o.deleted = deleted or false
    -- a group's: the seqs the user may read, and whether it is a member
    o.groupRange = redis.call('HGET', P .. 'grange', c) or nil
    o.rev = redis.call('HINCRBY', P .. 'rev', c, 1)
    o.updateTime = now
    local j = cjson.encode(o)
    local hidden = redis.call('ZRANGE', P .. 'hide:' .. c, 0, MAXHIDE - 1)
    changed[#changed + 1] = string.sub(j, 1, -2) .. ',"hidden":['
        .. table.concat(hidden, ',') .. ']}'
end

local function has(c)
    return redis.call('ZSCORE', P .. 'convs', c) ~= false
end

-- the log's ID, made when a client first asks (conversations made by
-- messages alone raise the version without one): a client that synced
-- before it existed syncs in full once
local function log_id()
    local id = redis.call('HGET', P .. 'ver', 'id')
    if not id then
        local v = tonumber(redis.call('HGET', P .. 'ver', 'v') or '0') or 0
        id = redis.sha1hex(uid .. ':' .. now .. ':' .. v)
        redis.call('HSET', P .. 'ver', 'id', id, 'low', v)
    end
    return id
end

local function version()
    log_id()
    return redis.call('HINCRBY', P .. 'ver', 'v', 1)
end

local function logged(c, v, new)
    redis.call('ZADD', P .. 'vlog', v, c)
    redis.call('ZREM', P .. 'vdel', c)
    if new then
        redis.call('HSET', P .. 'vins', c, v)
    end
end

local function ok(answer, extra)
    return {0, answer, '[' .. table.concat(changed, ',') .. ']',
            extra or ''}
end

local function recent(n)
    return redis.call('ZREVRANGE', P .. 'convs', 0, n - 1)
end

-- a conversation's last activity: its index score, which a group's
-- messages do not move (no write per member), so a group's is its latest
-- message's time
local function score(c)
    local s = tonumber(redis.call('ZSCORE', P .. 'convs', c))
    if not s then
        return nil
    end
    if kind(c) == 3 then
        local last = latest(c, maxseq(c))
        local t = last and tonumber(string.match(last, '"sendTime":(%d+)'))
        if t and t > s then
            s = t
        end
    end
    return s
end

-- the conversations of the list: pinned first, then by latest message;
-- the user's groups are candidates wherever their index score is
local function sorted(first, count)
    local pins = redis.call('SMEMBERS', P .. 'pin')
    local n = math.min(first + count + #pins, MAXC + #pins)
    local cand = recent(n)
    local groups = redis.call('ZRANGE', P .. 'groups', 0, MAXGROUPS - 1)
    for i = 1, #groups do
        cand[#cand + 1] = 'sg_' .. groups[i]
    end
    for i = 1, #pins do
        cand[#cand + 1] = pins[i]
    end
    local key, out = {}, {}
    for i = 1, #cand do
        local c = cand[i]
        if not key[c] then
            local s = score(c)
            if s then
                local pinned = redis.call('SISMEMBER', P .. 'pin', c) == 1
                key[c] = (pinned and 1e15 or 0) + s
                out[#out + 1] = c
            end
        end
    end
    table.sort(out, function(a, b) return key[a] > key[b] end)
    local page = {}
    for i = first + 1, math.min(first + count, #out) do
        page[#page + 1] = out[i]
    end
    return page
end

local function hashmap(name)
    local t, all = {}, redis.call('HGETALL', P .. name)
    for i = 1, #all, 2 do
        t[all[i]] = tonumber(all[i + 1]) or 0
    end
    return t
end

local function unread_total()
    local list = recent(MAXC)
    local max, read, floor = hashmap('max'), hashmap('read'), hashmap('floor')
    local total = 0
    for i = 1, #list do
        local c = list[i]
        local m = (cluster and not GH[c]) and (max[c] or 0) or maxseq(c)
        local base = math.max(read[c] or 0, floor[c] or 0)
        if m > base then
            total = total + unread(c, m, read[c] or 0, floor[c] or 0)
        end
    end
    return total
end

-- pinned first, then by latest message, newest first
local function by_pin_and_time(list)
    local key = {}
    for i = 1, #list do
        local c = list[i]
        local pinned = redis.call('SISMEMBER', P .. 'pin', c) == 1
        key[c] = (pinned and 1e15 or 0) + (score(c) or 0)
    end
    table.sort(list, function(a, b) return key[a] > key[b] end)
    return list
end

-- (the REST list asks for at most 100 a page, the JS SDK's active
-- conversations for at most 1000)
local function page()
    local n = math.min(math.max(tonumber(A.show) or 20, 1), 1000)
    local p = math.max(tonumber(A.page) or 1, 1)
    return math.min((p - 1) * n, MAXC), n
end

-- a conversation of this user: a group's once it joined, another's once
-- it has a record or a message
local function known(c, max)
    if kind(c) == 3 then
        return range(c) ~= nil
    end
    return has(c) or max > 0
end

local function known_ids(ids)
    local out = {}
    for i = 1, math.min(#ids, 1000) do
        if has(ids[i]) then
            out[#out + 1] = ids[i]
        end
    end
    return out
end

local function seqs_of(list)
    local out = {}
    for i = 1, #list do
        local c = list[i]
        out[#out + 1] = cjson.encode(c) .. ':{"maxSeq":' .. maxseq(c)
            .. ',"hasReadSeq":' .. num('read', c) .. ',"maxSeqTime":'
            .. (score(c) or 0) .. '}'
    end
    return '{"seqs":{' .. table.concat(out, ',') .. '}}'
end

local function floor_to_max(c)
    local m = maxseq(c)
    if num('floor', c) < m then
        redis.call('HSET', P .. 'floor', c, m)
        return true
    end
    return false
end

local ops = {}

function ops.list()
    local first, n = page()
    local list, total
    if A.ids and #A.ids > 0 then
        list = by_pin_and_time(known_ids(A.ids))
        total = #list
        local sub = {}
        for i = first + 1, math.min(first + n, #list) do
            sub[#sub + 1] = list[i]
        end
        list = sub
    else
        total = math.min(redis.call('ZCARD', P .. 'convs'), MAXC)
        list = sorted(first, n)
    end
    return ok('{"conversationTotal":' .. total .. ',"unreadTotal":'
              .. unread_total() .. ',"conversationElems":' .. records(list)
              .. '}')
end

function ops.all()
    return ok('{"conversations":' .. records(recent(math.min(MAXC, 1000)))
              .. '}')
end

function ops.get()
    local list = known_ids(A.ids or {A.c})
    if A.one and #list == 0 then
        return fail(1004, 'no such conversation for this user')
    end
    if A.one then
        return ok('{"conversation":' .. record(list[1]) .. '}')
    end
    return ok('{"conversations":' .. records(list) .. '}')
end

function ops.owner()
    local first, n = page()
    local list = redis.call('ZREVRANGE', P .. 'convs', first, first + n - 1)
    return ok('{"total":' .. math.min(redis.call('ZCARD', P .. 'convs'), MAXC)
              .. ',"conversations":' .. records(list) .. '}')
end

function ops.set()
    local c, f = A.c, A.f
    local s = settings(c)
    if f.isPinned == true and s.isPinned ~= true
       and redis.call('SCARD', P .. 'pin') >= MAXPIN then
        return fail(1001, 'at most 1000 pinned conversations')
    end
    for k, v in pairs(f) do
        s[k] = v
    end
    redis.call('HSET', P .. 'conf', c, cjson.encode(s))
    if s.isPinned then
        redis.call('SADD', P .. 'pin', c)
    else
        redis.call('SREM', P .. 'pin', c)
    end
    if (s.recvMsgOpt or 0) ~= 0 then
        redis.call('HSET', P .. 'ropt', c, s.recvMsgOpt)
    else
        redis.call('HDEL', P .. 'ropt', c)
    end
    local new = redis.call('ZADD', P .. 'convs', 'NX', 0, c) == 1
    logged(c, version(), new)
    mark(c)
    return ok('{}')
end

function ops.delete()
    local list = known_ids(A.ids)
    for i = 1, #list do
        local c = list[i]
        floor_to_max(c)
        redis.call('ZREM', P .. 'convs', c)
        redis.call('HDEL', P .. 'conf', c)
        redis.call('HDEL', P .. 'last', c)
        redis.call('HDEL', P .. 'ropt', c)
        redis.call('SREM', P .. 'pin', c)
        local v = version()
        redis.call('ZREM', P .. 'vlog', c)
        redis.call('HDEL', P .. 'vins', c)
        redis.call('ZADD', P .. 'vdel', v, c)
        if redis.call('ZCARD', P .. 'vdel') > MAXLOG then
            local old = redis.call('ZRANGE', P .. 'vdel', 0, 0, 'WITHSCORES')
            redis.call('HSET', P .. 'ver', 'low', old[2])
            redis.call('ZREMRANGEBYRANK', P .. 'vdel', 0, 0)
        end
        mark(c, true)
    end
    return ok('{}')
end

-- hasReadSeq: A.r (or the largest of A.seqs) if above the current one
function ops.read()
    local c = A.c
    local max = maxseq(c)
    if not known(c, max) then
        return fail(1004, 'no such conversation for this user')
    end
    local r = tonumber(A.r) or -1
    for i = 1, math.min(#(A.seqs or {}), 1000) do
        if A.seqs[i] > max then
            return fail(1001, 'a seq is above the conversation\'s maxSeq')
        end
        r = math.max(r, A.seqs[i])
    end
    if r > max then
        return fail(1001, 'hasReadSeq is above the conversation\'s maxSeq')
    end
    local old = num('read', c)
    if r <= old then
        return ok('{}', '')
    end
    redis.call('HSET', P .. 'read', c, r)
    mark(c)
    return ok('{}', tostring(r))
end

function ops.seqs()
    local list = (A.ids and #A.ids > 0) and known_ids(A.ids) or recent(MAXC)
    return ok(seqs_of(list))
end

-- delete_msgs: the seqs leave this user's view
function ops.hide()
    local c = A.c
    local max = maxseq(c)
    if not known(c, max) then
        return fail(1004, 'no such conversation for this user')
    end
    local key = P .. 'hide:' .. c
    if redis.call('ZCARD', key) + #A.seqs > MAXHIDE then
        return fail(1001, 'too many deleted messages in this conversation: '
                    .. 'clear it instead')
    end
    for i = 1, math.min(#A.seqs, 1000) do
        if A.seqs[i] > max then
            return fail(1001, 'a seq is above the conversation\'s maxSeq')
        end
    end
    for i = 1, math.min(#A.seqs, 1000) do
        redis.call('ZADD', key, A.seqs[i], A.seqs[i])
    end
    redis.call('SADD', P .. 'hides', c)
    mark(c)
    return ok('{}')
end

-- clear_conversation_msg (A.ids) and user_clear_all_msg (A.all)
function ops.clear()
    local list = A.all and recent(MAXC) or A.ids
    for i = 1, math.min(#list, MAXC) do
        local c = list[i]
        if not A.all and not known(c, maxseq(c)) then
            return fail(1004, 'no such conversation for this user: ' .. c)
        end
    end
    local done = {}
    for i = 1, math.min(#list, MAXC) do
        if floor_to_max(list[i]) then
            mark(list[i])
            done[#done + 1] = list[i]
        end
    end
    return ok('{}', strings(done))
end

-- what pulls leave out for this user: {conv: [floor, cap (0: none),
-- hidden seqs...]}, false for a group the user was never in
function ops.view()
    local out = {}
    for i = 1, math.min(#A.ids, 1000) do
        local c = A.ids[i]
        local lo, hi = A.lo[i], A.hi[i]
        local h = {}
        if redis.call('SISMEMBER', P .. 'hides', c) == 1 then
            h = redis.call('ZRANGEBYSCORE', P .. 'hide:' .. c, lo, hi,
                           'LIMIT', 0, MAXHIDE)
        end
        local floor, cap = num('floor', c), 0
        local t = kind(c)
        local from, to = range(c)
        if t == 3 and not from then
            out[#out + 1] = cjson.encode(c) .. ':false'
        else
            if from then
                floor, cap = math.max(floor, from - 1), to
            end
            table.insert(h, 1, tostring(cap))
            table.insert(h, 1, tostring(floor))
            out[#out + 1] = cjson.encode(c) .. ':[' .. table.concat(h, ',')
                .. ']'
        end
    end
    return ok('{' .. table.concat(out, ',') .. '}')
end

-- the badge of an offline-push job for conversation A.c; "-1" when the
-- user's recvMsgOpt for it wants no offline push (1 or 2)
function ops.badge()
    if A.c and redis.call('HGET', P .. 'ropt', A.c) then
        return ok('-1')
    end
    return ok(tostring(unread_total()))
end

-- a revoked message: it replaces the latest one if that is it
function ops.relast()
    local last = redis.call('HGET', P .. 'last', A.c)
    if last and tonumber(string.match(last, '"seq":(%d+)')) == A.seq then
        redis.call('HSET', P .. 'last', A.c, A.json)
    end
    return ok('{}')
end

-- delete_msg_physical: the latest message, if it is older than A.t
function ops.purge()
    for i = 1, math.min(#A.ids, 1000) do
        local last = redis.call('HGET', P .. 'last', A.ids[i])
        local t = last and tonumber(string.match(last, '"sendTime":(%d+)'))
        if t and t < A.t then
            redis.call('HDEL', P .. 'last', A.ids[i])
        end
    end
    return ok('{}')
end

function ops.incr()
    local id = log_id()
    local ver = redis.call('HMGET', P .. 'ver', 'v', 'id', 'low')
    local v = tonumber(ver[1]) or 0
    local head = '{"version":' .. v .. ',"versionID":' .. cjson.encode(id)
    local since = tonumber(A.v) or 0
    if A.id ~= id or since < (tonumber(ver[3]) or 0)
       or since > v then
        return ok(head .. ',"full":true,"delete":[],"update":[],"insert":'
                  .. records(recent(math.min(MAXC, 1000))) .. '}')
    end
    local ins, upd = {}, {}
    local list = redis.call('ZRANGEBYSCORE', P .. 'vlog', '(' .. since, '+inf',
                            'LIMIT', 0, 1000)
    for i = 1, #list do
        if num('vins', list[i]) > since then
            ins[#ins + 1] = list[i]
        else
            upd[#upd + 1] = list[i]
        end
    end
    local del = redis.call('ZRANGEBYSCORE', P .. 'vdel', '(' .. since, '+inf',
                           'LIMIT', 0, MAXLOG)
    return ok(head .. ',"full":false,"delete":' .. strings(del)
              .. ',"insert":' .. records(ins) .. ',"update":'
              .. records(upd) .. '}')
end

function ops.ids()
    local id = log_id()
    local v = tonumber(redis.call('HGET', P .. 'ver', 'v') or '0') or 0
    return ok('{"version":' .. v .. ',"versionID":'
              .. cjson.encode(id) .. ',"equal":false,'
              .. '"conversationIDs":' .. strings(recent(MAXC)) .. '}')
end

function ops.notnotify()
    return ok('{"conversationIDs":'
              .. strings(redis.call('HKEYS', P .. 'ropt')) .. '}')
end

function ops.pinned()
    return ok('{"conversationIDs":'
              .. strings(redis.call('SMEMBERS', P .. 'pin')) .. '}')
end

-- joined groups: the user's list and its version log
local function glogged(gid, del)
    local v = redis.call('HINCRBY', P .. 'gver', 'v', 1)
    if not redis.call('HGET', P .. 'gver', 'id') then
        redis.call('HSET', P .. 'gver', 'id',
                   redis.sha1hex(uid .. ':g:' .. now .. ':' .. v), 'low', 0)
    end
    if del then
        redis.call('ZREM', P .. 'gvlog', gid)
        redis.call('ZADD', P .. 'gvdel', v, gid)
        if redis.call('ZCARD', P .. 'gvdel') > MAXLOG then
            local old = redis.call('ZRANGE', P .. 'gvdel', 0, 0, 'WITHSCORES')
            redis.call('HSET', P .. 'gver', 'low', old[2])
            redis.call('ZREMRANGEBYRANK', P .. 'gvdel', 0, 0)
        end
    else
        redis.call('ZADD', P .. 'gvlog', v, gid)
        redis.call('ZREM', P .. 'gvdel', gid)
    end
end

-- the user joined group A.g at seq A.s (what it may see starts at A.from)
function ops.gjoin()
    local c = 'sg_' .. A.g
    redis.call('ZADD', P .. 'groups', now, A.g)
    redis.call('HSET', P .. 'grange', c, A.from .. ' 0')
    if num('read', c) < A.s then
        redis.call('HSET', P .. 'read', c, A.s)
    end
    if A.from > 1 and num('floor', c) < A.from - 1 then
        redis.call('HSET', P .. 'floor', c, A.from - 1)
    end
    local new = redis.call('ZADD', P .. 'convs', 'NX', now, c) == 1
    logged(c, version(), new)
    glogged(A.g)
    mark(c)
    return ok('{}')
end

-- the user left group A.g: it sees the group up to seq A.to
function ops.gleave()
    local c = 'sg_' .. A.g
    local from = range(c) or 1
    redis.call('ZREM', P .. 'groups', A.g)
    redis.call('HSET', P .. 'grange', c, from .. ' ' .. math.max(A.to, 1))
    logged(c, version(), false)
    glogged(A.g, true)
    mark(c)
    return ok('{}')
end

-- the joined-groups log's ID; a user that never joined a group has no
-- log yet, and gets an ID of its own all the same: a client (the JS SDK)
-- that holds "" never compares versions again, so would miss later joins.
-- The log made at the first join has another ID, so that client syncs in
-- full then
local function gver_id(id)
    return id or redis.sha1hex(uid .. ':g:none')
end

function ops.groups()
    local list = redis.call('ZRANGE', P .. 'groups', 0, MAXGROUPS - 1)
    local ver = redis.call('HMGET', P .. 'gver', 'v', 'id')
    return ok('{"version":' .. (tonumber(ver[1]) or 0) .. ',"versionID":'
              .. cjson.encode(gver_id(ver[2])) .. ',"equal":false,"groupIDs":'
              .. strings(list) .. '}')
end

-- get_incremental_join_groups: the group IDs that changed since A.v
function ops.gincr()
    local ver = redis.call('HMGET', P .. 'gver', 'v', 'id', 'low')
    local v, id = tonumber(ver[1]) or 0, gver_id(ver[2])
    local since = tonumber(A.v) or 0
    local head = '{"version":' .. v .. ',"versionID":' .. cjson.encode(id)
    if A.id ~= id or since < (tonumber(ver[3]) or 0) or since > v then
        return ok(head .. ',"full":true,"delete":[],"groupIDs":'
                  .. strings(redis.call('ZRANGE', P .. 'groups', 0,
                                        MAXGROUPS - 1)) .. '}')
    end
    return ok(head .. ',"full":false,"delete":'
              .. strings(redis.call('ZRANGEBYSCORE', P .. 'gvdel',
                                    '(' .. since, '+inf', 'LIMIT', 0,
                                    MAXGROUPS))
              .. ',"groupIDs":'
              .. strings(redis.call('ZRANGEBYSCORE', P .. 'gvlog',
                                    '(' .. since, '+inf', 'LIMIT', 0,
                                    MAXGROUPS)) .. '}')
end

-- the user applied to join group A.g (its own application list)
function ops.gapply()
    redis.call('ZADD', P .. 'gapply', now, A.g)
    if redis.call('ZCARD', P .. 'gapply') > MAXGROUPS then
        redis.call('ZREMRANGEBYRANK', P .. 'gapply', 0, 0)
    end
    return ok('{}')
end

function ops.gapplied()
    return ok('{"groupIDs":' .. strings(redis.call('ZREVRANGE', P .. 'gapply',
                                                   0, MAXGROUPS - 1)) .. '}')
end

-- @ of this user in group conversation A.c at seq A.s
function ops.atme()
    if num('atme', A.c) < A.s then
        redis.call('HSET', P .. 'atme', A.c, A.s)
    end
    return ok('{}')
end

-- the records MongoDB kept, merged under what Redis has (never back)
local function restore_one(d)
    local c = d.conversationID
    local max = tonumber(d.maxSeq) or 0
    local floor = tonumber(d.minSeq) or 0
    if d.deleted and max <= floor then
        return
    end
    local t = d.lastTime or 0
    redis.call('ZADD', P .. 'convs', 'NX', t, c)
    if redis.call('HEXISTS', P .. 'conf', c) == 0 then
        local s = {recvMsgOpt = d.recvMsgOpt, isPinned = d.isPinned,
                   isPrivateChat = d.isPrivateChat,
                   burnDuration = d.burnDuration,
                   groupAtType = d.groupAtType,
                   attachedInfo = d.attachedInfo, ex = d.ex}
        redis.call('HSET', P .. 'conf', c, cjson.encode(s))
        if d.isPinned then
            redis.call('SADD', P .. 'pin', c)
        end
        if (tonumber(d.recvMsgOpt) or 0) ~= 0 then
            redis.call('HSET', P .. 'ropt', c, d.recvMsgOpt)
        end
    end
    local read = tonumber(d.hasReadSeq) or 0
    if d.lastSender == uid then
        read = math.max(read, max)
    end
    if read > num('read', c) then
        redis.call('HSET', P .. 'read', c, read)
    end
    if max > num('max', c) then
        redis.call('HSET', P .. 'max', c, max)
    end
    if floor > num('floor', c) then
        redis.call('HSET', P .. 'floor', c, floor)
    end
    if d.last and d.last ~= '' then
        redis.call('HSETNX', P .. 'last', c, d.last)
    end
    local hidden = d.hidden or {}
    for i = 1, math.min(#hidden, MAXHIDE) do
        redis.call('ZADD', P .. 'hide:' .. c, hidden[i], hidden[i])
    end
    if #hidden > 0 then
        redis.call('SADD', P .. 'hides', c)
    end
    redis.call('HSETNX', P .. 'rev', c, tonumber(d.rev) or 0)
    local lo, hi = string.match(tostring(d.groupRange or ''),
                                '^(%d+) (%d+)$')
    local gid = string.match(c, '^sg_(.+)$')
    if lo and gid then
        redis.call('HSETNX', P .. 'grange', c, lo .. ' ' .. hi)
        if hi == '0' then
            redis.call('ZADD', P .. 'groups', 'NX', now, gid)
        end
    end
end

-- one chunk of the records MongoDB kept (at most 1000: a user's records
-- come in several calls, so no call holds Redis long); the first starts
-- a new log (clients sync in full once), the last marks them loaded
function ops.restore()
    local docs = type(A.docs) == 'table' and A.docs or {}
    for i = 1, math.min(#docs, 1000) do
        if type(docs[i]) == 'table' then
            restore_one(docs[i])
        end
    end
    if A.first then
        redis.call('DEL', P .. 'ver', P .. 'vlog', P .. 'vins', P .. 'vdel')
    end
    if A.last then
        redis.call('SET', P .. 'loaded', now)
    end
    return ok('{}')
end

local f = ops[op]
if not f then
    return fail(500, 'unknown op')
end
return f()
