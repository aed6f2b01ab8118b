// Issue #15 part 1 in real headless Chromium: (1) a real EventSource on /sse, killed by
// the server (DELETE /api/clients/{id}) while an HTTP publisher races it, reconnects by
// itself with Last-Event-ID and ends with every message once, in order; (2) wspush.js
// behind a proxy that refuses `Upgrade: websocket` falls back to SSE by itself, with
// the same subscribe/on('state') API and no gap across a server kill.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import http from "node:http";
import { chromium } from "playwright-core";
import { CHROMIUM, WAIT, WSPUSH_BIN, startServer, waitFor } from "./helpers.mjs";


const CONFIG = `
[[namespaces]]
prefix = "room:"
history_size = 10000
anonymous = "publish"
`;

let server; // { port, base, stop, stderr }
let browser;

/** Calls the HTTP API; the parsed JSON answer (throws on a non-2xx status). */
async function api(method, pathname, body) {
  const res = await fetch(server.base + pathname, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${pathname} answered ${res.status}: ${text}`);
  return JSON.parse(text);
}

/** Ids of the clients of `mode` (sse, json, ...). */
async function clientsOf(mode) {
  const { clients } = await api("GET", "/api/clients");
  return clients.filter((c) => c.mode === mode).map((c) => c.id);
}

/**
 * Publishes `msg N` (N = 1, 2, ...) to each of `channels` in turn, every 10 ms, until
 * `done()` says so (and at least `min` per channel), at most 60 s. Returns
 * `{ count: () => messages per channel so far, finished: Promise }`.
 */
function publisher(channels, min, done) {
  let n = 0;
  const finished = (async () => {
    const deadline = Date.now() + 60_000;
    while (!(done() && n >= min) && Date.now() < deadline) {
      n += 1;
      for (const channel of channels) {
        const { offset } = await api("POST", "/api/publish", { channel, data: `msg ${n}` });
        assert.equal(offset, n, "offsets count the messages");
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(done(), "the test finished its part in 60 s");
  })();
  return { count: () => n, finished };
}

/** A blank page of `base` (same origin as the server or the proxy). */
async function blankPage(base, errors) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (err) => errors.push(String(err)));
  const response = await page.goto(base + "/healthz", { timeout: WAIT });
  assert.equal(response.status(), 200);
  return { context, page };
}

before(async () => {
  assert.ok(existsSync(WSPUSH_BIN), `server binary not found at ${WSPUSH_BIN} (run \`cargo build\` or set WSPUSH_BIN)`);
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = await startServer([], { config: CONFIG });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run"],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) {
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  }
  if (server) await server.stop();
}, { timeout: 30_000 });

test("EventSource: killed mid-stream, resumes with Last-Event-ID, every message once and in order", { timeout: 90_000 }, async () => {
  const CHANNEL = "room:sse";
  const errors = [];
  const { context, page } = await blankPage(server.base, errors);
  try {
    await page.evaluate((channel) => {
      window.__got = [];
      window.__starts = [];
      window.__opens = 0;
      const es = new EventSource("/sse?channels=" + channel);
      es.onopen = () => window.__opens++;
      es.addEventListener("message", (e) => window.__got.push([e.lastEventId, e.data]));
      for (const type of ["subscribed", "reset"]) {
        es.addEventListener(type, (e) => window.__starts.push([type, JSON.parse(e.data).offset]));
      }
    }, CHANNEL);
    await waitFor("the stream open", () => page.evaluate(() => window.__starts.length === 1));
    const [first] = await waitFor("one SSE client", async () => {
      const ids = await clientsOf("sse");
      return ids.length === 1 && ids;
    });

    let reconnected = false;
    const pub = publisher([CHANNEL], 80, () => reconnected);
    await waitFor("some of the stream", () => page.evaluate(() => window.__got.length >= 10));
    await api("DELETE", `/api/clients/${first}`);
    const atKick = pub.count();
    // The browser reconnects by itself (its own retry delay), sending Last-Event-ID.
    await waitFor("a second connection", () => page.evaluate(() => window.__opens >= 2), 2 * WAIT);
    reconnected = true;
    await pub.finished;
    const published = pub.count();
    assert.ok(published > atKick + 10, `publishes raced the outage (${atKick} -> ${published})`);

    await waitFor(`all ${published} messages`, () => page.evaluate((n) => window.__got.length >= n, published));
    const got = await page.evaluate(() => window.__got);
    const epoch = got[0][0].split(":")[0];
    const expected = [];
    for (let n = 1; n <= published; n++) expected.push([`${epoch}:${n}:${CHANNEL}`, `msg ${n}`]);
    assert.deepEqual(got, expected, "every message, in order, once, each with its position as id");
    const starts = await page.evaluate(() => window.__starts);
    assert.equal(starts.length, 2, JSON.stringify(starts));
    assert.equal(starts[1][0], "subscribed", `resumed, not reset: ${JSON.stringify(starts)}`);
    assert.ok(starts[1][1] >= 10 && starts[1][1] < published, `resumed from the last id seen: ${JSON.stringify(starts)}`);
    const ids = await clientsOf("sse");
    assert.ok(ids.length === 1 && ids[0] !== first, `a new client: ${ids}`);
    assert.deepEqual(errors, []);
  } finally {
    await context.close().catch(() => {});
  }
});

