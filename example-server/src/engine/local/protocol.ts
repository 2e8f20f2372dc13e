/**
 * Messages exchanged between the local engine and its inference workers.
 * Pixel buffers and descriptors travel as transferred ArrayBuffers (no copy).
 */

/** A decoded image: tightly packed 8-bit RGB, row-major, `width * height * 3` bytes. */
export interface DecodedImage {
  width: number;
  height: number;
  data: ArrayBuffer;
}

/** One detected face, in the pixel coordinates of the image given to the model. */
export interface DetectedFace {
  /** [x, y, width, height]. */
  box: [number, number, number, number];
  /** Overall face score 0..1 (Human's combination of detector and mesh scores). */
  score: number;
  /** Detector (BlazeFace) confidence 0..1. */
  boxScore: number;
  /** Mesh (FaceMesh) confidence 0..1. */
  faceScore: number;
  /** Face descriptor (256 floats for MobileFace, 1024 for FaceRes). */
  embedding: Float32Array;
  /** Five points [x, y] × 5: right eye, left eye, nose tip, right and left mouth corner (subject's sides). */
  landmarks?: number[];
  /** Head pose in radians, when the mesh ran. */
  yaw?: number;
  pitch?: number;
  roll?: number;
  /** Sharpness and brightness of the face crop, filled by the worker (see `faceImageStats`). */
  stats?: FaceImageStats;
}

/** Pixel statistics of a face crop resampled to 112×112 grey. */
export interface FaceImageStats {
  /** Standard deviation of the 4-neighbour Laplacian (≈ 50 sharp portrait, ≈ 18 after a σ 2.5 blur). */
  sharpness: number;
  /** Mean luma 0–255. */
  brightness: number;
}

/** Faces found in one image. */
export interface DetectResult {
  faces: DetectedFace[];
  /** Milliseconds of inference for this image. */
  inferMs: number;
}

/** The worker's `workerData`: which descriptor pipeline to load (a `RecognizerName`; undefined → the default). */
export interface WorkerInit {
  recognizer?: string;
}

/** Main thread → worker. */
export type WorkerRequest = { type: "detect"; id: number; images: DecodedImage[] };

/** Worker → main thread. */
export type WorkerResponse =
  | { type: "ready"; loadMs: number }
  | { type: "init_error"; message: string }
  | { type: "result"; id: number; results: DetectResult[] }
  | { type: "error"; id: number; message: string };
