"""One message through the whole stack: REST auth, WebSocket, Redis."""

import json

from conftest import Client, run, single_conv, uids


def test_send_push_pull(stack, api):
    a, b = uids()
    api.register(a, b)
    ta, tb = api.user_token(a), api.user_token(b, platform=2)

    async def scenario():
        ca = await Client(stack, a, ta).connect()
        cb = await Client(stack, b, tb, platform=2).connect()
        ack = await ca.send_text(b, "hello")
        assert ack["errCode"] == 0, ack
        assert ack["data"]["seq"] == 1
        msgs = await cb.push()
        assert [m["seq"] for m in msgs] == [1]
        assert json.loads(msgs[0]["content"]) == {"content": "hello"}
        pulled = await cb.pull(single_conv(a, b), 1, 10)
        got = pulled["data"]["msgs"][single_conv(a, b)]["Msgs"]
        assert [m["clientMsgID"] for m in got] == [ack["data"]["clientMsgID"]]
        await ca.close()
        await cb.close()

    run(scenario())
