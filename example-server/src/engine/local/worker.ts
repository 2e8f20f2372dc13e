/**
 * Inference worker of the local face engine. Loads the face model once, then
 * answers `detect` requests one at a time. Started by `WorkerPool`; never
 * imported by application code.
 */
import { parentPort, workerData } from "node:worker_threads";
import { DEFAULT_RECOGNIZER, loadFaceModel, RECOGNIZERS, type FaceModel, type RecognizerName } from "./model.js";
import { faceImageStats } from "./score.js";
import type { DetectResult, WorkerInit, WorkerRequest, WorkerResponse } from "./protocol.js";

if (!parentPort) throw new Error("engine/local/worker.ts must run in a worker thread");
const port = parentPort;

function post(msg: WorkerResponse, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

let model: FaceModel;
try {
  const wanted = (workerData as WorkerInit | undefined)?.recognizer ?? DEFAULT_RECOGNIZER;
  if (!RECOGNIZERS.includes(wanted as RecognizerName)) throw new Error(`unknown recognizer ${wanted}`);
  model = await loadFaceModel(wanted as RecognizerName);
  // The first inference initialises kernels and grows wasm memory; do it now, not on the first request.
  await model.warmup();
  await model.detect({ width: 64, height: 64, data: new ArrayBuffer(64 * 64 * 3) });
  post({ type: "ready", loadMs: model.loadMs });
} catch (err) {
  post({ type: "init_error", message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}

port.on("message", async (req: WorkerRequest) => {
  if (req.type !== "detect") return;
  try {
    const results: DetectResult[] = [];
    for (const image of req.images) {
      const r = await model.detect(image);
      for (const f of r.faces) f.stats = faceImageStats(image, f.box);
      results.push(r);
    }
    const transfer = results.flatMap((r) => r.faces.map((f) => f.embedding.buffer as ArrayBuffer));
    post({ type: "result", id: req.id, results }, transfer);
  } catch (err) {
    post({ type: "error", id: req.id, message: err instanceof Error ? err.message : String(err) });
  }
});
