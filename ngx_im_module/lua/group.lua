-- A group: its record, members, roles, mutes, applications and member
-- version log, in the slot of its conversation sg_<groupID> (so that a
-- send checks membership and mutes in the same script as the seq).
-- KEYS: 1 the group's record (G .. 'g')
-- ARGV: 1 op, 2 key prefix G "im:{c:sg_<gid>}:", 3 groupID, 4 the caller's
--       user ID, 5 "1" when the caller is an app admin, 6 now (ms),
--       7 the op's arguments as JSON (the request body, bounded by the
--       caller's body limit), 8 the group's channel, 9 "PUBLISH" or
--       "SPUBLISH", 10 the most members a group may have, 11 "1" when
--       MongoDB holds the groups (a group is loaded first: "restore"),
--       "2" likewise, just loaded (or not in MongoDB either)
-- Returns {0, answer JSON, effects JSON, changed documents (a JSON array,
-- for MongoDB)}, {-1, errCode, errMsg}, or {-2} when the group must first
-- be loaded from MongoDB (op "restore" does that).  The
-- effects tell the caller what to do in other slots: users who joined
-- ("join": {uid: first visible seq}), users who left ("leave": {uid: last
-- visible seq}), the notification to send ("note": contentType, "tips":
-- JSON), users to tell outside the group ("tell").
local op, G, gid, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local admin, now = ARGV[5] == '1', tonumber(ARGV[6])
local channel, publish = ARGV[8], ARGV[9]
local MAXMEM = tonumber(ARGV[10])
local MAXLIST, MAXSTR, MAXLOG = 1000, 4096, 10000
local OWNER, ADMIN, ORDINARY = 100, 60, 20
local mongo = ARGV[11] ~= '0'
if ARGV[11] == '1' and op ~= 'restore'
   and redis.call('EXISTS', G .. 'loaded') == 0 then
    return {-2}
end
local A = cjson.decode(ARGV[7])
if type(A) ~= 'table' then
    return {-1, 1001, 'the body must be a JSON object'}
end
local docs = {}

local function fail(code, msg)
    return {-1, code, msg}
end

local function json(v)
    return cjson.encode(v)
end

local function info()
    local s = redis.call('HGET', G .. 'g', 'info')
    return s and cjson.decode(s)
end

local function member(uid)
    local s = redis.call('HGET', G .. 'gm', uid)
    return s and cjson.decode(s)
end

local function count()
    return redis.call('HLEN', G .. 'gm')
end

local function seq()
    return tonumber(redis.call('GET', G .. 'seq') or '0') or 0
end

-- a user ID as the C side checks it: 1..64 bytes, no "_" (it splits
-- conversation IDs), no control bytes
local function valid_id(s)
    return type(s) == 'string' and #s >= 1 and #s <= 64
           and not string.find(s, '[%z\1-\32_"\\\127]')
end

local function str(v, name, max)
    if v == nil or v == cjson.null then
        return nil
    end
    if type(v) ~= 'string' or #v > max then
        error({1001, 'field "' .. name .. '" must be a string of at most '
                     .. max .. ' bytes'})
    end
    return v
end

local function int(v, name, lo, hi)
    if v == nil or v == cjson.null then
        return nil
    end
    if type(v) ~= 'number' or v ~= math.floor(v) or v < lo or v > hi then
        error({1001, 'field "' .. name .. '" must be an integer in ' .. lo
                     .. '..' .. hi})
    end
    return v
end

