/**
 * Scenarios 1 (402 answers) and 2 (token-paid requests): throughput of the
 * same route under several contenders, each in its own process, driven by
 * autocannon from the bench process, alternating contenders round by round.
 * Every ratio compares a contender with bare Express measured in the same
 * round, so machine noise hits both sides of a ratio alike. Each round starts
 * every contender afresh: two processes of the same code differed here by
 * 5–10% for tens of seconds (why is not measured; JIT decisions or memory
 * layout are likely), and a process kept for all rounds carried that luck
 * into every one of its ratios. Beside req/s, each run records the server
 * process's CPU time per request, which a stall of the machine (another
 * tenant, the load generator) changes far less.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DevChain } from "server402/devchain";
import { ADMIN_KEY, type Target } from "../targets/types.js";
import { cpuSecondsOf, fmt, hostCpu, load, log, median, pin, rotate, settings, startChild, stealPercent, type Child, type LoadResult, type Scenario } from "../lib.js";

export interface Contender {
  name: string;
  target: Target;
  /** Expected HTTP status of every answer. */
  status: number;
  /** Goal: minimum ratio to bare, if any. */
  goal?: number;
}

/** Scenario 2's reference row: Express with a middleware that only calls `next()`. */
const NOOP = "Express + no-op middleware (reference)";

export function chainOf(chain: DevChain, settlerKey = chain.accounts.relayer.privateKey): Target["chain"] {
  return { rpcUrl: chain.rpcUrl, chainId: chain.chainId, usdc: chain.usdc, payTo: chain.accounts.payTo.address, settlerKey };
}

/** One process per contender; `pinned`: on the servers' core (see `pin` in bench/lib.ts). */
export async function startTargets(contenders: Contender[], pinned = false): Promise<Child[]> {
  return Promise.all(contenders.map((c) => startChild(c.name, "bench/targets/http-target.ts", [JSON.stringify(c.target)], {}, { pinned })));
}

/** How the HTTP throughput scenarios place processes, for their notes. */
export function placementNote(): string {
  return pin
    ? `CPU pinning: every server contender on CPU ${pin.server}, the load generator (autocannon) on CPU ${pin.load} (taskset; BENCH_PIN=0 turns it off).`
    : "No CPU pinning (fewer than 2 CPUs, no taskset, or BENCH_PIN=0): servers and load generator share the cores.";
}

