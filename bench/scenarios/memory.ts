/**
 * Scenario 6: RSS of a server402 process across 100,000 paid requests.
 * Token-paid (X-Payment-Token, one 1,000,000-call token per connection):
 * every request reserves a call, runs the handler and commits the call, so
 * a leak in reservations, leases, locks or per-request buffers shows up as
 * growth; x402 at this count would need 100,000 on-chain settlements, which
 * measures the chain, not the server. The RSS is sampled every 250 ms from
 * /proc; the goal is no growth of the RSS floor from early in the run to
 * its end beyond GC noise.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DevChain } from "server402/devchain";
import { fmt, load, log, percentile, settings, type Scenario } from "../lib.js";
import { buyTokens, chainOf, placementNote, startTargets, type Contender } from "./http.js";

const SLACK_MB = 20;

export async function scenarioMemory(chain: DevChain): Promise<Scenario> {
  const dir = mkdtempSync(join(tmpdir(), "server402-bench-rss-"));
  const c = chainOf(chain);
  const contenders: Contender[] = [
    { name: "server402 + SqliteStore", target: { kind: "server402", tokens: true, store: "sqlite", sqlitePath: join(dir, "rss.sqlite"), chain: c }, status: 200 },
    { name: "server402 + MemoryStore", target: { kind: "server402", tokens: true, store: "memory", chain: c }, status: 200 },
  ];
  const total = settings.rssRequests;
  const marks = Array.from({ length: 10 }, (_, i) => Math.round(((i + 1) * total) / 10));
  const rows: string[][] = [];
  const raw: Record<string, unknown> = {};
  let met = true;
  try {
    for (const contender of contenders) {
      const [child] = await startTargets([contender], true);
      try {
        const tokens = await buyTokens(child!.url!, settings.connections);
        const start = child!.rss();
        let done = 0;
        const samples: Array<{ requests: number; rss: number }> = [{ requests: 0, rss: start }];
        const timer = setInterval(() => samples.push({ requests: done, rss: child!.rss() }), 250);
        log(`scenario 6: ${contender.name}, ${total.toLocaleString("en-US")} token-paid requests`);
        const r = await load({ url: `${child!.url}/weather`, amount: total, perConnection: (k) => ({ "x-payment-token": tokens[k % tokens.length]! }), onResponse: () => done++ });
        clearInterval(timer);
        samples.push({ requests: done, rss: child!.rss() });
        // GC makes single samples swing by tens of MB, so compare floors: the 25th percentile of the
        // samples taken while a stretch of requests ran. A leak raises the floor; garbage does not.
        const during = (from: number, to: number) => samples.filter((x) => x.requests > from && x.requests <= to).map((x) => x.rss);
        const byMark = marks.map((end, i) => percentile(during(i === 0 ? 0 : marks[i - 1]!, end), 25));
        // Growth: the last fifth of the requests against the second and third tenths (the first includes JIT warm-up).
        const early = percentile(during(marks[0]!, marks[2]!), 25);
        const late = percentile(during(marks[7]!, marks[9]!), 25);
        const growth = late - early;
        const peak = Math.max(...samples.map((s) => s.rss));
        const bad = r.errors + r.timeouts + Object.entries(r.statuses).filter(([s]) => s !== "200").reduce((m, [, v]) => m + v, 0);
        const ok = growth <= SLACK_MB * 1e6 && bad === 0 && r.total >= total;
        met &&= ok;
        raw[contender.name] = { samples, byMark, result: r };
        rows.push([
          contender.name,
          fmt.int(r.total),
          fmt.mb(start),
          byMark.map((b) => (b / 1e6).toFixed(0)).join(" "),
          fmt.mb(peak),
          `${growth >= 0 ? "+" : ""}${(growth / 1e6).toFixed(1)} MB`,
          fmt.int(r.rps),
          bad ? `${bad} unexpected` : "0",
          `≤ +${SLACK_MB} MB ${ok ? "✓" : "✗"}`,
        ]);
        log(`scenario 6: ${contender.name}: RSS floor by 10% steps ${byMark.map((b) => (b / 1e6).toFixed(0)).join(" ")} MB`);
      } finally {
        await child!.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    id: 6,
    title: `Memory: RSS across ${total.toLocaleString("en-US")} token-paid requests`,
    goal: `RSS flat: floor during the last fifth of the requests ≤ floor during the 2nd–3rd tenths + ${SLACK_MB} MB`,
    met,
    columns: ["contender", "requests", "RSS before", "RSS floor (MB) per tenth of the requests", "peak", "floor growth (2nd–3rd tenths → last fifth)", "req/s", "errors", "goal"],
    rows,
    notes: [`autocannon -c ${settings.connections} --amount ${total}; one prepaid token (1,000,000 calls) per connection; RSS of the server process read from /proc every 250 ms; "floor" = 25th percentile of the samples taken during a stretch of requests (garbage collection makes single samples swing by tens of MB; a leak raises the floor).`, placementNote()],
    raw,
  };
}
