-- A user's profile, friends, blacklist and friend applications, in the
-- user's slot (so that one script changes a user's relations and their
-- version logs together).  The same C machinery as group.lua runs it.
-- KEYS: 1 the user's profile hash "im:{u:<uid>}:profile"
-- ARGV: 1 op, 2 key prefix F "im:{u:<uid>}:f:", 3 the owner (whose slot),
--       4 the caller's user ID (another user for the ops that a call in
--       another slot asks for: add_out, responded, import_peer), 5 "1"
--       when the caller is an app admin (those peer ops always are),
--       6 now (ms), 7 the op's arguments as JSON, 8 and 9 unused, 10 the
--       most friends (and, apart, blacks) a user may have, 11 "0" without
--       MongoDB, "1" when MongoDB holds the data (loaded first:
--       "restore"), "2" likewise, just loaded
-- Returns {0, answer JSON, effects JSON, changed documents (a JSON array,
-- for MongoDB)}, {-1, errCode, errMsg}, or {-2} when the user must first
-- be loaded from MongoDB.  The effects, carried out by the caller in this
-- order: "peer" [{uid, op, args}] ops of this script in other users'
-- slots (owner uid, caller this owner), "notes" [{type, from, to, tips}]
-- notifications stored in the sn_ conversation of from and to, "tell"
-- {type, users, tips} one notification pushed unstored to many users,
-- "nick" {old, new} a changed nickname (the user lists' index).
local op, F, owner, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local admin, now = ARGV[5] == '1', tonumber(ARGV[6])
local P = KEYS[1]
local MAXF = tonumber(ARGV[10]) or 10000
local MAXLIST, MAXAPPS, MAXLOG = 1000, 1000, 10000
local MAXSTR, MAXMSG, MAXREMARK = 4096, 1024, 255
-- an answer's entries stop at 1 MB: the C side adds each named user's
-- profile to them within its 4 MB answer buffer
local BUDGET = 1024 * 1024
-- addSource as OpenIM's constants
local BY_IMPORT, BY_APPLY = 1, 2
if ARGV[11] == '1' and op ~= 'restore'
   and redis.call('EXISTS', F .. 'loaded') == 0 then
    return {-2}
end
local decoded, A = pcall(cjson.decode, ARGV[7])
if not decoded or type(A) ~= 'table' then
    return {-1, 1001, 'the body must be a JSON object'}
end
local docs = {}

-- the owner's records by document kind: f friends, b blacks (each with
-- a version log), ai applications received (by sender), ao sent (by
-- target); each has its hash, its order by createTime and its key field
local REC = {
    f = {hash = 'friends', z = 'fz', id = 'friendUserID', log = 'f'},
    b = {hash = 'blacks', z = 'bz', id = 'blockUserID', log = 'b'},
    ai = {hash = 'ain', z = 'aiz', id = 'fromUserID'},
    ao = {hash = 'aout', z = 'aoz', id = 'toUserID'}
}

local function fail(code, msg)
    return {-1, code, msg}
end

local function json(v)
    return cjson.encode(v)
end

-- a JSON array of strings (cjson writes an empty table as {})
local function arr(t)
    return #t == 0 and '[]' or json(t)
end

local function absent(v)
    return v == nil or v == cjson.null
end

-- a user ID as the C side checks it: 1..64 bytes, no "_" (it splits
-- conversation IDs), no control bytes
local function valid_id(s)
    return type(s) == 'string' and #s >= 1 and #s <= 64
           and not string.find(s, '[%z\1-\32_"\\\127]')
end

local function str(v, name, max)
    if absent(v) then
        return nil
    end
    if type(v) ~= 'string' or #v > max then
        error({1001, 'field "' .. name .. '" must be a string of at most '
                     .. max .. ' bytes'})
    end
    return v
end

local function int(v, name, lo, hi)
    if absent(v) then
        return nil
    end
    if type(v) ~= 'number' or v ~= math.floor(v) or v < lo or v > hi then
        error({1001, 'field "' .. name .. '" must be an integer in ' .. lo
                     .. '..' .. hi})
    end
    return v
end

local function user_id(v, name)
    if not valid_id(v) then
        error({1001, 'field "' .. name .. '" must be a valid user ID'})
    end
    return v
end

