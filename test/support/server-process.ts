/**
 * The real example server (`example-server/src/main.ts`, what `npm start`
 * runs) as a child process: start it with an environment, wait until it
 * answers HTTP, read its RSS, `kill -9` it, restart it with the same
 * environment (and port, so its URL stays the same).
 *
 *   const srv = await startServerProcess({ env: { DEVCHAIN: "off", RPC_URL, ... } });
 *   await fetch(`${srv.url}/api/tools/face-comparison`, ...);
 *   await srv.kill9();
 *   const again = await srv.restart();
 *
 * The child gets a minimal environment (PATH, HOME, TMPDIR, LANG) plus
 * `env`: nothing from the test process leaks in (REDIS_URL, for one, would
 * switch its store). `PORT` defaults to 0 (a free port), `LOG_LEVEL` to
 * `warn`. Output is kept (last 64 KB) for error messages; set
 * `SERVER_PROCESS_DEBUG=1` to stream it to this process's stderr.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (where package.json, tsx and the example server live). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const MAIN = join(REPO_ROOT, "example-server", "src", "main.ts");

export interface ServerProcessOptions {
  /** Environment of the example server (see example-server/src/config.ts). Undefined values are left out. */
  env: Record<string, string | undefined>;
  /** Extra modules loaded with `node --import` before the server (test instrumentation). */
  preload?: string[];
  /** Extra Node.js flags for the server process, e.g. `--expose-gc`. */
  nodeFlags?: string[];
  /** How long to wait for the server to answer HTTP. Default 30 000 ms. */
  readyTimeoutMs?: number;
  /** Name in error messages and debug output. Default "server". */
  name?: string;
}

export interface ServerProcess {
  /** `http://127.0.0.1:<port>` as the server printed it. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** The options it was started with (port fixed to the one it got). */
  readonly options: ServerProcessOptions;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True until the process exits. */
  alive(): boolean;
  /** Last 64 KB of stdout + stderr. */
  output(): string;
  /** SIGKILL, then wait for the exit. No cleanup of any kind runs in the child. */
  kill9(): Promise<void>;
  /** SIGTERM (graceful drain), SIGKILL after `graceMs` (default 10 000), wait for the exit. */
  stop(graceMs?: number): Promise<void>;
  /** Start a new process with the same options and port (call after kill9/stop). */
  restart(): Promise<ServerProcess>;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function baseEnv(): Record<string, string> {
  const keep: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "TMPDIR", "LANG", "TZ"]) {
    const v = process.env[k];
    if (v !== undefined) keep[k] = v;
  }
  return keep;
}

/** Start the example server and resolve once it answers HTTP on its printed URL. */
export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const name = options.name ?? "server";
  const env: Record<string, string> = { ...baseEnv(), PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn" };
  for (const [k, v] of Object.entries(options.env)) if (v !== undefined) env[k] = v;
  const args = [...(options.nodeFlags ?? []), "--conditions=server402-source", "--import", "tsx"];
  for (const p of options.preload ?? []) args.push("--import", p);
  args.push(MAIN);

  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => {
      for (const c of live) c.kill("SIGKILL");
    });
  }
  let tail = "";
  const debug = process.env.SERVER_PROCESS_DEBUG === "1";
  const keep = (chunk: Buffer) => {
    const s = chunk.toString("utf8");
    tail = (tail + s).slice(-65_536);
    if (debug) process.stderr.write(s.replace(/^/gm, `[${name} ${child.pid}] `));
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });

  const timeoutMs = options.readyTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let url: string | undefined;
  try {
    // 1. The URL main.ts prints once listening.
    url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not print its URL within ${timeoutMs} ms`)), timeoutMs);
      const onData = () => {
        const m = /serving .* at (http:\/\/[^\s]+)/.exec(tail);
        if (!m) return;
        clearTimeout(timer);
        child.stdout!.off("data", onData);
        resolve(m[1]!);
      };
      child.stdout!.on("data", onData);
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited during startup (code ${code}, signal ${signal})`));
      });
    });
    // 2. It answers HTTP (any JSON answer will do: an unknown path is a JSON 404).
    for (;;) {
      try {
        const res = await fetch(`${url}/__ready`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${name} at ${url} did not answer HTTP within ${timeoutMs} ms`, { cause: err });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (err) {
    child.kill("SIGKILL");
    await exited;
    throw new Error(`${(err as Error).message}\n--- ${name} output ---\n${tail}`, { cause: err });
  }

  const port = Number(new URL(url).port);
  const fixed: ServerProcessOptions = { ...options, env: { ...options.env, PORT: String(port) } };
  const alive = () => child.exitCode === null && child.signalCode === null;
  const proc: ServerProcess = {
    url,
    port,
    pid: child.pid!,
    options: fixed,
    exited,
    alive,
    output: () => tail,
    async kill9() {
      if (alive()) child.kill("SIGKILL");
      await exited;
    },
    async stop(graceMs = 10_000) {
      if (alive()) {
        child.kill("SIGTERM");
        const force = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(force);
      }
    },
    async restart() {
      if (alive()) throw new Error(`${name} (pid ${child.pid}) is still running; kill9() or stop() it first`);
      return startServerProcess(fixed);
    },
  };
  return proc;
}
