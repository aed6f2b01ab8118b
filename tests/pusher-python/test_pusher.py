"""The Python server SDK (`pusher` 3.x) against a real wspush server: trigger, batch
trigger, channel info, users info, terminate (issue #8)."""

import json
import os
import re
import subprocess
import unittest

import pusher
import websocket

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("WSPUSH_BIN", os.path.join(HERE, "..", "..", "target", "debug", "wspush"))
APP_ID, KEY, SECRET = "12345", "app-key", "app-secret"


class Server:
    """`wspush serve` on 127.0.0.1:0; the address is read from its first stdout line."""

    def __init__(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--no-console",
             "--pusher-app", f"{APP_ID}:{KEY}:{SECRET}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, text=True)
        line = self.proc.stdout.readline().strip()
        m = re.fullmatch(r"listening on http://(.+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"unexpected first line {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Client:
    """A Pusher protocol 7 client on a plain WebSocket."""

    def __init__(self, server):
        self.ws = websocket.create_connection(
            f"ws://{server.host}:{server.port}/app/{KEY}?protocol=7&client=python", timeout=10)
        ev = self.next()
        assert ev["event"] == "pusher:connection_established", ev
        self.socket_id = json.loads(ev["data"])["socket_id"]

    def next(self):
        return json.loads(self.ws.recv())

    def send(self, event, data, channel=None):
        msg = {"event": event, "data": data}
        if channel:
            msg["channel"] = channel
        self.ws.send(json.dumps(msg))

    def subscribe(self, sdk, channel, user=None):
        data = {"channel": channel}
        if channel.startswith("private-") or channel.startswith("presence-"):
            data.update(sdk.authenticate(channel, self.socket_id, user))
        self.send("pusher:subscribe", data)
        ev = self.next()
        assert ev["event"] == "pusher_internal:subscription_succeeded", ev
        return ev

    def expect(self, name):
        while True:
            ev = self.next()
            if ev["event"] == name:
                return ev


class PythonSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, ssl=False,
                                host=cls.server.host, port=cls.server.port)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_trigger_and_batch(self):
        c = Client(self.server)
        c.subscribe(self.sdk, "news")
        self.assertEqual(self.sdk.trigger("news", "flash", {"x": 1}), {})
        ev = c.next()
        self.assertEqual((ev["event"], json.loads(ev["data"])), ("flash", {"x": 1}))
        self.sdk.trigger(["news", "other"], "multi", "text")
        self.assertEqual(c.next()["data"], "text")
        self.sdk.trigger_batch([
            {"channel": "news", "name": "b1", "data": {"n": 1}},
            {"channel": "news", "name": "b2", "data": {"n": 2}},
        ])
        self.assertEqual([c.next()["event"], c.next()["event"]], ["b1", "b2"])

    def test_channel_and_users_info(self):
        a, b = Client(self.server), Client(self.server)
        a.subscribe(self.sdk, "presence-py", {"user_id": "ann", "user_info": {"n": 1}})
        b.subscribe(self.sdk, "presence-py", {"user_id": "ben"})
        a.expect("pusher_internal:member_added")
        info = self.sdk.channel_info("presence-py", ["user_count", "subscription_count"])
        self.assertEqual(info, {"occupied": True, "user_count": 2, "subscription_count": 2})
        listed = self.sdk.channels_info(prefix_filter="presence-py", attributes=["user_count"])
        # issue #14 item 2: occupied and subscription_count come without asking.
        self.assertEqual(listed, {"channels": {"presence-py": {
            "occupied": True, "subscription_count": 2, "user_count": 2}}})
        self.assertEqual(self.sdk.users_info("presence-py"),
                         {"users": [{"id": "ann"}, {"id": "ben"}]})

    def test_integer_user_ids_and_counts_without_asking(self):
        # issue #14 items 2 and 3: ids signed as integers come back as integers.
        a, b = Client(self.server), Client(self.server)
        a.subscribe(self.sdk, "presence-int", {"user_id": 1, "user_info": {"n": 1}})
        ok = b.subscribe(self.sdk, "presence-int", {"user_id": 2})
        self.assertEqual(json.loads(ok["data"])["presence"]["ids"], [1, 2])
        added = a.expect("pusher_internal:member_added")
        self.assertEqual(json.loads(added["data"])["user_id"], 2)
        self.assertEqual(self.sdk.users_info("presence-int"), {"users": [{"id": 1}, {"id": 2}]})
        self.assertEqual(self.sdk.channel_info("presence-int"),
                         {"occupied": True, "subscription_count": 2, "user_count": 2})
        self.assertEqual(self.sdk.channels_info(prefix_filter="presence-int"),
                         {"channels": {"presence-int": {"occupied": True, "subscription_count": 2}}})

    def test_terminate_user_connections(self):
        c = Client(self.server)
        auth = self.sdk.authenticate_user(c.socket_id, {"id": "py-user"})
        c.send("pusher:signin", auth)
        self.assertEqual(c.next()["event"], "pusher:signin_success")
        self.sdk.terminate_user_connections("py-user")
        ev = c.expect("pusher:error")
        self.assertEqual(ev["data"]["code"], 4009)

    def test_bad_secret_is_refused(self):
        bad = pusher.Pusher(app_id=APP_ID, key=KEY, secret="wrong", ssl=False,
                            host=self.server.host, port=self.server.port)
        with self.assertRaises(pusher.errors.PusherBadAuth):
            bad.trigger("news", "x", {})


if __name__ == "__main__":
    unittest.main(verbosity=2)
