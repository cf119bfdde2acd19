"""Friends, blacklists and profiles, end to end on one Redis (no
MongoDB; t/test_friends_mongo.py has the durable side): the /friend/*
routes, /user/update_user_info and set_global_msg_recv_opt, and the
messaging rules (blacklist 1302, im_friend_verify 1303).

- an application and its answer on two nginx hosts: both sides' lists,
  the notifications (1203 to the target; 1201 or 1202 and 1204 to the
  applicant) pushed to their sessions and pullable from sn_<from>_<to>;
- delete (one way, as OpenIM), is_friend, remark, update_friends;
- incremental sync returns exactly the changes since a version;
- a blacklisted sender gets 1302 over WebSocket and REST, and nothing is
  stored or delivered; admin senders are exempt; removal restores it;
- with im_friend_verify, a stranger gets 1303, a friend gets through;
- bad input: yourself (1301), an application that does not exist
  (1004), 10,000 IDs, unregistered IDs (1101), a 100 KB remark: clear
  errors, nothing changed.
"""

import time
import uuid

import pytest

from conftest import ADMIN, Api, Client, run, single_conv
from helpers_msg import silence
from test_conversations import Users, detail_of, msgs_until, ok, pull

REST = 5


def code(r):
    return r["errCode"]


def sn(a, b):
    return "sn_%s_%s" % (a, b)


class Friends(Users):
    """Users with the friend calls."""

    def apply(self, a, b, msg="hi"):
        return self.call(a, "/friend/add_friend",
                         {"fromUserID": a, "toUserID": b, "reqMsg": msg})

    def respond(self, b, a, result, msg="ok"):
        return self.call(b, "/friend/add_friend_response",
                         {"fromUserID": a, "toUserID": b,
                          "handleResult": result, "handleMsg": msg})

    def befriend(self, a, b):
        ok(self.apply(a, b))
        ok(self.respond(b, a, 1))

    def friends(self, a):
        d = ok(self.call(a, "/friend/get_friend_list",
                         {"userID": a, "pagination": {"pageNumber": 1,
                                                      "showNumber": 100}}))
        return {f["friendUser"]["userID"]: f for f in d["friendsInfo"]}

    def is_friend(self, a, b):
        return ok(self.call(a, "/friend/is_friend",
                            {"userID1": a, "userID2": b}))

    def black(self, a, b):
        return self.call(a, "/friend/add_black",
                         {"ownerUserID": a, "blackUserID": b})


@pytest.fixture
def fr(api):
    return Friends(api, 4)


def test_apply_accept_across_hosts(stack, stack2, fr):
    a, b = fr.ids[:2]
    ta, tb = fr.ws_token(a, 1), fr.ws_token(b, 2)

    async def scenario():
        ca = await Client(stack, a, ta, 1).connect()
        cb = await Client(stack2, b, tb, 2).connect()
        try:
            ok(fr.apply(a, b, "let us talk"))
            got = await msgs_until(cb, lambda m: m["contentType"] == 1203)
            note = got[-1]
            assert note["sendID"] == a and note["recvID"] == b
            assert detail_of(note)["reqMsg"] == "let us talk"

            # both sides keep the application, pending
            inbox = ok(fr.call(b, "/friend/get_friend_apply_list",
                               {"userID": b}))
            assert inbox["total"] == 1
            # OpenIM's key for the received list (the JS SDK reads it)
            assert "friendRequests" not in inbox
            req = inbox["FriendRequests"][0]
            assert (req["fromUserID"], req["toUserID"],
                    req["handleResult"]) == (a, b, 0)
            assert req["fromNickname"] == a
            sent = ok(fr.call(a, "/friend/get_self_friend_apply_list",
                              {"userID": a}))["friendRequests"]
            assert [(r["toUserID"], r["handleResult"]) for r in sent] == \
                [(b, 0)]
            assert ok(fr.call(b, "/friend/get_self_unhandled_apply_count",
                              {"userID": b}))["count"] == 1

            ok(fr.respond(b, a, 1, "welcome"))
            got = await msgs_until(ca, lambda m: m["contentType"] == 1204)
            types = [m["contentType"] for m in got]
            assert 1201 in types and 1204 in types

            # the notifications are stored: pullable by both
            conv = sn(b, a)
            msgs = await pull(ca, conv, 1, 10)
            assert {m["contentType"] for m in msgs} >= {1201, 1204}
        finally:
            await ca.close()
            await cb.close()

    run(scenario())

    assert set(fr.friends(a)) == {b} and set(fr.friends(b)) == {a}
    assert fr.friends(a)[b]["friendUser"]["nickname"] == b
    assert fr.is_friend(a, b) == {"inUser1Friends": True,
                                  "inUser2Friends": True}
    sent = ok(fr.call(a, "/friend/get_self_friend_apply_list",
                      {"userID": a}))["friendRequests"]
    assert sent[0]["handleResult"] == 1 and sent[0]["handleMsg"] == "welcome"
    assert ok(fr.call(b, "/friend/get_self_unhandled_apply_count",
                      {"userID": b}))["count"] == 0
    # the same answer again changes nothing (it completes a side a failure
    # left out); another answer: 1305; applying to a friend: 1304
    ok(fr.respond(b, a, 1))
    assert code(fr.respond(b, a, -1)) == 1305
    assert code(fr.apply(a, b)) == 1304


