/**
 * Reliability item 7: sustained load on the real example server process —
 * RELIABILITY_LOAD_SECONDS (default 60) at RELIABILITY_LOAD_CONNECTIONS
 * (default 50) connections of token-paid face comparisons — with no error
 * and no memory growth.
 *
 * The example service sells 1-call tokens, so each connection loops over the
 * whole prepaid lifecycle: create a payment (POST /api/payments), have the
 * operator confirm it, spend its token on the face route. Every answer must
 * be the expected one (201, 200, 200). The server trusts X-Forwarded-For from
 * loopback, so each creation names its own client address and the
 * per-client creation limit (30/min) does not throttle the test.
 *
 * Memory: process.memoryUsage() is logged every second inside the server
 * (mem-probe.ts), each 5th sample right after a full garbage collection.
 * RSS is the V8 heap reservation (heapTotal) plus everything else: native
 * allocations, Buffers, SQLite's caches, code, stacks. After a warm-up of
 * half the run (at least 20 s), the last 10 s are compared with the first
 * 10 s after warm-up:
 *  - live V8 heap: the lowest heapUsed of the window's samples taken right
 *    after a full GC, ≤ +25 MB;
 *  - memory outside the V8 heap: the floor (25th percentile) of the
 *    window's RSS − heapTotal, ≤ +25 MB.
 * RSS itself is reported, not asserted: with flat live data, V8 still
 * resizes its heap reservation by tens of MB with the allocation rate (runs
 * of the same code read RSS samples of 237–336 MB, heapTotal 137–221 MB, for a
 * live heap of 56–66 MB), so a floor-to-floor RSS comparison failed on
 * sizing alone, while a leak shows in one of the two asserted parts.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDevChain, type DevChain } from "server402/devchain";
import type { AlibabaEmulator } from "../support/alibaba-emulator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { ADMIN_KEY, FACE_BODY, FACE_PATH, freshPayTo, ledgerOf, paymentOf, serverEnv, startEmulator, tempDir } from "./support.js";

const SECONDS = Number(process.env.RELIABILITY_LOAD_SECONDS ?? 60);
const CONNECTIONS = Number(process.env.RELIABILITY_LOAD_CONNECTIONS ?? 50);
const MAX_HEAP_GROWTH_MB = 25;
const MAX_NATIVE_GROWTH_MB = 25;

interface Reply {
  status: number;
  body: string;
}

function request(agent: http.Agent, base: URL, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string | number> = { ...headers };
    if (body !== undefined) h["content-length"] = Buffer.byteLength(body);
    const req = http.request({ agent, host: base.hostname, port: base.port, method, path, headers: h }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on("error", reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error("no answer within 30 s")));
    req.on("error", reject);
    req.end(body);
  });
}

/** 25th percentile: the floor a window keeps coming back to after garbage collections. */
const floor = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 4)] ?? NaN;
};

