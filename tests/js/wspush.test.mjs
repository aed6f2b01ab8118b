// Tests of assets/wspush.js (the browser library) in node, with the `ws` package's
// WebSocket, against the real `wspush serve` binary. Every wait is bounded.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  WAIT,
  WebSocket,
  clientsOn,
  loadLibrary,
  startServer,
  theClientOn,
  waitFor,
  within,
} from "./helpers.mjs";

const wspush = loadLibrary();
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  if (server) await server.stop();
});

/** A connection closed when the test ends, whatever happens. */
function open(t, options = {}, url = server.ws) {
  const c = wspush.connect(url, { WebSocket, minDelay: 20, maxDelay: 200, ...options });
  t.after(() => c.close());
  return c;
}

/** Records a connection's state events as [state, info] pairs. */
function recordStates(c) {
  const states = [];
  c.on("state", (state, info) => states.push([state, info]));
  return states;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function publishHttp(channel, data) {
  return (await server.api("POST", "/api/publish", { channel, data })).offset;
}

async function kick(channel) {
  const id = await theClientOn(server, channel);
  await server.api("DELETE", `/api/clients/${id}`);
  return id;
}

test("the script defines globalThis.wspush with connect", () => {
  assert.equal(typeof wspush.connect, "function");
  assert.equal(typeof wspush.WspushError, "function");
  assert.ok(Object.isFrozen(wspush));
});

test("subscribe and publish round trip with offsets", async (t) => {
  const c = open(t);
  const got = [];
  const sub = c.subscribe("room:rt", (data, info) => got.push({ data, ...info }));
  assert.equal(sub.channel, "room:rt");
  const ready = await within("subscribe reply", sub.ready);
  assert.equal(ready.offset, 0, "a new channel starts at offset 0");
  assert.equal(typeof ready.epoch, "string");
  assert.equal(sub.state, "active");

  assert.equal(await within("publish reply", c.publish("room:rt", { text: "from js", n: [1, 2] })), 1);
  assert.equal(await publishHttp("room:rt", "from http"), 2);
  await waitFor("two messages", () => got.length >= 2);
  assert.deepEqual(got, [
    { channel: "room:rt", offset: 1, data: { text: "from js", n: [1, 2] } },
    { channel: "room:rt", offset: 2, data: "from http" },
  ]);
  assert.equal(sub.offset, 2, "the subscription remembers the last offset delivered");

  const history = await within("history", c.history("room:rt", { since: 1 }));
  assert.deepEqual(history.messages, [{ offset: 2, data: "from http" }]);
  assert.equal(history.offset, 2);
  assert.equal(history.epoch, ready.epoch);

  // After unsubscribing nothing more arrives (the next thing seen is a later publish on
  // a second subscription).
  await within("unsubscribe", sub.unsubscribe());
  assert.equal(sub.state, "closed");
  await publishHttp("room:rt", "while unsubscribed");
  const again = [];
  const sub2 = c.subscribe("room:rt", (data, { offset }) => again.push(offset));
  assert.equal((await within("resubscribe", sub2.ready)).offset, 3);
  await publishHttp("room:rt", "after");
  await waitFor("message 4", () => again.length >= 1);
  assert.deepEqual(again, [4]);
  assert.equal(got.length, 2, "the closed subscription got nothing more");
});

test("commands made before the connection opens wait for it", async (t) => {
  const c = open(t);
  assert.equal(c.state, "connecting");
  const offset = c.publish("room:early", "queued");
  const history = c.history("room:early");
  assert.equal(await within("queued publish", offset), 1);
  assert.deepEqual((await within("queued history", history)).messages, [{ offset: 1, data: "queued" }]);
});

test("a subscription can start from a known offset", async (t) => {
  for (let i = 1; i <= 4; i++) await publishHttp("room:since", `m${i}`);
  const { epoch } = await server.api("GET", "/api/history/room:since");
  const c = open(t);
  const got = [];
  const sub = c.subscribe("room:since", (data, { offset }) => got.push([offset, data]), { since: 2, epoch });
  await within("subscribe", sub.ready);
  await waitFor("replayed messages", () => got.length >= 2);
  assert.deepEqual(got, [
    [3, "m3"],
    [4, "m4"],
  ]);
});

test("errors reject with the server's code and the connection keeps working", async (t) => {
  const c = open(t);
  const errors = [];
  c.on("error", (e) => errors.push(e));

  await assert.rejects(c.publish("ro:x", 1), (e) => {
    assert.ok(e instanceof wspush.WspushError);
    assert.equal(e.code, "forbidden");
    assert.match(e.message, /may not publish/);
    return true;
  });

  const onError = [];
  const locked = c.subscribe("locked:x", () => assert.fail("no message expected"), { onError: (e) => onError.push(e) });
  await assert.rejects(within("refused subscribe", locked.ready), { code: "forbidden" });
  assert.equal(locked.state, "closed");
  assert.equal(onError.length, 1);
  assert.equal(onError[0].code, "forbidden");

  await assert.rejects(c.presence("ro:x"), { code: "not_available" });
  for (let i = 0; i < 5; i++) await publishHttp("small:errs", i);
  await assert.rejects(c.history("small:errs", { since: 0 }), (e) => {
    assert.equal(e.code, "history_gone");
    assert.equal(e.oldest, 3, "history_gone carries the oldest offset still stored");
    return true;
  });

  // Caught before anything is sent.
  await assert.rejects(c.publish("", 1), { code: "bad_request" });
  await assert.rejects(c.publish("room:x"), { code: "bad_request" });
  c.subscribe("room:twice", () => {});
  assert.throws(() => c.subscribe("room:twice", () => {}), { code: "already_subscribed" });

  // Still open and working.
  assert.equal(await c.publish("room:errs-ok", "fine"), 1);
  assert.equal(c.state, "open");
  assert.deepEqual(errors, [], "nothing went to the error event");
});

test("presence lists and join/leave callbacks", async (t) => {
  const a = open(t);
  const b = open(t);
  const joins = [];
  const leaves = [];
  const subA = a.subscribe("room:p", () => {}, { onJoin: (m) => joins.push(m), onLeave: (m) => leaves.push(m) });
  await within("a subscribed", subA.ready);
  const aId = await theClientOn(server, "room:p");

  let subB = b.subscribe("room:p", () => {}, { onJoin: () => assert.fail("b saw a join") });
  await within("b subscribed", subB.ready);
  const bId = (await clientsOn(server, "room:p")).find((id) => id !== aId);
  assert.ok(bId, "b is listed by the API");
  await waitFor("a sees b join", () => joins.length >= 1);
  assert.deepEqual(joins, [{ channel: "room:p", client: bId }]);

  const ids = (list) => list.map((m) => m.client).sort();
  const fromA = await within("presence from a", a.presence("room:p"));
  const fromB = await within("presence from b", b.presence("room:p"));
  assert.deepEqual(ids(fromA), [aId, bId].sort());
  assert.deepEqual(ids(fromB), [aId, bId].sort());
  assert.ok(fromA.every((m) => m.user === null), "anonymous members have user null");

  await within("b unsubscribes", subB.unsubscribe());
  await waitFor("a sees b leave", () => leaves.length >= 1);
  assert.deepEqual(leaves, [{ channel: "room:p", client: bId }]);

  subB = b.subscribe("room:p", () => {});
  await within("b subscribes again", subB.ready);
  await waitFor("second join", () => joins.length >= 2);
  b.close();
  await waitFor("a sees b leave on close", () => leaves.length >= 2);
  assert.deepEqual(leaves[1], { channel: "room:p", client: bId });
  assert.deepEqual(ids(await a.presence("room:p")), [aId]);
});

test("pushes outside any subscription go to the message event", async (t) => {
  const c = open(t);
  const direct = [];
  c.on("message", (data, info) => direct.push({ data, ...info }));
  const sub = c.subscribe("room:direct", () => {});
  await within("subscribed", sub.ready);
  const id = await theClientOn(server, "room:direct");
  await server.api("POST", "/api/send", { client: id, data: { hello: "you" } });
  await waitFor("a direct message", () => direct.length >= 1);
  assert.deepEqual(direct, [{ channel: id, offset: 0, data: { hello: "you" } }]);
});

test("state events: open, reconnecting (with the close code) and closed", async (t) => {
  const c = open(t);
  assert.equal(c.state, "connecting");
  const states = recordStates(c);
  const sub = c.subscribe("room:states", () => {});
  await within("subscribed", sub.ready);
  assert.deepEqual(states, [["connecting", {}], ["open", {}]]);

  await kick("room:states");
  await waitFor("reconnected", () => states.length >= 4);
  const [state, info] = states[2];
  assert.equal(state, "reconnecting");
  assert.equal(info.code, 1008, "DELETE /api/clients/{id} closes with 1008");
  assert.equal(info.reason, "disconnected by the server");
  assert.ok(info.delay >= 20 && info.delay <= 200, `delay ${info.delay} within min/max`);
  assert.equal(states[3][0], "open");

  c.close();
  assert.equal(c.state, "closed");
  assert.deepEqual(states.map((s) => s[0]), ["connecting", "open", "reconnecting", "open", "closed"]);
});

test("forced disconnects under continuous publishing: every message once, in order", async (t) => {
  const channel = "room:race";
  const KICKS = 4;
  const c = open(t);
  const states = recordStates(c);
  const got = [];
  const sub = c.subscribe(channel, (data, { offset }) => got.push({ offset, data }));
  await within("subscribed", sub.ready);

  // The publisher keeps going (over HTTP) until every kick happened and 300 were sent.
  let published = 0;
  let kicks = 0;
  const publishedAt = []; // [state, published] at each state change
  c.on("state", (s) => publishedAt.push([s, published]));
  const publisher = (async () => {
    while ((kicks < KICKS || published < 300) && published < 20_000) {
      const offset = await publishHttp(channel, { n: published + 1 });
      assert.equal(offset, published + 1, "HTTP publish returns the next offset");
      published = offset;
    }
  })();

  for (let k = 1; k <= KICKS; k++) {
    const before = got.length;
    await waitFor(`messages before kick ${k}`, () => sub.state === "active" && got.length >= before + 25);
    await kick(channel);
    kicks = k;
    await waitFor(`reconnecting after kick ${k}`, () => states.filter(([s]) => s === "reconnecting").length >= k);
  }
  await within("publisher", publisher, 60_000);
  await waitFor(`all ${published} messages`, () => got.length >= published && sub.state === "active");

  assert.deepEqual(
    got.map((m) => m.offset),
    range(1, published),
    "the application saw every offset once, in order",
  );
  assert.deepEqual(
    got.map((m) => m.data.n),
    range(1, published),
  );
  assert.equal(states.filter(([s]) => s === "open").length, KICKS + 1, "reconnected after each kick");
  // Messages really were published while the client was away (so `since` recovered them).
  const missed = publishedAt.some(([s, n], i) => s === "open" && i > 0 && n > publishedAt[i - 1][1]);
  assert.ok(missed, `nothing was published while disconnected: ${JSON.stringify(publishedAt)}`);
});

test("history_gone: onReset is called, then live messages continue", async (t) => {
  const channel = "small:gone"; // keeps 3 messages
  // A long reconnect delay keeps the client away while messages are published.
  const c = open(t, { minDelay: 2000, maxDelay: 2000 });
  const states = recordStates(c);
  const got = [];
  const resets = [];
  const sub = c.subscribe(channel, (data, { offset }) => got.push(offset), {
    onReset: (r) => resets.push({ ...r, seenBefore: got.length }),
  });
  await within("subscribed", sub.ready);
  await publishHttp(channel, 1);
  await publishHttp(channel, 2);
  await waitFor("two messages", () => got.length >= 2);

  await kick(channel);
  await waitFor("reconnecting", () => c.state === "reconnecting");
  for (let i = 3; i <= 8; i++) await publishHttp(channel, i);
  assert.equal(c.state, "reconnecting", "the test needs the client away while publishing");

  await waitFor("onReset", () => resets.length >= 1, WAIT);
  assert.deepEqual(resets, [{ channel, oldest: 6, offset: 8, seenBefore: 2 }]);
  await waitFor("resubscribed", () => sub.state === "active");
  assert.equal(sub.offset, 8, "resubscribed from the current offset");
  await publishHttp(channel, 9);
  await waitFor("message 9", () => got.length >= 3);
  assert.deepEqual(got, [1, 2, 9]);
  assert.deepEqual(states.map((s) => s[0]), ["connecting", "open", "reconnecting", "open"]);
});

test("a server restart (new epoch) resets the subscription and offsets start over", async (t) => {
  const first = await startServer();
  let second;
  t.after(async () => {
    await first.stop();
    if (second) await second.stop();
  });
  const c = open(t, { minDelay: 50, maxDelay: 100 }, first.ws);
  const states = recordStates(c);
  const got = [];
  const resets = [];
  const sub = c.subscribe("room:restart", (data) => got.push(data), { onReset: (r) => resets.push(r) });
  await within("subscribed", sub.ready);
  for (let i = 1; i <= 3; i++) await c.publish("room:restart", `old ${i}`);
  await waitFor("three messages", () => got.length >= 3);

  await first.stop();
  await waitFor("reconnecting", () => c.state === "reconnecting");
  assert.equal(states[2][1].code, 1001, "a shutting-down server closes with 1001");
  second = await startServer({ port: first.port });
  await waitFor("onReset after the restart", () => resets.length >= 1);
  assert.deepEqual(resets, [{ channel: "room:restart", oldest: 1, offset: 0 }]);
  await waitFor("resubscribed", () => sub.state === "active" && c.state === "open");
  assert.equal(await c.publish("room:restart", "new 1"), 1, "the new server starts at offset 1");
  await waitFor("the new message", () => got.length >= 4);
  assert.deepEqual(got, ["old 1", "old 2", "old 3", "new 1"], "offset 1 again is not taken for a duplicate");
});

test("commands made while reconnecting are sent after the reconnect", async (t) => {
  const c = open(t, { minDelay: 300, maxDelay: 300 });
  const sub = c.subscribe("room:queued", () => {});
  await within("subscribed", sub.ready);
  await c.publish("room:queued", "one");
  await kick("room:queued");
  await waitFor("reconnecting", () => c.state === "reconnecting");
  const presence = c.presence("room:queued");
  const history = c.history("room:queued");
  const members = await within("presence after reconnect", presence);
  assert.equal(members.length, 1);
  assert.deepEqual((await within("history after reconnect", history)).messages, [{ offset: 1, data: "one" }]);
  assert.equal(c.state, "open");
});

test("a connection that silently stops delivering is detected by the ping and replaced", async (t) => {
  const sockets = [];
  /** A WebSocket that can go deaf: frames still arrive but are never delivered. */
  class Deafening extends WebSocket {
    constructor(...args) {
      super(...args);
      this.deaf = false;
      sockets.push(this);
    }
    get onmessage() {
      return super.onmessage;
    }
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => this.deaf || fn(ev));
    }
  }
  const c = open(t, { WebSocket: Deafening, pingInterval: 150 });
  const states = recordStates(c);
  const got = [];
  const sub = c.subscribe("room:deaf", (data) => got.push(data));
  await within("subscribed", sub.ready);
  sockets[0].deaf = true;
  await publishHttp("room:deaf", "while deaf");
  await waitFor("reconnected", () => states.length >= 4, 5_000);
  assert.deepEqual(states[2][0], "reconnecting");
  assert.equal(states[2][1].code, 4000);
  assert.equal(states[3][0], "open");
  await waitFor("recovered message", () => got.length >= 1);
  assert.deepEqual(got, ["while deaf"]);
  assert.equal(sockets.length, 2);
});

