"""Groups, end to end on one Redis (no MongoDB): the /group/* REST
routes, group messages (sessionType 3, conversation sg_<groupID>) over
WebSocket and REST, on two nginx hosts sharing the Redis.

- lifecycle and each permission refusal: create, info, roles, mutes
  (a member's window, the whole group), member info, invitations,
  applications (accept, reject, handled twice), quit, kick, transfer,
  dismissal; the group notifications (1501..1520) each op stores;
- messages between members on both hosts: one gap-free seq stream, a
  push to every session of every online member but the sending one;
- what a member may see: from its join (history off) or from seq 1
  (history on); up to its leave once kicked or quit, with no push after;
  nothing (1203) for someone never in the group;
- one PUBLISH per group message, whatever the member count;
- @mentions (groupAtType) and unread counts in the conversation list;
- bad input changes nothing;
- the incremental member and joined-group logs;
- /msg/send_msg into a group checks its sendID as 1003 does; the
  dismissal notice reaches online members; a group message is one
  pub/sub publish in all (SPUBLISH included); get_full_join_group_ids
  carries the log's version.

No fixed sleeps where a condition can be waited for: a notification's
seq is awaited through the conversation's maxSeq, "no push" is shown by
a later push that would have come after it.
"""

import asyncio
import json
import re
import time
import uuid

import pytest

from conftest import CLUSTER
from helpers_msg import push_msgs, run_clients, worker_of
from test_conversations import (Users, detail_of, msgs_until, now_ms, ok,
                                pull, pull_seq_list)

OWNER, ADMIN, ORDINARY = 100, 60, 20
MEMBER_FIELDS = {"groupID", "userID", "roleLevel", "joinTime", "nickname",
                 "faceURL", "ex", "muteEndTime", "joinSource",
                 "inviterUserID", "operatorUserID"}
INFO_FIELDS = {"groupID", "groupName", "ownerUserID", "memberCount",
               "status", "needVerification", "enableHistoryForNewMembers",
               "createTime", "creatorUserID", "groupType"}
MUTED_GROUP = 3
DISMISSED = 2


# ---------------------------------------------------------------------------
# helpers


def code(r):
    return r["errCode"]


def new_gid():
    return "g" + uuid.uuid4().hex[:12]


def sg(gid):
    return "sg_" + gid


def gmsg(sender, gid, text, ct=101, at=None, cmid=None):
    """A group message's MsgData for WebSocket 1003."""
    if ct == 106:
        content = {"text": text, "atUserList": list(at or [])}
    else:
        content = {"content": text}
    data = {"sendID": sender, "recvID": "", "groupID": gid,
            "sessionType": 3, "contentType": ct,
            "content": json.dumps(content)}
    if at is not None:
        data["atUserIDList"] = list(at)
    if cmid:
        data["clientMsgID"] = cmid
    return data


def text_in(m):
    c = json.loads(m["content"])
    return c.get("content", c.get("text"))


def seqs_of(msgs):
    return [m["seq"] for m in msgs]


def wait_until(fn, pred, what, timeout=5.0):
    end = time.time() + timeout
    while True:
        v = fn()
        if pred(v):
            return v
        if time.time() > end:
            raise AssertionError("timed out waiting for %s: %r" % (what, v))
        time.sleep(0.02)


class GUsers(Users):
    """Users plus the group routes: g(who, route, body) calls
    /group/<route> with who's token, or the admin's when who is None."""

    def g(self, who, route, body):
        path = "/group/" + route
        if who is None:
            return self.admin(path, body)
        return self.call(who, path, body)

    @staticmethod
    def create_body(owner, members=(), admins=(), gid=None, **info):
        gi = {"groupID": new_gid() if gid is None else gid}
        gi.update(info)
        return {"ownerUserID": owner, "memberUserIDs": list(members),
                "adminUserIDs": list(admins), "groupInfo": gi}

    def make(self, owner, members=(), admins=(), **info):
        """A group made by the app admin for owner, once its creation
        notice (seq 1) is stored: its ID."""
        body = self.create_body(owner, members, admins, **info)
        gi = ok(self.g(None, "create_group", body))["groupInfo"]
        self.wait_seq(owner, gi["groupID"], 1)
        return gi["groupID"]

    def info(self, gid):
        got = ok(self.g(None, "get_groups_info",
                        {"groupIDs": [gid]}))["groupInfos"]
        assert len(got) <= 1, got
        return got[0] if got else None

    def members(self, who, gid, filter=0):
        d = ok(self.g(who, "get_group_member_list", {
            "groupID": gid, "filter": filter,
            "pagination": {"pageNumber": 1, "showNumber": 1000}}))
        assert d["total"] == len(d["members"]), d
        return {m["userID"]: m for m in d["members"]}

    def roles(self, gid):
        return {u: m["roleLevel"]
                for u, m in self.members(None, gid).items()}

    def member(self, gid, uid):
        got = ok(self.g(None, "get_group_members_info",
                        {"groupID": gid, "userIDs": [uid]}))["members"]
        return got[0] if got else None

    def gseq(self, uid, gid):
        """The group's maxSeq as uid sees it."""
        return self.seqs(uid, [sg(gid)]).get(sg(gid), {}).get("maxSeq", 0)

    def wait_seq(self, uid, gid, n, timeout=5.0):
        """Until uid sees maxSeq n in the group (async notifications)."""
        got = wait_until(lambda: self.gseq(uid, gid), lambda s: s >= n,
                         "maxSeq %d of %s for %s" % (n, gid, uid), timeout)
        assert got == n, (gid, uid, got, n)
        return got

    def gsend(self, sender, gid, text):
        """A group text through /msg/send_msg (admin): the raw answer."""
        return self.admin("/msg/send_msg", {
            "sendID": sender, "recvID": "", "groupID": gid,
            "senderPlatformID": 1, "content": {"content": text},
            "contentType": 101, "sessionType": 3})

    def elem(self, uid, gid):
        """uid's sg_<gid> in its sorted conversation list."""
        lst = self.sorted_list(uid)
        got = [e for e in lst["conversationElems"]
               if e["conversationID"] == sg(gid)]
        assert len(got) == 1, (uid, gid, lst)
        return got[0]


# ---------------------------------------------------------------------------
# 1. lifecycle and permissions