/** An HTTP proxy to the server that refuses every WebSocket upgrade (403). */
async function refusingProxy() {
  const upgrades = [];
  const proxy = http.createServer((req, res) => {
    const up = http.request(
      { host: "127.0.0.1", port: server.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  proxy.on("upgrade", (req, socket) => {
    upgrades.push(req.url);
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    base: `http://127.0.0.1:${proxy.address().port}`,
    upgrades,
    close: () => {
      proxy.closeAllConnections();
      return new Promise((r) => proxy.close(r));
    },
  };
}

test("wspush.js behind a proxy refusing WebSocket falls back to SSE, no gap across a kill", { timeout: 90_000 }, async () => {
  const CHANNELS = ["room:fb1", "room:fb2"];
  const proxy = await refusingProxy();
  const errors = [];
  const { context, page } = await blankPage(proxy.base, errors);
  try {
    await page.addScriptTag({ url: "/wspush.js" });
    await page.evaluate((channels) => {
      window.__states = [];
      window.__got = {};
      window.__resets = 0;
      const c = wspush.connect("/ws", { minDelay: 100, maxDelay: 400 });
      window.__conn = c;
      c.on("state", (s) => window.__states.push(s));
      for (const ch of channels) {
        window.__got[ch] = [];
        c.subscribe(ch, (data, info) => window.__got[ch].push([info.offset, data]), {
          onReset: () => window.__resets++,
        });
      }
    }, CHANNELS);
    await waitFor("open over SSE", () => page.evaluate(() => window.__conn.state === "open"));
    assert.equal(await page.evaluate(() => window.__conn.transport), "sse");
    assert.ok(proxy.upgrades.length >= 1, "it tried the WebSocket first");
    const publishError = await page.evaluate(() => window.__conn.publish("room:fb1", 1).catch((e) => e.code));
    assert.equal(publishError, "unsupported");

    let reconnected = false;
    const pub = publisher(CHANNELS, 60, () => reconnected);
    await waitFor("some of the stream", () => page.evaluate(() => window.__got["room:fb1"].length >= 10));
    const [id] = await clientsOf("sse");
    await api("DELETE", `/api/clients/${id}`);
    await waitFor("reconnecting", () => page.evaluate(() => window.__states.includes("reconnecting")));
    await waitFor("open again", () =>
      page.evaluate(() => window.__states.lastIndexOf("open") > window.__states.lastIndexOf("reconnecting")),
    );
    reconnected = true;
    await pub.finished;
    const published = pub.count();
    for (const ch of CHANNELS) {
      await waitFor(`all of ${ch}`, () => page.evaluate(([c, n]) => window.__got[c].length >= n, [ch, published]));
      const expected = [];
      for (let n = 1; n <= published; n++) expected.push([n, `msg ${n}`]);
      assert.deepEqual(await page.evaluate((c) => window.__got[c], ch), expected, `${ch}: every message once, in order`);
    }
    assert.equal(await page.evaluate(() => window.__resets), 0, "resumed, never reset");
    assert.equal(await page.evaluate(() => window.__conn.transport), "sse");
    assert.deepEqual(errors, []);
  } finally {
    await context.close().catch(() => {});
    await proxy.close();
  }
});
