/**
 * `npm run bench`: server402 against the alternatives, side by side, in one
 * run on this machine.
 *
 *  1. 402 answer throughput: bare Express vs server402 vs x402-express 1.2.0 vs @x402/express 2.x
 *  2. token-paid throughput: bare vs server402 with MemoryStore, SqliteStore, RedisStore
 *  3. x402 verifications per second per core: server402 vs viem verifyTypedData
 *  4. paid x402 round trip on the dev chain: server402 + relayer vs x402-express + facilitator
 *  5. local face engine latency and pairs/s (bench/face-engine.ts)
 *  6. RSS across 100,000 paid requests
 *  7. unpaid big bodies on the example server: CPU per unpaid request, 13 MB against small (bench/scenarios/unpaid-body.ts)
 *  8. signature verification cost by kind: EOA vs ERC-1271 vs ERC-6492 (bench/scenarios/smart-wallets.ts)
 *  9. paid requests at 2 s blocks, one relayer wallet: settled payments/s, p50/p99 (bench/scenarios/block-time.ts; its own chain)
 *
 * How it is measured: every HTTP contender is its own child process
 * (bench/targets/http-target.ts, compiled) serving the same route on 127.0.0.1; the
 * load generator (autocannon, or the paid-request client of scenario 4)
 * runs here, in the parent, so it never shares a process with a server.
 * Contenders alternate round by round and every speed claim is a ratio to a
 * baseline measured in the same round. The machine is shared and noisy:
 * read ratios, not absolute figures.
 *
 * Environment: BENCH_SECONDS (3) BENCH_ROUNDS (5) BENCH_TOKEN_ROUNDS (9, scenario 2) BENCH_WARMUP (5)
 * BENCH_CONNECTIONS (50) BENCH_PAID_PER_ROUND (40) BENCH_VERIFY_SECONDS (1.5)
 * BENCH_RSS_REQUESTS (100000) BENCH_FACE_PAIRS (40) BENCH_FACE_WORKERS (2)
 * BENCH_ONLY ("1,2,3,4,5,6,7,8,9") BENCH_BLOCK_SECONDS (15) BENCH_BLOCK_CONCURRENCY (150) BENCH_BLOCK_HIGH (600) BENCH_BLOCK_LOW (20) (scenario 9) BENCH_PIN (1: servers and load generator on separate CPUs in scenarios 1, 2, 6) REDIS_URL (scenario 2's RedisStore; skipped
 * without it). BENCH_STRICT=1 exits 1 when a goal is missed. BENCH_SOURCE=1
 * runs contenders from TS sources with tsx instead of compiled JavaScript
 * (lib/dist and bench/dist, built here).
 *
 * Output: a markdown report on stdout (paste into bench/README.md), progress on
 * stderr, JSON in bench/results/<timestamp>.json.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { startDevChain, type DevChain } from "server402/devchain";
import { fromSource, log, markdownTable, ROOT, settings, type Scenario } from "./lib.js";
import { scenario402, scenarioTokens } from "./scenarios/http.js";
import { scenarioVerify } from "./scenarios/verify.js";
import { scenarioRoundTrip } from "./scenarios/roundtrip.js";
import { scenarioFace } from "./scenarios/face.js";
import { scenarioMemory } from "./scenarios/memory.js";
import { scenarioUnpaidBody } from "./scenarios/unpaid-body.js";
import { scenarioSmartWallets } from "./scenarios/smart-wallets.js";
import { scenarioBlockTime } from "./scenarios/block-time.js";

const started = new Date();
const cpus = os.cpus();
const machine = {
  date: started.toISOString(),
  cpus: cpus.length,
  cpuModel: cpus[0]?.model.trim() ?? "unknown",
  memoryGb: Math.round(os.totalmem() / 1e9),
  node: process.version,
  platform: `${os.platform()} ${os.release()}`,
  loadAverageAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
};
log(`${machine.date} · ${machine.cpus} × ${machine.cpuModel} · ${machine.memoryGb} GB · Node ${machine.node} · load ${machine.loadAverageAtStart.join(" ")}`);
log(`settings ${JSON.stringify({ ...settings, redisUrl: settings.redisUrl ? "(set)" : undefined })}`);

if (!fromSource) {
  // contenders run as plain JavaScript on server402's compiled package, as users run them
  const tsc = (project: string) => execFileSync(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, project)], { stdio: "inherit" });
  log("building lib/dist and bench/dist (tsc) so contenders run compiled JavaScript");
  tsc("lib/tsconfig.build.json");
  tsc("bench/tsconfig.targets.json");
}

let chain: DevChain | undefined;
const needsChain = settings.only.some((n) => [1, 2, 4, 6, 7].includes(n));
if (needsChain) chain = await startDevChain();

const plan: Array<[number, () => Promise<Scenario>]> = [
  [1, () => scenario402(chain!)],
  [2, () => scenarioTokens(chain!)],
  [3, () => scenarioVerify()],
  [4, () => scenarioRoundTrip(chain!)],
  [5, () => scenarioFace()],
  [6, () => scenarioMemory(chain!)],
  [7, () => scenarioUnpaidBody(chain!)],
  [8, () => scenarioSmartWallets()],
  [9, () => scenarioBlockTime()],
];
const results: Scenario[] = [];
try {
  for (const [id, run] of plan) {
    if (!settings.only.includes(id)) continue;
    const t0 = Date.now();
    log(`── scenario ${id} ──`);
    try {
      results.push(await run());
    } catch (err) {
      log(`scenario ${id} failed: ${(err as Error).stack ?? err}`);
      results.push({ id, title: `scenario ${id}`, goal: "", met: false, columns: [], rows: [], notes: [`failed: ${(err as Error).message}`], raw: {} });
    }
    log(`scenario ${id} took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
} finally {
  await chain?.stop();
}
const seconds = (Date.now() - started.getTime()) / 1000;

// ---------------------------------------------------------------- report
const mark = (m: boolean | undefined) => (m === undefined ? "–" : m ? "✓ met" : "✗ missed");
const out: string[] = [];
out.push(`### Benchmarks (${machine.date.slice(0, 10)}, ${machine.cpus} vCPU ${machine.cpuModel}, ${machine.memoryGb} GB RAM, Node ${machine.node})`, "");
out.push(
  `\`npm run bench\` — every contender in its own process on 127.0.0.1, load generated from a separate process, contenders alternating round by round; ratios compare figures measured in the same round. Load average at start: ${machine.loadAverageAtStart.join(" / ")}; total ${Math.round(seconds)} s.`,
  "",
);
out.push(
  markdownTable(
    ["#", "scenario", "goal", "result"],
    results.map((r) => [String(r.id), r.title, r.goal, r.skipped ? `skipped: ${r.skipped}` : mark(r.met)]),
  ),
  "",
);
for (const r of results) {
  out.push(`#### ${r.id}. ${r.title}`, "");
  if (r.skipped) {
    out.push(`Skipped: ${r.skipped}.`, "");
    continue;
  }
  if (r.rows.length) out.push(markdownTable(r.columns, r.rows), "");
  for (const n of r.notes) out.push(`- ${n}`);
  out.push("");
}
process.stdout.write(`${out.join("\n")}\n`);

const dir = join(ROOT, "bench", "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `${machine.date.replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ machine, settings: { ...settings, redisUrl: settings.redisUrl ? "(set)" : undefined }, seconds, results }, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2));
log(`JSON written to ${file}`);
if (process.env.BENCH_STRICT === "1" && results.some((r) => r.met === false)) process.exit(1);
process.exit(0);
