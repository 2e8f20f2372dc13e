/**
 * The face-comparison engine contract shared by the Alibaba engine and the
 * embedded local engine. Field names follow Alibaba CompareFace's Result.
 */

/** A face rectangle as Alibaba returns it: [left, top, width, height] in pixels. */
export type Rect = [number, number, number, number];

export interface CompareFaceResult {
  /** Similarity 0–100. */
  Confidence: number;
  /** Thresholds at false-accept rates 1e-3, 1e-4, 1e-5: Confidence above means "same person" at that FAR. */
  Thresholds: [number, number, number];
  RectAList: number[];
  RectBList: number[];
  QualityScoreA?: number;
  QualityScoreB?: number;
  IsMaskA?: number;
  IsMaskB?: number;
  LandmarksAList?: number[];
  LandmarksBList?: number[];
  MessageTips?: string;
}

export interface CompareInput {
  /** Raw image bytes (JPEG/PNG/BMP/WEBP). */
  imageA: Buffer;
  imageB: Buffer;
  /** 0–100; faces below this quality are refused. */
  qualityScoreThreshold?: number;
  /** Abort when the caller gives up. */
  signal?: AbortSignal;
}

export interface FaceEngine {
  /** "alibaba" | "local". */
  readonly name: string;
  /** Resolves when ready to serve (models loaded). */
  ready(): Promise<void>;
  compare(input: CompareInput): Promise<{ result: CompareFaceResult; requestId: string }>;
  close(): Promise<void>;
}

/**
 * Stable error codes of a failed comparison. Each maps to one HTTP status.
 * A failed comparison is never charged.
 */
export const FACE_ERROR_STATUS = {
  invalid_input: 400,
  invalid_image: 400,
  image_too_large: 413,
  no_face: 422,
  low_quality: 422,
  image_fetch_failed: 400,
  image_url_forbidden: 400,
  upstream_throttled: 503,
  upstream_error: 502,
  upstream_timeout: 504,
  engine_misconfigured: 502,
  engine_unavailable: 503,
} as const;

export type FaceErrorCode = keyof typeof FACE_ERROR_STATUS;

export class FaceError extends Error {
  readonly code: FaceErrorCode;
  readonly status: number;
  /** Upstream request id, when known. */
  readonly upstreamRequestId?: string;
  constructor(code: FaceErrorCode, message: string, opts: { cause?: unknown; upstreamRequestId?: string } = {}) {
    super(message, { cause: opts.cause });
    this.name = "FaceError";
    this.code = code;
    this.status = FACE_ERROR_STATUS[code];
    this.upstreamRequestId = opts.upstreamRequestId;
  }
}
