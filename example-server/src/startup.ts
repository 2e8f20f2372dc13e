/**
 * Startup checks of the example server that name the environment variable at
 * fault: PORT in use, an unusable DATA_DIR (errors), an unreachable RPC_URL
 * or Redis (warnings: the server still starts and answers 502/503 until they
 * come back). URLs are shown without credentials or paths.
 */
import { accessSync, constants, mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { RequestListener } from "node:http";
import type { Store } from "server402";

/** A startup problem caused by one environment variable; the message is one line saying how to fix it. */
export class StartupError extends Error {
  /** The environment variable at fault, e.g. `PORT`. */
  readonly variable: string;
  constructor(variable: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StartupError";
    this.variable = variable;
  }
}

/** What startup tells the operator: progress lines and warnings. */
export type StartupReport = (kind: "progress" | "warning", message: string) => void;

function portProblem(err: NodeJS.ErrnoException, host: string, port: number, variable = "PORT"): StartupError {
  const where = `${host}:${port}`;
  if (err.code === "EADDRINUSE") return new StartupError(variable, `${variable}=${port} is already in use on ${host}: stop the other server (e.g. another npm start) or set ${variable} to a free port (${variable}=0 picks one).`, { cause: err });
  if (err.code === "EACCES") return new StartupError("PORT", `PORT=${port} needs privileges on ${host}: use a port above 1023, e.g. PORT=4020.`, { cause: err });
  if (err.code === "EADDRNOTAVAIL") return new StartupError("HOST", `HOST=${host} is not an address of this machine (listening on ${where} failed): use 127.0.0.1 or 0.0.0.0.`, { cause: err });
  return new StartupError("PORT", `cannot listen on ${where} (PORT/HOST): ${err.code ?? err.message}.`, { cause: err });
}

/**
 * Fail fast, before the dev chain and the face engine load, when PORT is
 * taken: bind it once and let go. (The real listen reports the same way if
 * another process takes it in between.)
 */
export async function checkPortFree(host: string, port: number, variable = "PORT"): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (err: NodeJS.ErrnoException) => reject(portProblem(err, host, port, variable)));
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/** Listen with `handler` on host:port; a failure is a StartupError naming PORT or HOST. */
export function listen(handler: RequestListener, host: string, port: number): Promise<Server> {
  const server = createServer(handler);
  return new Promise((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => reject(portProblem(err, host, port)));
    server.listen(port, host, () => resolve(server));
  });
}

/** Create DATA_DIR if needed and check that the server can write there. */
export function prepareDataDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EACCES" || code === "EPERM" ? "is not writable by this user" : code === "ENOTDIR" || code === "EEXIST" ? "is (under) a file, not a directory" : `cannot be used (${code ?? (err as Error).message})`;
    throw new StartupError("DATA_DIR", `DATA_DIR=${dir} ${why}: set DATA_DIR to a writable directory (the SQLite store lives there), or STORE=memory for a try-out.`, { cause: err });
  }
}

/** A URL's scheme and host only (no user, password, path or query, which may hold keys). */
export function originOf(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return "(unparseable URL)";
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms)))]).finally(() => clearTimeout(timer));
}

/** Ask RPC_URL for its chain id; a failure or another chain is a warning naming RPC_URL. */
export async function probeRpc(rpcUrl: string, chainId: number, report: StartupReport, timeoutMs = 3000): Promise<void> {
  const where = originOf(rpcUrl);
  try {
    const res = await withTimeout(
      fetch(rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }), signal: AbortSignal.timeout(timeoutMs) }),
      timeoutMs,
    );
    const body = (await res.json().catch(() => undefined)) as { result?: string } | undefined;
    if (!res.ok || typeof body?.result !== "string") throw new Error(`HTTP ${res.status} without a chain id`);
    const actual = Number(BigInt(body.result));
    if (actual !== chainId) report("warning", `RPC_URL (${where}) serves chain ${actual}, but NETWORK needs chain ${chainId}: payments will be refused until RPC_URL points at the right chain.`);
  } catch (err) {
    const why = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
    report("warning", `RPC_URL (${where}) is unreachable (${why}): paid requests answer 502 chain_unavailable until it answers; check RPC_URL.`);
  }
}

/** Ping the store; a shared store that does not answer is a warning naming its variable. */
export async function probeStore(store: Store, variable: "REDIS_URL" | "DATABASE_URL", url: string, report: StartupReport, timeoutMs = 3000): Promise<void> {
  try {
    await withTimeout(store.ping(), timeoutMs);
  } catch (err) {
    report("warning", `${variable} (${originOf(url)}) is unreachable (${(err as Error).message}): paid requests answer 503 store_unavailable until it answers; check ${variable}.`);
  }
}