-- a list of distinct user IDs, 1..MAXLIST of them
local function ids(v, name)
    if type(v) ~= 'table' or #v > MAXLIST or #v == 0 then
        error({1001, 'field "' .. name .. '" must be an array of 1..'
                     .. MAXLIST .. ' user IDs'})
    end
    local seen, out = {}, {}
    for i = 1, #v do
        user_id(v[i], name .. '[' .. (i - 1) .. ']')
        if not seen[v[i]] then
            seen[v[i]] = true
            out[#out + 1] = v[i]
        end
    end
    return out
end

-- a field of update_friends or update_user_info_ex: bare or {"value": x}
local function wrapped(v)
    if type(v) == 'table' then
        return v.value
    end
    return v
end

-- {pageNumber >= 1, showNumber 1..1000} (0 or absent: page 1 of 100):
-- the first index and the count
local function page()
    local p = absent(A.pagination) and {} or A.pagination
    if type(p) ~= 'table' then
        error({1001, 'field "pagination" must be an object'})
    end
    local n = p.showNumber ~= 0 and int(p.showNumber, 'showNumber', 1,
                                        MAXLIST) or 100
    local k = p.pageNumber ~= 0 and int(p.pageNumber, 'pageNumber', 1,
                                        1e9) or 1
    return (k - 1) * n, n
end

-- the owner acts (or an app admin for it); a field that names the owner
-- must name this slot's user
local function self(field)
    if not admin and me ~= owner then
        error({1002, 'no permission: a user acts for itself only'})
    end
    local v = field and A[field]
    if not absent(v) and v ~= '' and v ~= owner then
        error({1001, 'field "' .. field .. '" must name the owner'})
    end
end

-- an op that a call in another user's slot asks for (the C side runs
-- the "peer" effects as an app admin)
local function internal()
    if not admin then
        error({1002, 'no permission'})
    end
end

local function ok(answer, effects)
    local e = effects or {}
    for _, k in ipairs({'peer', 'notes'}) do
        if e[k] and #e[k] == 0 then
            e[k] = nil
        end
    end
    if e.tell and #e.tell.users == 0 then
        e.tell = nil
    end
    return {0, answer, next(e) and json(e) or '{}',
            '[' .. table.concat(docs, ',') .. ']'}
end

-- version logs L ('f' friends, 'b' blacks), as group.lua's member log:
-- L..'v' {v, id, low}, L..'vlog' uid -> version of its last insert or
-- update, L..'vins' uid -> version it was inserted, L..'vdel' uid ->
-- version deleted (the newest MAXLOG; low: the newest forgotten, older
-- clients sync in full).  The ID is made when first needed.
local function log_id(L)
    local k = F .. L .. 'v'
    local id = redis.call('HGET', k, 'id')
    if not id then
        local v = tonumber(redis.call('HGET', k, 'v') or '0') or 0
        id = redis.sha1hex(owner .. ':' .. L .. ':' .. now .. ':' .. v)
        redis.call('HSET', k, 'id', id, 'low', v)
    end
    return id
end

local function logged(L, uid, del)
    log_id(L)
    local v = redis.call('HINCRBY', F .. L .. 'v', 'v', 1)
    local K = F .. L
    if del then
        redis.call('ZREM', K .. 'vlog', uid)
        redis.call('HDEL', K .. 'vins', uid)
        redis.call('ZADD', K .. 'vdel', v, uid)
        if redis.call('ZCARD', K .. 'vdel') > MAXLOG then
            local old = redis.call('ZRANGE', K .. 'vdel', 0, 0, 'WITHSCORES')
            redis.call('HSET', K .. 'v', 'low', old[2])
            redis.call('ZREMRANGEBYRANK', K .. 'vdel', 0, 0)
        end
    else
        if redis.call('ZSCORE', K .. 'vlog', uid) == false then
            redis.call('HSET', K .. 'vins', uid, v)
        end
        redis.call('ZADD', K .. 'vlog', v, uid)
        redis.call('ZREM', K .. 'vdel', uid)
    end
end

