// End-to-end test of the demo page (GET /) in a real headless Chromium.
//
// Starts `wspush serve --listen 127.0.0.1:0 --upstream publish:room`, opens the
// page's raw-mode tab, connects to channels news,room, publishes over the HTTP API,
// sends a message from the page (seen on the server console and republished to
// `room`), disconnects, and saves screenshots to tests/browser/output/.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const WSPUSH_BIN = process.env.WSPUSH_BIN
  ? path.resolve(process.env.WSPUSH_BIN)
  : path.resolve(here, "../../target/debug/wspush");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUTPUT_DIR = path.join(here, "output");
const WAIT = 10_000; // every single wait is bounded by this

let server; // { child, port, waitForLine, output }
let browser;

/** Spawns the server and resolves once it printed `listening on http://127.0.0.1:PORT`. */
function startServer() {
  const child = spawn(
    WSPUSH_BIN,
    ["serve", "--listen", "127.0.0.1:0", "--upstream", "publish:room"],
    { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } },
  );
  const lines = [];
  let stderr = "";
  let exited = null;
  const waiters = new Set();

  const settleWaiters = () => {
    for (const w of waiters) w.check();
  };
  let partial = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf("\n")) >= 0) {
      // eslint-disable-next-line no-control-regex
      lines.push(partial.slice(0, nl).replace(/\r$/, "").replace(/\x1b\[[0-9;]*m/g, ""));
      partial = partial.slice(nl + 1);
    }
    settleWaiters();
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  child.on("exit", (code, signal) => {
    exited = { code, signal };
    settleWaiters();
  });
  child.on("error", (err) => {
    exited = { error: err };
    settleWaiters();
  });

  const output = () =>
    `--- server stdout ---\n${lines.slice(-40).join("\n")}\n--- server stderr (tail) ---\n${stderr.slice(-3000)}`;

  /** Resolves with the match of the first stdout line (seen so far or later) matching `re`. */
  const waitForLine = (re, timeout = WAIT) =>
    new Promise((resolve, reject) => {
      const w = {
        check() {
          for (const line of lines) {
            const m = line.match(re);
            if (m) return done(null, m);
          }
          if (exited) done(new Error(`server exited (${JSON.stringify(exited)}) before printing ${re}\n${output()}`));
        },
      };
      const timer = setTimeout(
        () => done(new Error(`timed out after ${timeout} ms waiting for server stdout ${re}\n${output()}`)),
        timeout,
      );
      function done(err, m) {
        clearTimeout(timer);
        waiters.delete(w);
        err ? reject(err) : resolve(m);
      }
      waiters.add(w);
      w.check();
    });

  const stop = async () => {
    if (exited) return exited;
    const gone = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.kill("SIGTERM");
    const killTimer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    const result = await gone;
    clearTimeout(killTimer);
    return result;
  };

  return { child, waitForLine, output, stop };
}

/** Polls `#state` until its data-state equals `want` (its text is in the page's language). */
async function waitForState(page, want) {
  try {
    await page.waitForFunction((s) => document.getElementById("state").dataset.state === s, want, {
      timeout: WAIT,
    });
  } catch (err) {
    const got = await page.getAttribute("#state", "data-state").catch(() => "?");
    const log = await page.textContent("#log").catch(() => "?");
    throw new Error(`#state never became "${want}" (it is "${got}"); log:\n${log}\n${server.output()}`, { cause: err });
  }
}

/** Waits for a log entry with class `kind` containing `text`. */
async function waitForLogEntry(page, kind, text) {
  try {
    await page.locator(`#log > .${kind}`, { hasText: text }).first().waitFor({ timeout: WAIT });
  } catch (err) {
    const log = await page.textContent("#log").catch(() => "?");
    throw new Error(`no .${kind} log entry containing "${text}"; log:\n${log}\n${server.output()}`, { cause: err });
  }
}

