/**
 * Calibration and evaluation of the local engine on a labelled set of real
 * photos (test/fixtures/faces/meds, see LICENSES.md there): descriptors per
 * photo, same-/different-person pair scores, ROC AUC, equal error rate,
 * true/false accept rates with 95 % confidence intervals, and the fit of the
 * cosine → Confidence anchors on the calibration half. Used by
 * `npm run calibrate:face` (scripts/face-calibrate.ts) and by the tests.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { prepareImage } from "./decode.js";
import { judgeableFace } from "./index.js";
import { alignedPipeline, loadFaceModel, type RecognizerName } from "./model.js";
import { cosineSimilarity, faceImageStats, qualityScore } from "./score.js";

/** One photo of the labelled set. */
export interface LabelledPhoto {
  /** File name inside the set's directory, `S<identity>-<encounter>-<shot>.jpg`. */
  file: string;
  identity: string;
  /** Encounter number: a different occasion (booking) of the same person. */
  encounter: string;
  split: "calibration" | "heldout";
}

const NAME = /^S(\d{3})-(\d{2})-(\d{2})\.jpg$/;

/**
 * Lists the photos of a set directory and assigns whole identities to the
 * calibration or held-out half (no person is in both): identities with several
 * photos, largest first, each go to the half with fewer same-person pairs so
 * far; single-photo identities alternate.
 */
export function listPhotoSet(dir: string): LabelledPhoto[] {
  const byId = new Map<string, { file: string; encounter: string }[]>();
  for (const file of readdirSync(dir).sort()) {
    const m = NAME.exec(file);
    if (!m) continue;
    const list = byId.get(m[1]) ?? [];
    list.push({ file, encounter: m[2] });
    byId.set(m[1], list);
  }
  const ids = [...byId.keys()].sort((a, b) => byId.get(b)!.length - byId.get(a)!.length || a.localeCompare(b));
  const pairs = { calibration: 0, heldout: 0 };
  let single = 0;
  const out: LabelledPhoto[] = [];
  for (const id of ids) {
    const photos = byId.get(id)!;
    let split: LabelledPhoto["split"];
    if (photos.length > 1) {
      split = pairs.calibration <= pairs.heldout ? "calibration" : "heldout";
      pairs[split] += (photos.length * (photos.length - 1)) / 2;
    } else {
      split = single++ % 2 === 0 ? "calibration" : "heldout";
    }
    for (const p of photos) out.push({ file: p.file, identity: id, encounter: p.encounter, split });
  }
  return out.sort((a, b) => a.file.localeCompare(b.file));
}

/** A photo with the descriptor of its largest face (null when the engine would refuse the photo). */
export interface EmbeddedPhoto extends LabelledPhoto {
  embedding: number[] | null;
  /** Why the engine would refuse this photo (`no_face`/`low_quality` message), if it would. */
  refused?: string;
  faces: number;
  quality: number;
  /** Milliseconds of detection + description for this photo. */
  inferMs: number;
}

/** Descriptor cache entry, keyed by recognizer and the photo's SHA-1. */
type Cache = Record<string, Omit<EmbeddedPhoto, keyof LabelledPhoto>>;

/**
 * Computes the largest face's descriptor of every photo with `recognizer`,
 * in this thread, through the engine's own decoding and model code. `cache`
 * (an object the caller persists, e.g. to /tmp) skips photos already done.
 */
export async function embedPhotos(
  dir: string,
  photos: LabelledPhoto[],
  recognizer: RecognizerName,
  cache: Cache = {},
): Promise<{ photos: EmbeddedPhoto[]; loadMs: number }> {
  let model: Awaited<ReturnType<typeof loadFaceModel>> | undefined;
  const out: EmbeddedPhoto[] = [];
  for (const p of photos) {
    const bytes = readFileSync(path.join(dir, p.file));
    // The aligned pipeline's key carries its crop parameters, so a cache from other parameters is not reused.
    const pipe = alignedPipeline(recognizer);
    const variant = pipe ? `${recognizer}(${pipe.size},${pipe.zoom},${pipe.flip})` : recognizer;
    const key = `${variant}:${createHash("sha1").update(bytes).digest("hex")}`;
    let hit = cache[key];
    if (!hit) {
      model ??= await loadFaceModel(recognizer);
      const prepared = await prepareImage(bytes, "A", { maxPixels: 50_000_000, maxSide: 1280 });
      const r = await model.detect(prepared.image);
      // The engine's own gates: a photo it would refuse is not scored.
      let best: ReturnType<typeof judgeableFace> | undefined;
      let refused: string | undefined;
      try {
        best = judgeableFace(r.faces, prepared, "A");
        best.stats = faceImageStats(prepared.image, best.box);
      } catch (err) {
        refused = (err as Error).message;
      }
      hit = {
        embedding: best ? Array.from(best.embedding) : null,
        refused,
        faces: r.faces.length,
        quality: best ? qualityScore(best) : 0,
        inferMs: r.inferMs,
      };
      cache[key] = hit;
    }
    out.push({ ...p, ...hit });
  }
  return { photos: out, loadMs: model?.loadMs ?? 0 };
}

