// Shared by the browser tests: where the server and Chromium are, and a server started
// on 127.0.0.1:0 (with an optional TOML config) that each test file stops in `after`.
//
// Env: WSPUSH_BIN (server binary, default ../../target/debug/wspush),
//      CHROMIUM (browser binary, default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
export const WSPUSH_BIN = process.env.WSPUSH_BIN
  ? path.resolve(process.env.WSPUSH_BIN)
  : path.resolve(here, "../../target/debug/wspush");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const WAIT = 10_000; // every single wait is bounded by this

/**
 * Spawns `wspush serve --listen 127.0.0.1:0 --no-console ...args` (with `config` written
 * to a temporary file when given); resolves once it printed its address, with
 * `{ port, base, stderr(), stop() }`.
 */
export async function startServer(args = [], { config } = {}) {
  let configDir;
  const extra = [];
  if (config !== undefined) {
    configDir = mkdtempSync(path.join(tmpdir(), "wspush-browser-"));
    const file = path.join(configDir, "wspush.toml");
    writeFileSync(file, config);
    extra.push("--config", file);
  }
  const child = spawn(WSPUSH_BIN, ["serve", "--listen", "127.0.0.1:0", "--no-console", ...extra, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (s) => (stderr = (stderr + s).slice(-8000)));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const cleanup = () => configDir && rmSync(configDir, { recursive: true, force: true });
  let port;
  try {
    port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server silent for ${WAIT} ms\n${stderr}`)), WAIT);
      child.stdout.on("data", (s) => {
        stdout += s;
        const m = stdout.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      exited.then((e) => reject(new Error(`server exited (${JSON.stringify(e)})\n${stderr}`)));
    });
  } catch (e) {
    child.kill("SIGKILL");
    cleanup();
    throw e;
  }
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const killTimer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(killTimer);
      }
      cleanup();
    },
  };
}

/** Polls `check()` every 25 ms until it returns a truthy value, at most `timeout` ms. */
export async function waitFor(what, check, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