def test_lifecycle_and_permissions(stack, api):
    us = GUsers(api, 9)
    o, a, m1, m2, x, y, z, w, v = us.ids
    gid = new_gid()
    conv = sg(gid)
    nosuch = new_gid()
    cts = []            # the contentTypes stored in the group, by seq

    def stored(ct):
        cts.append(ct)
        us.wait_seq(a, gid, len(cts))

    def refused(who, route, body, want):
        r = us.g(who, route, body)
        assert code(r) == want, (who, route, body, r)

    tok = {u: us.ws_token(u, 1) for u in (o, a, m1, m2, y)}

    async def scenario(pool):
        co, ca, cm1, cm2, cy = [await pool.connect(stack, u, tok[u], 1)
                                for u in (o, a, m1, m2, y)]

        async def send(cl, text, g=gid):
            return await cl.request(1003, gmsg(cl.uid, g, text))

        # ---- create
        body = us.create_body(o, [m1, m2], [a], gid, groupName="team",
                              notification="n0", introduction="i0",
                              faceURL="http://f/0", ex="e0",
                              needVerification=1,
                              enableHistoryForNewMembers=True)
        refused(m1, "create_group", body, 1002)      # names o as owner
        refused(o, "create_group",
                dict(body, memberUserIDs=[m1, "nosuch" + uuid.uuid4().hex]),
                1101)
        assert us.info(gid) is None
        info = ok(us.g(o, "create_group",
                       dict(body, ownerUserID="")))["groupInfo"]
        assert INFO_FIELDS <= set(info), sorted(info)
        want = {"groupID": gid, "groupName": "team", "ownerUserID": o,
                "memberCount": 4, "status": 0, "needVerification": 1,
                "enableHistoryForNewMembers": True, "creatorUserID": o,
                "groupType": 2, "notification": "n0", "introduction": "i0",
                "faceURL": "http://f/0", "ex": "e0"}
        assert {k: info.get(k) for k in want} == want, info
        assert abs(info["createTime"] - now_ms()) < 60000, info
        stored(1501)
        refused(o, "create_group", body, 1202)
        refused(None, "create_group", body, 1202)
        assert us.info(gid) == info

        # a user token naming itself; the admin naming anyone, no ID
        mine = ok(us.g(m1, "create_group", us.create_body(m1)))["groupInfo"]
        assert (mine["ownerUserID"], mine["memberCount"]) == (m1, 1), mine
        gen = ok(us.g(None, "create_group", {
            "ownerUserID": x, "memberUserIDs": [v],
            "groupInfo": {"groupID": "", "groupName": "gen"}}))["groupInfo"]
        assert gen["groupID"] and (gen["ownerUserID"], gen["memberCount"],
                                   gen["groupName"]) == (x, 2, "gen"), gen
        got = ok(us.g(None, "get_groups_info",
                      {"groupIDs": [gen["groupID"], nosuch, gid]}))
        assert sorted(i["groupID"] for i in got["groupInfos"]) == \
            sorted([gen["groupID"], gid]), got

        # ---- roles, member lists
        assert us.roles(gid) == {o: OWNER, a: ADMIN, m1: ORDINARY,
                                 m2: ORDINARY}
        for f, want_ids in ((1, {o}), (2, {a}), (3, {m1, m2})):
            assert set(us.members(m2, gid, f)) == want_ids, f
        for m in us.members(m1, gid).values():
            assert MEMBER_FIELDS <= set(m), sorted(m)
            assert m["groupID"] == gid
        pages = [ok(us.g(a, "get_group_member_list", {
            "groupID": gid, "filter": 0,
            "pagination": {"pageNumber": p, "showNumber": 3}}))
            for p in (1, 2, 3)]
        assert [p["total"] for p in pages] == [4, 4, 4]
        assert [len(p["members"]) for p in pages] == [3, 1, 0]
        assert {m["userID"] for p in pages for m in p["members"]} == \
            {o, a, m1, m2}
        assert [m["userID"] for m in ok(us.g(m1, "get_group_members_info", {
            "groupID": gid, "userIDs": [a, x]}))["members"]] == [a]
        refused(x, "get_group_member_list",
                {"groupID": gid, "filter": 0,
                 "pagination": {"pageNumber": 1, "showNumber": 10}}, 1203)
        refused(x, "get_group_members_info",
                {"groupID": gid, "userIDs": [o]}, 1203)
        refused(o, "get_group_member_list",
                {"groupID": nosuch, "filter": 0,
                 "pagination": {"pageNumber": 1, "showNumber": 10}}, 1201)

        # ---- set_group_info
        set_name = {"groupInfo": {"groupID": gid, "groupName": "team2"}}
        refused(m1, "set_group_info", set_name, 1002)
        refused(x, "set_group_info", set_name, 1203)
        refused(o, "set_group_info",
                {"groupInfo": {"groupID": nosuch, "groupName": "n"}}, 1201)
        assert us.info(gid)["groupName"] == "team"
        ok(us.g(a, "set_group_info", set_name))
        stored(1520)
        ok(us.g(o, "set_group_info",
                {"groupInfo": {"groupID": gid, "notification": "n1"}}))
        stored(1519)
        ok(us.g(o, "set_group_info_ex",
                {"groupInfo": {"groupID": gid, "introduction": "i1"}}))
        stored(1502)
        refused(m2, "set_group_info_ex",
                {"groupInfo": {"groupID": gid, "introduction": "no"}}, 1002)
        got = us.info(gid)
        assert (got["groupName"], got["notification"], got["introduction"],
                got["memberCount"]) == ("team2", "n1", "i1", 4), got

        # ---- a member's mute
        def mute(who, uid, secs):
            return us.g(who, "mute_group_member",
                        {"groupID": gid, "userID": uid, "mutedSeconds": secs})

        assert code(mute(m1, m2, 60)) == 1002        # ordinary
        assert code(mute(x, m1, 60)) == 1203         # not a member
        assert code(mute(a, o, 60)) == 1002          # the owner
        assert code(mute(a, a, 60)) == 1002          # an admin
        assert us.member(gid, m2)["muteEndTime"] <= now_ms()
        ok(mute(o, m1, 3600))
        stored(1512)
        end = us.member(gid, m1)["muteEndTime"]
        assert abs(end - (now_ms() + 3600 * 1000)) < 60000, end
        r = await send(cm1, "muted")
        assert code(r) == 1402, r
        ok(us.g(o, "cancel_mute_group_member", {"groupID": gid,
                                                "userID": m1}))
        stored(1513)
        assert us.member(gid, m1)["muteEndTime"] <= now_ms()
        ok(await send(cm1, "unmuted"))
        stored(101)

        # a one-second window: refused until muteEndTime, then accepted
        ok(mute(a, m2, 1))
        stored(1512)
        end = us.member(gid, m2)["muteEndTime"]
        assert 0 < end - now_ms() <= 1500, end
        r = await send(cm2, "too early")
        assert code(r) == 1402, r
        while True:
            r = await send(cm2, "window over")
            if code(r) == 0:
                break
            assert code(r) == 1402, r
            assert now_ms() < end + 2000, "still muted after the window"
            await asyncio.sleep(0.05)
        assert now_ms() >= end - 50
        stored(101)

        # ---- the whole group muted: only the owner and admins send
        refused(m1, "mute_group", {"groupID": gid}, 1002)
        refused(x, "mute_group", {"groupID": gid}, 1203)
        ok(us.g(a, "mute_group", {"groupID": gid}))
        stored(1514)
        assert us.info(gid)["status"] == MUTED_GROUP
        r = await send(cm1, "group muted")
        assert code(r) == 1403, r
        ok(await send(ca, "admin speaks"))
        stored(101)
        ok(await send(co, "owner speaks"))
        stored(101)
        refused(m1, "cancel_mute_group", {"groupID": gid}, 1002)
        ok(us.g(o, "cancel_mute_group", {"groupID": gid}))
        stored(1515)
        assert us.info(gid)["status"] == 0
        ok(await send(cm1, "free again"))
        stored(101)

        # ---- set_group_member_info
        def set_member(who, uid, **f):
            entry = {"groupID": gid, "userID": uid}
            entry.update(f)
            return us.g(who, "set_group_member_info", {"members": [entry]})

        ok(set_member(m1, m1, nickname="nick1", ex="x1"))
        stored(1516)
        got = us.member(gid, m1)
        assert (got["nickname"], got["ex"], got["roleLevel"]) == \
            ("nick1", "x1", ORDINARY), got
        assert code(set_member(m1, m2, nickname="no")) == 1002
        assert code(set_member(x, m1, nickname="no")) == 1203
        assert code(set_member(a, m2, roleLevel=ADMIN)) == 1002
        assert code(set_member(a, o, nickname="no")) == 1002
        assert code(set_member(m1, m1, roleLevel=ADMIN)) == 1002
        ok(set_member(a, m2, nickname="by-admin"))
        stored(1516)
        assert us.member(gid, m2)["nickname"] == "by-admin"
        ok(set_member(o, m1, roleLevel=ADMIN))
        stored(1517)
        assert set(us.members(o, gid, 2)) == {a, m1}
        ok(set_member(o, m1, roleLevel=ORDINARY))
        stored(1518)
        assert us.roles(gid) == {o: OWNER, a: ADMIN, m1: ORDINARY,
                                 m2: ORDINARY}

        # ---- invitations
        refused(m1, "invite_user_to_group",
                {"groupID": gid, "invitedUserIDs": [m2], "reason": ""}, 1001)
        refused(x, "invite_user_to_group",
                {"groupID": gid, "invitedUserIDs": [z], "reason": ""}, 1203)
        refused(o, "invite_user_to_group",
                {"groupID": nosuch, "invitedUserIDs": [z], "reason": ""}, 1201)
        # an ordinary member's, in a group that verifies: an application
        ok(us.g(m1, "invite_user_to_group",
                {"groupID": gid, "invitedUserIDs": [z], "reason": "friend"}))
        assert us.member(gid, z) is None
        apps = ok(us.g(o, "get_group_users_req_application_list",
                       {"groupID": gid, "userIDs": [z]}))
        assert apps["total"] == 1, apps
        req = apps["groupRequests"][0]
        assert (req["userID"], req["groupID"], req["handleResult"]) == \
            (z, gid, 0), req
        # the owner's or an admin's: in at once
        ok(us.g(a, "invite_user_to_group",
                {"groupID": gid, "invitedUserIDs": [w], "reason": "hi"}))
        stored(1509)
        got = us.member(gid, w)
        assert (got["roleLevel"], got["inviterUserID"]) == (ORDINARY, a), got

        # ---- applications
        ok(us.g(y, "join_group", {"groupID": gid, "reqMessage": "let me in",
                                  "joinSource": 3}))
        # the owner and the admins hear of it, not stored (seq 0)
        for cl in (co, ca):
            note = (await msgs_until(cl, lambda m: m["contentType"] == 1503)
                    )[-1]
            assert (note["seq"], note["sessionType"], note["groupID"],
                    note["msgFrom"]) == (0, 3, gid, 200), note
            d = detail_of(note)
            assert (d["group"]["groupID"], d["applicant"]["userID"]) == \
                (gid, y), d
        assert us.member(gid, y) is None
        refused(m1, "join_group", {"groupID": gid, "reqMessage": ""}, 1001)
        refused(y, "join_group", {"groupID": nosuch, "reqMessage": ""}, 1201)

        recv = ok(us.g(o, "get_recv_group_applicationList",
                       {"fromUserID": o}))
        mine = {(r["groupID"], r["userID"]): r for r in recv["groupRequests"]}
        assert recv["total"] == len(recv["groupRequests"])
        assert {(gid, y), (gid, z)} <= set(mine), recv
        assert (mine[(gid, y)]["reqMsg"], mine[(gid, y)]["handleResult"]) == \
            ("let me in", 0)
        assert mine[(gid, y)]["groupInfo"]["groupID"] == gid
        assert isinstance(mine[(gid, y)]["reqTime"], int)
        own = ok(us.g(y, "get_user_req_group_applicationList",
                      {"userID": y}))
        assert [(r["groupID"], r["userID"], r["handleResult"])
                for r in own["groupRequests"]] == [(gid, y, 0)], own
        assert own["total"] == 1

        respond = {"groupID": gid, "fromUserID": y, "handledMsg": "no",
                   "handleResult": -1}
        refused(m1, "group_application_response", respond, 1002)
        refused(x, "group_application_response", respond, 1203)
        refused(o, "group_application_response",
                dict(respond, fromUserID=x), 1004)
        ok(us.g(o, "group_application_response", respond))
        note = (await msgs_until(cy, lambda m: m["contentType"] == 1506))[-1]
        assert (note["seq"], note["groupID"]) == (0, gid), note
        assert us.member(gid, y) is None
        refused(o, "group_application_response", respond, 1206)
        refused(a, "group_application_response",
                dict(respond, handleResult=1), 1206)
        own = ok(us.g(y, "get_user_req_group_applicationList",
                      {"userID": y}))
        assert [r["handleResult"] for r in own["groupRequests"]] == [-1], own

        accept = {"groupID": gid, "fromUserID": z, "handledMsg": "ok",
                  "handleResult": 1}
        ok(us.g(o, "group_application_response", accept))
        stored(1505)
        # an ordinary member heard of no application, the owner of no
        # rejection (the 1505 went out after both)
        got = await msgs_until(cm1, lambda m: m["contentType"] == 1505)
        assert 1503 not in [m["contentType"] for m in got], got
        got = await msgs_until(co, lambda m: m["contentType"] == 1505)
        assert [m["contentType"] for m in got] == [1505], got
        assert us.member(gid, z)["roleLevel"] == ORDINARY
        refused(o, "group_application_response", accept, 1206)

        # y tries again, an admin accepts
        ok(us.g(y, "join_group", {"groupID": gid, "reqMessage": "again"}))
        ok(us.g(a, "group_application_response",
                dict(respond, handleResult=1, handledMsg="fine")))
        stored(1505)
        assert us.info(gid)["memberCount"] == 7
        assert set(us.roles(gid)) == {o, a, m1, m2, w, z, y}

        # ---- a group anyone may join
        g2 = us.make(o, [m1], needVerification=2)
        ok(us.g(v, "join_group", {"groupID": g2, "reqMessage": "",
                                  "joinSource": 3}))
        us.wait_seq(o, g2, 2)
        assert us.roles(g2) == {o: OWNER, m1: ORDINARY, v: ORDINARY}
        refused(v, "join_group", {"groupID": g2, "reqMessage": ""}, 1001)

        # ---- quit
        refused(o, "quit_group", {"groupID": gid}, 1002)
        refused(x, "quit_group", {"groupID": gid}, 1203)
        refused(m2, "quit_group", {"groupID": nosuch}, 1201)
        ok(us.g(m2, "quit_group", {"groupID": gid}))
        stored(1504)
        assert us.member(gid, m2) is None
        refused(m2, "quit_group", {"groupID": gid}, 1203)

        # ---- kick
        def kick(who, ids):
            return us.g(who, "kick_group", {"groupID": gid,
                                            "kickedUserIDs": ids,
                                            "reason": "out"})

        assert code(kick(m1, [w])) == 1002           # ordinary
        assert code(kick(a, [o])) == 1002            # the owner
        assert code(kick(o, [o])) == 1002
        ok(set_member(o, z, roleLevel=ADMIN))
        stored(1517)
        assert code(kick(a, [z])) == 1002            # an admin, by an admin
        assert code(kick(a, [w, x])) == 1203         # x is not in it
        assert us.member(gid, w) is not None
        ok(kick(o, [z]))                             # the owner kicks admins
        stored(1508)
        ok(kick(a, [w]))
        stored(1508)
        assert set(us.roles(gid)) == {o, a, m1, y}
        assert us.info(gid)["memberCount"] == 4

        # ---- transfer
        def transfer(who, old, new):
            return us.g(who, "transfer_group", {
                "groupID": gid, "oldOwnerUserID": old, "newOwnerUserID": new})

        assert code(transfer(a, o, a)) == 1002
        assert code(transfer(m1, o, m1)) == 1002
        assert code(transfer(o, o, x)) != 0          # x is not a member
        assert us.info(gid)["ownerUserID"] == o
        ok(transfer(o, o, a))
        stored(1507)
        assert us.info(gid)["ownerUserID"] == a
        assert us.roles(gid) == {a: OWNER, o: ORDINARY, m1: ORDINARY,
                                 y: ORDINARY}
        refused(o, "set_group_info", set_name, 1002)
        assert code(kick(o, [m1])) == 1002

        # ---- what the group holds: every stored notification, gap-free
        msgs = await pull(co, conv, 1, len(cts) + 10)
        assert seqs_of(msgs) == list(range(1, len(cts) + 1)), seqs_of(msgs)
        assert [m["contentType"] for m in msgs] == cts
        for m in msgs:
            assert (m["sessionType"], m["groupID"]) == (3, gid), m
            if m["contentType"] > 1500:
                assert m["msgFrom"] == 200, m
                assert isinstance(detail_of(m), dict), m

        # ---- dismiss
        refused(o, "dismiss_group", {"groupID": gid}, 1002)
        refused(m1, "dismiss_group", {"groupID": gid}, 1002)
        refused(x, "dismiss_group", {"groupID": gid}, 1203)
        ok(us.g(a, "dismiss_group", {"groupID": gid}))
        stored(1511)
        last = await pull(co, conv, len(cts), len(cts))
        assert [m["contentType"] for m in last] == [1511], last
        assert us.info(gid)["status"] == DISMISSED
        for cl in (ca, co):
            r = await send(cl, "after")
            assert code(r) == 1204, r
        refused(a, "set_group_info", set_name, 1204)
        refused(x, "join_group", {"groupID": gid, "reqMessage": ""}, 1204)
        refused(a, "kick_group", {"groupID": gid, "kickedUserIDs": [m1],
                                  "reason": ""}, 1204)
        refused(a, "mute_group", {"groupID": gid}, 1204)
        # the app admin dismisses any group
        ok(us.g(None, "dismiss_group", {"groupID": g2}))
        assert us.info(g2)["status"] == DISMISSED
        r = await send(co, "after", g2)
        assert code(r) == 1204, r

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 2. messages across hosts


