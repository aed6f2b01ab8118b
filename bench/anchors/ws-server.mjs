// Anchor: a broadcast server on npm `ws` (the usual Node choice), for `wspush bench`.
//
//   node ws-server.mjs [PORT]      (default 9001; prints "listening on http://127.0.0.1:PORT")
//
// Subscribers connect to ws://127.0.0.1:PORT/ws (any query is ignored: one channel).
// POST /publish with the payload as the body sends it to every subscriber as one text
// frame and answers 200 "ok". Every message a client sends is echoed back to it.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9001);

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.split('?')[0] === '/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      for (const client of wss.clients) {
        if (client.readyState === 1) client.send(body, { binary: false });
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
    return;
  }
  res.writeHead(404, { 'content-length': 0 });
  res.end();
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, maxPayload: 1 << 20 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', 4096, () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
