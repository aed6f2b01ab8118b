// Starts the real wspush binary on 127.0.0.1:0 and reads its address from stdout.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.WSPUSH_BIN || path.join(here, "../../target/debug/wspush");

export const APP = { appId: "12345", key: "app-key", secret: "app-secret" };

/** Runs `wspush serve` with the test app; resolves to { addr, host, port, stop }. */
export function startServer(extraArgs = []) {
  const child = spawn(
    BIN,
    [
      "serve",
      "--listen", "127.0.0.1:0",
      "--no-console",
      "--pusher-app", `${APP.appId}:${APP.key}:${APP.secret}`,
      ...extraArgs,
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { RUST_LOG: "warn", ...process.env } },
  );
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("wspush did not start")), 10_000);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`wspush exited with ${code}`)));
    lines.on("line", (line) => {
      const m = /^listening on http:\/\/(.+):(\d+)$/.exec(line);
      if (!m) return;
      clearTimeout(timer);
      resolve({
        addr: `${m[1]}:${m[2]}`,
        host: m[1],
        port: Number(m[2]),
        stop: () =>
          new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once("exit", () => done());
            child.kill("SIGTERM");
          }),
      });
    });
  });
}
