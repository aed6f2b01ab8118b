// The first ten minutes (issue #16), in a real headless Chromium:
//  - a page of one's own opened from a file:// URL, written for an old server's path
//    (/websocket/demo.php, served with --ws-path): refused by default with the fix in the
//    server's log, working with --allowed-origins null;
//  - the demo page in Chinese and in English by the browser's locale, with a switch, and
//    the connection state in words. Screenshots go to tests/browser/output/.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const WSPUSH_BIN = process.env.WSPUSH_BIN
  ? path.resolve(process.env.WSPUSH_BIN)
  : path.resolve(here, "../../target/debug/wspush");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUTPUT_DIR = path.join(here, "output");
const OWN_PAGE = path.join(here, "fixtures", "own-page.html");
const WAIT = 10_000; // every single wait is bounded by this

let browser;
const servers = [];

/** Starts `wspush serve` with `args`; resolves once it printed its address. */
async function startServer(args) {
  const child = spawn(WSPUSH_BIN, ["serve", "--listen", "127.0.0.1:0", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const out = { stdout: [], stderr: [] };
  const waiters = new Set();
  let exited = null;
  for (const stream of ["stdout", "stderr"]) {
    let partial = "";
    child[stream].setEncoding("utf8");
    child[stream].on("data", (chunk) => {
      partial += chunk;
      let nl;
      while ((nl = partial.indexOf("\n")) >= 0) {
        out[stream].push(partial.slice(0, nl));
        partial = partial.slice(nl + 1);
      }
      for (const w of waiters) w();
    });
  }
  child.on("exit", (code, signal) => {
    exited = { code, signal };
    for (const w of waiters) w();
  });
  const dump = () => `--- stdout ---\n${out.stdout.slice(-30).join("\n")}\n--- stderr ---\n${out.stderr.slice(-30).join("\n")}`;
  /** Resolves with the first line of `stream` matching `re` (seen already or later). */
  const waitFor = (stream, re) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const line = out[stream].find((l) => re.test(l));
        if (line !== undefined) return finish(null, line);
        if (exited) finish(new Error(`server exited before ${stream} matched ${re}\n${dump()}`));
      };
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${stream} ${re}\n${dump()}`)), WAIT);
      function finish(err, line) {
        clearTimeout(timer);
        waiters.delete(check);
        err ? reject(err) : resolve(line);
      }
      waiters.add(check);
      check();
    });
  const stop = async () => {
    if (exited) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await gone;
    clearTimeout(t);
  };
  const server = { child, out, waitFor, stop, dump };
  servers.push(server);
  const line = await waitFor("stdout", /^listening on http:\/\/127\.0\.0\.1:\d+$/);
  server.port = Number(line.split(":").pop());
  server.base = `http://127.0.0.1:${server.port}`;
  return server;
}

async function publish(server, channel, data) {
  const resp = await fetch(server.base + "/api/publish", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(WAIT),
  });
  assert.equal(resp.status, 200, await resp.text());
}