-- a list of distinct user IDs, 1..MAXLIST of them (0.. with empty)
local function ids(v, name, empty)
    if v == nil or v == cjson.null then
        v = {}
    end
    if type(v) ~= 'table' or #v > MAXLIST or (#v == 0 and not empty)
       or (#v == 0 and next(v) ~= nil) then
        error({1001, 'field "' .. name .. '" must be an array of '
                     .. (empty and 0 or 1) .. '..' .. MAXLIST .. ' user IDs'})
    end
    local seen, out = {}, {}
    for i = 1, #v do
        if not valid_id(v[i]) then
            error({1001, 'field "' .. name .. '[' .. (i - 1)
                         .. ']" must be a valid user ID'})
        end
        if not seen[v[i]] then
            seen[v[i]] = true
            out[#out + 1] = v[i]
        end
    end
    return out
end

-- the group's member version log: a change of uid (del: it left)
local function logged(uid, del)
    local v = redis.call('HINCRBY', G .. 'gv', 'v', 1)
    if not redis.call('HGET', G .. 'gv', 'id') then
        redis.call('HSET', G .. 'gv', 'id',
                   redis.sha1hex(gid .. ':' .. now .. ':' .. v), 'low', 0)
    end
    if del then
        redis.call('ZREM', G .. 'gvlog', uid)
        redis.call('HDEL', G .. 'gvins', uid)
        redis.call('ZADD', G .. 'gvdel', v, uid)
        if redis.call('ZCARD', G .. 'gvdel') > MAXLOG then
            local old = redis.call('ZRANGE', G .. 'gvdel', 0, 0, 'WITHSCORES')
            redis.call('HSET', G .. 'gv', 'low', old[2])
            redis.call('ZREMRANGEBYRANK', G .. 'gvdel', 0, 0)
        end
    else
        if redis.call('ZSCORE', G .. 'gvlog', uid) == false then
            redis.call('HSET', G .. 'gvins', uid, v)
        end
        redis.call('ZADD', G .. 'gvlog', v, uid)
        redis.call('ZREM', G .. 'gvdel', uid)
    end
end

-- a changed document for MongoDB: kind g (the record), m (a member),
-- l (a former member's range), a (an application); body nil: deleted
local function stored(kind, key, body)
    local id = kind .. ':' .. gid .. (key ~= '' and ':' .. key or '')
    docs[#docs + 1] = json({_id = id, groupID = gid, kind = kind,
                            rev = redis.call('HINCRBY', G .. 'rev', id, 1),
                            deleted = body == nil, doc = body,
                            updateTime = now})
end

local function save_app(uid, a)
    redis.call('HSET', G .. 'ga', uid, json(a))
    stored('a', uid, a)
end

local function drop(hash, kind, uid)
    if redis.call('HDEL', G .. hash, uid) == 1 then
        stored(kind, uid, nil)
    end
end

local function save_member(m, new)
    local old = new and nil or member(m.userID)
    stored('m', m.userID, m)
    redis.call('HSET', G .. 'gm', m.userID, json(m))
    if old and old.roleLevel ~= m.roleLevel then
        redis.call('ZREM', G .. 'gr:' .. old.roleLevel, m.userID)
    end
    redis.call('ZADD', G .. 'gz', m.joinTime, m.userID)
    redis.call('ZADD', G .. 'gr:' .. m.roleLevel, m.joinTime, m.userID)
    logged(m.userID)
end

local function save_info(g)
    g.memberCount = nil
    redis.call('HSET', G .. 'g', 'info', json(g))
    stored('g', '', g)
end

local function with_count(g)
    g.memberCount = count()
    return g
end

-- a control line on the group's channel, in order with its messages:
-- "g -<uid>" (left)
local function control(line)
    redis.call(publish, channel, 'g ' .. line)
end

local function ok(answer, effects)
    effects = effects or {}
    effects.seq = seq()
    return {0, answer, json(effects), '[' .. table.concat(docs, ',') .. ']'}
end

local function role_of(uid)
    if admin and uid == me then
        return 1000
    end
    local m = member(uid)
    return m and m.roleLevel or 0
end

-- the group exists and is not dismissed; the caller's role in it
local function usable()
    local g = info()
    if not g then
        error({1201, 'group not found'})
    end
    if g.status == 2 then
        error({1204, 'group dismissed'})
    end
    return g, role_of(me)
end

local function need(role, want)
    if role < want then
        error({role == 0 and 1203 or 1002, role == 0 and 'not in group'
               or 'no permission'})
    end
end

local function new_member(uid, role, from, how, inviter)
    return {groupID = gid, userID = uid, roleLevel = role, joinTime = now,
            nickname = '', faceURL = '', ex = '', muteEndTime = 0,
            joinSource = how, inviterUserID = inviter or '',
            operatorUserID = me, from = from}
end

-- adds users (not members yet); their first visible seq follows the
-- group's history policy
local function add(list, how, inviter, joined)
    local g = info()
    if count() + #list > MAXMEM then
        error({1001, 'a group has at most ' .. MAXMEM .. ' members'})
    end
    local from = g.enableHistoryForNewMembers == false and seq() + 1 or 1
    for i = 1, #list do
        local uid = list[i]
        save_member(new_member(uid, ORDINARY, from, how, inviter), true)
        drop('gl', 'l', uid)
        drop('ga', 'a', uid)
        joined[uid] = from
    end
end

-- removes members; their last visible seq is the group's seq now
local function remove(list, left)
    local s = seq()
    for i = 1, #list do
        local m = member(list[i])
        drop('gm', 'm', list[i])
        redis.call('ZREM', G .. 'gz', list[i])
        redis.call('ZREM', G .. 'gr:' .. m.roleLevel, list[i])
        redis.call('HSET', G .. 'gl', list[i], (m.from or 1) .. ' ' .. s)
        stored('l', list[i], {userID = list[i], from = m.from or 1, to = s})
        logged(list[i], true)
        control('-' .. list[i])
        left[list[i]] = s
    end
end

-- the users a notification names (at most 100: it must fit a message)
local function users(list)
    local out = {}
    for i = 1, math.min(#list, 100) do
        out[i] = {userID = list[i]}
    end
    return out
end

local function tips(g, extra)
    local t = {group = with_count(g), opUser = {userID = me},
               operationTime = now}
    for k, v in pairs(extra or {}) do
        t[k] = v
    end
    return json(t)
end

local GROUP_FIELDS = {
    {'groupName', 's', 256}, {'notification', 's', MAXSTR},
    {'introduction', 's', MAXSTR}, {'faceURL', 's', 1024},
    {'ex', 's', MAXSTR}, {'needVerification', 'i', 0, 2},
    {'lookMemberInfo', 'i', 0, 1}, {'applyMemberFriend', 'i', 0, 1},
    {'enableHistoryForNewMembers', 'b'}
}

-- copies the settable fields of src into g, checked
local function group_fields(g, src)
    if type(src) ~= 'table' then
        error({1001, 'field "groupInfo" must be an object'})
    end
    local changed = {}
    for _, f in ipairs(GROUP_FIELDS) do
        local v = src[f[1]]
        if v ~= nil and v ~= cjson.null then
            if f[2] == 's' then
                v = str(v, f[1], f[3])
            elseif f[2] == 'i' then
                v = int(v, f[1], f[3], f[4])
            elseif type(v) ~= 'boolean' then
                error({1001, 'field "' .. f[1] .. '" must be a boolean'})
            end
            if g[f[1]] ~= v then
                changed[f[1]] = true
            end
            g[f[1]] = v
        end
    end
    return changed
end

local ops = {}

function ops.create()
    if info() then
        return fail(1202, 'group ID exists')
    end
    local owner = A.ownerUserID
    if owner == nil or owner == '' then
        owner = me
    end
    if not valid_id(owner) then
        return fail(1001, 'field "ownerUserID" must be a valid user ID')
    end
    if not admin and owner ~= me then
        return fail(1002, 'only an app admin creates a group for another '
                    .. 'owner')
    end
    local list = ids(A.memberUserIDs, 'memberUserIDs', true)
    local admins = ids(A.adminUserIDs, 'adminUserIDs', true)
    local g = {groupID = gid, groupName = '', notification = '',
               introduction = '', faceURL = '', ex = '', status = 0,
               creatorUserID = me, ownerUserID = owner, groupType = 2,
               needVerification = 0, lookMemberInfo = 0,
               applyMemberFriend = 0, enableHistoryForNewMembers = true,
               createTime = now, notificationUpdateTime = 0,
               notificationUserID = ''}
    group_fields(g, A.groupInfo or {})
    local role = {[owner] = OWNER}
    local all = {owner}
    for _, l in ipairs({admins, list}) do
        for i = 1, #l do
            if not role[l[i]] then
                role[l[i]] = l == admins and ADMIN or ORDINARY
                all[#all + 1] = l[i]
            end
        end
    end
    if #all > MAXLIST + 1 then
        return fail(1001, 'at most ' .. MAXLIST .. ' members in one call')
    end
    save_info(g)
    if mongo then
        -- a group new to MongoDB too: no longer "known absent"
        redis.call('SET', G .. 'loaded', now)
    end
    local joined = {}
    for i = 1, #all do
        save_member(new_member(all[i], role[all[i]], 1, 2), true)
        joined[all[i]] = 1
    end
    local members = {}
    for i = 1, math.min(#all, 20) do
        members[#members + 1] = member(all[i])
    end
    return ok(json({groupInfo = with_count(g)}),
              {join = joined, note = 1501,
               tips = tips(g, {memberList = members,
                               groupOwnerUser = member(owner)})})
end

function ops.info()
    local g = info()
    if not g then
        return ok('null')
    end
    return ok(json(with_count(g)))
end

function ops.set_info()
    local g, role = usable()
    need(role, ADMIN)
    local changed = group_fields(g, A.groupInfo or A)
    if changed.notification then
        g.notificationUpdateTime = now
        g.notificationUserID = me
    end
    save_info(g)
    local note = changed.notification and 1519
                 or (changed.groupName and 1520 or 1502)
    return ok('{}', {note = note, tips = tips(g)})
end

-- invite_user_to_group: an ordinary member's invitation into a group
-- where everyone needs verification becomes applications
function ops.invite()
    local g, role = usable()
    need(role, ORDINARY)
    local list = ids(A.invitedUserIDs or A.userIDs, 'invitedUserIDs')
    for i = 1, #list do
        if member(list[i]) then
            return fail(1001, 'already a member: ' .. list[i])
        end
    end
    if role < ADMIN and g.needVerification == 1 then
        for i = 1, #list do
            save_app(list[i],
                {groupID = gid, userID = list[i], inviterUserID = me,
                 reqMsg = str(A.reason, 'reason', MAXSTR) or '',
                 joinSource = 2, reqTime = now, handleResult = 0})
        end
        return ok('{}', {applied = list, tell = list, note = 1503,
                         only = true,
                         tips = tips(g, {applicant = {userID = me},
                                         invitedUserList = users(list)})})
    end
    local joined = {}
    add(list, 2, me, joined)
    return ok('{}', {join = joined, note = 1509,
                     tips = tips(g, {invitedUserList = users(list)})})
end

function ops.join()
    local g = info()
    if not g then
        return fail(1201, 'group not found')
    end
    if g.status == 2 then
        return fail(1204, 'group dismissed')
    end
    if member(me) then
        return fail(1001, 'already a member')
    end
    local msg = str(A.reqMessage, 'reqMessage', MAXSTR) or ''
    local src = int(A.joinSource, 'joinSource', 0, 10) or 3
    if g.needVerification == 2 then
        local joined = {}
        add({me}, src, '', joined)
        return ok('{}', {join = joined, note = 1510,
                         tips = tips(g, {entrantUser = member(me)})})
    end
    save_app(me,
        {groupID = gid, userID = me, reqMsg = msg, joinSource = src,
         inviterUserID = str(A.inviterUserID, 'inviterUserID', 64) or '',
         reqTime = now, handleResult = 0})
    local deciders = redis.call('ZRANGE', G .. 'gr:' .. ADMIN, 0, 99)
    deciders[#deciders + 1] = g.ownerUserID
    return ok('{}', {applied = {me}, tell = deciders, note = 1503, only = true,
                     tips = tips(g, {applicant = {userID = me},
                                     reqMsg = msg})})
end

function ops.respond()
    local g, role = usable()
    need(role, ADMIN)
    local uid = A.fromUserID
    if not valid_id(uid) then
        return fail(1001, 'field "fromUserID" must be a valid user ID')
    end
    local res = int(A.handleResult, 'handleResult', -1, 1)
    if res == nil or res == 0 then
        return fail(1001, 'field "handleResult" must be 1 or -1')
    end
    local s = redis.call('HGET', G .. 'ga', uid)
    if not s then
        return fail(1004, 'no application from this user')
    end
    local app = cjson.decode(s)
    if app.handleResult ~= 0 then
        return fail(1206, 'the application was handled')
    end
    app.handleResult = res
    app.handledMsg = str(A.handledMsg, 'handledMsg', MAXSTR) or ''
    app.handleUserID = me
    app.handledTime = now
    if res == -1 then
        save_app(uid, app)
        return ok('{}', {tell = {uid}, note = 1506, only = true,
                         tips = tips(g, {handleMsg = app.handledMsg})})
    end
    if member(uid) then
        return fail(1001, 'already a member')
    end
    local joined = {}
    add({uid}, app.joinSource or 3, app.inviterUserID, joined)
    save_app(uid, app)
    return ok('{}', {join = joined, note = 1505,
                     tips = tips(g, {entrantUser = member(uid)})})
end

-- the applications a caller may decide (owner, admins), or its own
function ops.apps()
    local g = info()
    if not g then
        return ok('[]')
    end
    local all = redis.call('HVALS', G .. 'ga')
    local only = A.userIDs
    if only == nil and type(A.userID) == 'string' then
        -- get_specified_user_group_request_info names one user
        only = {A.userID}
    end
    if role_of(me) < ADMIN then
        only = {me}
    end
    local want
    if type(only) == 'table' and #only > 0 then
        want = {}
        for i = 1, math.min(#only, MAXLIST) do
            want[only[i]] = true
        end
    end
    local out = {}
    for i = 1, math.min(#all, MAXLIST) do
        local a = cjson.decode(all[i])
        if not want or want[a.userID] then
            a.groupInfo = with_count(g)
            -- OpenIM's GroupRequest names (the JS SDK reads these)
            a.handleMsg = a.handledMsg or ''
            a.handleTime = a.handledTime or 0
            out[#out + 1] = a
        end
    end
    return ok(#out == 0 and '[]' or json(out))
end

function ops.quit()
    local g, role = usable()
    need(role, ORDINARY)
    if role == OWNER then
        return fail(1002, 'the owner cannot quit: transfer or dismiss')
    end
    if not member(me) then
        return fail(1203, 'not in group')
    end
    local left = {}
    remove({me}, left)
    return ok('{}', {leave = left, note = 1504,
                     tips = tips(g, {quitUser = {userID = me}})})
end

function ops.kick()
    local g, role = usable()
    need(role, ADMIN)
    local list = ids(A.kickedUserIDs, 'kickedUserIDs')
    for i = 1, #list do
        local m = member(list[i])
        if not m then
            return fail(1203, 'not in group: ' .. list[i])
        end
        if m.roleLevel == OWNER or (role < OWNER and m.roleLevel >= ADMIN)
           or list[i] == me then
            return fail(1002, 'no permission to kick ' .. list[i])
        end
    end
    local left = {}
    remove(list, left)
    return ok('{}', {leave = left, note = 1508, tell = list,
                     tips = tips(g, {kickedUserList = users(list),
                                     reason = str(A.reason, 'reason',
                                                  MAXSTR) or ''})})
end

function ops.dismiss()
    local g, role = usable()
    need(role, OWNER)
    g.status = 2
    save_info(g)
    return ok('{}', {note = 1511, tips = tips(g)})
end

function ops.transfer()
    local g, role = usable()
    need(role, OWNER)
    local new = A.newOwnerUserID
    local nm = valid_id(new) and member(new)
    if not nm then
        return fail(1203, 'the new owner is not in group')
    end
    if new == g.ownerUserID then
        return ok('{}')
    end
    local old = member(g.ownerUserID)
    if old then
        old.roleLevel = ORDINARY
        save_member(old)
    end
    nm.roleLevel = OWNER
    nm.muteEndTime = 0
    save_member(nm)
    g.ownerUserID = new
    save_info(g)
    return ok('{}', {note = 1507, tips = tips(g, {newGroupOwner = nm})})
end

function ops.mute()
    local g, role = usable()
    need(role, ADMIN)
    g.status = A.cancel and 0 or 3
    save_info(g)
    return ok('{}', {note = A.cancel and 1515 or 1514, tips = tips(g)})
end

function ops.cancel_mute()
    A.cancel = true
    return ops.mute()
end

function ops.mute_member()
    local g, role = usable()
    need(role, ADMIN)
    local m = valid_id(A.userID) and member(A.userID)
    if not m then
        return fail(1203, 'not in group')
    end
    if m.roleLevel == OWNER or (role < OWNER and m.roleLevel >= ADMIN) then
        return fail(1002, 'no permission to mute this member')
    end
    local secs = A.cancel and 0
                 or int(A.mutedSeconds, 'mutedSeconds', 1, 31536000 * 10)
    if not secs then
        return fail(1001, 'field "mutedSeconds" is required')
    end
    m.muteEndTime = secs > 0 and now + secs * 1000 or 0
    save_member(m)
    return ok('{}', {note = A.cancel and 1513 or 1512,
                     tips = tips(g, {mutedUser = m, mutedSeconds = secs})})
end

function ops.cancel_mute_member()
    A.cancel = true
    return ops.mute_member()
end

-- set_group_member_info: one member's nickname, faceURL, ex, roleLevel
-- (entry A.index of the body's members)
function ops.set_member()
    if type(A.body) == 'table' and type(A.body.members) == 'table' then
        A = A.body.members[(tonumber(A.index) or 0) + 1]
        if type(A) ~= 'table' then
            return fail(1001, 'field "members" must hold objects')
        end
    end
    local g, role = usable()
    need(role, ORDINARY)
    local m = valid_id(A.userID) and member(A.userID)
    if not m then
        return fail(1203, 'not in group: ' .. tostring(A.userID))
    end
    local self = A.userID == me
    if not self and (role < ADMIN or (role < OWNER and m.roleLevel >= ADMIN))
    then
        return fail(1002, 'no permission')
    end
    local note = 1516
    local r = int(A.roleLevel, 'roleLevel', 0, 100)
    if r and r ~= 0 and r ~= m.roleLevel then
        if role < OWNER or (r ~= ADMIN and r ~= ORDINARY)
           or m.roleLevel == OWNER then
            return fail(1002, 'only the owner sets roles (60 or 20)')
        end
        m.roleLevel = r
        note = r == ADMIN and 1517 or 1518
    end
    m.nickname = str(A.nickname, 'nickname', 256) or m.nickname
    m.faceURL = str(A.faceURL, 'faceURL', 1024) or m.faceURL
    m.ex = str(A.ex, 'ex', MAXSTR) or m.ex
    save_member(m)
    return ok('{}', {note = note, tips = tips(g, {changedUser = m})})
end

-- reading members: members (and app admins) only
local function reader()
    local g = info()
    if not g then
        error({1201, 'group not found'})
    end
    if role_of(me) == 0 then
        error({1203, 'not in group'})
    end
    return g
end

local function members_of(list)
    local out = {}
    for i = 1, #list do
        local m = member(list[i])
        if m then
            out[#out + 1] = m
        end
    end
    return out
end

local FILTER = {[1] = OWNER, [2] = ADMIN, [3] = ORDINARY}

function ops.members()
    reader()
    local p = type(A.pagination) == 'table' and A.pagination or {}
    local n = int(p.showNumber, 'showNumber', 1, 1000) or 100
    local first = ((int(p.pageNumber, 'pageNumber', 1, 1e9) or 1) - 1) * n
    local f = int(A.filter, 'filter', 0, 3) or 0
    local key = FILTER[f] and G .. 'gr:' .. FILTER[f] or G .. 'gz'
    local list = redis.call('ZRANGE', key, first, first + n - 1)
    local members = members_of(list)
    return ok('{"total":' .. redis.call('ZCARD', key) .. ',"members":'
              .. (#members == 0 and '[]' or json(members)) .. '}')
end

function ops.members_info()
    reader()
    local members = members_of(ids(A.userIDs, 'userIDs'))
    return ok('{"members":' .. (#members == 0 and '[]' or json(members))
              .. '}')
end

function ops.member_ids()
    reader()
    local list = redis.call('ZRANGE', G .. 'gz', 0, MAXMEM - 1)
    local v = redis.call('HMGET', G .. 'gv', 'v', 'id')
    return ok('{"version":' .. (tonumber(v[1]) or 0) .. ',"versionID":'
              .. json(v[2] or '') .. ',"equal":false,"userIDs":'
              .. (#list == 0 and '[]' or json(list)) .. '}')
end

function ops.members_incr()
    reader()
    local ver = redis.call('HMGET', G .. 'gv', 'v', 'id', 'low')
    local v, id = tonumber(ver[1]) or 0, ver[2]
    local since = tonumber(A.version) or 0
    local head = '{"version":' .. v .. ',"versionID":' .. json(id)
    local full = A.versionID ~= id or since < (tonumber(ver[3]) or 0)
                 or since > v
    local ins, upd, del = {}, {}, {}
    if not full then
        local list = redis.call('ZRANGEBYSCORE', G .. 'gvlog', '(' .. since,
                                '+inf', 'LIMIT', 0, MAXLIST + 1)
        full = #list > MAXLIST
        for i = 1, math.min(#list, MAXLIST) do
            local into = tonumber(redis.call('HGET', G .. 'gvins', list[i])
                                  or '0') > since and ins or upd
            into[#into + 1] = list[i]
        end
        del = redis.call('ZRANGEBYSCORE', G .. 'gvdel', '(' .. since, '+inf',
                         'LIMIT', 0, MAXLIST)
    end
    if full then
        local n = math.min(tonumber(A.max) or MAXLIST, MAXLIST)
        ins, upd, del = redis.call('ZRANGE', G .. 'gz', 0, n - 1), {}, {}
    end
    local function arr(t)
        return #t == 0 and '[]' or json(t)
    end
    return ok(head .. ',"full":' .. tostring(full) .. ',"delete":' .. arr(del)
              .. ',"insert":' .. arr(members_of(ins)) .. ',"update":'
              .. arr(members_of(upd)) .. ',"group":'
              .. json(with_count(info())) .. '}')
end

-- may the caller revoke a message of A.sender? (as OpenIM: the sender,
-- the owner any, an admin an ordinary member's)
function ops.can_revoke()
    if not info() then
        return fail(1201, 'group not found')
    end
    local r = role_of(me)
    if r == 0 then
        return fail(1203, 'not in group')
    end
    local s = A.sender
    if s == me or r >= OWNER or (r >= ADMIN and role_of(s) < ADMIN) then
        return ok('{}')
    end
    return fail(1002, 'only the sender, the owner, or an admin (for an '
                .. 'ordinary member\'s message) may revoke')
end

function ops.apps_one()
    -- an applicant, not a member yet, may read its own application
    if A.userID ~= me or not info() then
        reader()
    end
    local r = ops.apps()
    local n = select(2, string.gsub(r[2], '"handleResult":', ''))
    r[2] = '{"total":' .. n .. ',"groupRequests":' .. r[2] .. '}'
    return r
end

-- the documents MongoDB kept (A.docs, at most 1000 a call), merged under
-- what Redis has; the last call (A.last) marks the group loaded when
-- MongoDB has it (an unknown ID leaves nothing behind in Redis: the op
-- then runs with ARGV[11] "2", and create marks it)
function ops.restore()
    if A.first then
        -- a new member log: clients sync in full once
        redis.call('DEL', G .. 'gv', G .. 'gvlog', G .. 'gvins', G .. 'gvdel')
    end
    local list = type(A.docs) == 'table' and A.docs or {}
    for i = 1, math.min(#list, MAXLIST) do
        local d = list[i]
        local b = type(d) == 'table' and d.doc
        local uid = type(b) == 'table' and b.userID
        if type(d) ~= 'table' or d.deleted or type(b) ~= 'table' then
            -- deleted: nothing to restore
        elseif d.kind == 'g' then
            redis.call('HSETNX', G .. 'g', 'info', json(b))
        elseif d.kind == 'm' and valid_id(uid)
               and redis.call('HSETNX', G .. 'gm', uid, json(b)) == 1 then
            local t = tonumber(b.joinTime) or now
            redis.call('ZADD', G .. 'gz', t, uid)
            redis.call('ZADD', G .. 'gr:' .. (tonumber(b.roleLevel) or 20), t,
                       uid)
            logged(uid)
        elseif d.kind == 'l' and valid_id(uid) then
            redis.call('HSETNX', G .. 'gl', uid, (tonumber(b.from) or 1)
                       .. ' ' .. (tonumber(b.to) or 0))
        elseif d.kind == 'a' and valid_id(uid) then
            redis.call('HSETNX', G .. 'ga', uid, json(b))
        end
        if type(d) == 'table' and type(d._id) == 'string' then
            redis.call('HSETNX', G .. 'rev', d._id, tonumber(d.rev) or 0)
        end
    end
    if A.last and A.found then
        redis.call('SET', G .. 'loaded', now)
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
