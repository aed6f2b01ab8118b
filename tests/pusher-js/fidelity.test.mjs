// Pusher fidelity (issue #14 items 1-7) with real clients: pusher-js 8 and Laravel Echo 2
// in Node, the pusher Node SDK reading channel counts, and a page on another origin in
// headless Chromium calling the HTTP surface (CORS preflight).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createHash, createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import PusherJs from "pusher-js";
import PusherServer from "pusher";
import Echo from "laravel-echo";
import { startServer, APP } from "./server.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let server;
let sdk;
const clients = [];

before(async () => {
  server = await startServer();
  sdk = new PusherServer({
    appId: APP.appId, key: APP.key, secret: APP.secret,
    host: server.host, port: String(server.port), useTLS: false,
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
});

/** pusher-js options for wspush; `user` is what the app's auth endpoint would sign. */
function options(user) {
  return {
    cluster: "mt1", wsHost: server.host, wsPort: server.port, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith("presence-")
          ? { user_id: user.id, user_info: user.user_info }
          : undefined;
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        // Signed by hand: the Node SDK takes string ids only; Laravel signs integers.
        const user_data = JSON.stringify({ id: user.id, name: "signed in" });
        const sig = createHmac("sha256", APP.secret).update(`${socketId}::user::${user_data}`).digest("hex");
        callback(null, { auth: `${APP.key}:${sig}`, user_data });
      },
    },
  };
}

function client(user = { id: "u", user_info: {} }) {
  const c = new PusherJs(APP.key, options(user));
  clients.push(c);
  return c;
}

function echo(user) {
  const e = new Echo({ broadcaster: "pusher", key: APP.key, Pusher: PusherJs, ...options(user) });
  clients.push(e.connector.pusher);
  return e;
}

const within = (what, promise, ms = 10_000) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)),
  ]);

function connected(c) {
  if (c.connection.state === "connected") return Promise.resolve();
  return within("connected", new Promise((resolve) => c.connection.bind("connected", resolve)));
}

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return within(`subscribed to ${name}`, new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", (data) => resolve([ch, data]));
    ch.bind("pusher:subscription_error", reject);
  }));
}

/** The next connection message satisfying `pred`. */
function message(c, pred, what) {
  return within(what, new Promise((resolve) => {
    const cb = (m) => {
      if (pred(m)) {
        c.connection.unbind("message", cb);
        resolve(m);
      }
    };
    c.connection.bind("message", cb);
  }));
}

// issue #14 item 3: Laravel's integer user ids through Echo's presence channel.
test("Laravel Echo presence with integer user ids", async () => {
  const e1 = echo({ id: 1, user_info: { name: "One" } });
  const e2 = echo({ id: 2, user_info: { name: "Two" } });
  const here1 = await within("here", new Promise((resolve) => {
    e1.room = e1.join("int-room");
    e1.room.here(resolve);
  }));
  assert.deepEqual(here1, [{ name: "One" }]);
  const members1 = e1.connector.pusher.channel("presence-int-room").members;
  assert.strictEqual(members1.me.id, 1, "me.id stays a number");
  const joining = within("joining", new Promise((resolve) => e1.room.joining(resolve)));
  const added = message(e1.connector.pusher, (m) => m.event === "pusher_internal:member_added", "member_added");
  const snapshot = (pusher) =>
    message(pusher, (m) => m.event === "pusher_internal:subscription_succeeded" && m.channel === "presence-int-room", "subscription_succeeded");
  const whisper = within("whisper", new Promise((resolve) =>
    e1.connector.pusher.channel("presence-int-room").bind("client-typing", (data, meta) => resolve([data, meta]))));
  await connected(e2.connector.pusher);
  const joined = snapshot(e2.connector.pusher);
  const here2 = await within("here", new Promise((resolve) => {
    e2.room = e2.join("int-room");
    e2.room.here(resolve);
  }));
  assert.equal(here2.length, 2);
  const { presence } = (await joined).data;
  assert.deepEqual(presence.ids, [1, 2], "presence ids are numbers");
  assert.deepEqual(presence.hash, { 1: { name: "One" }, 2: { name: "Two" } });
  assert.deepEqual(await joining, { name: "Two" });
  assert.strictEqual((await added).data.user_id, 2, "member_added keeps the integer");
  e2.room.whisper("typing", { who: 2 });
  const [data, meta] = await whisper;
  assert.deepEqual(data, { who: 2 });
  assert.strictEqual(meta.user_id, 2, "a client event's user_id keeps the integer");
  const leaving = within("leaving", new Promise((resolve) => e1.room.leaving(resolve)));
  const removed = message(e1.connector.pusher, (m) => m.event === "pusher_internal:member_removed", "member_removed");
  e2.leave("int-room");
  assert.deepEqual(await leaving, { name: "Two" });
  assert.strictEqual((await removed).data.user_id, 2);
  const users = await (await sdk.get({ path: "/channels/presence-int-room/users" })).json();
  assert.deepEqual(users, { users: [{ id: 1 }] });
  e1.disconnect();
  e2.disconnect();
});

