// End-to-end test of the demo page's JSON-mode panel (wspush.js) in real headless
// Chromium: two pages join the same presence channel and see each other; one is
// disconnected by the server API while messages keep being published over HTTP; it
// reconnects by itself and its log ends with every message, in order, exactly once.
// Screenshots go to tests/browser/output/.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, WAIT, WSPUSH_BIN, startServer, waitFor } from "./helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const OUTPUT_DIR = path.join(here, "output");
const CHANNEL = "room:demo";

const CONFIG = `
[[namespaces]]
prefix = "room:"
history_size = 1000
presence = true
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

/** Ids of the JSON-mode clients subscribed to CHANNEL. */
async function clientsOnChannel() {
  const { clients } = await api("GET", "/api/clients");
  return clients.filter((c) => c.mode === "json" && c.channels.includes(CHANNEL)).map((c) => c.id);
}

/** The channel card of CHANNEL on a page. */
const card = (page) => page.locator(`#json-channels [data-channel="${CHANNEL}"]`);

/** The [offset, text] pairs of a page's message log for CHANNEL. */
function messageLog(page) {
  return card(page)
    .locator(".messages li[data-offset]")
    .evaluateAll((lis) => lis.map((li) => [Number(li.dataset.offset), li.querySelector(".text").textContent]));
}

/** The client ids a page shows in CHANNEL's presence list, sorted. */
async function presenceList(page) {
  const ids = await card(page).locator(".members li").evaluateAll((lis) => lis.map((li) => li.dataset.client));
  return ids.sort();
}

async function openPage(viewport, errors) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console: ${msg.text()}`);
  });
  page.on("request", (req) => {
    if (!req.url().startsWith(server.base + "/")) errors.push(`foreign request: ${req.url()}`);
  });
  const response = await page.goto(server.base + "/", { timeout: WAIT });
  assert.equal(response.status(), 200);
  // Every change of the connection state pill (its data-state: the text is in the
  // page's language), recorded in the page.
  await page.evaluate(() => {
    const el = document.getElementById("json-state");
    window.__states = [el.dataset.state];
    new MutationObserver(() => window.__states.push(el.dataset.state)).observe(el, {
      attributes: true,
      attributeFilter: ["data-state"],
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  return { context, page };
}

/** Joins CHANNEL from the JSON panel and waits until the subscription is live. */
async function join(page) {
  await page.fill("#json-channel", CHANNEL);
  await page.click("#json-join");
  await page.waitForFunction(() => document.getElementById("json-state").dataset.state === "open", null, {
    timeout: WAIT,
  });
  await card(page).locator(".offset", { hasText: /offset \d+/ }).waitFor({ timeout: WAIT });
  await card(page).locator(".presence-label", { hasText: /Online \(\d+\)/ }).waitFor({ timeout: WAIT });
}

before(async () => {
  assert.ok(existsSync(WSPUSH_BIN), `server binary not found at ${WSPUSH_BIN} (run \`cargo build\` or set WSPUSH_BIN)`);
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = await startServer([], { config: CONFIG });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) {
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  }
  if (server) await server.stop();
}, { timeout: 30_000 });

