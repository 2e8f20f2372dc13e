/**
 * Five-point face alignment: the similarity transform (rotation, uniform
 * scale, translation) that maps a face's eye centres, nose tip and mouth
 * corners onto a canonical template, and a bilinear warp of the RGB pixels
 * into a square crop. Pure functions (run in the worker before the
 * recognition model).
 */
import type { DecodedImage } from "./protocol.js";

/**
 * ArcFace's 112×112 five-point template (subject's right eye, left eye, nose
 * tip, right and left mouth corner, in image x/y) — the usual canonical
 * positions face-recognition models are aligned to.
 */
export const ARCFACE_112: readonly (readonly [number, number])[] = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** A 2-D similarity transform `q = a·p + t` with `a` a complex number (scale·e^{iθ}). */
export interface Similarity {
  /** Real and imaginary parts of `a`. */
  ar: number;
  ai: number;
  tx: number;
  ty: number;
}

/**
 * Least-squares similarity transform from `src` points to `dst` points
 * (Umeyama's method in the complex plane). Both are `[x, y]` lists of the same length ≥ 2.
 */
export function estimateSimilarity(src: readonly (readonly number[])[], dst: readonly (readonly number[])[]): Similarity {
  const n = src.length;
  if (n < 2 || dst.length !== n) throw new RangeError("need at least two point pairs of equal count");
  let psx = 0, psy = 0, qsx = 0, qsy = 0;
  for (let i = 0; i < n; i++) {
    psx += src[i][0]; psy += src[i][1]; qsx += dst[i][0]; qsy += dst[i][1];
  }
  const pmx = psx / n, pmy = psy / n, qmx = qsx / n, qmy = qsy / n;
  // a = Σ (q − q̄)·conj(p − p̄) / Σ |p − p̄|²
  let nr = 0, ni = 0, den = 0;
  for (let i = 0; i < n; i++) {
    const px = src[i][0] - pmx, py = src[i][1] - pmy;
    const qx = dst[i][0] - qmx, qy = dst[i][1] - qmy;
    nr += qx * px + qy * py;
    ni += qy * px - qx * py;
    den += px * px + py * py;
  }
  if (den === 0) throw new RangeError("source points coincide");
  const ar = nr / den, ai = ni / den;
  return { ar, ai, tx: qmx - (ar * pmx - ai * pmy), ty: qmy - (ai * pmx + ar * pmy) };
}

/** Applies a similarity transform to one point. */
export function applySimilarity(m: Similarity, x: number, y: number): [number, number] {
  return [m.ar * x - m.ai * y + m.tx, m.ai * x + m.ar * y + m.ty];
}

/**
 * The template for a square crop of `size` px: ArcFace's 112 template scaled
 * to `size` and then shrunk by `zoom` about the crop's centre (`zoom` < 1
 * leaves more context around the face).
 */
export function template(size: number, zoom = 1, dy = 0): [number, number][] {
  const c = size / 2;
  const k = size / 112;
  return ARCFACE_112.map(([x, y]) => [c + (x * k - c) * zoom, c + (y * k - c) * zoom + dy * size]);
}

/**
 * Warps the face whose five landmarks are `points` (`[x0, y0, …, x4, y4]` in
 * `image` pixels) onto `template(size, zoom, dy)`: returns `size × size × 3`
 * floats in 0..1 (RGB, row-major), bilinear, edge pixels repeated outside
 * the image. `flip` mirrors the crop horizontally; `dy` moves the face down
 * by that fraction of the crop (negative: up).
 */
export function alignFace(image: DecodedImage, points: readonly number[], size: number, zoom = 1, flip = false, dy = 0): Float32Array {
  if (points.length !== 10) throw new RangeError("need five landmarks");
  const src = [0, 1, 2, 3, 4].map((i) => [points[2 * i], points[2 * i + 1]]);
  const m = estimateSimilarity(src, template(size, zoom, dy));
  // Inverse map: p = (q − t) / a.
  const d = m.ar * m.ar + m.ai * m.ai;
  const ir = m.ar / d, ii = -m.ai / d;
  const px = new Uint8Array(image.data);
  const W = image.width, H = image.height;
  const out = new Float32Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x0 = 0; x0 < size; x0++) {
      const x = flip ? size - 1 - x0 : x0;
      // Pixel-index coordinates on both sides (as landmarks and the template are given).
      const qx = x - m.tx, qy = y - m.ty;
      let sx = ir * qx - ii * qy;
      let sy = ii * qx + ir * qy;
      sx = Math.min(W - 1, Math.max(0, sx));
      sy = Math.min(H - 1, Math.max(0, sy));
      const xa = Math.floor(sx), ya = Math.floor(sy);
      const xb = Math.min(W - 1, xa + 1), yb = Math.min(H - 1, ya + 1);
      const fx = sx - xa, fy = sy - ya;
      const o00 = (ya * W + xa) * 3, o01 = (ya * W + xb) * 3, o10 = (yb * W + xa) * 3, o11 = (yb * W + xb) * 3;
      const o = (y * size + x0) * 3;
      for (let c = 0; c < 3; c++) {
        const top = px[o00 + c] + (px[o01 + c] - px[o00 + c]) * fx;
        const bot = px[o10 + c] + (px[o11 + c] - px[o10 + c]) * fx;
        out[o + c] = (top + (bot - top) * fy) / 255;
      }
    }
  }
  return out;
}
