#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/), a handful of
meaningful inputs each. Run from anywhere: python3 fuzz/seeds.py"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# frame: max (u16 BE, max_message = max + 1), flags (bit 0 = preload), split seed (u16 BE,
# 0 = one piece), then the client's bytes.
def frame(opcode, payload, fin=True, mask=b"\x01\x02\x03\x04", length=None):
    length = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([m | length])
    elif length < 1 << 16:
        head += bytes([m | 126]) + struct.pack(">H", length)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stream(max_message, frames, preload=False, seed=0):
    return struct.pack(">HBH", max_message - 1, int(preload), seed) + b"".join(frames)


write("frame", "text", stream(1024, [frame(1, "héllo".encode())]))
write("frame", "fragments_with_ping", stream(1024, [
    frame(1, b"he", fin=False), frame(9, b"ping"), frame(0, b"ll", fin=False),
    frame(0, b"o"), frame(2, bytes(range(200)))], seed=7))
# issue #12 item 1: a 1-byte fragment, then a continuation announcing 2^64-1 bytes.
write("frame", "continuation_length_overflow", stream(1024, [
    frame(1, b"a", fin=False), frame(0, b"x" * 64, length=(1 << 64) - 1)], seed=5))
write("frame", "too_big", stream(100, [frame(2, b"z" * 101)]))
write("frame", "preloaded_then_close", stream(4096, [
    frame(2, b"y" * 300), frame(8, struct.pack(">H", 1000) + b"bye")], preload=True, seed=3))
write("frame", "unmasked", stream(1024, [frame(1, b"hi", mask=None)]))

KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
write("handshake", "json_mode", "\r\n".join([
    "/ws?channels=news,chat:1&protocol=json&token=abc", "Host: localhost:8083",
    "Upgrade: websocket", "Connection: keep-alive, Upgrade", KEY, "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Protocol: wspush.v1", "Origin: http://localhost:8083"]))
write("handshake", "bad_channels", "\n".join([
    "/ws?channels=%20,a%2Cb,%0a,*,private-x,%23server-to-user-1," + "c" * 201,
    "Upgrade: WebSocket", "Connection: upgrade", "Sec-WebSocket-Key: short",
    "Sec-WebSocket-Version: 8"]))
write("handshake", "odd_query", "/ws?channels&channels=a&protocol=%ff%fe&x=%zz\nUpgrade: websocket\n" + KEY)

for name, text in {
    "subscribe": '{"id":1,"op":"subscribe","channel":"news","since":37,"epoch":"e1"}',
    "publish": '{"id":"a","op":"publish","channel":"chat:1","data":{"b":[1,2.5,1E2,-0],"a":"\\u00e9"}}',
    "publish_text": '{ "id" : 2 , "op" : "publish" , "channel" : "n" , "data" : "t\\n\\ud83d\\ude00" }',
    "history": '{"id":6,"op":"history","channel":"n","since":null,"limit":1000,"x":[[{}]]}',
    "connect": '{"id":7,"op":"connect","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}',
    "duplicates": '{"id":1,"id":"x","op":"fly","op":"ping"}',
    "bad_numbers": '{"id":18446744073709551616,"op":"ping","pad":[1e400,-1e-400,123456789012345678901234567890]}',
    "list": '[1,"ping"]',
}.items():
    write("json_command", name, text)

for name, text in {
    "subscribe_presence": '{"event":"pusher:subscribe","data":{"channel":"presence-r","auth":"k:sig","channel_data":"{\\"user_id\\":\\"1\\",\\"user_info\\":{}}"}}',
    "subscribe_string_data": '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"private-a\\",\\"auth\\":\\"k:s\\"}"}',
    "unsubscribe": '{"event":"pusher:unsubscribe","data":{"channel":"news","channel":5}}',
    "signin": '{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"42\\"}"}}',
    "client_event": '{"event":"client-typing","channel":"private-a","data":{ "x" : [1, 2.50], "y":"\\u00e9" }}',
    "ping": '{"event":"pusher:ping","data":{}}',
}.items():
    write("pusher_message", name, text)

write("config", "full", """listen = "127.0.0.1:8083"
max_message_size = 1048576
max_publish_size = 65536
max_command_size = 69632
publish_rate = 50.0
allowed_origins = ["https://app.example.com"]
broker = "redis://127.0.0.1:6379,redis://127.0.0.1:6380/1"
upstream = "publish:inbox"
pusher_app = ["1:app-key:app-secret"]

[[namespaces]]
prefix = "chat:"
history_size = 100
history_ttl = "5m"
presence = true
anonymous = "subscribe"

[[apps]]
id = "12345"
key = "key2"
secret = "secret2"
client_events = true
webhooks = [{ url = "http://127.0.0.1:3000/hook", events = ["channel_occupied"], batch_ms = 0 }]

[apps.limits]
max_payload_size = 10240
client_events_per_second = 10
""")
write("config", "bad_values", """max_message_size = 0
ping_interval = -1
publish_rate = nan
max_command_size = 1
[[namespaces]]
prefix = ""
history_ttl = "0s"
[[namespaces]]
prefix = ""
""")
write("config", "unknown_key", 'nope = 1\nupstream = "webhook:http://[::1]:9/x"\n')

# inflate: max (u16 BE, max_message = max + 1), flags (bit 0 = the client keeps its
# context), then the client's bytes; RSV1 (0x40) marks a compressed message.
import zlib


def deflated(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def compressed(opcode, payload, fin=True):
    f = bytearray(frame(opcode, payload, fin=fin))
    f[0] |= 0x40
    return bytes(f)


def inflate_input(max_, keep, frames):
    return struct.pack(">HB", max_, keep) + b"".join(frames)


write("inflate", "text", inflate_input(1024, 0, [compressed(1, deflated(b"hello " * 20))]))
write("inflate", "bomb", inflate_input(1024, 0, [compressed(2, deflated(bytes(1 << 16)))]))
write("inflate", "fragments_keep", inflate_input(4096, 1, [
    compressed(1, deflated(b'{"op":"publish"}')[:5], fin=False),
    frame(0, deflated(b'{"op":"publish"}')[5:]),
    compressed(1, deflated(b'{"op":"publish"}')),
]))
write("inflate", "corrupt", inflate_input(1024, 0, [compressed(1, b"\xff\xff\xff\x00")]))