test("JSON panel: presence of two pages, forced disconnect, every message once and in order", { timeout: 90_000 }, async () => {
  const errors = [];
  const a = await openPage({ width: 1024, height: 768 }, errors);
  const b = await openPage({ width: 390, height: 844 }, errors);
  try {
    // wspush.js is served and loaded as a classic script.
    assert.equal(await a.page.evaluate(() => typeof window.wspush.connect), "function");

    // Two pages join the same presence channel and see each other.
    await join(a.page);
    const [idA] = await waitFor("page A on the channel", async () => {
      const ids = await clientsOnChannel();
      return ids.length === 1 && ids;
    });
    await join(b.page);
    const idB = await waitFor("page B on the channel", async () => {
      const ids = await clientsOnChannel();
      return ids.length === 2 && ids.find((id) => id !== idA);
    });
    const both = [idA, idB].sort();
    await waitFor("A lists A and B", async () => JSON.stringify(await presenceList(a.page)) === JSON.stringify(both));
    await waitFor("B lists A and B", async () => JSON.stringify(await presenceList(b.page)) === JSON.stringify(both));

    // A publishes from its publish box; both logs show it at offset 1.
    await card(a.page).locator(".publish-text").fill("hello from A");
    await card(a.page).locator(".publish-button").click();
    for (const p of [a.page, b.page]) {
      await card(p).locator(".messages li[data-offset='1']", { hasText: "hello from A" }).waitFor({ timeout: WAIT });
    }

    // An HTTP publisher keeps publishing while B is kicked by the server API.
    let published = 1;
    let kicked = false;
    let reconnected = false;
    let publisherError = null;
    const publisher = (async () => {
      const deadline = Date.now() + 60_000;
      while (!(reconnected && published >= 60) && Date.now() < deadline) {
        const n = published + 1;
        const { offset } = await api("POST", "/api/publish", { channel: CHANNEL, data: `msg ${n}` });
        assert.equal(offset, n, "HTTP publish answers the next offset");
        published = n;
        await new Promise((r) => setTimeout(r, 15)); // a steady stream, spanning the outage
      }
    })().catch((err) => (publisherError = err));

    await waitFor("B received some of the stream", async () => (await messageLog(b.page)).length >= 10);
    await api("DELETE", `/api/clients/${idB}`);
    kicked = true;
    const publishedAtKick = published;
    await b.page.waitForFunction(() => window.__states.includes("reconnecting"), null, { timeout: WAIT });
    const publishedWhenAway = published;
    mkdirSync(OUTPUT_DIR, { recursive: true });
    await b.page.screenshot({ path: path.join(OUTPUT_DIR, "json-b-reconnecting.png") }); // illustration only
    await b.page.waitForFunction(
      () => window.__states.lastIndexOf("open") > window.__states.indexOf("reconnecting"),
      null,
      { timeout: WAIT },
    );
    reconnected = true;
    const publishedWhenBack = published;
    await publisher;
    assert.equal(publisherError, null, `publisher failed: ${publisherError}`);
    assert.ok(kicked && published > publishedAtKick, "messages were published after the kick");
    assert.ok(
      publishedWhenBack > publishedWhenAway,
      `messages were published while B was away (${publishedWhenAway} -> ${publishedWhenBack})`,
    );

    // B's log ends with every message, in order, exactly once (A's too).
    const expected = [[1, "hello from A"]];
    for (let n = 2; n <= published; n++) expected.push([n, `msg ${n}`]);
    for (const [name, p] of [["B", b.page], ["A", a.page]]) {
      await waitFor(`${name} shows all ${published} messages`, async () => (await messageLog(p)).length >= published);
      assert.deepEqual(await messageLog(p), expected, `${name}'s log is every message, in order, once`);
    }

    const states = await b.page.evaluate(() => window.__states);
    assert.ok(states.includes("reconnecting"), `B showed reconnecting: ${JSON.stringify(states)}`);
    assert.equal(states[states.length - 1], "open", `B ends open: ${JSON.stringify(states)}`);
    assert.equal(await b.page.getAttribute("#json-state", "data-state"), "open");
    const events = await b.page.locator("#json-events li").allTextContents();
    assert.ok(events.some((e) => /connection lost \(1008/.test(e)), `B noted the 1008 close: ${JSON.stringify(events)}`);

    // After the reconnect B has a new client id; both presence lists catch up.
    const idB2 = await waitFor("B's new connection", async () => {
      const ids = await clientsOnChannel();
      return ids.length === 2 && ids.find((id) => id !== idA);
    });
    assert.notEqual(idB2, idB);
    const now = [idA, idB2].sort();
    await waitFor("A lists A and the new B", async () => JSON.stringify(await presenceList(a.page)) === JSON.stringify(now));
    await waitFor("B lists A and the new B", async () => JSON.stringify(await presenceList(b.page)) === JSON.stringify(now));

    mkdirSync(OUTPUT_DIR, { recursive: true });
    await a.page.screenshot({ path: path.join(OUTPUT_DIR, "json-a.png"), fullPage: true });
    await b.page.screenshot({ path: path.join(OUTPUT_DIR, "json-b-phone.png"), fullPage: true });
    const overflow = await b.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the JSON panel is ${overflow}px wider than a 390px phone screen`);
    assert.deepEqual(errors, [], "no JavaScript errors, no foreign requests");
  } finally {
    await a.context.close().catch(() => {});
    await b.context.close().catch(() => {});
  }
});