def test_refuse_delete_remark_update(fr):
    a, b, c = fr.ids[:3]
    ok(fr.apply(a, b))
    ok(fr.respond(b, a, -1, "no"))
    assert fr.friends(a) == {} and fr.friends(b) == {}
    assert ok(fr.call(a, "/friend/get_self_friend_apply_list",
                      {"userID": a}))["friendRequests"][0]["handleResult"] \
        == -1

    fr.befriend(a, c)
    ok(fr.call(a, "/friend/set_friend_remark",
               {"ownerUserID": a, "friendUserID": c, "remark": "Cee"}))
    assert fr.friends(a)[c]["remark"] == "Cee"
    ok(fr.call(a, "/friend/update_friends",
               {"ownerUserID": a, "friendUserIDs": [c], "isPinned": True,
                "ex": "x"}))
    f = fr.friends(a)[c]
    assert f["isPinned"] is True and f["ex"] == "x" and f["remark"] == "Cee"
    d = ok(fr.call(a, "/friend/get_designated_friends",
                   {"ownerUserID": a, "friendUserIDs": [c, b]}))
    assert [x["friendUser"]["userID"] for x in d["friendsInfo"]] == [c]
    assert ok(fr.call(a, "/friend/get_friend_id",
                      {"userID": a}))["friendIDs"] == [c]

    # one way, as OpenIM: c still lists a
    ok(fr.call(a, "/friend/delete_friend",
               {"ownerUserID": a, "friendUserID": c}))
    assert fr.friends(a) == {} and set(fr.friends(c)) == {a}
    assert fr.is_friend(c, a) == {"inUser1Friends": True,
                                  "inUser2Friends": False}
    assert code(fr.call(a, "/friend/delete_friend",
                        {"ownerUserID": a, "friendUserID": c})) == 1004
    # remarks and updates need a friend
    assert code(fr.call(a, "/friend/set_friend_remark",
                        {"ownerUserID": a, "friendUserID": c,
                         "remark": "x"})) == 1004


def test_incremental_friends_exact_changes(fr):
    a, b, c, d = fr.ids
    first = ok(fr.call(a, "/friend/get_incremental_friends",
                       {"userID": a, "versionID": "", "version": 0}))
    assert first["full"] is True
    fr.befriend(b, a)
    fr.befriend(c, a)
    v1 = ok(fr.call(a, "/friend/get_incremental_friends",
                    {"userID": a, "versionID": first["versionID"],
                     "version": first["version"]}))
    vid, ver = v1["versionID"], v1["version"]
    assert {f["friendUser"]["userID"] for f in v1["insert"]} >= {b, c}

    # since that version: c's remark, b deleted, d added
    ok(fr.call(a, "/friend/set_friend_remark",
               {"ownerUserID": a, "friendUserID": c, "remark": "r"}))
    ok(fr.call(a, "/friend/delete_friend",
               {"ownerUserID": a, "friendUserID": b}))
    fr.befriend(d, a)
    v2 = ok(fr.call(a, "/friend/get_incremental_friends",
                    {"userID": a, "versionID": vid, "version": ver}))
    assert v2["full"] is False
    assert v2["delete"] == [b]
    assert [f["friendUser"]["userID"] for f in v2["insert"]] == [d]
    assert [(f["friendUser"]["userID"], f["remark"])
            for f in v2["update"]] == [(c, "r")]
    # and nothing since the newest
    v3 = ok(fr.call(a, "/friend/get_incremental_friends",
                    {"userID": a, "versionID": v2["versionID"],
                     "version": v2["version"]}))
    assert (v3["insert"], v3["update"], v3["delete"]) == ([], [], [])
    ids = ok(fr.call(a, "/friend/get_full_friend_user_ids", {"userID": a}))
    assert sorted(ids["userIDs"]) == sorted([c, d])