before(async () => {
  assert.ok(
    existsSync(WSPUSH_BIN),
    `server binary not found at ${WSPUSH_BIN} (run \`cargo build\` or set WSPUSH_BIN)`,
  );
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = startServer();
  const m = await server.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 10_000);
  server.port = Number(m[1]);
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
    // Bounded close; the fallback timer is unref'd so it never keeps the process alive.
    await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  }
  if (server) await server.stop();
}, { timeout: 30_000 });

test("demo page: connect, receive a publish, send upstream, disconnect", { timeout: 60_000 }, async () => {
  const base = `http://127.0.0.1:${server.port}`;
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);

  const pageErrors = [];
  const foreignRequests = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") pageErrors.push(`console: ${msg.text()}`);
  });
  page.on("request", (req) => {
    if (!req.url().startsWith(base + "/")) foreignRequests.push(req.url());
  });

  const response = await page.goto(base + "/", { timeout: WAIT });
  assert.equal(response.status(), 200, "GET / should answer 200");
  assert.match(response.headers()["content-type"] || "", /text\/html/, "GET / should be text/html");

  // The raw-mode panel is the second tab (the first is the JSON-mode wspush.js panel).
  await page.click("#tab-raw");
  await page.locator("#url").waitFor({ state: "visible", timeout: WAIT });

  // The URL field defaults to this server's /ws endpoint.
  assert.equal(await page.inputValue("#url"), `ws://127.0.0.1:${server.port}/ws`);
  assert.equal(await page.getAttribute("#state", "data-state"), "closed");

  // Connect to news + room.
  await page.fill("#channels", "news,room");
  await page.click("#connect");
  await waitForState(page, "open");
  await waitForLogEntry(page, "system", "connected");

  // Publish over the HTTP API; the page receives exactly the published data.
  const res = await fetch(base + "/api/publish", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: "news", data: "hello from http" }),
    signal: AbortSignal.timeout(WAIT),
  });
  const bodyText = await res.text();
  assert.equal(res.status, 200, `POST /api/publish answered ${res.status}: ${bodyText}`);
  const body = JSON.parse(bodyText);
  assert.equal(typeof body.offset, "number", `publish answer should carry a numeric offset: ${bodyText}`);
  await waitForLogEntry(page, "received", "hello from http");
  const received = await page.locator("#log > .received").allTextContents();
  assert.ok(
    received.some((t) => t.endsWith("← hello from http")),
    `received entry should hold exactly the published text: ${JSON.stringify(received)}`,
  );

  // Send from the page: shown on the server console, and republished to `room`.
  await page.fill("#message", "hi from the page");
  await page.click("#send");
  await waitForLogEntry(page, "sent", "hi from the page");
  assert.equal(await page.inputValue("#message"), "", "the message box is cleared after sending");
  await server.waitForLine(/\[c-\d+\] hi from the page/);
  await waitForLogEntry(page, "received", "hi from the page");

  // Enter in the message box sends too.
  await page.fill("#message", "sent with enter");
  await page.press("#message", "Enter");
  await waitForLogEntry(page, "sent", "sent with enter");
  await server.waitForLine(/\[c-\d+\] sent with enter/);

  // Disconnect: state goes to closed and the close code is logged.
  await page.click("#disconnect");
  await waitForState(page, "closed");
  await waitForLogEntry(page, "system", "code 1000");

  // Every log entry has a timestamp.
  const untimed = await page.$$eval("#log > li", (lis) => lis.filter((li) => !li.querySelector("time")).length);
  assert.equal(untimed, 0, "every log entry carries a timestamp");

  mkdirSync(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUTPUT_DIR, "demo.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: path.join(OUTPUT_DIR, "demo-phone.png"), fullPage: true });

  // Nothing on the phone layout overflows sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than a 390px phone screen`);

  assert.deepEqual(pageErrors, [], "the page logged no JavaScript errors");
  assert.deepEqual(foreignRequests, [], "the page loads nothing from other origins");

  await context.close();
});
