// Shared helpers of the wspush.js tests: load the library into node, run a real
// server, bounded waits.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
export const WSPUSH_BIN = process.env.WSPUSH_BIN
  ? path.resolve(process.env.WSPUSH_BIN)
  : path.resolve(here, "../../target/debug/wspush");
export const LIBRARY = path.resolve(here, "../../assets/wspush.js");
export const WAIT = 10_000; // every single wait is bounded by this

/** Evaluates assets/wspush.js as the classic script it is; returns `globalThis.wspush`. */
export function loadLibrary() {
  if (!globalThis.wspush) vm.runInThisContext(readFileSync(LIBRARY, "utf8"), { filename: LIBRARY });
  return globalThis.wspush;
}

export { WebSocket };

/** The namespaces every test server has. */
export const CONFIG = `
[[namespaces]]
prefix = "room:"
history_size = 1000
presence = true
anonymous = "publish"

[[namespaces]]
prefix = "small:"
history_size = 3
anonymous = "publish"

[[namespaces]]
prefix = "ro:"
history_size = 10
anonymous = "subscribe"

[[namespaces]]
prefix = "locked:"
anonymous = "none"
`;

/**
 * Starts `wspush serve --listen 127.0.0.1:PORT` (0 = any free port) with CONFIG and
 * resolves once it prints `listening on http://127.0.0.1:PORT`.
 */
export async function startServer({ port = 0, args = [] } = {}) {
  if (!existsSync(WSPUSH_BIN)) {
    throw new Error(`server binary not found at ${WSPUSH_BIN} (run \`cargo build\` or set WSPUSH_BIN)`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), "wspush-js-"));
  const config = path.join(dir, "wspush.toml");
  writeFileSync(config, CONFIG);
  const child = spawn(
    WSPUSH_BIN,
    ["serve", "--listen", `127.0.0.1:${port}`, "--config", config, "--no-console", "--quiet", ...args],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (s) => (stderr = (stderr + s).slice(-8000)));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    child.stdout.on("data", (s) => {
      stdout += s;
      const m = stdout.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    exited.then((e) => reject(new Error(`server exited (${JSON.stringify(e)}) before listening\n${stderr}`)));
    setTimeout(() => reject(new Error(`server did not print its address in ${WAIT} ms\n${stderr}`)), WAIT).unref();
  });
  let actualPort;
  try {
    actualPort = await listening;
  } catch (err) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const http = `http://127.0.0.1:${actualPort}`;
  return {
    port: actualPort,
    http,
    ws: `ws://127.0.0.1:${actualPort}/ws`,
    stderr: () => stderr,
    /** Calls the HTTP API; resolves with the parsed JSON body (throws on a non-2xx status). */
    async api(method, pathname, body) {
      const res = await fetch(http + pathname, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(WAIT),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${pathname} answered ${res.status}: ${text}`);
      return JSON.parse(text);
    },
    /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its config. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `check()` every 10 ms until it returns a truthy value; bounded by `timeout`. */
export async function waitFor(what, check, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Rejects if `promise` does not settle within `timeout`. */
export function within(what, promise, timeout = WAIT) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms: ${what}`)), timeout);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** The ids of the connected JSON-mode clients subscribed to `channel`. */
export async function clientsOn(server, channel) {
  const { clients } = await server.api("GET", "/api/clients");
  return clients.filter((c) => c.mode === "json" && c.channels.includes(channel)).map((c) => c.id);
}

/** Waits until exactly one client is subscribed to `channel`; its id. */
export async function theClientOn(server, channel) {
  return waitFor(`one client subscribed to ${channel}`, async () => {
    const ids = await clientsOn(server, channel);
    return ids.length === 1 ? ids[0] : null;
  });
}
