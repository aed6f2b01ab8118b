// Smoke check of a Pusher-protocol server started by start.sh (soketi or sockudo):
//  1. a subscriber connects to /app/app-key?protocol=7 (first frame must be
//     pusher:connection_established) and subscribes to `bench`;
//  2. one event is published through the signed HTTP API (POST /apps/1/events) and the
//     subscriber must receive it;
//  3. client events: two sockets join `private-bench` (channel auth signed here) and a
//     `client-ping` sent by one must reach the other.
//
//   node verify.mjs PORT          (app id 1, key app-key, secret app-secret)
//
// Exits 0 on success, 1 on failure or after 10 s.
import { createHash, createHmac } from 'node:crypto';
import WebSocket from 'ws';

const port = Number(process.argv[2] ?? 6001);
const APP_ID = '1';
const KEY = 'app-key';
const SECRET = 'app-secret';
const base = `127.0.0.1:${port}`;

const fail = (msg) => {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
};
setTimeout(() => fail('timed out after 10 s'), 10_000).unref();

const hmac = (text) => createHmac('sha256', SECRET).update(text).digest('hex');

// Pusher HTTP API signature: auth_signature = HMAC-SHA256(secret,
// "POST\n/apps/ID/events\n" + sorted query string without auth_signature).
function signedPath(path, body) {
  const params = {
    auth_key: KEY,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: createHash('md5').update(body).digest('hex'),
  };
  const query = Object.keys(params)
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join('&');
  return `${path}?${query}&auth_signature=${hmac(`POST\n${path}\n${query}`)}`;
}

// A socket with a queue of parsed frames and `next(pred)` to await one.
function connect(label) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${base}/app/${KEY}?protocol=7&client=js&version=8.4.0`);
    const frames = [];
    const waiters = [];
    ws.on('error', (e) => fail(`${label}: websocket error: ${e.message}`));
    ws.on('close', (code) => fail(`${label}: websocket closed (${code})`));
    ws.on('message', (raw) => {
      const text = raw.toString();
      console.log(`${label} <- ${text}`);
      const msg = JSON.parse(text);
      const i = waiters.findIndex((w) => w.pred(msg));
      if (i >= 0) waiters.splice(i, 1)[0].resolve(msg);
      else frames.push(msg);
    });
    const next = (pred) => {
      const i = frames.findIndex(pred);
      if (i >= 0) return Promise.resolve(frames.splice(i, 1)[0]);
      return new Promise((res) => waiters.push({ pred, resolve: res }));
    };
    const send = (obj) => {
      const text = JSON.stringify(obj);
      console.log(`${label} -> ${text}`);
      ws.send(text);
    };
    const close = () => {
      ws.removeAllListeners('close');
      ws.close();
    };
    resolve({ next, send, close, first: () => next(() => true) });
  });
}

const a = await connect('A');
const hello = await a.first();
if (hello.event !== 'pusher:connection_established') fail('first frame is not pusher:connection_established');
const socketA = JSON.parse(hello.data).socket_id;

a.send({ event: 'pusher:subscribe', data: { channel: 'bench' } });
await a.next((m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === 'bench');

const body = JSON.stringify({ name: 'm', channels: ['bench'], data: 'hello' });
const path = `/apps/${APP_ID}/events`;
const got = a.next((m) => m.event === 'm' && m.channel === 'bench');
const res = await fetch(`http://${base}${signedPath(path, body)}`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body,
});
console.log(`POST ${path} -> ${res.status} ${await res.text()}`);
if (!res.ok) fail('publish was refused');
const ev = await got;
const data = typeof ev.data === 'string' ? ev.data : JSON.stringify(ev.data);
if (data !== 'hello') fail(`unexpected data ${data}`);
console.log('OK: subscriber received event m on bench with data "hello"');

// Client events on a private channel.
const b = await connect('B');
const helloB = await b.first();
const socketB = JSON.parse(helloB.data).socket_id;
for (const [c, sid] of [[a, socketA], [b, socketB]]) {
  const auth = `${KEY}:${hmac(`${sid}:private-bench`)}`;
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-bench', auth } });
  await c.next((m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === 'private-bench');
}
const gotClient = b.next((m) => m.event === 'client-ping' && m.channel === 'private-bench');
a.send({ event: 'client-ping', channel: 'private-bench', data: { n: 1 } });
await gotClient;
console.log('OK: client event client-ping reached the other subscriber');
a.close();
b.close();
process.exit(0);
