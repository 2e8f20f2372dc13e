/**
 * Benchmark of the local face engine on 640 px image pairs.
 *
 *   node --import tsx bench/face-engine.ts [--pairs 40] [--workers 1,2]
 *
 * Prints, per worker count: cold start (engine created → ready, and → first
 * comparison done), comparison latency p50/p95 one comparison at a time (its
 * two images on two workers), latency and pairs per second with one caller
 * per worker (closed loop, every worker busy), and peak process RSS (worker
 * threads included). Run on an otherwise idle machine: figures scale with
 * free cores.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import sharp, { type Sharp } from "sharp";
import { createLocalEngine } from "../example-server/src/engine/local/index.js";
import { measureEngine } from "../example-server/src/engine/local/measure.js";
import type { CompareInput } from "../example-server/src/engine/types.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const total = Number(arg("pairs", "40"));
const workerCounts = arg("workers", "1,2").split(",").map(Number);
const fixtures = new URL("../test/fixtures/faces/", import.meta.url);
const load = (name: string) => readFileSync(new URL(name, fixtures));

/** 640 px (longest side) JPEGs: two people plus transformed copies, as same/different pairs. */
async function pairs640(): Promise<CompareInput[]> {
  const to640 = (img: Buffer | Sharp) =>
    (Buffer.isBuffer(img) ? sharp(img) : img).resize(640, 640, { fit: "inside" }).jpeg({ quality: 90 }).toBuffer();
  const hopper = load("grace_hopper.jpg");
  const astronaut = load("astronaut.png");
  const h = await to640(hopper);
  const a = await to640(astronaut);
  const hDark = await to640(sharp(hopper).modulate({ brightness: 0.7 }));
  const hRot = await to640(sharp(hopper).rotate(8, { background: "#808080" }));
  const aCrop = await to640(sharp(astronaut).extract({ left: 60, top: 0, width: 400, height: 420 }));
  return [
    { imageA: h, imageB: hDark },
    { imageA: h, imageB: a },
    { imageA: a, imageB: aCrop },
    { imageA: hRot, imageB: a },
  ];
}

const inputs = await pairs640();
console.log(`node ${process.version}, ${availableParallelism()} cpus, ${total} pairs of 640 px JPEGs per run`);
for (const workers of workerCounts) {
  const t0 = performance.now();
  const engine = createLocalEngine({ workers, maxQueue: 4 * workers });
  await engine.ready();
  const readyMs = performance.now() - t0;
  await engine.compare(inputs[0]);
  const firstMs = performance.now() - t0;
  // Warm-up: one comparison per worker at full concurrency.
  await measureEngine(engine, inputs, { total: workers * 2, concurrency: workers });
  // Latency: one comparison at a time, its two images on two workers when there are two.
  const single = await measureEngine(engine, inputs, { total, concurrency: 1 });
  // Throughput: one caller per worker, every worker busy all the time.
  const loaded = await measureEngine(engine, inputs, { total, concurrency: workers });
  await engine.close();
  console.log(
    [
      `workers=${workers}`,
      `cold ready=${readyMs.toFixed(0)} ms first-compare-done=${firstMs.toFixed(0)} ms`,
      `p50=${single.p50Ms.toFixed(0)} ms p95=${single.p95Ms.toFixed(0)} ms (min ${single.minMs.toFixed(0)}, max ${single.maxMs.toFixed(0)})`,
      `loaded p50=${loaded.p50Ms.toFixed(0)} ms loaded p95=${loaded.p95Ms.toFixed(0)} ms`,
      `${loaded.pairsPerSecond.toFixed(2)} pairs/s`,
      `peak RSS ${(Math.max(single.peakRss, loaded.peakRss) / 1e6).toFixed(0)} MB`,
      single.errors + loaded.errors ? `ERRORS ${single.errors + loaded.errors}` : "",
    ].join("  "),
  );
}