describe("reliability 7: sustained token-paid load on the example server process", function () {
  this.timeout((SECONDS + 120) * 1000);
  let chain: DevChain;
  let emulator: AlibabaEmulator;
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  let memLog: string;

  before(async () => {
    dir = tempDir("r7");
    chain = await startDevChain();
    emulator = await startEmulator();
    memLog = join(dir.path, "memory.jsonl");
    writeFileSync(memLog, "");
    server = await startServerProcess({
      name: "r7",
      preload: [fileURLToPath(new URL("./mem-probe.ts", import.meta.url))],
      nodeFlags: ["--expose-gc"],
      env: serverEnv({ chain, emulator, payTo: freshPayTo(), store: "sqlite", dataDir: dir.path, extra: { MEM_PROBE_LOG: memLog } }),
    });
  });
  after(async () => {
    await server?.stop();
    await emulator?.close();
    await chain?.stop();
    dir?.remove();
  });

  it(`${SECONDS} s at ${CONNECTIONS} connections of token-paid calls (create → confirm → call) → 0 errors, no memory growth after warm-up (live V8 heap < +${MAX_HEAP_GROWTH_MB} MB, memory outside the V8 heap < +${MAX_NATIVE_GROWTH_MB} MB)`, async () => {
    const base = new URL(server.url);
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
    const errors: string[] = [];
    const paymentIds: string[] = [];
    let calls = 0;
    let clients = 0;
    const started = Date.now();
    const stopAt = started + SECONDS * 1000;
    const json = { "content-type": "application/json" };

    async function loop() {
      while (Date.now() < stopAt && errors.length < 20) {
        const n = clients++;
        const ip = `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
        try {
          const created = await request(agent, base, "POST", "/api/payments", { ...json, "x-forwarded-for": ip }, '{"serviceId":"face-comparison"}');
          if (created.status !== 201) throw new Error(`create → ${created.status} ${created.body.slice(0, 200)}`);
          const { token, paymentId } = JSON.parse(created.body) as { token: string; paymentId: string };
          const confirmed = await request(agent, base, "POST", `/api/payments/${paymentId}/confirm`, { ...json, authorization: `Bearer ${ADMIN_KEY}` }, "{}");
          if (confirmed.status !== 200) throw new Error(`confirm → ${confirmed.status} ${confirmed.body.slice(0, 200)}`);
          const paid = await request(agent, base, "POST", FACE_PATH, { ...json, "x-payment-token": token }, FACE_BODY);
          if (paid.status !== 200) throw new Error(`paid call → ${paid.status} ${paid.body.slice(0, 200)}`);
          JSON.parse(paid.body);
          calls++;
          if (paymentIds.length < 200 || Math.random() < 0.001) paymentIds.push(paymentId);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }
    await Promise.all(Array.from({ length: CONNECTIONS }, loop));
    agent.destroy();
    const elapsed = (Date.now() - started) / 1000;

    const warmup = Math.max(20, SECONDS / 2);
    const window = Math.min(10, (SECONDS - warmup) / 2);
    const mb = (b: number) => (b / 1e6).toFixed(0);
    const mem = readFileSync(memLog, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { t: number; rss: number; heapUsed: number; heapTotal: number; gc: boolean });
    // the probe's clock starts with the server: shift the test's windows onto it
    const serverStart = mem.length ? mem[mem.length - 1]!.t - (Date.now() - started) / 1000 : 0;
    const memAt = (from: number, to: number) => mem.filter((m) => m.t >= serverStart + from && m.t < serverStart + to);
    const early = memAt(warmup, warmup + window);
    const late = memAt(SECONDS - window, SECONDS);
    // live data: the lowest heapUsed among a window's samples taken right after a full GC (the lowest of all
    // samples kept a window's dead objects when it had no major GC: one run read +29 MB that the next runs
    // of the same code did not)
    const liveHeap = (xs: typeof mem) => Math.min(...xs.filter((m) => m.gc).map((m) => m.heapUsed));
    const outside = (xs: typeof mem) => floor(xs.map((m) => m.rss - m.heapTotal));
    const rss = (xs: typeof mem) => floor(xs.map((m) => m.rss));
    const span = `${warmup.toFixed(0)}–${(warmup + window).toFixed(0)} s → ${(SECONDS - window).toFixed(0)}–${SECONDS} s`;
    console.log(
      `      ${calls} paid calls (${(calls / elapsed).toFixed(0)}/s, ${((calls * 3) / elapsed).toFixed(0)} requests/s) in ${elapsed.toFixed(1)} s; errors ${errors.length}; ` +
        `MB, ${span}: live V8 heap ${mb(liveHeap(early))} → ${mb(liveHeap(late))}, outside the V8 heap ${mb(outside(early))} → ${mb(outside(late))}; ` +
        `not asserted: RSS floor ${mb(rss(early))} → ${mb(rss(late))}, V8 heap reserved ${mb(floor(early.map((m) => m.heapTotal)))} → ${mb(floor(late.map((m) => m.heapTotal)))}; ` +
        `RSS every 10 s: ${Array.from({ length: Math.floor(SECONDS / 10) + 1 }, (_, i) => mem.find((m) => m.t >= serverStart + i * 10))
          .map((m) => (m ? mb(m.rss) : "?"))
          .join(" ")}`,
    );

    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} errors`);
    assert.ok(server.alive(), "the server is alive");
    assert.ok(calls > 0);
    assert.ok(early.length >= window / 2 && late.length >= window / 2, `enough memory samples (${early.length}, ${late.length})`);
    assert.ok(early.some((m) => m.gc) && late.some((m) => m.gc), "a sample after a full GC in each window");
    const heapGrowthMb = (liveHeap(late) - liveHeap(early)) / 1e6;
    assert.ok(heapGrowthMb < MAX_HEAP_GROWTH_MB, `live V8 heap grew ${heapGrowthMb.toFixed(1)} MB after warm-up`);
    const outsideGrowthMb = (outside(late) - outside(early)) / 1e6;
    assert.ok(outsideGrowthMb < MAX_NATIVE_GROWTH_MB, `memory outside the V8 heap grew ${outsideGrowthMb.toFixed(1)} MB after warm-up`);
    // Every sampled payment is used exactly once; the ledger holds one record per confirmed payment.
    for (const id of paymentIds.slice(0, 50)) {
      const p = await paymentOf(server.url, id);
      assert.equal(p.status, "exhausted", id);
    }
    assert.equal((await ledgerOf(server.url)).length, calls, "one ledger record per confirmed payment");
  });
});
