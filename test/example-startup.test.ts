/**
 * Issue 15, example server startup: problems name the environment variable at
 * fault. `npm start`'s entry point is spawned on loopback with the Alibaba
 * engine (no model to load; nothing is sent to Alibaba at startup) and the
 * memory store unless a test says otherwise.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BANNER = /server402 example is serving face comparison at (http:\/\/127\.0\.0\.1:\d+)/;

/** A loopback port held open by a listener (close it after), or a closed one. */
async function heldPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as { port: number }).port, server };
}
async function closedPort(): Promise<number> {
  const { port, server } = await heldPort();
  await new Promise((r) => server.close(r));
  return port;
}

const BASE_ENV = {
  HOST: "127.0.0.1",
  PORT: "0",
  STORE: "memory",
  FACE_ENGINE: "alibaba",
  ALIBABA_CLOUD_ACCESS_KEY_ID: "test-id",
  ALIBABA_CLOUD_ACCESS_KEY_SECRET: "test-secret",
  ALIBABA_ENDPOINT: "127.0.0.1:9",
  ALIBABA_PROTOCOL: "http",
  LOG_LEVEL: "warn",
};

/** Env for a server on an external chain (no dev chain), with RPC_URL given. */
const external = (rpcUrl: string) => ({ DEVCHAIN: "off", RPC_URL: rpcUrl, SETTLER: "relayer", RELAYER_PRIVATE_KEY: `0x${"11".repeat(32)}`, PAY_TO: "0x0000000000000000000000000000000000000001" });

/**
 * Run the example server until it prints its banner (then stop it) or exits.
 * Resolves its output and exit code (null when it was stopped after the banner).
 */
function runServer(env: Record<string, string>, timeoutMs = 60_000): Promise<{ stdout: string; stderr: string; code: number | null; served: boolean }> {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(NODE_OPTIONS|PORT|RPC_URL|REDIS_URL|DATABASE_URL|STORE|DEVCHAIN.*|FACILITATOR_URL|DATA_DIR)$/.test(k)) clean[k] = v;
  const child = spawn(process.execPath, ["--conditions=server402-source", "--import", "tsx", "example-server/src/main.ts"], { cwd: ROOT, env: { ...clean, ...BASE_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let served = false;
  child.stdout!.on("data", (c: Buffer) => {
    stdout += c;
    if (!served && BANNER.test(stdout)) {
      served = true;
      child.kill("SIGTERM");
    }
  });
  child.stderr!.on("data", (c: Buffer) => (stderr += c));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((resolve) => child.once("exit", (code) => (clearTimeout(timer), resolve({ stdout, stderr, code: served ? null : code, served }))));
}

describe("example server startup names the variable at fault (issue 15)", function () {
  this.timeout(120_000);

  it("PORT in use: one line naming PORT and how to fix it, exit 1 (not 'Cannot destructure property port')", async () => {
    const { port, server } = await heldPort();
    try {
      const r = await runServer({ ...external(`http://127.0.0.1:${await closedPort()}`), PORT: String(port) });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, `server402 example: PORT=${port} is already in use on 127.0.0.1: stop the other server (e.g. another npm start) or set PORT to a free port (PORT=0 picks one).\n`);
      assert.doesNotMatch(r.stdout, /loading the face engine/, "it fails before loading anything");
    } finally {
      server.close();
    }
  });

  it("DEVCHAIN_PORT in use: one line naming DEVCHAIN_PORT", async () => {
    const { port, server } = await heldPort();
    try {
      const r = await runServer({ DEVCHAIN_PORT: String(port) });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, `server402 example: DEVCHAIN_PORT=${port} is already in use on 127.0.0.1: stop the other server (e.g. another npm start) or set DEVCHAIN_PORT to a free port (DEVCHAIN_PORT=0 picks one).\n`);
    } finally {
      server.close();
    }
  });

  it("DATA_DIR that is a file or not writable: one line naming DATA_DIR", async () => {
    const dir = mkdtempSync(join(tmpdir(), "s402-datadir-"));
    try {
      const file = join(dir, "a-file");
      writeFileSync(file, "");
      const r = await runServer({ ...external(`http://127.0.0.1:${await closedPort()}`), STORE: "sqlite", DATA_DIR: file });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^server402 example: DATA_DIR=\S+a-file is \(under\) a file, not a directory: set DATA_DIR to a writable directory/);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("an unreachable RPC_URL and Redis: warnings naming RPC_URL and REDIS_URL (without credentials), and the server still starts", async () => {
    const rpcPort = await closedPort();
    const redisPort = await closedPort();
    const r = await runServer({ ...external(`http://127.0.0.1:${rpcPort}/v2/secret-api-key`), STORE: "redis", REDIS_URL: `redis://user:redis-password@127.0.0.1:${redisPort}` });
    assert.ok(r.served, `the server started: ${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`server402 example: warning: RPC_URL \\(http://127\\.0\\.0\\.1:${rpcPort}\\) is unreachable .*check RPC_URL\\.`));
    assert.match(r.stderr, new RegExp(`server402 example: warning: REDIS_URL \\(redis://127\\.0\\.0\\.1:${redisPort}\\) is unreachable .*check REDIS_URL\\.`));
    assert.doesNotMatch(r.stdout + r.stderr, /secret-api-key|redis-password/);
  });

  it("a PostgreSQL store that cannot be opened: one line naming DATABASE_URL, without its password", async () => {
    const port = await closedPort();
    const r = await runServer({ ...external(`http://127.0.0.1:${await closedPort()}`), STORE: "postgres", DATABASE_URL: `postgres://user:pg-password@127.0.0.1:${port}/db` });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^server402 example: DATABASE_URL \\(postgres://127\\.0\\.0\\.1:${port}\\) could not be opened .*check DATABASE_URL`));
    assert.doesNotMatch(r.stderr, /pg-password/);
  });

  it("while the dev chain and the face engine load, it says what is loading, before the banner", async () => {
    const r = await runServer({ DEVCHAIN_PORT: "0" });
    assert.ok(r.served, `the server started: ${r.stdout}\n${r.stderr}`);
    const chain = r.stdout.indexOf("server402 example: starting the dev chain (anvil + test USDC)…");
    const engine = r.stdout.indexOf("server402 example: loading the face engine (alibaba)…");
    const banner = r.stdout.search(BANNER);
    assert.ok(chain >= 0 && engine > chain && banner > engine, r.stdout);
    assert.doesNotMatch(r.stderr, /warning/, "the dev chain answers: no warning");
    // Stopped right after its banner, the server stops its anvil too.
    const rpc = /dev chain RPC\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(r.stdout)?.[1];
    assert.ok(rpc, r.stdout);
    await assert.rejects(fetch(rpc, { method: "POST", body: "{}" }), "anvil is gone once the server has exited");
  });
});
