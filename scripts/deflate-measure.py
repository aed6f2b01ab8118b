#!/usr/bin/env python3
"""Measures permessage-deflate costs against a wspush binary (docs/deflate.md): idle RSS per
connection with and without compression, and bytes on the wire for typical JSON.

    python3 scripts/deflate-measure.py target/release/wspush [CONNECTIONS] [all|idle|wire]
"""
import os, socket, subprocess, sys, time, zlib, json, base64, re, urllib.request

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000

def start(args):
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--no-console", "--quiet"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = int(re.search(r":(\d+)", line.split("http://")[1]).group(1))
    return p, port

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def upgrade(port, target, offer):
    s = socket.create_connection(("127.0.0.1", port))
    ext = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    s.sendall((f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, head.decode()

def publish(port, channel, data):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/publish", data=json.dumps({"channel": channel, "data": data}).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()

def read_frame(s):
    def need(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b)); assert c; b += c
        return b
    h = need(2); n = h[1] & 0x7f; hl = 2
    if n == 126: n = int.from_bytes(need(2), "big"); hl = 4
    elif n == 127: n = int.from_bytes(need(8), "big"); hl = 10
    return h[0], need(n), hl

def idle(args, offer, label, publish_once=False):
    p, port = start(args)
    time.sleep(0.5)
    base = rss(p.pid)
    socks = [upgrade(port, "/ws?channels=idle", offer)[0] for _ in range(N)]
    time.sleep(2)
    after = rss(p.pid)
    extra = ""
    if publish_once:
        publish(port, "idle", {"symbol": "ACME", "price": 101.5})
        for s in socks: read_frame(s)
        time.sleep(1)
        extra = f", after one message {(rss(p.pid)-base)*1024/N:.0f} B/conn"
    print(f"idle {label}: {(after-base)*1024/N:.0f} B/conn (RSS {base} -> {after} KiB, {N} conns){extra}")
    for s in socks: s.close()
    p.terminate(); p.wait()

mode = sys.argv[3] if len(sys.argv) > 3 else "all"
if mode in ("all", "idle"):
    idle([], None, "compression off")
    idle(["--compression", "on"], None, "compression on, client without offer")
    idle(["--compression", "on"], "permessage-deflate; client_max_window_bits", "compression on, offer (shared)", True)
    idle(["--compression", "on", "--compression-context-takeover"], "permessage-deflate", "context takeover (own compressor)", True)

if mode in ("all", "wire"):
    p, port = start(["--compression", "on", "--compression-context-takeover"])
    plain, _ = upgrade(port, "/ws?channels=t", None)
    shared, _ = upgrade(port, "/ws?channels=t", "permessage-deflate; server_no_context_takeover")
    ctx, _ = upgrade(port, "/ws?channels=t", "permessage-deflate")
    msgs = [{"type": "trade", "symbol": ["ACME", "INIT", "GLOBX"][i % 3], "price": round(101.5 + i * 0.25, 2), "size": 100 + i,
             "ts": 1764500000000 + i * 137, "exchange": "XNYS", "conditions": ["@", "F"], "id": f"t-{1000+i}"} for i in range(100)]
    tot = {"plain": 0, "shared": 0, "ctx": 0}
    for m in msgs: publish(port, "t", m)
    for name, s in (("plain", plain), ("shared", shared), ("ctx", ctx)):
        for _ in msgs:
            b0, payload, hl = read_frame(s)
            tot[name] += hl + len(payload)
    one = len(json.dumps(msgs[0], separators=(",", ":")))
    print(f"wire, 100 trade JSON messages (~{one} B each): plain {tot['plain']} B, "
          f"deflate no-context {tot['shared']} B ({tot['shared']/tot['plain']:.0%}), "
          f"deflate with context {tot['ctx']} B ({tot['ctx']/tot['plain']:.0%})")
    big = {"rows": [{"id": i, "symbol": "ACME", "bid": 100 + i % 7, "ask": 101 + i % 5} for i in range(100)]}
    publish(port, "t", big)
    res = {}
    for name, s in (("plain", plain), ("shared", shared), ("ctx", ctx)):
        b0, payload, hl = read_frame(s); res[name] = hl + len(payload)
    print(f"wire, one 100-row JSON snapshot: plain {res['plain']} B, deflate {res['shared']} B ({res['shared']/res['plain']:.0%})")
    p.terminate(); p.wait()