before(async () => {
  assert.ok(existsSync(WSPUSH_BIN), `server binary not found at ${WSPUSH_BIN}`);
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM}`);
  mkdirSync(OUTPUT_DIR, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  for (const s of servers) await s.stop();
}, { timeout: 30_000 });

// issue #16 items 1 and 4. Before: the page got 403 (a bare 1006 in the browser), 404 at
// this path, and the server logged nothing.
test("a page opened from a file: refused with the fix in the log, then allowed with --allowed-origins null", { timeout: 60_000 }, async () => {
  const pageUrl = (port) => pathToFileURL(OWN_PAGE).href + "?port=" + port;
  const context = await browser.newContext({ viewport: { width: 800, height: 400 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);

  const strict = await startServer(["--ws-path", "/websocket/demo.php"]);
  await page.goto(pageUrl(strict.port));
  await page.waitForFunction(() => document.getElementById("state").textContent.startsWith("closed"));
  assert.equal(await page.textContent("#state"), "closed 1006", "the browser sees a refused handshake");
  const hint = await strict.waitFor("stderr", /refused WebSocket from origin "null"/);
  assert.match(hint, / WARN /);
  assert.match(hint, /\(a page opened from a file, or a sandboxed frame\): allow it with --allowed-origins null/);
  await page.screenshot({ path: path.join(OUTPUT_DIR, "own-page-refused.png") });

  const open = await startServer(["--ws-path", "/websocket/demo.php", "--allowed-origins", "null"]);
  await page.goto(pageUrl(open.port));
  await page.waitForFunction(() => document.getElementById("state").textContent === "open");
  const said = await open.waitFor("stdout", /^\[c-\d+\] hello from my page$/);
  assert.ok(said);
  await publish(open, "news", "pushed to my page");
  await page.locator("#log li", { hasText: "got: pushed to my page" }).waitFor();
  assert.ok(!open.out.stderr.some((l) => l.includes("refused")), open.dump());
  await page.screenshot({ path: path.join(OUTPUT_DIR, "own-page-open.png") });
  await context.close();
});

/** Opens the demo page's raw tab in `locale`, connects, and returns the page. */
async function demoIn(server, locale) {
  const context = await browser.newContext({ locale, viewport: { width: 900, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.base + "/#raw");
  return { context, page, errors };
}

async function stateIs(page, id, state, text) {
  await page.waitForFunction(([id, s]) => document.getElementById(id).dataset.state === s, [id, state]);
  assert.equal(await page.textContent("#" + id), text);
}

// issue #16 item 6. Before: English only, and the raw state was a bare "open"/"closed".
test("the demo page speaks Chinese or English by the browser's locale, with a switch", { timeout: 60_000 }, async () => {
  const server = await startServer([]);

  const zh = await demoIn(server, "zh-CN");
  const p = zh.page;
  assert.equal(await p.getAttribute("html", "lang"), "zh-CN");
  assert.equal(await p.textContent("h1"), "wspush 演示");
  assert.equal(await p.textContent("#tab-raw"), "原始模式");
  assert.equal(await p.textContent("#connect"), "连接");
  assert.equal(await p.textContent("label[for=channels]"), "频道（用逗号分隔）");
  await stateIs(p, "state", "closed", "连接已关闭");
  await p.click("#connect");
  await stateIs(p, "state", "open", "连接成功");
  await p.locator("#log > .system", { hasText: "连接成功" }).waitFor();
  await publish(server, "news", "你好，世界");
  await p.locator("#log > .received", { hasText: "你好，世界" }).waitFor();
  await p.screenshot({ path: path.join(OUTPUT_DIR, "demo-zh.png") });
  // The JSON tab too: its state pill and the empty-channels hint.
  await p.click("#tab-json");
  await stateIs(p, "json-state", "closed", "连接已关闭");
  assert.equal(await p.textContent("#json-join"), "加入");
  await p.screenshot({ path: path.join(OUTPUT_DIR, "demo-zh-json.png") });

  // The switch: English at once, the live state included; remembered on reload.
  await p.selectOption("#lang", "en");
  assert.equal(await p.textContent("h1"), "wspush demo");
  await p.click("#tab-raw");
  await stateIs(p, "state", "open", "Connected");
  await p.reload();
  assert.equal(await p.textContent("h1"), "wspush demo");
  assert.deepEqual(zh.errors, []);
  await zh.context.close();

  const en = await demoIn(server, "en-US");
  const q = en.page;
  assert.equal(await q.getAttribute("html", "lang"), "en");
  assert.equal(await q.textContent("h1"), "wspush demo");
  assert.equal(await q.textContent("#tab-raw"), "Raw");
  await stateIs(q, "state", "closed", "Disconnected");
  await q.click("#connect");
  await stateIs(q, "state", "open", "Connected");
  await q.locator("#log > .system", { hasText: "connected" }).waitFor();
  await q.screenshot({ path: path.join(OUTPUT_DIR, "demo-en.png") });
  await q.selectOption("#lang", "zh");
  await stateIs(q, "state", "open", "连接成功");
  assert.equal(await q.textContent("#send"), "发送");
  assert.deepEqual(en.errors, []);
  await en.context.close();
});
