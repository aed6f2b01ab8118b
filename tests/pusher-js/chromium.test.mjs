// pusher-js's web build in headless Chromium against wspush: the page is served by a
// separate origin (as real apps are), with an auth endpoint signing via the pusher SDK.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import PusherServer from "pusher";
import { startServer, APP } from "./server.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const require = createRequire(import.meta.url);
const PUSHER_WEB = readFileSync(require.resolve("pusher-js/dist/web/pusher.min.js"), "utf8");

let wspush;
let sdk;
let site;
let siteUrl;
let browser;

function page(ws) {
  return `<!doctype html><meta charset="utf-8"><title>pusher-js</title>
<script>${PUSHER_WEB}</script>
<script>
  window.log = [];
  const pusher = new Pusher(${JSON.stringify(APP.key)}, {
    cluster: "mt1", wsHost: ${JSON.stringify(ws.host)}, wsPort: ${ws.port},
    forceTLS: false, enabledTransports: ["ws"], disableStats: true,
    channelAuthorization: { endpoint: "/pusher/auth" },
  });
  pusher.connection.bind("connected", () => log.push(["connected", pusher.connection.socket_id]));
  const news = pusher.subscribe("news");
  news.bind("pusher:subscription_succeeded", () => log.push(["subscribed", "news"]));
  news.bind("flash", (d) => log.push(["flash", d]));
  const priv = pusher.subscribe("private-web");
  priv.bind("pusher:subscription_succeeded", () => log.push(["subscribed", "private-web"]));
  priv.bind("paid", (d) => log.push(["paid", d]));
  const room = pusher.subscribe("presence-web");
  room.bind("pusher:subscription_succeeded", (m) => log.push(["members", m.count, m.me.id]));
</script>`;
}

/** Reads a urlencoded POST body. */
async function form(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  wspush = await startServer();
  sdk = new PusherServer({
    appId: APP.appId, key: APP.key, secret: APP.secret,
    host: wspush.host, port: String(wspush.port), useTLS: false,
  });
  site = createServer(async (req, res) => {
    if (req.method === "POST" && req.url === "/pusher/auth") {
      const { socket_id, channel_name } = await form(req);
      const presence = channel_name.startsWith("presence-")
        ? { user_id: "web-user", user_info: { name: "Web" } }
        : undefined;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(sdk.authorizeChannel(socket_id, channel_name, presence)));
      return;
    }
    res.setHeader("content-type", "text/html; charset=utf-8");
    res.end(page(wspush));
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  siteUrl = `http://127.0.0.1:${site.address().port}/`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) await browser.close();
  if (site) site.close();
  if (wspush) await wspush.stop();
});

test("pusher-js web build in Chromium: public, private and presence channels", async () => {
  const p = await browser.newPage();
  await p.goto(siteUrl);
  const has = (pred) => p.waitForFunction(pred, null, { timeout: 10_000 });
  await has(() => log.some((e) => e[0] === "connected"));
  const sid = await p.evaluate(() => log.find((e) => e[0] === "connected")[1]);
  assert.match(sid, /^\d+\.\d+$/);
  await has(() => log.filter((e) => e[0] === "subscribed").length === 2);
  await has(() => log.some((e) => e[0] === "members"));
  assert.deepEqual(await p.evaluate(() => log.find((e) => e[0] === "members")), ["members", 1, "web-user"]);
  await sdk.trigger("news", "flash", { from: "node" });
  await sdk.trigger("private-web", "paid", { amount: 3 });
  await has(() => log.some((e) => e[0] === "flash") && log.some((e) => e[0] === "paid"));
  const events = await p.evaluate(() => log.filter((e) => e[0] === "flash" || e[0] === "paid"));
  assert.deepEqual(events, [["flash", { from: "node" }], ["paid", { amount: 3 }]]);
  await p.close();
});