def test_group_messages_across_hosts(stack, stack2, api):
    us = GUsers(api, 4)
    a, b, c, d = us.ids
    gid = us.make(a, [b, c, d])
    conv = sg(gid)
    where = {"a1": (stack, a, 1), "a2": (stack, a, 2), "b1": (stack2, b, 1),
             "c1": (stack, c, 1), "c2": (stack2, c, 2)}
    toks = {n: us.ws_token(u, p) for n, (_, u, p) in where.items()}
    td = us.ws_token(d, 1)

    async def scenario(pool):
        s = {}
        for n, (host, u, p) in where.items():
            s[n] = await pool.connect(host, u, toks[n], p)

        plan = [("a1", "from a on host 1"), ("b1", "from b on host 2"),
                ("c2", "from c on host 2"), ("a2", "a's other device"),
                (None, "from d by REST"), ("c1", "from c on host 1")]
        sent = []
        for who, text in plan:
            if who is None:
                r, sender = us.gsend(d, gid, text), d
            else:
                sender = s[who].uid
                r = await s[who].request(1003, gmsg(sender, gid, text))
            assert code(r) == 0, (who, r)
            sent.append((who, r["data"]["seq"], text, sender))
        assert [x[1] for x in sent] == list(range(2, 2 + len(plan)))

        # every session gets every message in order, but its own
        for n, cl in s.items():
            want = [(seq, text, snd) for who, seq, text, snd in sent
                    if who != n]
            got = await push_msgs(cl, len(want))
            assert [(m["seq"], text_in(m), m["sendID"]) for m in got] == \
                want, n
            for m in got:
                assert (m["sessionType"], m["groupID"], m["contentType"]) == \
                    (3, gid, 101), m
        # and nothing else: the next push everywhere is the next message
        last = ok(us.gsend(d, gid, "barrier"))["seq"]
        assert last == 2 + len(plan)
        for n, cl in s.items():
            got = await push_msgs(cl, 1)
            assert [(m["seq"], text_in(m)) for m in got] == \
                [(last, "barrier")], n

        # d was offline: it pulls the whole stream, gap-free
        cd = await pool.connect(stack2, d, td, 1)
        msgs = await pull(cd, conv, 1, 100)
        assert seqs_of(msgs) == list(range(1, last + 1))
        assert msgs[0]["contentType"] == 1501
        assert [(m["seq"], text_in(m), m["sendID"]) for m in msgs[1:]] == \
            [(seq, text, snd) for _, seq, text, snd in sent] + \
            [(last, "barrier", d)]
        some = await pull_seq_list(cd, conv, [2, 4, last])
        assert seqs_of(some) == [2, 4, last]
        r = await cd.newest()
        assert r["data"]["maxSeqs"][conv] == last, r

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 3. what members see: history policy, kicked and quit members