/** Buy `n` prepaid tokens on a server402 target through its payments API (create + operator confirm). */
export async function buyTokens(url: string, n: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const created = await fetch(`${url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"serviceId":"bench"}' });
    if (created.status !== 201) throw new Error(`create payment → ${created.status} ${await created.text()}`);
    const { token, paymentId } = (await created.json()) as { token: string; paymentId: string };
    const confirmed = await fetch(`${url}/api/payments/${paymentId}/confirm`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" }, body: "{}" });
    if (confirmed.status !== 200) throw new Error(`confirm payment → ${confirmed.status} ${await confirmed.text()}`);
    tokens.push(token);
  }
  return tokens;
}

interface Run extends LoadResult {
  round: number;
  contender: string;
  /** The server process's CPU time (user + system) per answered request, µs. */
  cpuUs: number;
  /** Share of the machine's CPU time stolen by the hypervisor during the run, %. */
  stealPct: number;
}

/** What a round's load on contender `i` sends. */
type LoadHeaders = { headers?: Record<string, string>; perConnection?: (i: number) => Record<string, string> };

/**
 * `rounds` rounds; in each, every contender is started afresh (`start`),
 * readied (`prepare`, e.g. buying its tokens) and warmed up, then gets one
 * run of `seconds`, in an order rotated by one per round; its processes are
 * stopped at the end of the round.
 */
export async function alternate(
  rounds: number,
  contenders: Contender[],
  start: (round: number) => Promise<Child[]>,
  prepare: (children: Child[]) => Promise<(contender: number) => LoadHeaders>,
): Promise<Run[]> {
  const idx = contenders.map((_, i) => i);
  const runs: Run[] = [];
  for (let round = 0; round < rounds; round++) {
    const children = await start(round);
    try {
      const headersFor = await prepare(children);
      for (const i of idx) await load({ url: `${children[i]!.url}/weather`, seconds: settings.warmup, ...headersFor(i) });
      for (const i of rotate(idx, round)) {
        const pid = children[i]!.pid;
        const cpuBefore = cpuSecondsOf(pid);
        const hostBefore = hostCpu();
        const r = await load({ url: `${children[i]!.url}/weather`, ...headersFor(i) });
        const stealPct = stealPercent(hostBefore, hostCpu());
        const cpuUs = ((cpuSecondsOf(pid) - cpuBefore) * 1e6) / Math.max(1, r.total);
        runs.push({ ...r, round, contender: contenders[i]!.name, cpuUs, stealPct });
        log(`round ${round + 1}/${rounds} ${contenders[i]!.name}: ${fmt.int(r.rps)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, server CPU ${cpuUs.toFixed(0)} µs/request, steal ${stealPct.toFixed(1)}%, statuses ${JSON.stringify(r.statuses)}`);
      }
    } finally {
      await Promise.all(children.map((ch) => ch.stop()));
    }
  }
  return runs;
}

/** Table rows and goal check: median req/s, latency, median of per-round ratios to bare. */
export function summarize(id: number, title: string, goal: string, contenders: Contender[], runs: Run[], notes: string[]): Scenario {
  const bare = contenders[0]!.name;
  const rows: string[][] = [];
  let met: boolean | undefined;
  const raw: Record<string, unknown> = {};
  for (const c of contenders) {
    const mine = runs.filter((r) => r.contender === c.name);
    const bareOf = (r: Run) => runs.find((b) => b.contender === bare && b.round === r.round)!;
    const ratios = mine.map((r) => r.rps / bareOf(r).rps);
    // the same comparison by the server's CPU time per request (bare's ÷ this one's): noise that
    // stalls a run (another tenant, the load generator) lowers its req/s but hardly its CPU per request
    const cpuRatios = mine.map((r) => bareOf(r).cpuUs / r.cpuUs);
    const bad = mine.reduce((n, r) => n + r.errors + r.timeouts + Object.entries(r.statuses).filter(([s]) => Number(s) !== c.status).reduce((m, [, v]) => m + v, 0), 0);
    const ratio = median(ratios);
    const ok = c.goal === undefined ? undefined : ratio >= c.goal && bad === 0;
    if (ok !== undefined) met = (met ?? true) && ok;
    raw[c.name] = { runs: mine, ratios, medianRatio: ratio, cpuRatios, medianCpuRatio: median(cpuRatios), unexpectedAnswers: bad };
    rows.push([
      c.name,
      `${c.status}`,
      fmt.int(median(mine.map((r) => r.rps))),
      fmt.ms(median(mine.map((r) => r.p50)), 0),
      fmt.ms(median(mine.map((r) => r.p99)), 0),
      c.name === bare ? "1.00" : fmt.ratio(ratio),
      c.name === bare ? "" : ratios.map(fmt.ratio).join(" / "),
      `${median(mine.map((r) => r.cpuUs)).toFixed(0)} µs`,
      c.name === bare ? "1.00" : fmt.ratio(median(cpuRatios)),
      c.goal === undefined ? "" : `≥ ${c.goal.toFixed(2)} ${ok ? "✓" : "✗"}`,
      bad ? `${bad} unexpected` : "0",
    ]);
  }
  const steal = runs.map((r) => r.stealPct);
  return {
    id,
    title,
    goal,
    met,
    columns: ["contender", "status", "req/s (median)", "p50", "p99", "ratio to bare (median)", "per-round ratios", "server CPU / request", "CPU-time ratio", "goal", "errors"],
    rows,
    notes: [
      ...notes,
      `The machine's CPU time taken by the hypervisor for other guests (steal) during the runs: median ${median(steal).toFixed(1)}%, highest ${Math.max(...steal).toFixed(1)}% (/proc/stat).`,
    ],
    raw,
  };
}