-- a changed document for MongoDB; body: the record's JSON, nil when it
-- was deleted (a record is encoded once: they hold up to 5 KB)
local function stored(kind, key, body)
    local id = kind .. ':' .. owner .. (key and ':' .. key or '')
    local d = json({_id = id, ownerUserID = owner, kind = kind,
                    rev = redis.call('HINCRBY', F .. 'rev', id, 1),
                    deleted = body == nil, updateTime = now})
    docs[#docs + 1] = body and d:sub(1, -2) .. ',"doc":' .. body .. '}' or d
end

local function get(kind, key)
    local s = redis.call('HGET', F .. REC[kind].hash, key)
    return s and cjson.decode(s)
end

local function has(kind, key)
    return redis.call('HEXISTS', F .. REC[kind].hash, key) == 1
end

local function count(kind)
    return redis.call('HLEN', F .. REC[kind].hash)
end

local function save(kind, r)
    local k = REC[kind]
    local key, body = r[k.id], json(r)
    redis.call('HSET', F .. k.hash, key, body)
    redis.call('ZADD', F .. k.z, r.createTime, key)
    stored(kind, key, body)
    if k.log then
        logged(k.log, key)
    end
end

-- false when there was none
local function drop(kind, key)
    local k = REC[kind]
    if redis.call('HDEL', F .. k.hash, key) == 0 then
        return false
    end
    redis.call('ZREM', F .. k.z, key)
    stored(kind, key, nil)
    if k.log then
        logged(k.log, key, true)
    end
    return true
end

local function room(kind, what)
    if count(kind) >= MAXF then
        error({1001, 'a user has at most ' .. MAXF .. ' ' .. what})
    end
end

-- what an answer says of a user: the C side fills the profile in
local function user_of(uid)
    return {userID = uid, nickname = '', faceURL = '', ex = ''}
end

local function friend_view(f)
    return {ownerUserID = f.ownerUserID, remark = f.remark,
            createTime = f.createTime, friendUser = user_of(f.friendUserID),
            addSource = f.addSource, operatorUserID = f.operatorUserID,
            ex = f.ex, isPinned = f.isPinned == true}
end

local function black_view(b)
    return {ownerUserID = b.ownerUserID, createTime = b.createTime,
            blackUserInfo = user_of(b.blockUserID), addSource = b.addSource,
            operatorUserID = b.operatorUserID, ex = b.ex}
end

local function app_view(a)
    local v = {fromNickname = '', fromFaceURL = '', toNickname = '',
               toFaceURL = ''}
    for k, x in pairs(a) do
        v[k] = x
    end
    return v
end

local VIEW = {f = friend_view, b = black_view, ai = app_view, ao = app_view}

-- a JSON array of the records of kind that list names, as its view
local function views(kind, list)
    local out, size = {}, 0
    for i = 1, #list do
        local r = size <= BUDGET and get(kind, list[i])
        if r then
            out[#out + 1] = json(VIEW[kind](r))
            size = size + #out[#out]
        end
    end
    return '[' .. table.concat(out, ',') .. ']'
end

local function friend_of(fid)
    local f = get('f', fid)
    if not f then
        error({1004, 'not a friend: ' .. fid})
    end
    return f
end

-- adds fid to the owner's friends unless it is one; the record if added
local function befriend(fid, source)
    if has('f', fid) then
        return nil
    end
    local f = {ownerUserID = owner, friendUserID = fid, remark = '',
               createTime = now, addSource = source, operatorUserID = me,
               ex = '', isPinned = false}
    save('f', f)
    return f
end

-- a side that a call in another slot asked for (the other side is done):
-- a full list stays as it is rather than fail there
local function befriend_peer(fid, source)
    if count('f') < MAXF then
        befriend(fid, source)
    end
end

local function from_to(from, to)
    return {fromUserID = from, toUserID = to}
end

local function note(type, from, to, tips)
    return {type = type, from = from, to = to, tips = tips}
end

-- a note of the owner's to its own devices about other (the other need
-- not learn of it)
local function own_note(type, other)
    return {note(type, owner, owner, {fromToUserID = from_to(owner, other)})}
end

-- the note a friend's joining sends (OpenIM's FriendAddedTips)
local function added_note(f)
    return note(1204, owner, f.friendUserID,
                {friend = friend_view(f), opUser = user_of(me),
                 operationTime = now})
end

-- room for an application from (or to) key: the oldest handled one goes;
-- when all are pending, pending decides (true: the oldest goes too)
local function app_room(kind, key, pending)
    if has(kind, key) or count(kind) < MAXAPPS then
        return
    end
    local list = redis.call('ZRANGE', F .. REC[kind].z, 0, MAXAPPS)
    for i = 1, #list do
        local a = get(kind, list[i])
        if not a or a.handleResult ~= 0 then
            drop(kind, list[i])
            return
        end
    end
    if not pending then
        error({1001, 'the user has too many pending friend applications'})
    end
    drop(kind, list[1])
end

