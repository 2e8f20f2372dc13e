/**
 * The package as a stranger gets it: `npm pack` of lib/, installed with npm
 * into an app outside the workspace, then the README Quickstart (app.mjs and
 * pay.mjs, copied from README.md as written) runs with plain `node` on the dev
 * chain started by the package's `server402-devchain` command, and a
 * TypeScript consumer typechecks against the installed `.d.ts` files.
 *
 * Offline: the app's third-party dependencies are `file:` links to this
 * workspace's node_modules (what `npm ci` installed), and `npm install
 * --offline` with an empty cache proves nothing is fetched or needed from the cache.
 */
import assert from "node:assert/strict";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createPublicClient, http, parseAbi, type Address } from "viem";

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const LIB = join(ROOT, "lib");
/** The anvil npm package the workspace installs (root devDependencies). */
const ANVIL = "@foundry-rs/anvil-linux-amd64";

/** Environment for child processes: no tsx loader or source condition from mocha, no npm workspace context. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === "NODE_OPTIONS" || k.startsWith("npm_package_") || k.startsWith("npm_lifecycle_") || k.startsWith("npm_config_workspace")) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** The fenced code block of README.md whose first line is `// <name>`. */
function readmeBlock(name: string): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1]);
  const found = blocks.filter((b) => b.startsWith(`// ${name}`));
  assert.equal(found.length, 1, `README.md has exactly one code block starting with "// ${name}"`);
  return found[0];
}

