// issue #14 items 9, 10 and 12 through pusher-js 8 and the pusher Node SDK 5: Pusher's
// documented limits hit from the SDK (HTTP 413/400 with a JSON body) and from the client
// (subscription error, pusher:error 4301, 4004 over quota), subscription counts and
// watchlist events.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import PusherJs from "pusher-js";
import PusherServer from "pusher";
import { startServer, APP } from "./server.mjs";

// App 2: subscription counts on, at most 2 connections.
const COUNTED = { appId: "2", key: "counted-key", secret: "counted-secret" };
const config = path.join(os.tmpdir(), `wspush-limits-${process.pid}.toml`);
let server;
let sdk;
const clients = [];

before(async () => {
  fs.writeFileSync(
    config,
    `[[apps]]\nid = "2"\nkey = "${COUNTED.key}"\nsecret = "${COUNTED.secret}"\n` +
      `subscription_count = true\nmax_connections = 2\n`,
  );
  server = await startServer(["--config", config]);
  sdk = sdkOf(APP);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
  fs.rmSync(config, { force: true });
});

function sdkOf(app) {
  return new PusherServer({
    appId: app.appId,
    key: app.key,
    secret: app.secret,
    host: server.host,
    port: String(server.port),
    useTLS: false,
  });
}

function client(app = APP, user = { id: "u1" }) {
  const signer = sdkOf(app);
  const c = new PusherJs(app.key, {
    cluster: "mt1",
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, signer.authorizeChannel(socketId, channelName)),
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, signer.authenticateUser(socketId, user)),
    },
  });
  clients.push(c);
  return c;
}

const next = (target, event) => new Promise((resolve) => target.bind(event, resolve));

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", reject);
  });
}

async function refused(promise) {
  const err = await promise.then(
    () => assert.fail("accepted"),
    (e) => e,
  );
  return { status: err.status, body: JSON.parse(err.body) };
}

test("SDK: a payload over 10 KB and a batch over 10 events get JSON errors", async () => {
  const big = await refused(sdk.trigger("news", "big", "x".repeat(10 * 1024 + 1)));
  assert.deepEqual(big, {
    status: 413,
    body: { error: { code: "too_large", message: "event data is 10241 bytes; the limit is 10240" } },
  });
  const batch = Array.from({ length: 11 }, (_, i) => ({ channel: `c${i}`, name: "e", data: "x" }));
  const tooMany = await refused(sdk.triggerBatch(batch));
  assert.equal(tooMany.status, 413);
  assert.equal(tooMany.body.error.message, "11 events; at most 10 per batch");
  const longName = await refused(sdk.trigger("c".repeat(165), "e", "x"));
  assert.equal(longName.status, 400);
  assert.equal(longName.body.error.message, "channel name longer than 164 bytes");
});

test("pusher-js: a 165-character channel name is a subscription error", async () => {
  const c = client();
  const ok = await subscribed(c, "a".repeat(164));
  assert.equal(ok.subscribed, true);
  const err = await subscribed(c, "b".repeat(165)).then(
    () => assert.fail("subscribed"),
    (e) => e,
  );
  assert.equal(err.status, 400);
  assert.equal(err.error, "channel name longer than 164 bytes");
});

test("pusher-js: a client event over 10 KB gets pusher:error 4301", async () => {
  const c = client();
  const ch = await subscribed(c, "private-big");
  const error = next(c.connection, "error");
  assert.equal(ch.trigger("client-big", { blob: "x".repeat(10 * 1024) }), true);
  const { type, data } = await error;
  assert.equal(type, "PusherError");
  assert.equal(data.code, 4301);
  assert.equal(data.message, "Event data is too large: at most 10240 bytes");
});

test("pusher-js: subscription counts, then 4004 over the app's connection quota", async () => {
  const a = client(COUNTED);
  // The count follows subscription_succeeded in the same read: bind before.
  const cha = a.subscribe("counted");
  const first = next(cha, "pusher:subscription_count");
  assert.deepEqual(await first, { subscription_count: 1 });
  const b = client(COUNTED);
  const second = next(cha, "pusher:subscription_count");
  b.subscribe("counted");
  // Debounced: the second change on this node is told at the end of its window.
  assert.deepEqual(await second, { subscription_count: 2 });
  assert.equal(cha.subscriptionCount, 2);
  // A third connection of app 2 is over its quota of 2.
  const c = client(COUNTED);
  const { type, error } = await next(c.connection, "error");
  assert.equal(type, "WebSocketError");
  assert.deepEqual(error.data, { code: 4004, message: "App over connection quota" });
});

test("pusher-js: watchlist online and offline events", async () => {
  const watcher = client(APP, { id: "watcher", watchlist: ["friend"] });
  watcher.signin();
  await watcher.user.signinDonePromise;
  const online = next(watcher.user.watchlist, "online");
  const friend = client(APP, { id: "friend" });
  friend.signin();
  await friend.user.signinDonePromise;
  assert.deepEqual((await online).user_ids, ["friend"]);
  const offline = next(watcher.user.watchlist, "offline");
  friend.disconnect();
  assert.deepEqual((await offline).user_ids, ["friend"]);
});
