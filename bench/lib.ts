/**
 * Shared machinery of `npm run bench`: child processes for contenders, the
 * autocannon load generator (driven from this process), RSS sampling and
 * small statistics.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Settings, all from the environment. */
export const settings = {
  /** Measured seconds of one autocannon run. */
  seconds: num("BENCH_SECONDS", 3),
  /** Alternating rounds per scenario (each contender runs once per round). */
  rounds: num("BENCH_ROUNDS", 5),
  /**
   * Rounds of scenario 2 (token-paid requests). More than the others: its
   * goals are the tightest, and single rounds on this shared machine scatter
   * by ±0.05–0.10 (as the no-op reference row shows); the median of 9
   * scatters less than half as much as one round.
   */
  tokenRounds: num("BENCH_TOKEN_ROUNDS", 9),
  /** Warm-up seconds per contender per round of scenarios 1 and 2 (each round starts fresh processes; their JIT needs ~5 s). */
  warmup: num("BENCH_WARMUP", 5),
  /** autocannon connections. */
  connections: num("BENCH_CONNECTIONS", 50),
  /** Paid x402 round trips per contender per round (scenario 4). */
  paidPerRound: num("BENCH_PAID_PER_ROUND", 40),
  /** Seconds per contender per round of the verification loop (scenario 3). */
  verifySeconds: num("BENCH_VERIFY_SECONDS", 1.5),
  /** Paid requests of the memory scenario (6). */
  rssRequests: num("BENCH_RSS_REQUESTS", 100_000),
  /** Face engine pairs (scenario 5). */
  facePairs: num("BENCH_FACE_PAIRS", 40),
  /** Scenarios to run, e.g. "1,2,6". */
  only: (process.env.BENCH_ONLY ?? "1,2,3,4,5,6,7,8,9").split(",").map((s) => Number(s.trim())).filter(Boolean),
  redisUrl: process.env.REDIS_URL,
};

function num(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v} must be a positive number`);
  return n;
}

export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

// ---------------------------------------------------------------- CPU pinning

/**
 * For the HTTP throughput scenarios (1, 2, 6): every server contender on one
 * core, the load generator (this process, all its threads) on another, so
 * the two never take turns on a core and the scheduler's choices do not end
 * up in the ratios. Needs ≥ 2 CPUs and `taskset` (util-linux); BENCH_PIN=0
 * turns it off. Other processes (Redis, anvil) are left where they are.
 */
export const pin = ((): { load: string; server: string; all: string } | undefined => {
  if (process.env.BENCH_PIN === "0" || os.cpus().length < 2) return undefined;
  const r = spawnSync("taskset", ["-c", "-p", String(process.pid)], { encoding: "utf8" });
  const all = /affinity list:\s*(\S+)/.exec(r.stdout ?? "")?.[1];
  if (r.status !== 0 || !all) return undefined;
  return { load: "0", server: "1", all };
})();

/** Run `fn` with this process on the load generator's core (when pinning), then give it back every core it had. */
async function onLoadCore<T>(fn: () => Promise<T>): Promise<T> {
  if (!pin) return fn();
  spawnSync("taskset", ["-a", "-c", "-p", pin.load, String(process.pid)]);
  try {
    return await fn();
  } finally {
    spawnSync("taskset", ["-a", "-c", "-p", pin.all, String(process.pid)]);
  }
}

// ---------------------------------------------------------------- children

export interface Child {
  name: string;
  pid: number;
  /** Parsed READY payload. */
  ready: Record<string, unknown>;
  /** `http://127.0.0.1:<port>` when the child is a server. */
  url?: string;
  rss(): number;
  /** Lines printed after READY. */
  lines: string[];
  stop(): Promise<void>;
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Run the TS sources with tsx (BENCH_SOURCE=1) instead of the compiled JavaScript. */
export const fromSource = process.env.BENCH_SOURCE === "1";

/**
 * Run `script` (a TS file under bench/targets/) as its compiled JavaScript
 * (bench/dist, built by bench/run.ts from bench/tsconfig.targets.json) with
 * plain `node`; resolve once it prints `READY <json>`. `server402` resolves
 * to its compiled package (lib/dist), as users run it. No TypeScript loader
 * runs in a contender: under tsx (which, among other things, turns source
 * maps on) the same Express app used 8–10% more CPU per request here, which
 * blurred every ratio. BENCH_SOURCE=1
 * runs the TS sources (the script and server402's) with tsx instead.
 */