def test_blacklist_blocks_sends(stack, fr):
    a, b = fr.ids[:2]
    fr.befriend(a, b)
    ok(fr.black(b, a))
    assert [x["blackUserInfo"]["userID"] for x in ok(fr.call(
        b, "/friend/get_black_list", {"userID": b}))["blacks"]] == [a]
    conv = single_conv(a, b)
    ta = fr.ws_token(a, 1)

    async def scenario():
        c = await Client(stack, a, ta, 1).connect()
        try:
            r = await c.send_text(b, "blocked?")
            assert r["errCode"] == 1302, r
            seqs = await c.request(1001, {})
            assert seqs["data"]["maxSeqs"].get(conv, 0) == 0
        finally:
            await c.close()

    run(scenario())
    # REST on a's behalf: 1302 too; an admin sender is exempt
    r = fr.admin("/msg/send_msg", {
        "sendID": a, "recvID": b, "senderPlatformID": 1,
        "content": {"content": "x"}, "contentType": 101, "sessionType": 1})
    assert code(r) == 1302
    admin_id = ADMIN
    ok(fr.admin("/msg/send_msg", {
        "sendID": admin_id, "recvID": b, "senderPlatformID": 10,
        "content": {"content": "x"}, "contentType": 101, "sessionType": 1}))
    # b -> a is not blocked (a did not black b)
    fr.send(b, a, "from b")

    ok(fr.call(b, "/friend/remove_black",
               {"ownerUserID": b, "blackUserID": a}))
    assert fr.send(a, b, "free again")["seq"] >= 1
    assert code(fr.call(b, "/friend/remove_black",
                        {"ownerUserID": b, "blackUserID": a})) == 1004


def test_friend_verify(own_stack):
    _, ngx = own_stack(http="im_friend_verify on;")
    fr = Friends(Api(ngx), 3)
    a, b, c = fr.ids
    r = fr.admin("/msg/send_msg", {
        "sendID": a, "recvID": b, "senderPlatformID": 1,
        "content": {"content": "x"}, "contentType": 101, "sessionType": 1})
    assert code(r) == 1303
    fr.befriend(a, b)
    assert fr.send(a, b, "friends now")["seq"] >= 1
    ta = fr.ws_token(c, 1)

    async def scenario():
        cl = await Client(ngx, c, ta, 1).connect()
        try:
            r = await cl.send_text(a, "stranger")
            assert r["errCode"] == 1303, r
        finally:
            await cl.close()

    run(scenario())


def test_bad_input_changes_nothing(fr):
    a, b = fr.ids[:2]
    assert code(fr.apply(a, a)) == 1301
    assert code(fr.respond(b, a, 1)) == 1004
    assert code(fr.apply(a, "nosuch" + uuid.uuid4().hex[:8])) == 1101
    many = ["x%d" % i for i in range(10000)]
    assert code(fr.call(a, "/friend/get_designated_friends",
                        {"ownerUserID": a, "friendUserIDs": many})) == 1001
    assert code(fr.admin("/friend/import_friend",
                         {"ownerUserID": a, "friendUserIDs": many})) == 1001
    assert code(fr.admin("/friend/import_friend",
                         {"ownerUserID": a,
                          "friendUserIDs": ["nosuch-" + b]})) in (1001, 1101)
    fr.befriend(a, b)
    r = fr.call(a, "/friend/set_friend_remark",
                {"ownerUserID": a, "friendUserID": b, "remark": "r" * 100000})
    assert code(r) == 1001
    r = fr.call(a, "/friend/set_friend_remark",
                {"ownerUserID": a, "friendUserID": b, "remark": "r" * 300})
    assert code(r) == 1001
    assert fr.friends(a)[b]["remark"] == ""
    # not one's own: 1002
    assert code(fr.call(a, "/friend/get_friend_list", {"userID": b})) == 1002
    assert code(fr.call(a, "/friend/add_friend",
                        {"fromUserID": b, "toUserID": a})) == 1002
    assert code(fr.call(a, "/friend/get_friend_list", {})) == 1001
    for body in ("[]", '{"ownerUserID": 5}', '{"toUserID": "a b"}',
                 '{"fromUserID": "%s", "toUserID": "%s", "toUserID": "%s"}'
                 % (a, b, a)):
        r = fr.api.post("/friend/add_friend", None, raw=body.encode(),
                        token=fr.tok[a])
        assert code(r) == 1001, (body, r)
    assert set(fr.friends(a)) == {b}