def test_history_for_new_members_and_leaving(stack, api):
    us = GUsers(api, 5)
    o, a, k, l, x = us.ids
    goff = us.make(o, [a, k], enableHistoryForNewMembers=False)
    gon = us.make(o, [a, k], enableHistoryForNewMembers=True)
    for g in (goff, gon):
        for i in range(3):
            ok(us.gsend(a, g, "early %d" % i))               # 2..4
        ok(us.g(o, "invite_user_to_group",
                {"groupID": g, "invitedUserIDs": [l], "reason": "hi"}))
        us.wait_seq(o, g, 5)                                 # the 1509
        for i in range(2):
            ok(us.gsend(a, g, "late %d" % i))                # 6, 7
    tk, tl, ta, tx = (us.ws_token(u, 1) for u in (k, l, a, x))

    async def scenario(pool):
        # l joined at seq 5: history off shows 5.., on shows 1..
        cl = await pool.connect(stack, l, tl)
        got = await pull(cl, sg(goff), 1, 100)
        assert seqs_of(got) == [5, 6, 7], seqs_of(got)
        assert [m["contentType"] for m in got] == [1509, 101, 101]
        assert [text_in(m) for m in got[1:]] == ["late 0", "late 1"]
        assert seqs_of(await pull_seq_list(cl, sg(goff),
                                           [1, 2, 3, 4, 6])) == [6]
        got = await pull(cl, sg(gon), 1, 100)
        assert seqs_of(got) == list(range(1, 8))
        assert [text_in(m) for m in got[1:4]] == \
            ["early 0", "early 1", "early 2"]
        assert seqs_of(await pull_seq_list(cl, sg(gon), [2, 3])) == [2, 3]

        # k, online, is kicked from goff
        ck = await pool.connect(stack, k, tk)
        leave = us.gseq(o, goff)
        assert leave == 7
        ok(us.g(o, "kick_group", {"groupID": goff, "kickedUserIDs": [k],
                                  "reason": "bye"}))
        note = (await msgs_until(ck, lambda m: m["contentType"] == 1508))[-1]
        assert (note["seq"], note["groupID"]) == (0, goff), note
        us.wait_seq(o, goff, leave + 1)         # the members' 1508
        for i in range(2):
            ok(us.gsend(a, goff, "after kick %d" % i))
        # a 1:1 message published after them: no group push before it
        us.send(a, k, "barrier")
        got = await msgs_until(ck, lambda m: m["sessionType"] == 1)
        assert text_in(got[-1]) == "barrier"
        assert [m for m in got[:-1] if m["seq"] > 0] == [], got
        # its pulls stop at its leave
        got = await pull(ck, sg(goff), 1, 100)
        assert seqs_of(got) == list(range(1, leave + 1)), seqs_of(got)
        assert await pull_seq_list(ck, sg(goff),
                                   [leave + 1, leave + 2, leave + 3]) == []
        assert us.elem(k, goff)["maxSeq"] == leave
        r = await ck.request(1003, gmsg(k, goff, "still here?"))
        assert code(r) == 1203, r
        # still a member of gon: it sees it all
        assert seqs_of(await pull(ck, sg(gon), 1, 100)) == list(range(1, 8))

        # a quits gon
        leave = us.gseq(o, gon)
        ok(us.g(a, "quit_group", {"groupID": gon}))
        us.wait_seq(o, gon, leave + 1)          # the 1504
        ok(us.gsend(o, gon, "after quit"))
        ca = await pool.connect(stack, a, ta)
        got = await pull(ca, sg(gon), 1, 100)
        assert seqs_of(got) == list(range(1, leave + 1)), seqs_of(got)
        r = await ca.request(1003, gmsg(a, gon, "back?"))
        assert code(r) == 1203, r

        # x was never in either group
        cx = await pool.connect(stack, x, tx)
        r = await cx.pull(sg(goff), 1, 10)
        assert code(r) == 1203, r
        r = await cx.request(1005, {"conversations": [
            {"conversationID": sg(gon), "seqs": [1, 2]}]})
        assert code(r) == 1203, r

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 4. one PUBLISH per group message


def publishes(redis_server):
    """The PUBLISH and SPUBLISH calls Redis counted so far."""
    n = {"publish": 0, "spublish": 0}
    for line in redis_server.cli("INFO", "commandstats").splitlines():
        for cmd in n:
            if line.startswith("cmdstat_%s:" % cmd):
                n[cmd] = int(re.search(r"calls=(\d+)", line).group(1))
    return n


