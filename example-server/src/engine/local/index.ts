/**
 * Embedded face-comparison engine: @vladmandic/human (BlazeFace + FaceMesh +
 * HSE FaceRes) on the TensorFlow.js WASM backend, images decoded with sharp.
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
import { cosineSimilarity, cosineToConfidence, LOCAL_THRESHOLDS, qualityScore } from "./score.js";

export { CALIBRATION_ANCHORS, LOCAL_THRESHOLDS, cosineSimilarity, cosineToConfidence, qualityFactors, qualityScore } from "./score.js";
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
    this.pool = new WorkerPool({
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
      return { result: buildResult(pa.value, ra, pb.value, rb, qualityScoreThreshold), requestId: randomUUID() };
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

function buildResult(
  a: PreparedImage,
  ra: DetectResult,
  b: PreparedImage,
  rb: DetectResult,
  qualityThreshold: number | undefined,
): CompareFaceResult {
  const fa = largest(ra.faces);
  if (!fa) throw new FaceError("no_face", "no face detected in image A; send a frontal, well-lit photo");
  const fb = largest(rb.faces);
  if (!fb) throw new FaceError("no_face", "no face detected in image B; send a frontal, well-lit photo");
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
    Confidence: cosineToConfidence(cosineSimilarity(fa.embedding, fb.embedding)),
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