-- an application as another slot passes it (A.application): checked
local function app_arg(from, to)
    local a = A.application
    if type(a) ~= 'table' or a.fromUserID ~= from or a.toUserID ~= to then
        error({1001, 'field "application" must be the application from '
                     .. from .. ' to ' .. to})
    end
    return {fromUserID = from, toUserID = to,
            handleResult = int(a.handleResult, 'handleResult', -1, 1) or 0,
            reqMsg = str(a.reqMsg, 'reqMsg', MAXMSG) or '',
            createTime = int(a.createTime, 'createTime', 0, 1e15) or now,
            handlerUserID = str(a.handlerUserID, 'handlerUserID', 64) or '',
            handleMsg = str(a.handleMsg, 'handleMsg', MAXMSG) or '',
            handleTime = int(a.handleTime, 'handleTime', 0, 1e15) or 0,
            ex = str(a.ex, 'ex', MAXSTR) or ''}
end

local ops = {}

-- add_friend, in the target's slot: the application it receives
function ops.add()
    local from = user_id(A.fromUserID, 'fromUserID')
    if not admin and from ~= me then
        return fail(1002, 'no permission: a user applies for itself only')
    end
    if not absent(A.toUserID) and A.toUserID ~= owner then
        return fail(1001, 'field "toUserID" must name the owner')
    end
    if from == owner then
        return fail(1301, 'cannot add yourself as a friend')
    end
    if has('b', from) then
        return fail(1302, 'blocked by the peer')
    end
    if has('f', from) then
        return fail(1304, 'already friends')
    end
    local a = {fromUserID = from, toUserID = owner, handleResult = 0,
               reqMsg = str(A.reqMsg, 'reqMsg', MAXMSG) or '',
               createTime = now, handlerUserID = '', handleMsg = '',
               handleTime = 0, ex = str(A.ex, 'ex', MAXSTR) or ''}
    app_room('ai', from, false)
    save('ai', a)
    -- FriendApplicationTips, without the request: the SDK would keep its
    -- empty names; it pulls the list instead
    return ok('{}', {
        peer = {{uid = from, op = 'add_out', args = {application = a}}},
        notes = {note(1203, from, owner, {fromToUserID = from_to(from, owner),
                                          reqMsg = a.reqMsg})}})
end

-- the sender's copy of its application (to the caller)
function ops.add_out()
    internal()
    local a = app_arg(owner, me)
    app_room('ao', me, true)
    save('ao', a)
    return ok('{}')
end

-- add_friend_response, in the receiver's slot
function ops.respond()
    self('toUserID')
    local from = user_id(A.fromUserID, 'fromUserID')
    local res = int(A.handleResult, 'handleResult', -1, 1)
    if res == nil or res == 0 then
        return fail(1001, 'field "handleResult" must be 1 or -1')
    end
    local msg = str(A.handleMsg, 'handleMsg', MAXMSG) or ''
    local a = get('ai', from)
    if not a then
        return fail(1004, 'no friend application from ' .. from)
    end
    if a.handleResult == res then
        -- the same answer again completes the applicant's side, in case
        -- it failed the first time (Redis went away between the slots)
        return ok('{}', {peer = {{uid = from, op = 'responded',
                                  args = {application = a,
                                          accept = res == 1}}}})
    end
    if a.handleResult ~= 0 then
        return fail(1305, 'the friend application was handled')
    end
    if res == 1 and not has('f', from) then
        room('f', 'friends')
    end
    -- an accept tells of the friend whether it was one already or not
    local f = res == 1 and (befriend(from, BY_APPLY) or get('f', from))
    a.handleResult, a.handleMsg = res, msg
    a.handlerUserID, a.handleTime = me, now
    save('ai', a)
    -- FriendApplicationApprovedTips / RejectedTips: fromToUserID is the
    -- application's (from the applicant to the owner)
    local notes = {note(res == 1 and 1201 or 1202, owner, from,
                        {fromToUserID = from_to(from, owner),
                         handleMsg = msg})}
    if f then
        notes[2] = added_note(f)
    end
    return ok('{}', {
        peer = {{uid = from, op = 'responded',
                 args = {application = a, accept = res == 1}}},
        notes = notes})
end

-- the applicant's side of an answer (from the caller)
function ops.responded()
    internal()
    local a = app_arg(owner, me)
    app_room('ao', me, true)
    save('ao', a)
    if A.accept == true then
        befriend_peer(me, BY_APPLY)
    end
    return ok('{}')
end