def quiet_publishes(redis_server, timeout=5.0):
    """Until no PUBLISH happened for 0.3 s (logins settled): the count."""
    end = time.time() + timeout
    last = publishes(redis_server)
    while time.time() < end:
        time.sleep(0.3)
        now = publishes(redis_server)
        if now == last:
            return now
        last = now
    raise AssertionError("PUBLISH never went quiet")


@pytest.mark.skipif(CLUSTER, reason="counts PUBLISH on one Redis")
def test_one_publish_per_group_message(stack, stack2, api, redis_server):
    us = GUsers(api, 300)
    members = us.ids
    owner = members[0]
    gid = us.make(owner, members[1:])
    assert us.info(gid)["memberCount"] == 300
    online = members[:60]
    hosts = [stack, stack2]
    toks = {u: us.ws_token(u, 1) for u in online}

    async def scenario(pool):
        sessions = []           # (client, host)
        for i, u in enumerate(online):
            h = hosts[i % 2]
            sessions.append((await pool.connect(h, u, toks[u], 1), h))
        where = {c: (h.port, worker_of(h, c)) for c, h in sessions}
        # reuseport spreads connections by 4-tuple: more sessions (of
        # offline members, platform 2) until both workers of both hosts
        # hold some
        extra = iter(members[60:120])
        for h in hosts:
            for _ in range(40):
                if {w for p, w in where.values() if p == h.port} == \
                        set(h.worker_pids()):
                    break
                u = next(extra)
                c = await pool.connect(h, u, us.ws_token(u, 2), 2)
                sessions.append((c, h))
                where[c] = (h.port, worker_of(h, c))
            assert {w for p, w in where.values() if p == h.port} == \
                set(h.worker_pids()), (h.port, where)

        sender = sessions[0][0]
        before = quiet_publishes(redis_server)
        r = await sender.request(1003, gmsg(owner, gid, "to all",
                                            cmid="big-%s" % gid))
        assert code(r) == 0, r
        seq = r["data"]["seq"]
        assert seq == 2
        for c, h in sessions[1:]:
            got = await push_msgs(c, 1)
            assert [(m["seq"], text_in(m)) for m in got] == \
                [(seq, "to all")], (c.uid, h.port)
        after = publishes(redis_server)
        assert after["publish"] - before["publish"] == 1, (before, after)
        # nothing per member on the users' channels either (at most the
        # sender's own: see test_group_message_is_one_publish_in_all)
        assert after["spublish"] - before["spublish"] <= 1, (before, after)

        # once each: the next message is the next push of every session
        sender2 = sessions[1][0]
        r = await sender2.request(1003, gmsg(sender2.uid, gid, "second"))
        assert code(r) == 0, r
        assert r["data"]["seq"] == seq + 1
        for c, h in [sessions[0]] + sessions[2:]:
            got = await push_msgs(c, 1)
            assert [(m["seq"], text_in(m)) for m in got] == \
                [(seq + 1, "second")], (c.uid, h.port)

    run_clients(scenario, timeout=90)


# ---------------------------------------------------------------------------
# 5. @mentions


def test_at_mentions(stack, api):
    us = GUsers(api, 4)
    o, a, b, c = us.ids
    gid = us.make(o, [a, b, c])
    conv = sg(gid)
    ta = us.ws_token(a, 1)

    def at_types():
        return {u: us.elem(u, gid)["groupAtType"] for u in us.ids}

    def read_all(u):
        ok(us.mark(u, conv, us.gseq(u, gid)))

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        assert at_types() == {o: 0, a: 0, b: 0, c: 0}
        r = await ca.request(1003, gmsg(a, gid, "@b @c look", ct=106,
                                        at=[b, c]))
        assert code(r) == 0, r
        assert at_types() == {o: 0, a: 0, b: 1, c: 1}
        r = await ca.request(1003, gmsg(a, gid, "plain"))
        assert code(r) == 0, r
        assert at_types() == {o: 0, a: 0, b: 1, c: 1}
        read_all(b)
        assert at_types() == {o: 0, a: 0, b: 0, c: 1}

        r = await ca.request(1003, gmsg(a, gid, "@all meeting", ct=106,
                                        at=["AtAllTag"]))
        assert code(r) == 0, r
        assert at_types() == {o: 2, a: 0, b: 2, c: 3}
        read_all(c)
        assert at_types() == {o: 2, a: 0, b: 2, c: 0}
        read_all(o)
        read_all(b)
        assert at_types() == {o: 0, a: 0, b: 0, c: 0}

        # one mention of one member
        r = await ca.request(1003, gmsg(a, gid, "@o", ct=106, at=[o]))
        assert code(r) == 0, r
        assert at_types() == {o: 1, a: 0, b: 0, c: 0}

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 6. unread counts


def test_group_unread_counts(stack, api):
    us = GUsers(api, 4)
    o, a, b, l = us.ids
    gid = us.make(o, [a, b])
    conv = sg(gid)
    for u in (o, a, b):
        e = us.elem(u, gid)
        assert (e["conversationType"], e["groupID"], e["userID"],
                e["maxSeq"]) == (3, gid, "", 1), e

    # (sending reads the conversation up to one's own message: each
    # member's own messages come before the others' here)
    for u in (o, b, b, a, a, a):
        ok(us.gsend(u, gid, "from %s" % u))                  # 2..7
    for u, n in ((o, 5), (b, 3), (a, 0)):
        e = us.elem(u, gid)
        assert (e["maxSeq"], e["unreadCount"]) == (7, n), (u, e)
        lst = us.sorted_list(u)
        assert lst["unreadTotal"] == n, lst
        assert us.seqs(u, [conv])[conv]["maxSeq"] == 7

    # o reads all; a's next message is o's only unread
    ok(us.mark(o, conv, 7))
    e = us.elem(o, gid)
    assert (e["hasReadSeq"], e["unreadCount"]) == (7, 0), e
    ok(us.gsend(a, gid, "one more"))                         # 8
    assert [us.elem(u, gid)["unreadCount"] for u in (o, b, a)] == [1, 4, 0]

    # l joins late (no verification, history on): it may see it all,
    # yet its unread starts at 0
    ok(us.g(o, "set_group_info",
            {"groupInfo": {"groupID": gid, "needVerification": 2}}))
    us.wait_seq(o, gid, 9)
    ok(us.g(l, "join_group", {"groupID": gid, "reqMessage": "",
                              "joinSource": 3}))
    us.wait_seq(l, gid, 10)                                  # its 1510
    e = us.elem(l, gid)
    assert (e["maxSeq"], e["unreadCount"]) == (10, 0), e
    ok(us.gsend(a, gid, "welcome"))
    ok(us.gsend(b, gid, "hello"))
    e = us.elem(l, gid)
    assert (e["maxSeq"], e["unreadCount"]) == (12, 2), e


# ---------------------------------------------------------------------------
# 7. bad input changes nothing