/**
 * Cosine scores of every same-person and every different-person pair within
 * one split; `genuineIdentity[i]` is the person of `genuine[i]`.
 */
export function pairScores(
  photos: EmbeddedPhoto[],
  split: LabelledPhoto["split"],
): { genuine: number[]; genuineIdentity: string[]; impostor: number[]; missing: number } {
  const inSplit = photos.filter((p) => p.split === split);
  const genuine: number[] = [];
  const genuineIdentity: string[] = [];
  const impostor: number[] = [];
  let missing = 0;
  for (let i = 0; i < inSplit.length; i++) {
    for (let j = i + 1; j < inSplit.length; j++) {
      const a = inSplit[i];
      const b = inSplit[j];
      const same = a.identity === b.identity;
      // A photo the engine refuses (no_face / low_quality) is not scored: count its pairs apart.
      if (!a.embedding || !b.embedding) {
        missing++;
        continue;
      }
      const score = cosineSimilarity(a.embedding, b.embedding);
      if (same) {
        genuine.push(score);
        genuineIdentity.push(a.identity);
      } else impostor.push(score);
    }
  }
  return { genuine, genuineIdentity, impostor, missing };
}

/** ROC AUC (probability a same-person pair outscores a different-person pair; ties count half). */
export function rocAuc(genuine: number[], impostor: number[]): number {
  const imp = [...impostor].sort((a, b) => a - b);
  let sum = 0;
  for (const g of genuine) {
    // count impostors < g and == g by binary search
    let lo = 0;
    let hi = imp.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (imp[mid] < g) lo = mid + 1;
      else hi = mid;
    }
    let eq = lo;
    while (eq < imp.length && imp[eq] === g) eq++;
    sum += lo + (eq - lo) / 2;
  }
  return sum / (genuine.length * imp.length);
}

/** Hanley–McNeil 95 % interval of an AUC. */
export function aucInterval(auc: number, nGenuine: number, nImpostor: number): [number, number] {
  const q1 = auc / (2 - auc);
  const q2 = (2 * auc * auc) / (1 + auc);
  const v = (auc * (1 - auc) + (nGenuine - 1) * (q1 - auc * auc) + (nImpostor - 1) * (q2 - auc * auc)) / (nGenuine * nImpostor);
  const h = 1.96 * Math.sqrt(Math.max(0, v));
  return [Math.max(0, auc - h), Math.min(1, auc + h)];
}

/** Equal error rate: where the false-reject and false-accept rates cross. */
export function equalErrorRate(genuine: number[], impostor: number[]): number {
  const cuts = [...new Set([...genuine, ...impostor])].sort((a, b) => a - b);
  let best = 1;
  for (const t of cuts) {
    const frr = genuine.filter((g) => g < t).length / genuine.length;
    const far = impostor.filter((s) => s >= t).length / impostor.length;
    best = Math.min(best, Math.max(frr, far));
  }
  return best;
}

/**
 * 95 % interval of a proportion k/n: Wilson score interval; when k is 0 or n
 * the exact (Clopper–Pearson) bound is used on that side.
 */