// issue #14 items 3 and 4: an integer sign-in id is accepted, and events for the user
// reach the connection although pusher-js subscribes #server-to-user-{id} only for
// string ids; a string id gets them as soon as the sign-in is done, without retrying.
test("sign-in with integer and string ids; events to the user arrive at once", async () => {
  const n = client({ id: 7 });
  await connected(n);
  const ok = message(n, (m) => m.event === "pusher:signin_success", "signin_success");
  n.signin();
  assert.strictEqual(JSON.parse((await ok).data.user_data).id, 7);
  const note = message(n, (m) => m.channel === "#server-to-user-7", "the event for user 7");
  await sdk.sendToUser("7", "note", { n: 7 });
  const got = await note;
  assert.equal(got.event, "note");
  assert.deepEqual(got.data, { n: 7 });

  const s = client({ id: "s1" });
  await connected(s);
  s.signin();
  await within("signin", s.user.signinDonePromise);
  const forS = within("note", new Promise((resolve) => s.user.bind("note", resolve)));
  await sdk.sendToUser("s1", "note", { once: true });
  assert.deepEqual(await forS, { once: true });
  n.disconnect();
  s.disconnect();
});

// issue #14 item 2: the Node SDK reads counts without asking for them.
test("the Node SDK reads channel counts without info=", async () => {
  const a = client({ id: "c1", user_info: {} });
  const b = client({ id: "c2", user_info: {} });
  await subscribed(a, "counted");
  await subscribed(b, "counted");
  await subscribed(a, "presence-counted");
  const all = await (await sdk.get({ path: "/channels" })).json();
  assert.deepEqual(all.channels["counted"], { occupied: true, subscription_count: 2 });
  assert.deepEqual(all.channels["presence-counted"], { occupied: true, subscription_count: 1 });
  const one = await (await sdk.get({ path: "/channels/counted" })).json();
  assert.deepEqual(one, { occupied: true, subscription_count: 2 });
  const room = await (await sdk.get({ path: "/channels/presence-counted" })).json();
  assert.deepEqual(room, { occupied: true, subscription_count: 1, user_count: 1 });
  const empty = await (await sdk.get({ path: "/channels/presence-nobody" })).json();
  assert.deepEqual(empty, { occupied: false, subscription_count: 0, user_count: 0 });
  a.disconnect();
  b.disconnect();
});

// issue #14 item 5: a refused client event's error fires on its channel.
test("a refused client event's pusher:error is bound on the channel", async () => {
  const c = client();
  const [ch] = await subscribed(c, "private-chatty");
  const err = within("channel error", new Promise((resolve) => ch.bind("pusher:error", resolve)));
  // The client-event rate is 10 per second: the 11th is refused with 4301.
  for (let i = 0; i < 15; i++) ch.trigger("client-x", { i });
  assert.equal((await err).code, 4301);
  c.disconnect();
});

// issue #14 item 7: when pusher-js reports "disconnected", the API already agrees.
test("after disconnected, the channel is no longer occupied", async () => {
  const c = client({ id: "leaver", user_info: {} });
  await subscribed(c, "presence-leave");
  await subscribed(c, "leave-public");
  const gone = within("disconnected", new Promise((resolve) =>
    c.connection.bind("state_change", (s) => s.current === "disconnected" && resolve())));
  c.disconnect();
  await gone;
  const room = await (await sdk.get({ path: "/channels/presence-leave" })).json();
  assert.deepEqual(room, { occupied: false, subscription_count: 0, user_count: 0 });
  const pub = await (await sdk.get({ path: "/channels/leave-public" })).json();
  assert.deepEqual(pub, { occupied: false, subscription_count: 0 });
});

/** A signed Pusher API URL (`auth_*` query) for `method path` with `body`. */
function signedUrl(method, path, body = "") {
  const q = {
    auth_key: APP.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: "1.0",
  };
  if (body) q.body_md5 = createHash("md5").update(body).digest("hex");
  const query = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
  const sig = createHmac("sha256", APP.secret).update(`${method}\n${path}\n${query}`).digest("hex");
  return `http://${server.addr}${path}?${query}&auth_signature=${sig}`;
}

// issue #14 item 1: a page on another origin calls the HTTP surface from Chromium: the
// JSON POST is preflighted (OPTIONS answered 204), then read; the native API stays closed.
test("Chromium: CORS preflight from a page on another origin", { timeout: 60_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`chromium not found at ${CHROMIUM}`);
    return;
  }
  const site = createServer((req, res) => {
    res.setHeader("content-type", "text/html; charset=utf-8");
    res.end("<!doctype html><title>another origin</title>");
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${site.address().port}/`);
    const listener = client();
    const [ch] = await subscribed(listener, "from-browser");
    const arrived = within("the browser's event", new Promise((resolve) => ch.bind("hello", resolve)));
    const body = JSON.stringify({ name: "hello", channel: "from-browser", data: JSON.stringify({ via: "fetch" }) });
    const url = signedUrl("POST", `/apps/${APP.appId}/events`, body);
    const answer = await page.evaluate(async ({ url, body }) => {
      const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
      return [r.status, await r.json()];
    }, { url, body });
    assert.deepEqual(answer, [200, {}]);
    assert.deepEqual(await arrived, { via: "fetch" });
    const health = await page.evaluate(async (u) => (await fetch(u)).json(), `http://${server.addr}/healthz`);
    assert.equal(health.status, "ok");
    const native = await page.evaluate(async (u) => {
      try {
        await fetch(u, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
        return "read";
      } catch (e) {
        return "blocked";
      }
    }, `http://${server.addr}/api/publish`);
    assert.equal(native, "blocked", "the native API is not open to other origins");
    listener.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