def test_bad_input_changes_nothing(stack, api):
    us = GUsers(api, 4)
    o, a, m, x = us.ids
    gid = us.make(o, [m], [a], groupName="orig")
    ok(us.g(o, "mute_group_member", {"groupID": gid, "userID": m,
                                     "mutedSeconds": 3600}))
    us.wait_seq(o, gid, 2)
    nosuch = new_gid()

    def snap():
        return us.info(gid), us.members(o, gid), us.gseq(o, gid)

    before = snap()
    assert before[0]["memberCount"] == 3

    def same(what):
        assert snap() == before, what

    def refused(who, route, body, want):
        r = us.g(who, route, body)
        assert code(r) == want, (route, body if len(json.dumps(body)) < 300
                                 else "...", r)
        same(route)

    many = ["nx%05d" % i for i in range(1001)]
    fresh = new_gid()
    refused(None, "create_group", us.create_body(o, many, gid=fresh), 1001)
    refused(None, "create_group", us.create_body(o, (), many, gid=fresh),
            1001)
    assert us.info(fresh) is None
    refused(o, "invite_user_to_group",
            {"groupID": gid, "invitedUserIDs": many, "reason": ""}, 1001)
    refused(o, "kick_group",
            {"groupID": gid, "kickedUserIDs": many, "reason": ""}, 1001)
    refused(o, "get_group_members_info",
            {"groupID": gid, "userIDs": many}, 1001)
    refused(o, "invite_user_to_group",
            {"groupID": gid, "invitedUserIDs": ["nosuch" + uuid.uuid4().hex],
             "reason": ""}, 1101)

    # unknown group
    for route, body in (
            ("join_group", {"groupID": nosuch, "reqMessage": ""}),
            ("set_group_info", {"groupInfo": {"groupID": nosuch,
                                              "groupName": "n"}}),
            ("invite_user_to_group", {"groupID": nosuch,
                                      "invitedUserIDs": [x]}),
            ("kick_group", {"groupID": nosuch, "kickedUserIDs": [m]}),
            ("quit_group", {"groupID": nosuch}),
            ("dismiss_group", {"groupID": nosuch}),
            ("mute_group", {"groupID": nosuch}),
            ("transfer_group", {"groupID": nosuch, "oldOwnerUserID": o,
                                "newOwnerUserID": m}),
            ("get_group_member_list", {"groupID": nosuch, "filter": 0,
                                       "pagination": {"pageNumber": 1,
                                                      "showNumber": 10}})):
        refused(o, route, body, 1201)
    assert code(us.gsend(o, nosuch, "hi")) == 1201
    assert us.info(nosuch) is None
    assert ok(us.g(None, "get_groups_info",
                   {"groupIDs": [nosuch]}))["groupInfos"] == []

    # duplicate join, duplicate invite
    refused(m, "join_group", {"groupID": gid, "reqMessage": ""}, 1001)
    refused(o, "join_group", {"groupID": gid, "reqMessage": ""}, 1001)
    refused(a, "invite_user_to_group",
            {"groupID": gid, "invitedUserIDs": [m], "reason": ""}, 1001)

    # names over 256 bytes (in characters, 129 two-byte ones is less)
    for name in ("n" * 257, "\u00e9" * 129):
        refused(o, "set_group_info",
                {"groupInfo": {"groupID": gid, "groupName": name}}, 1001)
        refused(o, "create_group",
                us.create_body(o, [m], gid=fresh, groupName=name), 1001)
        assert us.info(fresh) is None
    for name in ("n" * 256, "\u00e9" * 128):
        g = new_gid()
        got = ok(us.g(o, "create_group",
                      us.create_body(o, gid=g, groupName=name)))
        assert got["groupInfo"]["groupName"] == name
        same("a name of 256 bytes elsewhere")

    # wrong types
    for route, body in (
            ("set_group_info", {"groupInfo": {"groupID": gid,
                                              "groupName": 5}}),
            ("set_group_info", {"groupInfo": {"groupID": gid,
                                              "needVerification": 3}}),
            ("set_group_info", {"groupInfo": {"groupID": gid,
                                              "enableHistoryForNewMembers":
                                              "yes"}}),
            ("set_group_info", {"groupInfo": "orig"}),
            ("mute_group_member", {"groupID": gid, "userID": a,
                                   "mutedSeconds": "10"}),
            ("invite_user_to_group", {"groupID": gid, "invitedUserIDs": x}),
            ("invite_user_to_group", {"groupID": gid,
                                      "invitedUserIDs": [7]}),
            ("kick_group", {"groupID": gid, "kickedUserIDs": [None]}),
            ("set_group_member_info", {"members": {"groupID": gid,
                                                   "userID": m}}),
            ("set_group_member_info", {"members": [{
                "groupID": gid, "userID": m, "nickname": 1}]}),
            ("group_application_response", {"groupID": gid, "fromUserID": x,
                                            "handleResult": 2})):
        refused(o, route, body, 1001)
    refused(x, "join_group", {"groupID": 7, "reqMessage": ""}, 1001)

    # bodies that are not objects
    for raw in (b'[1,2,3]', b'"groupID"', b'42', b'null', b'{"groupID":',
                b'not json', b''):
        for who, route in ((o, "set_group_info"), (x, "join_group"),
                           (o, "kick_group"), (o, "create_group")):
            r = api.post("/group/" + route, None, token=us.tok[who], raw=raw)
            assert code(r) == 1001, (route, raw, r)
        same(raw)

    # sends refused: a non-member, a muted member (WebSocket)
    tx, tm = us.ws_token(x, 1), us.ws_token(m, 1)

    async def scenario(pool):
        cx = await pool.connect(stack, x, tx)
        cm = await pool.connect(stack, m, tm)
        r = await cx.request(1003, gmsg(x, gid, "let me talk"))
        assert code(r) == 1203, r
        r = await cm.request(1003, gmsg(m, gid, "muted?"))
        assert code(r) == 1402, r
        r = await cm.request(1003, gmsg(m, nosuch, "nowhere"))
        assert code(r) == 1201, r

    run_clients(scenario)
    same("refused sends")


# ---------------------------------------------------------------------------
# 8. incremental sync


def test_incremental_sync(stack, api):
    us = GUsers(api, 5)
    o, a, b, c, x = us.ids
    gid = us.make(o, [a, b])

    def incr(who, version, vid):
        return ok(us.g(who, "get_incremental_group_members", {
            "groupID": gid, "version": version, "versionID": vid}))

    def ids(ms):
        return sorted(m["userID"] for m in ms)

    def shape(r):
        return (r["full"], ids(r["insert"]), ids(r["update"]),
                sorted(r["delete"]))

    r0 = incr(o, 0, "")
    v0, vid = r0["version"], r0["versionID"]
    assert r0["full"] is True and vid and v0 > 0, r0
    assert ids(r0["insert"]) == sorted([o, a, b])
    assert (r0["group"]["groupID"], r0["group"]["memberCount"]) == (gid, 3)
    assert shape(incr(a, v0, vid)) == (False, [], [], [])
    assert incr(a, v0, vid)["version"] == v0

    ok(us.g(o, "invite_user_to_group",
            {"groupID": gid, "invitedUserIDs": [c], "reason": ""}))
    r1 = incr(o, v0, vid)
    assert shape(r1) == (False, [c], [], []), r1
    assert r1["insert"][0]["roleLevel"] == ORDINARY
    assert (r1["versionID"], r1["group"]["memberCount"]) == (vid, 4)
    v1 = r1["version"]
    assert v1 > v0

    ok(us.g(a, "set_group_member_info", {"members": [
        {"groupID": gid, "userID": a, "nickname": "A"}]}))
    r2 = incr(o, v1, vid)
    assert shape(r2) == (False, [], [a], []), r2
    assert r2["update"][0]["nickname"] == "A"
    v2 = r2["version"]
    assert v2 > v1

    ok(us.g(o, "kick_group", {"groupID": gid, "kickedUserIDs": [b],
                              "reason": ""}))
    r3 = incr(o, v2, vid)
    assert shape(r3) == (False, [], [], [b]), r3
    v3 = r3["version"]
    assert v3 > v2
    assert shape(incr(o, v3, vid)) == (False, [], [], [])
    # everything since v0 at once
    assert shape(incr(c, v0, vid)) == (False, [c], [a], [b])
    # an unknown versionID: everything
    r = incr(o, v0, "not-" + vid)
    assert (r["full"], ids(r["insert"]), r["version"], r["versionID"]) == \
        (True, sorted([o, a, c]), v3, vid), r

    full = ok(us.g(a, "get_full_group_member_user_ids", {"groupID": gid}))
    assert (sorted(full["userIDs"]), full["version"], full["versionID"]) == \
        (sorted([o, a, c]), v3, vid), full
    for who in (x, b):
        for route in ("get_incremental_group_members",
                      "get_full_group_member_user_ids"):
            r = us.g(who, route, {"groupID": gid, "version": 0,
                                  "versionID": ""})
            assert code(r) == 1203, (who, route, r)

    # the groups a user joined
    def jincr(version, vid):
        return ok(us.g(a, "get_incremental_join_groups", {
            "userID": a, "version": version, "versionID": vid}))

    def jshape(r):
        return (r["full"], sorted(g["groupID"] for g in r["insert"]),
                r["update"], sorted(r["delete"]))

    j0 = jincr(0, "")
    V0, VID = j0["version"], j0["versionID"]
    assert jshape(j0) == (True, [gid], [], []), j0
    assert VID and V0 > 0, j0
    got = ok(us.g(a, "get_full_join_group_ids", {"userID": a}))
    assert got["groupIDs"] == [gid], got     # its version: test 12
    assert jshape(jincr(V0, VID)) == (False, [], [], [])

    g2 = us.make(o, [b], groupName="second")
    ok(us.g(o, "invite_user_to_group",
            {"groupID": g2, "invitedUserIDs": [a], "reason": ""}))
    j1 = jincr(V0, VID)
    assert jshape(j1) == (False, [g2], [], []), j1
    assert j1["insert"][0]["groupName"] == "second"
    V1 = j1["version"]
    assert V1 > V0

    ok(us.g(a, "quit_group", {"groupID": gid}))
    j2 = jincr(V1, VID)
    assert jshape(j2) == (False, [], [], [gid]), j2
    assert jshape(jincr(V0, VID)) == (False, [g2], [], [gid])
    assert jshape(jincr(V0, "not-" + VID)) == (True, [g2], [], [])

    joined = ok(us.g(a, "get_joined_group_list", {
        "fromUserID": a, "pagination": {"pageNumber": 1, "showNumber": 10}}))
    assert (joined["total"], [g["groupID"] for g in joined["groups"]]) == \
        (1, [g2]), joined
    got = ok(us.g(a, "get_full_join_group_ids", {"userID": a}))
    assert got["groupIDs"] == [g2], got