test("close() stops reconnecting and rejects what was waiting", async (t) => {
  let made = 0;
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      made += 1;
    }
  }
  // Close while open: the in-flight command rejects, the server sees the client go.
  const c = open(t, { WebSocket: Counting });
  const sub = c.subscribe("room:close", () => {});
  await within("subscribed", sub.ready);
  const inflight = c.publish("room:close", "x");
  c.close();
  assert.equal(c.state, "closed");
  await assert.rejects(inflight, { code: "closed" });
  assert.equal(sub.state, "closed");
  await assert.rejects(c.publish("room:close", "y"), { code: "closed" });
  assert.throws(() => c.subscribe("room:close", () => {}), { code: "closed" });
  await waitFor("the server saw the client leave", async () => (await clientsOn(server, "room:close")).length === 0);

  // Close before the first attempt: none is made.
  const early = wspush.connect(server.ws, { WebSocket: Counting });
  const earlyStates = recordStates(early);
  early.close();
  await new Promise((r) => setImmediate(r)); // past the microtask that would connect
  assert.equal(made, 1);
  assert.deepEqual(earlyStates.map((s) => s[0]), ["closed"]);

  // Subscribing from the `open` listener works (no double subscribe on the way up).
  const e = open(t);
  const fromListener = [];
  e.on("state", (state) => {
    if (state === "open" && fromListener.length === 0) {
      fromListener.push(e.subscribe("room:from-listener", () => {}));
    }
  });
  await waitFor("open", () => fromListener.length === 1);
  await within("subscribed from the listener", fromListener[0].ready);

  // Close while waiting to reconnect: no further connection attempt.
  const d = open(t, { WebSocket: Counting, minDelay: 150, maxDelay: 150 });
  const states = recordStates(d);
  const subD = d.subscribe("room:close2", () => {});
  await within("subscribed", subD.ready);
  const madeBefore = made;
  await kick("room:close2");
  await waitFor("reconnecting", () => d.state === "reconnecting");
  const queued = d.presence("room:close2");
  d.close();
  await assert.rejects(queued, { code: "closed" });
  // Watch for three reconnect delays: nothing may connect again.
  await new Promise((r) => setTimeout(r, 450));
  assert.equal(made, madeBefore, "no connection attempt after close()");
  assert.deepEqual(states.map((s) => s[0]), ["connecting", "open", "reconnecting", "closed"]);
});