def test_profile_update_and_recv_opt(stack, fr):
    a, b = fr.ids[:2]
    fr.befriend(a, b)
    tb = fr.ws_token(b, 1)

    async def scenario():
        cb = await Client(stack, b, tb, 1).connect()
        try:
            ok(fr.call(a, "/user/update_user_info",
                       {"userInfo": {"userID": a, "nickname": "Alice"}}))
            got = await msgs_until(cb, lambda m: m["contentType"] == 1303)
            assert detail_of(got[-1])["userID"] == a
        finally:
            await cb.close()

    run(scenario())
    info = ok(fr.call(b, "/user/get_users_info", {"userIDs": [a]}))
    assert info["usersInfo"][0]["nickname"] == "Alice"
    assert fr.friends(b)[a]["friendUser"]["nickname"] == "Alice"
    ok(fr.call(a, "/user/update_user_info_ex",
               {"userInfo": {"userID": a, "faceURL": {"value": "http://f"}}}))
    info = ok(fr.call(b, "/user/get_users_info", {"userIDs": [a]}))
    assert info["usersInfo"][0]["faceURL"] == "http://f"
    assert code(fr.call(a, "/user/update_user_info",
                        {"userInfo": {"userID": b, "nickname": "x"}})) == 1002

    # globalRecvMsgOpt 2: received but not pushed offline; 1: not pushed
    ok(fr.call(b, "/user/set_global_msg_recv_opt",
               {"userID": b, "globalRecvMsgOpt": 1}))
    assert code(fr.call(b, "/user/set_global_msg_recv_opt",
                        {"userID": b, "globalRecvMsgOpt": 7})) == 1001

    async def muted():
        cb = await Client(stack, b, tb, 1).connect()
        try:
            fr.send(a, b, "quiet")
            assert await silence(cb, 0.5) == []
        finally:
            await cb.close()

    run(muted())


def test_user_lists(own_stack):
    """get_users (all, by ID, by nickname), get_all_users_uid and
    account_check on a Redis of their own (the totals are exact)."""
    _, ngx = own_stack()
    api = Api(ngx)
    fr = Friends(api, 3)
    a, b, c = fr.ids
    ok(fr.call(b, "/user/update_user_info",
               {"userInfo": {"userID": b, "nickname": "Zed Bee"}}))

    def page(body):
        body.setdefault("pagination", {"pageNumber": 1, "showNumber": 100})
        return ok(fr.admin("/user/get_users", body))

    everyone = page({"pagination": {"pageNumber": 1, "showNumber": 10}})
    assert everyone["total"] == 3
    assert [u["userID"] for u in everyone["users"]] == [a, b, c]
    second = page({"pagination": {"pageNumber": 2, "showNumber": 2}})
    assert [u["userID"] for u in second["users"]] == [c]
    one = page({"userID": b})
    assert one["total"] == 1 and one["users"][0]["nickname"] == "Zed Bee"
    by_nick = page({"nickName": "Zed"})
    assert [u["userID"] for u in by_nick["users"]] == [b]
    # the old nickname no longer finds it
    assert page({"nickName": b})["total"] == 0
    ids = ok(fr.admin("/user/get_all_users_uid",
                      {"pagination": {"pageNumber": 1, "showNumber": 2}}))
    assert ids == {"total": 3, "userIDs": [a, b]}
    res = ok(fr.admin("/user/account_check",
                      {"checkUserIDs": [a, "nobody-x"]}))["results"]
    assert res == [{"userID": a, "accountStatus": "registered"},
                   {"userID": "nobody-x", "accountStatus": "unregistered"}]
    # admin only; bounded
    assert code(fr.call(a, "/user/get_users", {"pagination": {}})) == 1002
    assert code(fr.admin("/user/get_users", {})) == 1001
    assert code(fr.admin("/user/get_users",
                         {"pagination": {"showNumber": 5000}})) == 1001
    assert code(fr.admin("/user/account_check",
                         {"checkUserIDs": ["x"] * 1001})) == 1001


def test_global_recv_opt_offline_push(own_stack):
    """globalRecvMsgOpt 2: stored, but no offline-push job; 0 again: a
    job (so the check can fail)."""
    redis, ngx = own_stack()
    fr = Friends(Api(ngx), 2)
    a, b = fr.ids

    def jobs():
        out = redis.cli("XRANGE", "im:push", "-", "+")
        return out.count(b)

    ok(fr.call(b, "/user/set_global_msg_recv_opt",
               {"userID": b, "globalRecvMsgOpt": 2}))
    assert fr.send(a, b, "no push")["seq"] == 1
    time.sleep(0.3)
    assert jobs() == 0
    ok(fr.call(b, "/user/set_global_msg_recv_opt",
               {"userID": b, "globalRecvMsgOpt": 0}))
    assert fr.send(a, b, "push")["seq"] == 2
    deadline = time.time() + 3
    while jobs() == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert jobs() >= 1