# ---------------------------------------------------------------------------
# 9. /msg/send_msg into a group sends as its sendID: the same checks


def test_rest_send_checks_the_sender(stack, api):
    us = GUsers(api, 4)
    o, a, m, x = us.ids
    gid = us.make(o, [m], [a])
    r = us.gsend(x, gid, "outsider")
    assert code(r) == 1203, r
    ok(us.g(o, "mute_group_member", {"groupID": gid, "userID": m,
                                     "mutedSeconds": 3600}))
    us.wait_seq(o, gid, 2)
    r = us.gsend(m, gid, "muted member")
    assert code(r) == 1402, r
    ok(us.g(o, "cancel_mute_group_member", {"groupID": gid, "userID": m}))
    us.wait_seq(o, gid, 3)
    assert ok(us.gsend(m, gid, "unmuted"))["seq"] == 4
    ok(us.g(o, "mute_group", {"groupID": gid}))
    us.wait_seq(o, gid, 5)
    r = us.gsend(m, gid, "muted group")
    assert code(r) == 1403, r
    assert ok(us.gsend(a, gid, "an admin speaks"))["seq"] == 6
    ok(us.g(o, "dismiss_group", {"groupID": gid}))
    us.wait_seq(o, gid, 7)
    r = us.gsend(o, gid, "dismissed")
    assert code(r) == 1204, r
    assert us.gseq(o, gid) == 7


# ---------------------------------------------------------------------------
# 10. the dismissal notice reaches the online members


def test_dismiss_notice_is_pushed(stack, stack2, api):
    us = GUsers(api, 3)
    o, a, b = us.ids
    gid = us.make(o, [a, b])
    ta, tb = us.ws_token(a, 1), us.ws_token(b, 1)

    async def scenario(pool):
        ca = await pool.connect(stack, a, ta)
        cb = await pool.connect(stack2, b, tb)
        ok(us.g(o, "set_group_info",
                {"groupInfo": {"groupID": gid, "groupName": "bye"}}))
        ok(us.g(o, "dismiss_group", {"groupID": gid}))
        for cl in (ca, cb):
            got = await msgs_until(cl, lambda m: m["contentType"] == 1520)
            assert [(m["seq"], m["contentType"]) for m in got] == \
                [(2, 1520)], (cl.uid, got)
        us.wait_seq(o, gid, 3)                  # the 1511 is stored
        for cl in (ca, cb):
            try:
                got = await msgs_until(cl, lambda m: True, timeout=3)
            except asyncio.TimeoutError:
                got = []
            assert [(m["seq"], m["contentType"], m["groupID"])
                    for m in got] == [(3, 1511, gid)], \
                (cl.uid, "no push of the stored 1511")

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 11. a group message is one pub/sub publish in all


@pytest.mark.skipif(CLUSTER, reason="counts PUBLISH on one Redis")
def test_group_message_is_one_publish_in_all(stack, api, redis_server):
    """Test 4 counts PUBLISH; this one every kind of publish (SPUBLISH
    included: the spec's "one publish per group message")."""
    us = GUsers(api, 4)
    gid = us.make(us.ids[0], us.ids[1:])
    toks = {u: us.ws_token(u, 1) for u in us.ids[:3]}

    async def scenario(pool):
        cs = [await pool.connect(stack, u, toks[u]) for u in us.ids[:3]]
        before = quiet_publishes(redis_server)
        r = await cs[0].request(1003, gmsg(cs[0].uid, gid, "one"))
        assert code(r) == 0, r
        for c in cs[1:]:
            assert [m["seq"] for m in await push_msgs(c, 1)] == [2]
        after = publishes(redis_server)
        assert sum(after.values()) - sum(before.values()) == 1, \
            (before, after)

    run_clients(scenario)


# ---------------------------------------------------------------------------
# 12. get_full_join_group_ids carries the joined-groups log's version


def test_full_join_group_ids_version(stack, api):
    us = GUsers(api, 3)
    o, a, b = us.ids
    g1 = us.make(o, [a])
    g2 = us.make(o, [a, b])
    ok(us.g(a, "quit_group", {"groupID": g1}))
    inc = ok(us.g(a, "get_incremental_join_groups",
                  {"userID": a, "version": 0, "versionID": ""}))
    got = ok(us.g(a, "get_full_join_group_ids", {"userID": a}))
    assert (got["groupIDs"], got.get("version"), got.get("versionID")) == \
        ([g2], inc["version"], inc["versionID"]), (got, inc)


def test_incremental_group_members_batch(stack, api):
    """The JS SDK's login sync: get_incremental_group_members for each
    entry of reqList, answered as {"respList": {groupID: answer}}; groups
    the caller cannot read (unknown, not a member) are left out."""
    us = GUsers(api, 3)
    o, a, x = us.ids
    g1 = us.make(o, [a])
    g2 = us.make(o, [a, x])
    g3 = us.make(o, [x])

    def batch(who, reqs):
        return us.g(who, "get_incremental_group_members_batch",
                    {"userID": who, "reqList": reqs})

    r = ok(batch(a, [{"groupID": g, "version": 0, "versionID": ""}
                     for g in (g1, g2, g3, "no-such-group")]))
    resp = r["respList"]
    assert sorted(resp) == sorted([g1, g2]), r
    one = resp[g1]
    assert one["full"] is True and one["group"]["groupID"] == g1, one
    assert sorted(m["userID"] for m in one["insert"]) == sorted([o, a])
    assert sorted(m["userID"] for m in resp[g2]["insert"]) == \
        sorted([o, a, x])
    # the same answer as the single call, and incremental from there
    single = ok(us.g(a, "get_incremental_group_members",
                     {"groupID": g1, "version": 0, "versionID": ""}))
    assert (single["version"], single["versionID"]) == \
        (one["version"], one["versionID"])
    r = ok(batch(a, [{"groupID": g1, "version": one["version"],
                      "versionID": one["versionID"]}]))
    assert r["respList"][g1]["full"] is False, r
    assert r["respList"][g1]["insert"] == [], r
    assert ok(batch(a, []))["respList"] == {}
    for bad in ("x", [{"groupID": g1, "version": "1"}],
                [{"groupID": g1, "versionID": 3}]):
        assert code(batch(a, bad)) == 1001, bad
    assert code(batch(a, [{"groupID": g1}] * 2001)) == 1001