/** The workspace's installed copy of a package (a `file:` dependency for the app). */
function workspacePackage(name: string): string {
  const dir = join(ROOT, "node_modules", name);
  assert.ok(existsSync(join(dir, "package.json")), `${name} is installed in the workspace`);
  return `file:${realpathSync(dir)}`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Spawn a long-running child and resolve once its stdout matches `ready`. */
function startUntil(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, ready: RegExp, timeoutMs: number): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (c: Buffer) => (out += c));
  child.stderr!.on("data", (c: Buffer) => (err += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`did not print ${ready} within ${timeoutMs} ms`), timeoutMs);
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} ${why}\nstdout: ${out}\nstderr: ${err}`));
    };
    child.stdout!.on("data", () => {
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve({ child, out: () => out });
      }
    });
    child.once("exit", (code) => fail(`exited with ${code}`));
  });
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

describe("package: npm pack, install outside the workspace, README Quickstart with plain node", function () {
  this.timeout(240_000);
  let app: string;
  let tarball: string;
  const children: ChildProcess[] = [];

  before(async function () {
    app = realpathSync(mkdtempSync(join(tmpdir(), "server402-install-")));
    assert.ok(relative(ROOT, app).startsWith(".."), "the app is outside the workspace");

    // npm pack runs prepack (the build), so the tarball carries dist/.
    const packed = await run("npm", ["pack", "--pack-destination", app, "--json"], { cwd: LIB, env: cleanEnv(), maxBuffer: 16 << 20 });
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as [{ filename: string; files: { path: string }[] }];
    tarball = join(app, info.filename);
    const files = new Set(info.files.map((f) => f.path));
    for (const f of ["dist/index.js.map", "dist/index.d.ts.map", "dist/devchain/cli.js", "dist/devchain/TestUSDC.artifact.json"]) assert.ok(files.has(f), `tarball has ${f}`);
    // Every entry point of the exports map is built. `./postgres` is checked once its source exists.
    const exportsMap = JSON.parse(readFileSync(join(LIB, "package.json"), "utf8")).exports as Record<string, string | Record<string, string>>;
    for (const [entry, target] of Object.entries(exportsMap)) {
      if (typeof target === "string") continue;
      if (!existsSync(join(LIB, target["server402-source"]))) continue;
      for (const cond of ["types", "default"]) assert.ok(files.has(target[cond].slice(2)), `exports["${entry}"].${cond} (${target[cond]}) is in the tarball`);
    }

    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({
        name: "quickstart-app",
        private: true,
        type: "module",
        dependencies: {
          server402: `file:${tarball}`,
          express: workspacePackage("express"),
          viem: workspacePackage("viem"),
          secp256k1: workspacePackage("secp256k1"),
          "@x402/fetch": workspacePackage("@x402/fetch"),
          "@x402/evm": workspacePackage("@x402/evm"),
          [ANVIL]: workspacePackage(ANVIL),
        },
        devDependencies: {
          typescript: workspacePackage("typescript"),
          "@types/express": workspacePackage("@types/express"),
          "@types/node": workspacePackage("@types/node"),
        },
      }),
    );
    // An empty npm cache and --offline: the install needs nothing but the tarball and the workspace's packages.
    // (--legacy-peer-deps: npm 11 fails to place peer dependencies that are `file:` links.)
    const emptyCache = join(app, ".npm-cache");
    await run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps", "--loglevel=error"], { cwd: app, env: cleanEnv({ npm_config_cache: emptyCache }), maxBuffer: 16 << 20 });
    assert.ok(!realpathSync(join(app, "node_modules", "server402")).startsWith(ROOT), "server402 is installed from the tarball, not linked to the workspace");
  });

  after(async () => {
    await Promise.all(children.map(stop));
    if (app) rmSync(app, { recursive: true, force: true });
  });

  it("runs the README Quickstart (app.mjs) with plain node and a real x402 client (pay.mjs) pays it on the dev chain", async () => {
    writeFileSync(join(app, "app.mjs"), readmeBlock("app.mjs"));
    writeFileSync(join(app, "pay.mjs"), readmeBlock("pay.mjs"));

    const chain = await startUntil(join(app, "node_modules", ".bin", "server402-devchain"), ["--port", "0"], { cwd: app, env: cleanEnv() }, /PAYER_PRIVATE_KEY=0x[0-9a-f]{64}/, 60_000);
    children.push(chain.child);
    const vars = Object.fromEntries([...chain.out().matchAll(/^export (\w+)=(\S+)/gm)].map((m) => [m[1], m[2]]));
    for (const k of ["RPC_URL", "RELAYER_PRIVATE_KEY", "PAY_TO", "PAYER_PRIVATE_KEY"]) assert.ok(vars[k], `server402-devchain prints ${k}`);

    const PORT = String(await freePort());
    const env = cleanEnv({ ...vars, PORT });
    const server = await startUntil(process.execPath, ["app.mjs"], { cwd: app, env }, /costs \$0\.01/, 30_000);
    children.push(server.child);

    const chainClient = createPublicClient({ transport: http(vars.RPC_URL) });
    const usdc: Address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    const balance = () => chainClient.readContract({ address: usdc, abi: parseAbi(["function balanceOf(address) view returns (uint256)"]), functionName: "balanceOf", args: [vars.PAY_TO as Address] });
    const before = await balance();

    const unpaid = await fetch(`http://127.0.0.1:${PORT}/weather`);
    assert.equal(unpaid.status, 402);
    const paid = await run(process.execPath, ["pay.mjs"], { cwd: app, env, timeout: 60_000 });
    assert.match(paid.stdout, /^200 \{/, `pay.mjs prints the paid answer: ${paid.stdout} ${paid.stderr}`);
    assert.match(paid.stdout, /weather: 'sunny'/);
    assert.match(paid.stdout, /paidBy: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'/, "req.payment.payer is the payer's address");
    assert.equal((await balance()) - before, 10_000n, "PAY_TO received $0.01 on the chain");
  });

  it("typechecks a TypeScript consumer against the installed .d.ts: req.payment is typed, every entry point resolves", async () => {
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, skipLibCheck: true, types: ["node"] }, files: ["consumer.ts"] }),
    );
    writeFileSync(
      join(app, "consumer.ts"),
      `import express from "express";
import { paywall, relayerSettler, MemoryStore, PaymentError, type PaymentInfo, type Server402ErrorCode } from "server402";
import type { RelayerSettlerOptions, ChainReaderOptions, MemoryStoreOptions } from "server402";
// @ts-expect-error PaymentEngine is not public API
import { PaymentEngine } from "server402";
import { SqliteStore, type SqliteStoreOptions } from "server402/sqlite";
import { RedisStore, type RedisStoreOptions } from "server402/redis";
import { PostgresStore, type PostgresStoreOptions } from "server402/postgres";
import { registerPaidTool } from "server402/mcp";
import { startDevChain, DevChainError, type DevChainOptions } from "server402/devchain";

const app = express();
app.use(paywall({
  payTo: "0x0000000000000000000000000000000000000001",
  settler: relayerSettler({ rpcUrl: "http://127.0.0.1:8545", chainId: 84532, privateKey: "0x${"1".repeat(64)}" }),
  store: new MemoryStore(),
  routes: { "GET /weather": { price: "$0.01" } },
}));
app.get("/weather", (req, res) => {
  const info: PaymentInfo | undefined = req.payment;
  const payer: string | undefined = req.payment?.payer;
  // @ts-expect-error req.payment is PaymentInfo | undefined, not any
  const wrong: number = req.payment?.payer;
  res.json({ info, payer, wrong });
});
// Internals are not in the published types (issue 15): the engine, the middleware's @internal methods.
const pw = paywall({ payTo: "0x0000000000000000000000000000000000000001", settler: relayerSettler({ rpcUrl: "http://127.0.0.1:8545", chainId: 84532, privateKey: "0x${"1".repeat(64)}" }), routes: {} });
// @ts-expect-error PaywallMiddleware.engine is internal
void pw.engine;
// @ts-expect-error PaywallMiddleware.send402 is internal
void pw.send402;
const options: [RelayerSettlerOptions?, ChainReaderOptions?, MemoryStoreOptions?, SqliteStoreOptions?, RedisStoreOptions?, PostgresStoreOptions?, DevChainOptions?] = [];
const code: Server402ErrorCode = new PaymentError("x", "y").code;
const refused: unknown = new PaymentError("x", "y").payment;
void [SqliteStore, RedisStore, PostgresStore, registerPaidTool, startDevChain, DevChainError, code, refused, options, PaymentEngine];
`,
    );
    await run(process.execPath, [join(app, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: app, env: cleanEnv(), timeout: 120_000 }).catch((err: { stdout?: string }) => {
      throw new Error(`tsc failed in the consumer app:\n${err.stdout}`);
    });
  });

  it("optional dependencies that are not installed fail with one line naming the npm install", async () => {
    const script = `
      const tryIt = async (label, f) => { try { await f(); console.log(label, "loaded"); } catch (e) { console.log(label, JSON.stringify([e.name, e.code, e.message])); } };
      await tryIt("mcp", () => import("server402/mcp"));
      const { SqliteStore } = await import("server402/sqlite");
      await tryIt("sqlite", () => new SqliteStore({ path: ":memory:" }));
      const { RedisStore } = await import("server402/redis");
      await tryIt("redis", () => new RedisStore({ url: "redis://127.0.0.1:1" }));
      const { PostgresStore } = await import("server402/postgres");
      await tryIt("postgres", () => new PostgresStore({ connectionString: "postgres://127.0.0.1:1/x" }));
    `;
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: app, env: cleanEnv(), timeout: 30_000 });
    const lines = Object.fromEntries(stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(" ") + 1)]));
    const expected: Record<string, string> = {
      mcp: "server402/mcp needs @modelcontextprotocol/sdk zod: npm install @modelcontextprotocol/sdk zod",
      sqlite: "SqliteStore (server402/sqlite) needs better-sqlite3: npm install better-sqlite3",
      redis: "RedisStore (server402/redis) needs ioredis: npm install ioredis",
      postgres: "PostgresStore (server402/postgres) needs pg: npm install pg",
    };
    for (const [label, message] of Object.entries(expected)) {
      assert.deepEqual(JSON.parse(lines[label] ?? "null"), ["MissingDependencyError", "missing_dependency", message], `${label}: ${stdout}`);
    }
  });
});
