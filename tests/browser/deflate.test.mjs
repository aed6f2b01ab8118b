// permessage-deflate with a real browser (issue #15 part 2): headless Chromium offers
// permessage-deflate by default; against `wspush serve --compression on --upstream echo`
// the page's WebSocket agrees on it, its compressed messages are echoed back intact, and
// a publish reaches it (compressed) with exactly the published data.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { CHROMIUM, WAIT, WSPUSH_BIN, startServer } from "./helpers.mjs";


let server; // { base, stop }
let browser;

/** One value of the server's /metrics. */
async function metric(name) {
  const res = await fetch(server.base + "/metrics", { signal: AbortSignal.timeout(WAIT) });
  const line = (await res.text()).split("\n").find((l) => l.split(" ")[0] === name);
  assert.ok(line, `no metric ${name}`);
  return Number(line.split(" ")[1]);
}

before(async () => {
  assert.ok(existsSync(WSPUSH_BIN), `server binary not found at ${WSPUSH_BIN} (run \`cargo build\` or set WSPUSH_BIN)`);
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = await startServer(["--compression", "on", "--upstream", "echo"]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) {
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  }
  if (server) await server.stop();
}, { timeout: 30_000 });

// issue #15 part 2: Chromium's default offer is accepted; echo and fan-out are exact.
test("Chromium negotiates permessage-deflate; echo and publish arrive intact", { timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  const response = await page.goto(server.base + "/", { timeout: WAIT });
  assert.equal(response.status(), 200);

  // Open a raw-mode socket subscribed to "news"; keep every message in the page.
  const extensions = await page.evaluate(
    (wait) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws?channels=news`);
        window.__ws = ws;
        window.__got = [];
        ws.onmessage = (e) => window.__got.push(e.data);
        ws.onopen = () => resolve(ws.extensions);
        ws.onerror = () => reject(new Error("websocket error"));
        setTimeout(() => reject(new Error("websocket did not open")), wait);
      }),
    WAIT,
  );
  assert.equal(extensions, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");

  // A large, repetitive message goes out compressed and comes back (echo) the same.
  const big = JSON.stringify({ rows: Array.from({ length: 500 }, (_, i) => ({ id: i, symbol: "ACME", bid: 100 + (i % 7) })) });
  await page.evaluate((text) => window.__ws.send(text), big);
  await page.waitForFunction(() => window.__got.length >= 1, null, { timeout: WAIT });
  assert.equal(await page.evaluate(() => window.__got[0]), big);

  // A publish over the HTTP API reaches the page as published.
  const data = { symbol: "ACME", price: 101.5, note: "é".repeat(200) };
  const res = await fetch(server.base + "/api/publish", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: "news", data }),
    signal: AbortSignal.timeout(WAIT),
  });
  assert.equal(res.status, 200, await res.text());
  await page.waitForFunction(() => window.__got.length >= 2, null, { timeout: WAIT });
  assert.deepEqual(JSON.parse(await page.evaluate(() => window.__got[1])), data);

  // The echo and the publish were deflated, and the wire carried far less than the text.
  assert.ok((await metric("wspush_deflate_total")) >= 1);
  const bytesOut = await metric("wspush_bytes_out_total");
  assert.ok(bytesOut < big.length / 3, `bytes out ${bytesOut} for ${big.length} bytes of echo`);
  await page.close();
});