-- import_friend (app admin): both sides at once, no application; the
-- peer side runs for every ID, so that a call retried after a failure
-- there completes it (it adds what is missing only)
function ops.import()
    if not admin then
        return fail(1002, 'an app admin imports friends')
    end
    self('ownerUserID')
    local list = ids(A.friendUserIDs, 'friendUserIDs')
    local new, peer, notes = {}, {}, {}
    for i = 1, #list do
        if list[i] == owner then
            return fail(1301, 'cannot add yourself as a friend')
        end
        if not has('f', list[i]) then
            new[#new + 1] = list[i]
        end
        peer[i] = {uid = list[i], op = 'import_peer',
                   args = {friendUserID = owner}}
    end
    if count('f') + #new > MAXF then
        return fail(1001, 'a user has at most ' .. MAXF .. ' friends')
    end
    for i = 1, #new do
        notes[i] = added_note(befriend(new[i], BY_IMPORT))
    end
    return ok('{}', {peer = peer, notes = notes})
end

function ops.import_peer()
    internal()
    if A.friendUserID ~= me then
        return fail(1001, 'field "friendUserID" must name the caller')
    end
    befriend_peer(me, BY_IMPORT)
    return ok('{}')
end

-- delete_friend: one way, as OpenIM (the other keeps its record)
function ops.delete()
    self('ownerUserID')
    local fid = user_id(A.friendUserID, 'friendUserID')
    if not drop('f', fid) then
        return fail(1004, 'not a friend: ' .. fid)
    end
    return ok('{}', {notes = {note(1205, owner, fid,
                                   {fromToUserID = from_to(owner, fid)})}})
end

-- set_friend_remark
function ops.remark()
    self('ownerUserID')
    local fid = user_id(A.friendUserID, 'friendUserID')
    local f = friend_of(fid)
    f.remark = str(A.remark, 'remark', MAXREMARK) or ''
    save('f', f)
    return ok('{}', {notes = own_note(1206, fid)})
end

-- update_friends: isPinned, remark, ex of each (all friends, or nothing)
function ops.update()
    self('ownerUserID')
    local list = ids(A.friendUserIDs, 'friendUserIDs')
    local pin = wrapped(A.isPinned)
    if not absent(pin) and type(pin) ~= 'boolean' then
        return fail(1001, 'field "isPinned" must be a boolean')
    end
    local remark = str(wrapped(A.remark), 'remark', MAXREMARK)
    local ex = str(wrapped(A.ex), 'ex', MAXSTR)
    if absent(pin) and remark == nil and ex == nil then
        return fail(1001, 'nothing to update: isPinned, remark or ex')
    end
    local all = {}
    for i = 1, #list do
        all[i] = friend_of(list[i])
    end
    for i = 1, #all do
        local f = all[i]
        if not absent(pin) then
            f.isPinned = pin
        end
        f.remark = remark or f.remark
        f.ex = ex or f.ex
        save('f', f)
    end
    return ok('{}', {notes = {note(1210, owner, owner,
                                   {fromToUserID = from_to(owner, owner),
                                    friendIDs = list})}})
end

-- a page of the records of kind, by createTime: {"total", key: [...]}
local function paged(kind, key)
    self('userID')
    local first, n = page()
    local z = F .. REC[kind].z
    local list = redis.call('ZRANGE', z, first, first + n - 1)
    return ok('{"total":' .. redis.call('ZCARD', z) .. ',"' .. key .. '":'
              .. views(kind, list) .. '}')
end

-- get_friend_list
function ops.list() return paged('f', 'friendsInfo') end

-- get_designated_friends: those of the IDs that are friends
function ops.designated()
    self('ownerUserID')
    return ok('{"friendsInfo":'
              .. views('f', ids(A.friendUserIDs, 'friendUserIDs')) .. '}')
end

-- get_specified_friends_info: each user, with its friend and black
-- records (null when none)
function ops.specified()
    self('ownerUserID')
    local list = ids(A.userIDs or A.userIDList, 'userIDs')
    local out, size = {}, 0
    for i = 1, #list do
        local f, b = get('f', list[i]), get('b', list[i])
        out[i] = json({userInfo = user_of(list[i]),
                       friendInfo = f and friend_view(f) or cjson.null,
                       blackInfo = b and black_view(b) or cjson.null})
        size = size + #out[i]
        if size > BUDGET then
            break
        end
    end
    return ok('{"infos":[' .. table.concat(out, ',') .. ']}')
end

-- is the user A.id a friend, a black of the owner (is_friend, and the
-- C side's checks)
function ops.has()
    local id = user_id(A.id, 'id')
    return ok(json({friend = has('f', id), black = has('b', id)}))
end

-- get_friend_id
function ops.ids()
    self('userID')
    return ok('{"friendIDs":'
              .. arr(redis.call('ZRANGE', F .. 'fz', 0, MAXF - 1)) .. '}')
end

-- the changes of log L after version since, oldest first, at most n + 1:
-- {uid, version, deleted} (a version names one change of one uid)
local function changes(L, since, n)
    local up = redis.call('ZRANGEBYSCORE', F .. L .. 'vlog', '(' .. since,
                          '+inf', 'WITHSCORES', 'LIMIT', 0, n + 1)
    local dn = redis.call('ZRANGEBYSCORE', F .. L .. 'vdel', '(' .. since,
                          '+inf', 'WITHSCORES', 'LIMIT', 0, n + 1)
    local out, i, j = {}, 1, 1
    while #out < n + 1 and (i < #up or j < #dn) do
        local a, b = tonumber(up[i + 1]), tonumber(dn[j + 1])
        if b == nil or (a ~= nil and a < b) then
            out[#out + 1] = {up[i], a, false}
            i = i + 2
        else
            out[#out + 1] = {dn[j], b, true}
            j = j + 2
        end
    end
    return out
end

-- OpenIM's incremental sync of kind's log (as group.lua members_incr):
-- in full (the first MAXLIST by createTime) when the client's log is
-- another or too old, or when more than A.limit changes (as OpenIM: a
-- batch cut short would show an older insert as an update to a client
-- that never had it)
local function incr(kind)
    self('userID')
    local L = REC[kind].log
    local id = log_id(L)
    local ver = redis.call('HMGET', F .. L .. 'v', 'v', 'low')
    local v, low = tonumber(ver[1]) or 0, tonumber(ver[2]) or 0
    local since = tonumber(A.version) or 0
    local limit = A.limit ~= 0 and int(A.limit, 'limit', 1, MAXLIST) or 100
    local full = A.versionID ~= id or since < low or since > v
    local list = full and {} or changes(L, since, limit)
    local del, ins, upd, size = {}, {}, {}, 0
    full = full or #list > limit
    for i = 1, full and 0 or #list do
        local c = list[i]
        local r = not c[3] and get(kind, c[1])
        if c[3] then
            del[#del + 1] = c[1]
        elseif r then
            local into = tonumber(redis.call('HGET', F .. L .. 'vins', c[1])
                                  or '0') > since and ins or upd
            into[#into + 1] = json(VIEW[kind](r))
            size = size + #into[#into]
        end
    end
    local insert = '[' .. table.concat(ins, ',') .. ']'
    if full or size > BUDGET then
        full, del, upd = true, {}, {}
        insert = views(kind, redis.call('ZRANGE', F .. REC[kind].z, 0,
                                        MAXLIST - 1))
    end
    return ok('{"version":' .. v .. ',"versionID":' .. json(id)
              .. ',"full":' .. tostring(full) .. ',"delete":' .. arr(del)
              .. ',"insert":' .. insert .. ',"update":['
              .. table.concat(upd, ',') .. '],"sortVersion":0}')
end

-- get_incremental_friends, get_incremental_blacks
function ops.incr() return incr('f') end
function ops.blacks_incr() return incr('b') end

-- get_full_friend_user_ids.  OpenIM's idHash is its own hash (md5) of
-- the IDs; ours is redis.sha1hex of the IDs sorted and joined by ",",
-- compared as a string: an SDK's hash never equals it, so it always gets
-- the IDs (correct, if not the cheapest)
function ops.full_ids()
    self('userID')
    local list = redis.call('ZRANGE', F .. 'fz', 0, MAXF - 1)
    local sorted = {}
    for i = 1, #list do
        sorted[i] = list[i]
    end
    table.sort(sorted)
    local equal = not absent(A.idHash)
                  and tostring(A.idHash)
                      == redis.sha1hex(table.concat(sorted, ','))
    local id = log_id('f')
    return ok('{"version":' .. (redis.call('HGET', F .. 'fv', 'v') or '0')
              .. ',"versionID":' .. json(id) .. ',"equal":'
              .. tostring(equal) .. ',"userIDs":'
              .. (equal and '[]' or arr(list)) .. '}')
end

-- get_friend_apply_list (received) and get_self_friend_apply_list (sent):
-- newest first, those whose handleResult is in A.handleResults if given.
-- OpenIM names the received list "FriendRequests" (its protobuf field is
-- capitalised, and the JS SDK reads that key), the sent one
-- "friendRequests"
local APPS_KEY = {ai = 'FriendRequests', ao = 'friendRequests'}

local function apps(kind)
    self('userID')
    local first, n = page()
    local h, want = A.handleResults, nil
    if not absent(h) and (type(h) ~= 'table' or #h > 3) then
        return fail(1001, 'field "handleResults" must be an array of at '
                    .. 'most 3 of 0, 1, -1')
    end
    for i = 1, absent(h) and 0 or #h do
        want = want or {}
        want[int(absent(h[i]) and '' or h[i], 'handleResults', -1, 1)] = true
    end
    local list = redis.call('ZREVRANGE', F .. REC[kind].z, 0, MAXAPPS)
    local out, total, size = {}, 0, 0
    for i = 1, #list do
        local a = get(kind, list[i])
        if a and (not want or want[a.handleResult]) then
            total = total + 1
            if total > first and total <= first + n and size <= BUDGET then
                out[#out + 1] = json(app_view(a))
                size = size + #out[#out]
            end
        end
    end
    return ok('{"total":' .. total .. ',"' .. APPS_KEY[kind] .. '":['
              .. table.concat(out, ',') .. ']}')
end

function ops.apps_in() return apps('ai') end
function ops.apps_out() return apps('ao') end

-- get_designated_friend_apply, in the slot of toUserID: the application
-- from fromUserID, then (as OpenIM answers both ways) the owner's to it
function ops.app_one()
    local from = user_id(A.fromUserID, 'fromUserID')
    if not absent(A.toUserID) and A.toUserID ~= owner then
        return fail(1001, 'field "toUserID" must name the owner')
    end
    if not admin and me ~= owner and me ~= from then
        return fail(1002, 'no permission')
    end
    local out = {}
    for _, kind in ipairs({'ai', 'ao'}) do
        local a = get(kind, from)
        if a then
            out[#out + 1] = json(app_view(a))
        end
    end
    return ok('{"friendRequests":[' .. table.concat(out, ',') .. ']}')
end

-- get_self_unhandled_apply_count: pending, received after A.time
function ops.unhandled()
    self('userID')
    local t = int(A.time, 'time', 0, 1e15) or 0
    local list = redis.call('ZRANGEBYSCORE', F .. 'aiz', '(' .. t, '+inf',
                            'LIMIT', 0, MAXAPPS)
    local n = 0
    for i = 1, #list do
        local a = get('ai', list[i])
        if a and a.handleResult == 0 then
            n = n + 1
        end
    end
    return ok('{"count":' .. n .. '}')
end

-- add_black: blocking oneself is 1301; blocking a black again changes
-- nothing and succeeds (OpenIM fails on its unique index; a retry should
-- not)
function ops.black_add()
    self('ownerUserID')
    local bid = user_id(A.blackUserID, 'blackUserID')
    local ex = str(A.ex, 'ex', MAXSTR) or ''
    if bid == owner then
        return fail(1301, 'cannot block yourself')
    end
    if has('b', bid) then
        return ok('{}')
    end
    room('b', 'blacks')
    save('b', {ownerUserID = owner, blockUserID = bid, createTime = now,
               addSource = 0, operatorUserID = me, ex = ex})
    return ok('{}', {notes = own_note(1207, bid)})
end

function ops.black_remove()
    self('ownerUserID')
    local bid = user_id(A.blackUserID, 'blackUserID')
    if not drop('b', bid) then
        return fail(1004, 'not blocked: ' .. bid)
    end
    return ok('{}', {notes = own_note(1208, bid)})
end

-- get_black_list
function ops.blacks() return paged('b', 'blacks') end

-- get_specified_blacks: those of the IDs that are blocked
function ops.blacks_of()
    self('userID')
    self('ownerUserID')
    local list, found = ids(A.userIDs or A.userIDList, 'userIDs'), {}
    for i = 1, #list do
        if has('b', list[i]) then
            found[#found + 1] = list[i]
        end
    end
    return ok('{"total":' .. #found .. ',"blacks":' .. views('b', found)
              .. '}')
end

local PROFILE = {'nickname', 'faceURL', 'ex', 'createTime',
                 'globalRecvMsgOpt', 'updateTime'}
local NUMERIC = {createTime = true, globalRecvMsgOpt = true,
                 updateTime = true}

-- the profile must exist; sets name/value pairs and updateTime, and
-- stores the whole profile (kind p)
local function write_profile(set)
    if not redis.call('HGET', P, 'createTime') then
        error({1101, 'user not found: ' .. owner})
    end
    redis.call('HSET', P, 'updateTime', now, unpack(set))
    local h = redis.call('HMGET', P, unpack(PROFILE))
    local p = {userID = owner}
    for i, k in ipairs(PROFILE) do
        p[k] = NUMERIC[k] and (tonumber(h[i]) or 0) or (h[i] or '')
    end
    stored('p', nil, json(p))
end

-- a field of update_user_info (a bare "" or 0 leaves it as it is) or of
-- update_user_info_ex ({"value": x} sets it, "" too, but a nickname)
local function profile_field(u, name, max)
    local v = u[name]
    if type(v) ~= 'table' and (v == '' or v == 0) then
        return nil
    end
    v = wrapped(v)
    if name == 'globalRecvMsgOpt' then
        return int(v, name, 0, 2)
    end
    v = str(v, name, max)
    if name == 'nickname' and v == '' then
        error({1001, 'field "nickname" must not be empty'})
    end
    return v
end

-- update_user_info(_ex): the owner's devices and its friends hear of it
function ops.set_profile()
    local u = A.userInfo
    if type(u) ~= 'table' then
        return fail(1001, 'field "userInfo" must be an object')
    end
    self()
    if not absent(u.userID) and u.userID ~= owner then
        return fail(1001, 'field "userInfo.userID" must name the owner')
    end
    local set = {}
    for _, f in ipairs({{'nickname', 256}, {'faceURL', 1024}, {'ex', MAXSTR},
                        {'globalRecvMsgOpt'}}) do
        local v = profile_field(u, f[1], f[2])
        if v ~= nil then
            set[#set + 1] = f[1]
            set[#set + 1] = v
        end
    end
    local was = redis.call('HGET', P, 'nickname') or ''
    write_profile(set)
    local tips = {userID = owner}
    local is = redis.call('HGET', P, 'nickname') or ''
    return ok('{}', {
        notes = {note(1303, owner, owner, tips)},
        tell = {type = 1303, tips = tips,
                users = redis.call('ZRANGE', F .. 'fz', 0, MAXF - 1)},
        -- without MongoDB, the C side keeps an index of nicknames
        nick = was ~= is and {old = was, new = is} or nil})
end

-- set_global_msg_recv_opt; the owner's devices hear of it (as OpenIM)
function ops.set_recv_opt()
    self('userID')
    local v = int(A.globalRecvMsgOpt, 'globalRecvMsgOpt', 0, 2)
    if v == nil then
        return fail(1001, 'field "globalRecvMsgOpt" is required')
    end
    write_profile({'globalRecvMsgOpt', v})
    return ok('{}', {notes = {note(1303, owner, owner, {userID = owner})}})
end

-- makes sure the user is loaded (the check above did it)
function ops.touch() return ok('{}') end

-- one document MongoDB kept, under what Redis has
local function restore_one(d)
    local b, k = d.doc, REC[d.kind]
    if d.deleted or type(b) ~= 'table' then
        return
    end
    if d.kind == 'p' then
        for _, name in ipairs(PROFILE) do
            local v = b[name]
            if type(v) == 'string' or type(v) == 'number' then
                redis.call('HSETNX', P, name, v)
            end
        end
        return
    end
    local key = k and b[k.id]
    if valid_id(key) and redis.call('HSETNX', F .. k.hash, key, json(b)) == 1
    then
        redis.call('ZADD', F .. k.z, tonumber(b.createTime) or now, key)
        if k.log then
            logged(k.log, key)
        end
    end
end

-- the documents MongoDB kept (A.docs, at most 1000 a call), merged under
-- what Redis has; the first call starts new version logs (clients sync
-- in full once), the last marks the user loaded (one with no document
-- too: it has nothing yet)
function ops.restore()
    if A.first then
        redis.call('DEL', F .. 'fv', F .. 'fvlog', F .. 'fvins', F .. 'fvdel',
                   F .. 'bv', F .. 'bvlog', F .. 'bvins', F .. 'bvdel')
    end
    local list = type(A.docs) == 'table' and A.docs or {}
    for i = 1, math.min(#list, MAXLIST) do
        local d = list[i]
        if type(d) == 'table' and (absent(d.ownerUserID)
                                   or d.ownerUserID == owner) then
            restore_one(d)
            if type(d._id) == 'string' then
                redis.call('HSETNX', F .. 'rev', d._id, tonumber(d.rev) or 0)
            end
        end
    end
    if A.last then
        redis.call('SET', F .. 'loaded', now)
    end
    return ok('{}')
end

local f = ops[op]
if not f then
    return fail(500, 'unknown op')
end
local done, r = pcall(f)
if done then
    return r
end
if type(r) == 'table' then
    return fail(r[1], r[2])
end
return redis.error_reply(tostring(r))
