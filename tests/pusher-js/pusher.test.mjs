// pusher-js 8 (node build), Laravel Echo 2 and the pusher Node SDK 5 against wspush.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import PusherJs from "pusher-js";
import PusherServer from "pusher";
import Echo from "laravel-echo";
import { startServer, APP } from "./server.mjs";

let server;
let sdk;
const clients = [];

before(async () => {
  server = await startServer();
  sdk = new PusherServer({
    appId: APP.appId,
    key: APP.key,
    secret: APP.secret,
    host: server.host,
    port: String(server.port),
    useTLS: false,
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
});

/** Options pointing pusher-js (or Echo) at wspush, signing with the server SDK. */
function options(user = { id: "u1", user_info: { name: "User 1" } }) {
  return {
    cluster: "mt1",
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
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
        callback(null, sdk.authenticateUser(socketId, { id: user.id, name: "signed in" }));
      },
    },
  };
}

function client(user) {
  const c = new PusherJs(APP.key, options(user));
  clients.push(c);
  return c;
}

const next = (target, event) => new Promise((resolve) => target.bind(event, resolve));

function connected(c) {
  if (c.connection.state === "connected") return Promise.resolve();
  return new Promise((resolve) => c.connection.bind("connected", resolve));
}

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", (data) => resolve([ch, data]));
    ch.bind("pusher:subscription_error", reject);
  });
}

/** Resolves false when `event` does not fire on `target` within `ms`. */
function silent(target, event, ms = 300) {
  return new Promise((resolve) => {
    const cb = () => resolve(false);
    target.bind(event, cb);
    setTimeout(() => {
      target.unbind(event, cb);
      resolve(true);
    }, ms);
  });
}

test("connects with a socket id", async () => {
  const c = client();
  await connected(c);
  assert.match(c.connection.socket_id, /^\d+\.\d+$/);
});

test("public channel: SDK trigger, socket_id exclusion, batch", async () => {
  const a = client();
  const b = client();
  const [cha] = await subscribed(a, "news");
  const [chb] = await subscribed(b, "news");
  const got = next(cha, "flash");
  await sdk.trigger("news", "flash", { x: 1 });
  assert.deepEqual(await got, { x: 1 });

  const toB = next(chb, "excl");
  const notA = silent(cha, "excl");
  await sdk.trigger("news", "excl", "hi", { socket_id: a.connection.socket_id });
  assert.equal(await toB, "hi");
  assert.equal(await notA, true, "the excluded socket got nothing");

  const one = next(cha, "b1");
  const two = next(cha, "b2");
  await sdk.triggerBatch([
    { channel: "news", name: "b1", data: "1" },
    { channel: "news", name: "b2", data: { two: 2 } },
  ]);
  assert.equal(await one, 1);
  assert.deepEqual(await two, { two: 2 });
});

test("private channel: signed subscription, refused forgery", async () => {
  const a = client();
  const [ch] = await subscribed(a, "private-orders");
  const got = next(ch, "paid");
  await sdk.trigger("private-orders", "paid", { id: 7 });
  assert.deepEqual(await got, { id: 7 });

  const forger = new PusherJs(APP.key, {
    ...options(),
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, { auth: `${APP.key}:${"0".repeat(64)}` }),
    },
  });
  clients.push(forger);
  const err = await subscribed(forger, "private-orders").then(
    () => assert.fail("forged auth accepted"),
    (e) => e,
  );
  assert.equal(err.type, "AuthError");
  assert.equal(err.status, 401);
});

test("presence: members, join and leave counted by user", async () => {
  const alice = client({ id: "alice", user_info: { name: "Alice" } });
  const [cha] = await subscribed(alice, "presence-room");
  assert.equal(cha.members.count, 1);
  assert.equal(cha.members.me.id, "alice");

  const bob = client({ id: "bob", user_info: { name: "Bob" } });
  const added = next(cha, "pusher:member_added");
  const [chb] = await subscribed(bob, "presence-room");
  assert.equal(chb.members.count, 2);
  const member = await added;
  assert.deepEqual([member.id, member.info], ["bob", { name: "Bob" }]);

  // Bob's second connection adds no member.
  const bob2 = client({ id: "bob", user_info: { name: "Bob" } });
  const noAdd = silent(cha, "pusher:member_added");
  await subscribed(bob2, "presence-room");
  assert.equal(await noAdd, true);
  assert.equal(cha.members.count, 2);

  const users = await (await sdk.get({ path: "/channels/presence-room/users" })).json();
  assert.deepEqual(users, { users: [{ id: "alice" }, { id: "bob" }] });

  bob2.disconnect();
  assert.equal(await silent(cha, "pusher:member_removed"), true, "bob is still there");
  const removed = next(cha, "pusher:member_removed");
  bob.disconnect();
  assert.equal((await removed).id, "bob");
  assert.equal(cha.members.count, 1);
});

