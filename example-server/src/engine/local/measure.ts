/**
 * Timing helper for any `FaceEngine` (local or Alibaba): runs comparisons in
 * a closed loop at a fixed concurrency and reports latency percentiles and
 * throughput. Used by bench/face-engine.ts.
 */
import type { CompareInput, FaceEngine } from "../types.js";

/** Outcome of `measureEngine`. Times in milliseconds. */
export interface MeasureResult {
  /** Comparisons attempted. */
  pairs: number;
  /** Comparisons in flight at once. */
  concurrency: number;
  /** Comparisons that threw (their latency is still counted). */
  errors: number;
  wallMs: number;
  pairsPerSecond: number;
  p50Ms: number;
  p95Ms: number;
  minMs: number;
  maxMs: number;
  /** Highest process RSS seen while measuring (bytes; includes worker threads). */
  peakRss: number;
}

/** Nearest-rank percentile (`p` in 0..100) of an ascending array; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/**
 * Runs `total` comparisons (cycling through `inputs`) with `concurrency`
 * callers, each starting its next comparison as soon as the previous ends.
 */
export async function measureEngine(
  engine: FaceEngine,
  inputs: readonly CompareInput[],
  opts: { total: number; concurrency: number },
): Promise<MeasureResult> {
  if (inputs.length === 0) throw new RangeError("inputs must not be empty");
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 50);
  const t0 = performance.now();
  const caller = async () => {
    while (next < opts.total) {
      const input = inputs[next++ % inputs.length];
      const t = performance.now();
      try {
        await engine.compare(input);
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, caller));
  } finally {
    clearInterval(sampler);
  }
  const wallMs = performance.now() - t0;
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    pairs: latencies.length,
    concurrency: opts.concurrency,
    errors,
    wallMs,
    pairsPerSecond: (latencies.length * 1000) / wallMs,
    p50Ms: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    minMs: sorted[0],
    maxMs: sorted[sorted.length - 1],
    peakRss,
  };
}