def test_specified_user_group_request_info(stack, api):
    """The JS SDK's lookup of one user's application to one group
    ({groupID, userID}), answered as get_group_users_req_application_list:
    the owner sees it, the applicant (not a member) its own, another
    member nothing, a non-member another's: 1203."""
    us = GUsers(api, 4)
    o, m, y, z = us.ids
    gid = us.make(o, [m], needVerification=1)
    for who in (y, z):
        ok(us.g(who, "join_group", {"groupID": gid, "reqMessage": "in",
                                    "joinSource": 3}))

    def info(who, user):
        return ok(us.g(who, "get_specified_user_group_request_info",
                       {"groupID": gid, "userID": user}))

    got = info(o, y)
    assert [(r["userID"], r["handleResult"]) for r in got["groupRequests"]] \
        == [(y, 0)], got
    assert got["groupRequests"][0]["groupInfo"]["groupID"] == gid
    assert [r["userID"] for r in info(y, y)["groupRequests"]] == [y]
    assert info(m, y)["groupRequests"] == []
    # answered: also under OpenIM's names handleMsg, handleTime
    ok(us.g(o, "group_application_response",
            {"groupID": gid, "fromUserID": y, "handledMsg": "no",
             "handleResult": -1}))
    req = info(y, y)["groupRequests"][0]
    assert (req["handleResult"], req["handledMsg"], req["handleMsg"]) == \
        (-1, "no", "no"), req
    assert req["handleTime"] == req["handledTime"] > 0, req
    assert info(o, z)["groupRequests"][0]["handleMsg"] == ""
    assert code(us.g(z, "get_specified_user_group_request_info",
                     {"groupID": gid, "userID": y})) == 1203
    assert code(us.g(o, "get_specified_user_group_request_info",
                     {"groupID": "no-such-group", "userID": y})) == 1201


def test_join_groups_log_of_a_user_without_groups(stack, api):
    """A user that never joined a group still gets a versionID (the JS
    SDK, holding "", would never compare versions again) and a full first
    sync; its first join brings a log of another ID: a full sync again."""
    us = GUsers(api, 2)
    o, a = us.ids
    j0 = ok(us.g(a, "get_incremental_join_groups",
                 {"userID": a, "version": 0, "versionID": ""}))
    assert (j0["full"], j0["insert"], j0["delete"]) == (True, [], []), j0
    vid = j0["versionID"]
    assert vid, j0
    got = ok(us.g(a, "get_full_join_group_ids", {"userID": a}))
    assert (got["groupIDs"], got["versionID"]) == ([], vid), got
    again = ok(us.g(a, "get_incremental_join_groups",
                    {"userID": a, "version": j0["version"], "versionID": vid}))
    assert (again["full"], again["versionID"]) == (False, vid), again
    gid = us.make(o, [a])
    j1 = ok(us.g(a, "get_incremental_join_groups",
                 {"userID": a, "version": j0["version"], "versionID": vid}))
    assert j1["versionID"] not in ("", vid), j1
    assert j1["full"] is True, j1
    assert [g["groupID"] for g in j1["insert"]] == [gid], j1


# ---------------------------------------------------------------------------
# the conversation list's order: a group's by its latest message too


def test_list_orders_groups_by_latest_message(stack, api):
    us = GUsers(api, 3)
    o, a, b = us.ids
    # two groups made before a 1:1 conversation; no message moves a group
    # member's index, yet a group's new message puts it first
    g1 = us.make(o, [a])
    g2 = us.make(o, [a])
    ok(us.admin("/msg/send_msg", {
        "sendID": b, "recvID": a, "senderPlatformID": 1,
        "content": {"content": "1:1"}, "contentType": 101,
        "sessionType": 1}))

    def order():
        return [e["conversationID"]
                for e in us.sorted_list(a)["conversationElems"]]

    one = [c for c in order() if c.startswith("si_")]
    assert order() == one + [sg(g2), sg(g1)]
    ok(us.gsend(o, g1, "news"))
    assert order() == [sg(g1)] + one + [sg(g2)]
    # a pinned conversation stays first
    ok(us.call(a, "/conversation/set_conversations",
               {"userIDs": [a], "conversation": {"conversationID": sg(g2),
                                                 "isPinned": True}}))
    assert order() == [sg(g2), sg(g1)] + one
    # and maxSeqTime (1006 / has_read_and_max_seq) is the latest message's
    seqs = us.seqs(a, [sg(g1)])
    last = us.elem(a, g1)["latestMsgSendTime"]
    assert seqs[sg(g1)]["maxSeqTime"] == last > 0


# ---------------------------------------------------------------------------
# revoking group messages (as OpenIM: the sender, the owner any message,
# an admin an ordinary member's)


def test_revoke_in_groups(stack, api):
    us = GUsers(api, 5)
    o, adm, a, b, outsider = us.ids
    gid = us.make(o, [a, b], [adm])
    conv = sg(gid)
    seq = {}
    for u in (o, adm, a, b):
        r = us.gsend(u, gid, "from " + u)
        assert code(r) == 0, r
        seq[u] = r["data"]["seq"]

    def revoke(who, whose):
        return us.call(who, "/msg/revoke_msg",
                       {"conversationID": conv, "seq": seq[whose],
                        "userID": who})

    # refused: another ordinary member's, the owner's by an admin, an
    # admin's by an admin peer... and anyone outside the group
    assert code(revoke(a, b)) == 1002
    assert code(revoke(adm, o)) == 1002
    assert code(revoke(outsider, a)) == 1203

    async def scenario(pool):
        cb = await pool.connect(stack, b, us.ws_token(b, 1))
        # allowed: one's own, an admin an ordinary member's, the owner an
        # admin's; each reaches the members as the message itself, 2101
        for who, whose in ((a, a), (adm, b), (o, adm)):
            ok(revoke(who, whose))
            got = await push_msgs(cb, 1)
            assert [(m["seq"], m["contentType"]) for m in got] == \
                [(seq[whose], 2101)], got
            assert detail_of(got[0])["revokerID"] == who
        msgs = await pull(cb, conv, 1, 100)
        kinds = {m["seq"]: m["contentType"] for m in msgs}
        assert [kinds[seq[u]] for u in (o, adm, a, b)] == \
            [101, 2101, 2101, 2101]
        assert not any("from " + u in m["content"] for m in msgs
                       for u in (adm, a, b))

    run_clients(scenario)


# ---------------------------------------------------------------------------
# batch_send_msg into groups: recvIDs name the groups


def test_batch_send_to_groups(stack, api):
    us = GUsers(api, 3)
    o, a, b = us.ids
    g1 = us.make(o, [a])
    g2 = us.make(o, [a, b])
    g3 = us.make(a, [b])                 # o is not a member
    nog = new_gid()

    async def scenario(pool):
        ca = await pool.connect(stack, a, us.ws_token(a, 1))
        r = us.admin("/msg/batch_send_msg", {
            "sendID": o, "sessionType": 3, "contentType": 101,
            "content": {"content": "to my groups"},
            "recvIDs": [g1, g2, g3, nog]})
        d = ok(r)
        assert sorted(d["failedUserIDs"]) == sorted([g3, nog]), d
        assert sorted(x["recvID"] for x in d["results"]) == sorted([g1, g2])
        got = await push_msgs(ca, 2)
        assert sorted(m["groupID"] for m in got) == sorted([g1, g2])
        assert all(m["seq"] == 2 and m["sessionType"] == 3 for m in got)

    run_clients(scenario)