export function proportionInterval(k: number, n: number): [number, number] {
  if (n === 0) return [0, 1];
  if (k === 0) return [0, 1 - Math.pow(0.025, 1 / n)];
  if (k === n) return [Math.pow(0.025, 1 / n), 1];
  const z = 1.96;
  const p = k / n;
  const d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d;
  const h = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

/**
 * 95 % interval of the share of `accepted` pairs when pairs of the same person
 * are not independent: a percentile bootstrap that resamples people (`groups`,
 * one label per pair) with replacement, `reps` times, with a fixed seed so the
 * numbers repeat. Wilson's interval treats every pair as independent, which is
 * too narrow when a few people contribute most pairs.
 */
export function personBootstrapInterval(accepted: readonly boolean[], groups: readonly string[], reps = 10_000, seed = 18): [number, number] {
  if (accepted.length !== groups.length) throw new RangeError("one group label per pair");
  const byGroup = new Map<string, { n: number; k: number }>();
  accepted.forEach((ok, i) => {
    const g = byGroup.get(groups[i]) ?? { n: 0, k: 0 };
    g.n++;
    if (ok) g.k++;
    byGroup.set(groups[i], g);
  });
  const list = [...byGroup.values()];
  if (list.length === 0) return [0, 1];
  // mulberry32: small, seeded, good enough for resampling indices.
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const shares: number[] = [];
  for (let r = 0; r < reps; r++) {
    let n = 0;
    let k = 0;
    for (let j = 0; j < list.length; j++) {
      const g = list[Math.floor(random() * list.length)];
      n += g.n;
      k += g.k;
    }
    shares.push(k / n);
  }
  shares.sort((a, b) => a - b);
  return [shares[Math.floor(0.025 * (reps - 1))], shares[Math.ceil(0.975 * (reps - 1))]];
}

/** Standard normal quantiles for the false-accept rates of Alibaba's three thresholds. */
const Z = { 1e-3: 3.0902, 1e-4: 3.719, 1e-5: 4.2649 } as const;

/** The fitted calibration: cosine anchors and the Confidence values at them. */
export interface FittedCalibration {
  /** Piecewise-linear cosine → Confidence anchors, ascending. */
  anchors: [number, number][];
  /** Cosine thresholds at the three false-accept rates (1e-3, 1e-4, 1e-5). */
  cosineAt: [number, number, number];
  /** Mean and standard deviation of different-person cosines on the calibration half. */
  impostorMean: number;
  impostorSd: number;
}

/**
 * Fits the cosine thresholds for false-accept rates 1e-3/1e-4/1e-5 on
 * different-person pairs and maps them onto Alibaba's Thresholds 61/69/75.
 * The 1e-3 threshold is the empirical quantile when the set has at least 1000
 * pairs (else mean + z·sd of a normal fit). The set cannot show rates of 1e-4
 * or 1e-5, so those two are extrapolated from it with the normal fit's spread:
 * c(FAR) = c(1e-3) + (z(FAR) − z(1e-3))·sd — estimates, not measurements.
 * Confidence is 0 at mean − 3 sd and 100 at cosine 1, linear between anchors.
 */
export function fitCalibration(impostor: number[], thresholds: readonly [number, number, number]): FittedCalibration {
  const n = impostor.length;
  const mean = impostor.reduce((s, v) => s + v, 0) / n;
  const sd = Math.sqrt(impostor.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const sorted = [...impostor].sort((a, b) => b - a);
  const c3 = n >= 1000 ? sorted[Math.floor(1e-3 * n)] : mean + Z[1e-3] * sd;
  const c4 = c3 + (Z[1e-4] - Z[1e-3]) * sd;
  const c5 = c3 + (Z[1e-5] - Z[1e-3]) * sd;
  const round = (v: number) => Math.round(v * 1e4) / 1e4;
  return {
    anchors: [
      [round(mean - 3 * sd), 0],
      [round(c3), thresholds[0]],
      [round(c4), thresholds[1]],
      [round(c5), thresholds[2]],
      [1, 100],
    ],
    cosineAt: [round(c3), round(c4), round(c5)],
    impostorMean: round(mean),
    impostorSd: round(sd),
  };
}

/** Accept rates at one threshold. */
export interface RateAt {
  threshold: number;
  /** Same-person pairs at or above the threshold. */
  tar: number;
  tarInterval: [number, number];
  /** Different-person pairs at or above the threshold. */
  far: number;
  farInterval: [number, number];
  accepted: number;
  falseAccepts: number;
}

/** Held-out (or calibration) figures of one model and one Confidence mapping. */
export interface Evaluation {
  genuinePairs: number;
  impostorPairs: number;
  auc: number;
  aucInterval: [number, number];
  eer: number;
  /** At Thresholds[0], [1], [2] (Confidence ≥ threshold counts as "same person"). */
  rates: RateAt[];
  worstGenuine: number;
  bestImpostor: number;
}

/** Evaluates Confidence scores (already mapped) against the three thresholds. */
export function evaluate(genuine: number[], impostor: number[], thresholds: readonly number[]): Evaluation {
  const auc = rocAuc(genuine, impostor);
  return {
    genuinePairs: genuine.length,
    impostorPairs: impostor.length,
    auc,
    aucInterval: aucInterval(auc, genuine.length, impostor.length),
    eer: equalErrorRate(genuine, impostor),
    rates: thresholds.map((t) => {
      const accepted = genuine.filter((g) => g >= t).length;
      const falseAccepts = impostor.filter((s) => s >= t).length;
      return {
        threshold: t,
        tar: accepted / genuine.length,
        tarInterval: proportionInterval(accepted, genuine.length),
        far: falseAccepts / impostor.length,
        farInterval: proportionInterval(falseAccepts, impostor.length),
        accepted,
        falseAccepts,
      };
    }),
    worstGenuine: Math.min(...genuine),
    bestImpostor: Math.max(...impostor),
  };
}