test("cache channel: last event replayed, cache_miss when empty", async () => {
  const a = client();
  const miss = new Promise((resolve) => a.subscribe("cache-empty").bind("pusher:cache_miss", resolve));
  await miss;
  await sdk.trigger("cache-price", "price", { v: 42 });
  const b = client();
  const ch = b.subscribe("cache-price");
  assert.deepEqual(await next(ch, "price"), { v: 42 });
});

test("client events reach others but not the sender", async () => {
  const a = client();
  const b = client();
  const [cha] = await subscribed(a, "private-chat");
  const [chb] = await subscribed(b, "private-chat");
  const got = next(chb, "client-typing");
  const echo = silent(cha, "client-typing");
  assert.equal(cha.trigger("client-typing", { on: true }), true);
  assert.deepEqual(await got, { on: true });
  assert.equal(await echo, true, "not echoed to the sender");
});

test("sign-in, send to user, terminate", async () => {
  const c = client({ id: "u42" });
  await connected(c);
  c.signin();
  await c.user.signinDonePromise;
  assert.equal(c.user.user_data.id, "u42");
  const got = next(c.user, "note");
  // The user channel subscription follows the sign-in; retry until it is live.
  let data;
  for (let i = 0; i < 50 && data === undefined; i++) {
    await sdk.sendToUser("u42", "note", { hi: true });
    data = await Promise.race([got, new Promise((r) => setTimeout(r, 100))]);
  }
  assert.deepEqual(data, { hi: true });

  const error = new Promise((resolve) => c.connection.bind("error", resolve));
  await sdk.terminateUserConnections("u42");
  const e = await error;
  assert.equal(e.data.code, 4009);
});

test("HTTP queries: channels, channel info, users", async () => {
  const a = client({ id: "q", user_info: {} });
  await subscribed(a, "presence-q");
  await subscribed(a, "q-public");
  const all = await (await sdk.get({ path: "/channels" })).json();
  assert.ok("presence-q" in all.channels && "q-public" in all.channels, JSON.stringify(all));
  const presence = await (
    await sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-q", info: "user_count" } })
  ).json();
  // issue #14 item 2: occupied and subscription_count come without asking.
  assert.deepEqual(presence, { channels: { "presence-q": { occupied: true, subscription_count: 1, user_count: 1 } } });
  const info = await (
    await sdk.get({ path: "/channels/q-public", params: { info: "subscription_count" } })
  ).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  await assert.rejects(
    new PusherServer({ ...sdk.config, appId: APP.appId, key: APP.key, secret: "wrong", host: server.host, port: String(server.port), useTLS: false })
      .trigger("x", "y", 1),
    (e) => e.status === 401,
  );
});

function echo(user) {
  const e = new Echo({ broadcaster: "pusher", key: APP.key, Pusher: PusherJs, ...options(user) });
  clients.push(e.connector.pusher);
  return e;
}

test("Laravel Echo: listen, private, join, whisper", async () => {
  const e1 = echo({ id: "e1", user_info: { name: "One" } });
  const e2 = echo({ id: "e2", user_info: { name: "Two" } });

  const shipped = new Promise((resolve) => e1.channel("orders").listen("OrderShipped", resolve));
  await new Promise((resolve) => e1.connector.pusher.channel("orders").bind("pusher:subscription_succeeded", resolve));
  await sdk.trigger("orders", "App\\Events\\OrderShipped", { order: 1 });
  assert.deepEqual(await shipped, { order: 1 });

  const paid = new Promise((resolve) => e1.private("orders.1").listen(".paid", resolve));
  await new Promise((resolve) => e1.connector.pusher.channel("private-orders.1").bind("pusher:subscription_succeeded", resolve));
  await sdk.trigger("private-orders.1", "paid", { ok: true });
  assert.deepEqual(await paid, { ok: true });

  const here1 = new Promise((resolve) => {
    const room = e1.join("chat");
    room.here(resolve);
    e1.room = room;
  });
  assert.deepEqual(await here1, [{ name: "One" }]);
  const joining = new Promise((resolve) => e1.room.joining(resolve));
  const whisper = new Promise((resolve) => e1.room.listenForWhisper("typing", resolve));
  const here2 = await new Promise((resolve) => {
    const room = e2.join("chat");
    room.here(resolve);
    e2.room = room;
  });
  assert.equal(here2.length, 2);
  assert.deepEqual(await joining, { name: "Two" });
  e2.room.whisper("typing", { who: "e2" });
  assert.deepEqual(await whisper, { who: "e2" });
  const leaving = new Promise((resolve) => e1.room.leaving(resolve));
  e2.leave("chat");
  assert.deepEqual(await leaving, { name: "Two" });
  e1.disconnect();
  e2.disconnect();
});
