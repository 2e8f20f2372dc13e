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
 * Memory: the server's RSS is sampled every second; after a warm-up of half
 * the run (at least 20 s: V8 grows its heap reservation for the first ~30 s
 * of this load, then holds it), the RSS floor of the last 10 s (25th
 * percentile of its samples: GC makes single samples swing by tens of MB)
 * may exceed the floor of the first 10 s after warm-up by at most 50 MB,
 * and the live V8 heap (lowest heapUsed of a window, reported by
 * mem-probe.ts inside the server right after a full garbage collection every
 * 5 s) by at most 25 MB.
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
const MAX_GROWTH_MB = 50;
const MAX_HEAP_GROWTH_MB = 25;

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

/** 25th percentile: the RSS floor a window keeps coming back to after garbage collections. */
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

  it(`${SECONDS} s at ${CONNECTIONS} connections of token-paid calls (create → confirm → call) → 0 errors, no memory growth after warm-up (RSS floor < +${MAX_GROWTH_MB} MB, live V8 heap < +${MAX_HEAP_GROWTH_MB} MB)`, async () => {
    const base = new URL(server.url);
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
    const errors: string[] = [];
    const samples: Array<{ t: number; rss: number }> = [];
    const paymentIds: string[] = [];
    let calls = 0;
    let clients = 0;
    const started = Date.now();
    const stopAt = started + SECONDS * 1000;
    const sampler = setInterval(() => {
      try {
        samples.push({ t: (Date.now() - started) / 1000, rss: server.rssBytes() });
      } catch (err) {
        errors.push(`RSS sample failed (server gone?): ${(err as Error).message}`);
      }
    }, 1000);
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
    clearInterval(sampler);
    agent.destroy();
    const elapsed = (Date.now() - started) / 1000;

    const warmup = Math.max(20, SECONDS / 2);
    const window = Math.min(10, (SECONDS - warmup) / 2);
    const early = samples.filter((s) => s.t >= warmup && s.t < warmup + window).map((s) => s.rss);
    const late = samples.filter((s) => s.t >= SECONDS - window).map((s) => s.rss);
    const growthMb = (floor(late) - floor(early)) / 1e6;
    const mb = (b: number) => (b / 1e6).toFixed(0);
    // Live data vs heap sizing, from inside the server (mem-probe.ts): the lowest heapUsed among a window's
    // samples taken right after a full GC (the lowest of all samples kept a window's dead objects when it
    // had no major GC: one run read +29 MB that the next runs of the same code did not).
    const mem = readFileSync(memLog, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { t: number; heapUsed: number; heapTotal: number; gc: boolean });
    const memAt = (from: number, to: number) => mem.filter((m) => m.t >= from && m.t < to);
    const lowHeap = (xs: typeof mem) => Math.min(...xs.filter((m) => m.gc).map((m) => m.heapUsed));
    const serverStart = mem.length ? mem[mem.length - 1]!.t - (Date.now() - started) / 1000 : 0;
    const heapEarly = memAt(serverStart + warmup, serverStart + warmup + window);
    const heapLate = memAt(serverStart + SECONDS - window, serverStart + SECONDS);
    console.log(
      `      ${calls} paid calls (${(calls / elapsed).toFixed(0)}/s, ${((calls * 3) / elapsed).toFixed(0)} requests/s) in ${elapsed.toFixed(1)} s; ` +
        `RSS MB by 10 s: ${samples.filter((_, i) => i % 10 === 9).map((s) => mb(s.rss)).join(" ")}; RSS floor ${mb(floor(early))} MB at ${warmup.toFixed(0)}–${(warmup + window).toFixed(0)} s, ${mb(floor(late))} MB at ${(SECONDS - window).toFixed(0)}–${SECONDS} s: growth ${growthMb.toFixed(1)} MB; ` +
        `V8 heap used after GC ${heapEarly.length ? mb(lowHeap(heapEarly)) : "?"} → ${heapLate.length ? mb(lowHeap(heapLate)) : "?"} MB (heap reserved ${heapLate.length ? mb(heapLate[heapLate.length - 1]!.heapTotal) : "?"} MB); errors ${errors.length}`,
    );

    assert.deepEqual(errors.slice(0, 10), [], `${errors.length} errors`);
    assert.ok(server.alive(), "the server is alive");
    assert.ok(calls > 0);
    assert.ok(early.length > 0 && late.length > 0, "enough RSS samples");
    assert.ok(growthMb < MAX_GROWTH_MB, `RSS grew ${growthMb.toFixed(1)} MB after warm-up`);
    assert.ok(heapEarly.some((m) => m.gc) && heapLate.some((m) => m.gc), "a sample after a full GC in each window");
    const heapGrowthMb = (lowHeap(heapLate) - lowHeap(heapEarly)) / 1e6;
    assert.ok(heapGrowthMb < MAX_HEAP_GROWTH_MB, `live V8 heap grew ${heapGrowthMb.toFixed(1)} MB after warm-up`);
    // Every sampled payment is used exactly once; the ledger holds one record per confirmed payment.
    for (const id of paymentIds.slice(0, 50)) {
      const p = await paymentOf(server.url, id);
      assert.equal(p.status, "exhausted", id);
    }
    assert.equal((await ledgerOf(server.url)).length, calls, "one ledger record per confirmed payment");
  });
});
