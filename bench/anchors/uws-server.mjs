// Anchor: a broadcast server on uWebSockets.js (the fastest WebSocket server there is),
// for `wspush bench`. Uses @trufflesuite/uws-js-unofficial, which loads on Node 20.
//
//   node uws-server.mjs [PORT]     (default 9002; prints "listening on http://127.0.0.1:PORT")
//
// Subscribers connect to ws://127.0.0.1:PORT/ws (any query is ignored: one topic).
// POST /publish with the payload as the body publishes it to every subscriber as one
// text frame (uWS pub/sub: the frame is built once) and answers 200 "ok". Every message
// a client sends is echoed back to it.
import uWS from '@trufflesuite/uws-js-unofficial';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9002);
const TOPIC = 'bench';

const app = uWS.App();
app.ws('/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20,
  // Large enough that a fan-out burst never skips a subscriber (wspush: 8 MiB per client).
  maxBackpressure: 64 << 20,
  closeOnBackpressureLimit: false,
  idleTimeout: 120,
  open: (ws) => ws.subscribe(TOPIC),
  message: (ws, message, isBinary) => ws.send(message, isBinary),
});
app.post('/publish', (res) => {
  let parts = null;
  res.onAborted(() => {
    res.aborted = true;
  });
  res.onData((chunk, isLast) => {
    if (isLast && parts === null) {
      app.publish(TOPIC, chunk, false);
    } else {
      // The chunk is only valid during this call: copy it.
      (parts ??= []).push(Buffer.from(chunk.slice(0)));
      if (!isLast) return;
      app.publish(TOPIC, Buffer.concat(parts), false);
    }
    if (!res.aborted) res.cork(() => res.end('ok'));
  });
});
app.any('/*', (res) => res.writeStatus('404 Not Found').end());
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`listening on http://127.0.0.1:${uWS.us_socket_local_port(token)}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