/** Scenario 1: unpaid requests answered 402, against bare Express answering 200. */
export async function scenario402(chain: DevChain): Promise<Scenario> {
  const c = chainOf(chain);
  const contenders: Contender[] = [
    { name: "bare Express", target: { kind: "bare", chain: c }, status: 200 },
    { name: "server402", target: { kind: "server402", chain: c }, status: 402, goal: 0.95 },
    { name: "x402-express 1.2.0", target: { kind: "x402-express", chain: chainOf(chain, chain.accounts.payers[8]!.privateKey) }, status: 402 },
    { name: "@x402/express 2.27", target: { kind: "x402-express-v2", chain: chainOf(chain, chain.accounts.payers[8]!.privateKey) }, status: 402 },
  ];
  const runs = await alternate(
    settings.rounds,
    contenders,
    () => startTargets(contenders, true),
    async () => () => ({ headers: { accept: "application/json" } }),
  );
  return summarize(1, "402 answer throughput (GET /weather, unpaid)", "server402 ≥ 0.95 × bare Express", contenders, runs, [
    `autocannon -c ${settings.connections}, ${settings.seconds} s per run, ${settings.rounds} alternating rounds; each round starts every contender afresh in its own process and warms it up for ${settings.warmup} s.`,
    "server402 answers v1 JSON body + v2 PAYMENT-REQUIRED header; x402-express 1.2.0 a v1 JSON body; @x402/express a v2 header with body {}.",
    placementNote(),
  ]);
}

/** Scenario 2: token-paid requests (X-Payment-Token, one token per connection) per store. */
export async function scenarioTokens(chain: DevChain): Promise<Scenario> {
  const c = chainOf(chain);
  const dir = mkdtempSync(join(tmpdir(), "server402-bench-"));
  const contenders: Contender[] = [
    { name: "bare Express", target: { kind: "bare", chain: c }, status: 200 },
    { name: NOOP, target: { kind: "noop", chain: c }, status: 200 },
    { name: "server402 + MemoryStore", target: { kind: "server402", tokens: true, store: "memory", chain: c }, status: 200, goal: 0.9 },
    { name: "server402 + SqliteStore", target: { kind: "server402", tokens: true, store: "sqlite", chain: c }, status: 200, goal: 0.75 },
  ];
  const notes = [
    `autocannon -c ${settings.connections}, ${settings.seconds} s per run, ${settings.tokenRounds} alternating rounds (BENCH_TOKEN_ROUNDS); each round starts every contender afresh in its own process (a new SQLite file) and warms it up for ${settings.warmup} s; each connection spends its own prepaid token (1,000,000 calls) bought through POST /api/payments + operator confirm.`,
    "Each paid request: reserve a call (atomic), run the handler, commit the call after the answer is sent. server402 runs without an onEvent hook (scenario 4 has one).",
    `"${NOOP}" is app.use((req, res, next) => next()) before the same route: what one more Express layer costs any middleware, paid or not.`,
    placementNote(),
  ];
  if (settings.redisUrl) {
    contenders.push({ name: "server402 + RedisStore", target: { kind: "server402", tokens: true, store: "redis", redisUrl: settings.redisUrl, chain: c }, status: 200, goal: 0.65 });
  } else {
    notes.push("RedisStore skipped: set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379) to include it.");
    log("scenario 2: RedisStore skipped (REDIS_URL is not set)");
  }
  try {
    const runs = await alternate(
      settings.tokenRounds,
      contenders,
      // a fresh SQLite file per round, like every other contender's fresh state
      (round) => startTargets(contenders.map((c) => (c.target.store === "sqlite" ? { ...c, target: { ...c.target, sqlitePath: join(dir, `bench-${round}.sqlite`) } } : c)), true),
      async (children) => {
        const tokens: string[][] = [];
        for (let i = 0; i < contenders.length; i++) {
          tokens.push(contenders[i]!.target.kind === "server402" ? await buyTokens(children[i]!.url!, settings.connections) : [`s402_${"A".repeat(42)}A`]);
        }
        return (i) => ({ perConnection: (k) => ({ "x-payment-token": tokens[i]![k % tokens[i]!.length]! }) });
      },
    );
    return summarize(2, "Token-paid requests (GET /weather with X-Payment-Token)", "memory ≥ 0.90, SQLite ≥ 0.75, Redis ≥ 0.65 × bare", contenders, runs, notes);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
