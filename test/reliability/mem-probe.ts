/**
 * Test instrumentation loaded into the example server process with
 * `node --import` (see 7-sustained-load.test.ts): every second, append
 * `process.memoryUsage()` as a JSON line to MEM_PROBE_LOG, so the test can
 * tell V8 heap sizing (heapTotal, RSS) from live data (heapUsed). With
 * `--expose-gc`, every 5th sample follows a full garbage collection
 * (`gc: true`), so its heapUsed is the live data alone.
 */
import { appendFileSync } from "node:fs";

const path = process.env.MEM_PROBE_LOG;
if (path) {
  const t0 = Date.now();
  const gc = (globalThis as { gc?: () => void }).gc;
  let n = 0;
  setInterval(() => {
    const collected = gc !== undefined && ++n % 5 === 0;
    if (collected) gc();
    const m = process.memoryUsage();
    appendFileSync(path, `${JSON.stringify({ t: (Date.now() - t0) / 1000, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, gc: collected })}\n`);
  }, 1000).unref();
}