export async function startChild(
  name: string,
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  opts: { pinned?: boolean } = {},
): Promise<Child> {
  // BENCH_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every child.
  const nodeArgs = (process.env.BENCH_CHILD_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const argv = fromSource
    ? [...nodeArgs, "--conditions=server402-source", "--import", "tsx", join(ROOT, script), ...args]
    : [...nodeArgs, join(ROOT, "bench/dist", script.replace(/\.ts$/, ".js")), ...args];
  // taskset execs node, so the child's pid (for RSS) stays the server's
  const [cmd, cmdArgs] = opts.pinned && pin ? ["taskset", ["-c", pin.server, process.execPath, ...argv]] : [process.execPath, argv];
  const child = spawn(cmd, cmdArgs, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  let out = "";
  let err = "";
  const lines: string[] = [];
  child.stderr!.on("data", (c: Buffer) => (err = (err + c.toString()).slice(-8000)));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no READY within 60 s\n${err}`)), 60_000);
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      let nl: number;
      while ((nl = out.indexOf("\n")) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const m = /^READY (.*)$/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(JSON.parse(m[1]!));
        } else lines.push(line);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (code ${code}) before READY\n${err}`));
    });
  });
  const port = ready.port as number | undefined;
  return {
    name,
    pid: child.pid!,
    ready,
    url: port ? `http://127.0.0.1:${port}` : undefined,
    rss: () => rssOf(child.pid!),
    lines,
    exited,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** RSS of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * CPU time a process has used so far, user + system, all threads, in seconds
 * (Linux /proc; clock ticks of 1/100 s).
 */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // fields after the command name, which is in parentheses and may hold spaces
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * CPU time of process `pid` in nanoseconds: the scheduler's exact run time
 * (/proc/<pid>/task/<tid>/schedstat) summed over its threads. Unlike
 * `cpuSecondsOf` (10 ms ticks), precise enough for a batch of a few ms.
 */
export function cpuNsOf(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // a thread that ended between the listing and the read
    }
  }
  return ns;
}

/** The machine's CPU time counters (Linux /proc/stat, all CPUs, clock ticks): steal and the sum of all. */
export function hostCpu(): { steal: number; total: number } {
  const f = (/^cpu\s+(.*)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1] ?? "").trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user and nice)
  return { steal: f[7] ?? 0, total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
}

/**
 * Share of the machine's CPU time between two `hostCpu()` readings that the
 * hypervisor gave to other guests (steal), in percent: how much the machine
 * itself, not the code measured, took from a run.
 */
export function stealPercent(before: { steal: number; total: number }, after: { steal: number; total: number }): number {
  const total = after.total - before.total;
  return total > 0 ? (100 * (after.steal - before.steal)) / total : 0;
}

// ---------------------------------------------------------------- load

export interface LoadResult {
  /** Mean requests/s over the run. */
  rps: number;
  p50: number;
  p99: number;
  total: number;
  errors: number;
  timeouts: number;
  /** Count per HTTP status. */
  statuses: Record<string, number>;
  seconds: number;
}

export interface LoadOptions {
  url: string;
  seconds?: number;
  /** Stop after this many requests instead of a duration. */
  amount?: number;
  connections?: number;
  headers?: Record<string, string>;
  /** Per-connection headers (connection i gets perConnection(i)). */
  perConnection?: (i: number) => Record<string, string>;
  onResponse?: () => void;
}

/** One autocannon run from this process (on the load core when pinning) against a server in another process. */
export function load(o: LoadOptions): Promise<LoadResult> {
  return onLoadCore(() => loadNow(o));
}

async function loadNow(o: LoadOptions): Promise<LoadResult> {
  let conn = 0;
  const instance = autocannon({
    url: o.url,
    connections: o.connections ?? settings.connections,
    ...(o.amount ? { amount: o.amount } : { duration: o.seconds ?? settings.seconds }),
    headers: o.headers,
    timeout: 10,
    setupClient: o.perConnection
      ? (client: { setHeaders(h: Record<string, string>): void }) => {
          client.setHeaders({ ...o.headers, ...o.perConnection!(conn++) });
        }
      : undefined,
  } as autocannon.Options);
  if (o.onResponse) instance.on("response", o.onResponse);
  const r = (await instance) as autocannon.Result & { statusCodeStats?: Record<string, { count: number }> };
  const statuses: Record<string, number> = {};
  for (const [k, v] of Object.entries(r.statusCodeStats ?? {})) statuses[k] = v.count;
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    total: r.requests.total,
    errors: r.errors,
    timeouts: r.timeouts,
    statuses,
    seconds: r.duration,
  };
}

// ---------------------------------------------------------------- stats

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Rotate `xs` by `k` (so each round starts with another contender). */
export function rotate<T>(xs: readonly T[], k: number): T[] {
  const n = xs.length;
  return xs.map((_, i) => xs[(i + k) % n]!);
}

export const fmt = {
  int: (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–"),
  ms: (n: number, digits = 1) => (Number.isFinite(n) ? `${n.toFixed(digits)} ms` : "–"),
  ratio: (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "–"),
  mb: (bytes: number) => (Number.isFinite(bytes) ? `${(bytes / 1e6).toFixed(0)} MB` : "–"),
};

// ---------------------------------------------------------------- results

export interface Scenario {
  id: number;
  title: string;
  goal: string;
  /** undefined = not applicable / skipped. */
  met?: boolean;
  columns: string[];
  rows: string[][];
  notes: string[];
  raw: unknown;
  skipped?: string;
}

/** A markdown table. */
export function markdownTable(columns: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(columns), line(columns.map(() => "---")), ...rows.map(line)].join("\n");
}
