"""Users, friends and blacklists with MongoDB (FerretDB) behind Redis
(docs/architecture.md, "Friends"): every change is in MongoDB's `user`
collection before the call answers, and a Redis FLUSHALL loses none of
it:

- users (profiles, global receive options) come back: tokens are issued
  again without registering anyone again (the old tokens went with
  Redis: 1507), and registering a kept user again is still 1102;
- friends with their remarks, blacklists and applications come back,
  loaded on first use by a REST call or by a send to the user;
- a blacklist is enforced after the loss, by the first send;
- the stack keeps serving.

Every test runs on its own MongoDB + Redis + nginx (helpers_mongo).
"""

from helpers_mongo import fresh_tokens, mstack  # noqa: F401 (a fixture)
from test_conversations_mongo import admin, call, ok, rest_send


def state(st, tok, u):
    friends = ok(call(st, tok[u], "/friend/get_friend_list",
                      {"userID": u}))["friendsInfo"]
    blacks = ok(call(st, tok[u], "/friend/get_black_list",
                     {"userID": u}))["blacks"]
    inbox = ok(call(st, tok[u], "/friend/get_friend_apply_list",
                    {"userID": u}))["FriendRequests"]
    info = ok(call(st, tok[u], "/user/get_users_info",
                   {"userIDs": [u]}))["usersInfo"][0]
    return (sorted((f["friendUser"]["userID"], f["remark"],
                    f["friendUser"]["nickname"]) for f in friends),
            sorted(b["blackUserInfo"]["userID"] for b in blacks),
            sorted((r["fromUserID"], r["handleResult"], r["reqMsg"])
                   for r in inbox),
            (info["nickname"], info["faceURL"]))


def test_flushall_keeps_users_and_relations(mstack):
    st = mstack()
    (a, b, c, d), tok = st.users(4)
    ok(call(st, tok[a], "/friend/add_friend",
            {"fromUserID": a, "toUserID": b, "reqMsg": "hi"}))
    ok(call(st, tok[b], "/friend/add_friend_response",
            {"fromUserID": a, "toUserID": b, "handleResult": 1}))
    ok(call(st, tok[a], "/friend/set_friend_remark",
            {"ownerUserID": a, "friendUserID": b, "remark": "bee"}))
    ok(call(st, tok[c], "/friend/add_friend",
            {"fromUserID": c, "toUserID": a, "reqMsg": "pending"}))
    ok(call(st, tok[a], "/friend/add_black",
            {"ownerUserID": a, "blackUserID": d}))
    ok(call(st, tok[b], "/user/update_user_info",
            {"userInfo": {"userID": b, "nickname": "Bee",
                          "faceURL": "http://b"}}))
    before = {u: state(st, tok, u) for u in (a, b)}
    assert before[a][0] == [(b, "bee", "Bee")]
    assert before[a][1] == [d] and before[a][2] == [(c, 0, "pending")]

    assert st.cli("FLUSHALL") == "OK"

    tok = fresh_tokens(st, [a, b, c, d])
    assert {u: state(st, tok, u) for u in (a, b)} == before
    # a kept user is still registered
    r = admin(st, "/user/user_register",
              {"users": [{"userID": b, "nickname": "again"}]})
    assert r["errCode"] == 1102

    # the blacklist holds on the first send after the loss
    r = admin(st, "/msg/send_msg", {
        "sendID": d, "recvID": a, "senderPlatformID": 1,
        "content": {"content": "x"}, "contentType": 101, "sessionType": 1})
    assert r["errCode"] == 1302, r
    assert rest_send(st, b, a, "still friends")["seq"] >= 1
    # the pending application can be answered
    ok(call(st, tok[a], "/friend/add_friend_response",
            {"fromUserID": c, "toUserID": a, "handleResult": 1}))
    assert c in [f["friendUser"]["userID"] for f in ok(call(
        st, tok[a], "/friend/get_friend_list",
        {"userID": a}))["friendsInfo"]]


def test_send_loads_recipient_after_loss(mstack):
    """The first message to a user after the loss loads the user: no
    1101 for a user MongoDB has."""
    st = mstack()
    (a, b), tok = st.users(2)
    ok(call(st, tok[b], "/friend/add_black",
            {"ownerUserID": b, "blackUserID": a}))
    assert st.cli("FLUSHALL") == "OK"
    fresh_tokens(st, [a])
    r = admin(st, "/msg/send_msg", {
        "sendID": a, "recvID": b, "senderPlatformID": 1,
        "content": {"content": "x"}, "contentType": 101, "sessionType": 1})
    assert r["errCode"] == 1302, r
    assert rest_send(st, b, a, "b may write")["seq"] >= 1


def test_user_lists_from_mongo(mstack):
    """With MongoDB the lists come from it: a nickname matches anywhere in
    it (case-insensitive, as a literal), and a FLUSHALL changes nothing."""
    st = mstack()
    (a, b, c), tok = st.users(3)
    ok(call(st, tok[b], "/user/update_user_info",
            {"userInfo": {"userID": b, "nickname": "The (Big) Bee"}}))
    page = {"pageNumber": 1, "showNumber": 100}

    def users(**body):
        body["pagination"] = page
        return ok(admin(st, "/user/get_users", body))

    assert users()["total"] == 3
    assert [u["userID"] for u in users(nickName="(big)")["users"]] == [b]
    assert users(nickName=".*")["total"] == 0
    assert users(userID=c)["users"][0]["userID"] == c
    assert st.cli("FLUSHALL") == "OK"
    st.api._admin = None
    ids = ok(admin(st, "/user/get_all_users_uid", {"pagination": page}))
    assert ids["total"] == 3 and sorted(ids["userIDs"]) == sorted([a, b, c])
