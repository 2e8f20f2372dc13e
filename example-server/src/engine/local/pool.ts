/**
 * A small pool of inference worker threads with a bounded FIFO queue.
 * Each worker holds one model and runs one job at a time; the WASM backend is
 * single-threaded, so one worker per core is the useful maximum.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { FaceError } from "../types.js";
import type { RecognizerName } from "./model.js";
import type { DecodedImage, DetectResult, WorkerInit, WorkerRequest, WorkerResponse } from "./protocol.js";

/** Pool sizing and timing. */
export interface PoolOptions {
  /** Number of worker threads (≥ 1). */
  workers: number;
  /** Jobs allowed to wait for a free worker; one more is refused with `engine_unavailable`. */
  maxQueue: number;
  /** A job running longer than this kills its worker (which is respawned) and fails with `engine_unavailable`. */
  jobTimeoutMs: number;
  /** Worker start-up budget (module + wasm + model load); exceeded → `ready()` rejects. */
  startTimeoutMs: number;
  /** Descriptor pipeline each worker loads (default: model.ts's `DEFAULT_RECOGNIZER`). */
  recognizer?: RecognizerName;
}

interface Job {
  id: number;
  images: DecodedImage[];
  resolve(r: DetectResult[]): void;
  reject(e: unknown): void;
  settled: boolean;
  signal?: AbortSignal;
  onAbort?: () => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job?: Job;
  timer?: NodeJS.Timeout;
}

/**
 * The worker entry next to this module: `worker.ts` when this file runs as
 * TypeScript (tsx in dev and tests), `worker.js` once compiled.
 */
function workerEntry(): URL {
  const self = new URL(import.meta.url);
  const ext = /\.[cm]?ts$/.test(self.pathname) ? ".ts" : ".js";
  return new URL(`./worker${ext}`, self);
}

/**
 * URL of tsx's ESM register API (`tsx/esm/api`, "import" condition). Resolved
 * by hand from tsx's package.json: this module may itself be running through
 * tsx's CJS transform (mocha), where `import.meta.resolve` does not exist and
 * `require.resolve` would pick the CJS build.
 */
function tsxEsmApiUrl(): string {
  const req = createRequire(import.meta.url);
  const pkgFile = req.resolve("tsx/package.json");
  const pkg = JSON.parse(readFileSync(pkgFile, "utf8")) as { exports?: Record<string, unknown> };
  const exp = pkg.exports?.["./esm/api"] as string | { import?: string | { default?: string } } | undefined;
  const imp = typeof exp === "string" ? exp : typeof exp?.import === "string" ? exp.import : exp?.import?.default;
  if (!imp) throw new FaceError("engine_misconfigured", "cannot locate tsx/esm/api to start a TypeScript worker");
  return pathToFileURL(path.join(path.dirname(pkgFile), imp)).href;
}

/**
 * Starts the worker script. Compiled JS: a plain `new Worker(worker.js)`.
 * Under tsx (dev, tests): on Node 20 tsx registers its loader hooks only on the
 * main thread, so `execArgv: ["--import", "tsx"]` is not enough for a `.ts`
 * worker (it fails with ERR_UNKNOWN_FILE_EXTENSION). Instead a two-line
 * bootstrap registers tsx inside the worker with `tsx/esm/api` and then
 * imports the `.ts` entry. The parent's execArgv (e.g. `--conditions`) is
 * inherited either way.
 */
function startWorker(entry: URL, name: string, workerData: WorkerInit): Worker {
  if (!entry.pathname.endsWith(".ts")) return new Worker(entry, { name, workerData });
  const tsxApi = tsxEsmApiUrl();
  const boot =
    `import(${JSON.stringify(tsxApi)})` +
    `.then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(boot, { eval: true, name, workerData });
}

/** Runs `detect` jobs on a fixed set of worker threads. */
export class WorkerPool {
  private readonly opts: PoolOptions;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private readonly entry = workerEntry();
  private nextId = 1;
  private closed = false;
  private initError?: FaceError;
  private readyPromise: Promise<void>;
  /** Consecutive crashes, reset by a successful job; bounds respawn churn. */
  private crashes = 0;

  constructor(opts: PoolOptions) {
    if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new RangeError("workers must be an integer ≥ 1");
    this.opts = opts;
    const starts: Promise<void>[] = [];
    for (let i = 0; i < opts.workers; i++) starts.push(this.spawn(i));
    this.readyPromise = Promise.all(starts).then(() => undefined);
    this.readyPromise.catch(() => {}); // observed through ready()
  }

  /** Resolves when every worker has loaded its model; rejects with `engine_misconfigured` if one cannot. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** Jobs waiting for a worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Jobs currently on a worker. */
  get running(): number {
    return this.slots.filter((s) => s.job).length;
  }

  /** Detects faces in each image on one worker. Rejects with `engine_unavailable` when the queue is full or closed. */
  detect(images: DecodedImage[], signal?: AbortSignal): Promise<DetectResult[]> {
    if (this.closed) return Promise.reject(new FaceError("engine_unavailable", "local face engine is closed"));
    if (this.initError) return Promise.reject(this.initError);
    if (signal?.aborted) return Promise.reject(signal.reason);
    const idle = this.slots.some((s) => s.ready && !s.job);
    if (!idle && this.queue.length >= this.opts.maxQueue) {
      return Promise.reject(new FaceError("engine_unavailable", "local face engine is busy; retry shortly"));
    }
    return new Promise<DetectResult[]>((resolve, reject) => {
      const job: Job = { id: this.nextId++, images, resolve, reject, settled: false, signal };
      if (signal) {
        job.onAbort = () => {
          const i = this.queue.indexOf(job);
          if (i >= 0) this.queue.splice(i, 1);
          this.settle(job, undefined, signal.reason);
        };
        signal.addEventListener("abort", job.onAbort, { once: true });
      }
      this.queue.push(job);
      this.pump();
    });
  }

  /** Fails queued jobs with `engine_unavailable` and terminates all workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new FaceError("engine_unavailable", "local face engine closed");
    for (const job of this.queue.splice(0)) this.settle(job, undefined, err);
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.timer) clearTimeout(s.timer);
        if (s.job) this.settle(s.job, undefined, err);
        await s.worker.terminate();
      }),
    );
  }

  private spawn(index: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const worker = startWorker(this.entry, `face-engine-${index}`, { recognizer: this.opts.recognizer });
      const slot: Slot = { worker, ready: false };
      this.slots[index] = slot;
      const startTimer = setTimeout(() => {
        fail(new FaceError("engine_misconfigured", `face worker did not start within ${this.opts.startTimeoutMs} ms`));
        void worker.terminate();
      }, this.opts.startTimeoutMs);
      let started = false;
      const fail = (err: FaceError) => {
        clearTimeout(startTimer);
        if (started) return;
        started = true;
        this.initError ??= err;
        reject(err);
        // Jobs can never run now: fail them instead of leaving them queued.
        for (const job of this.queue.splice(0)) this.settle(job, undefined, err);
      };

      worker.on("message", (msg: WorkerResponse) => {
        switch (msg.type) {
          case "ready":
            clearTimeout(startTimer);
            started = true;
            slot.ready = true;
            worker.unref();
            resolve();
            this.pump();
            break;
          case "init_error":
            fail(new FaceError("engine_misconfigured", `face model failed to load: ${msg.message}`));
            break;
          case "result":
          case "error": {
            const job = slot.job;
            if (!job || job.id !== msg.id) return;
            this.finish(slot);
            if (msg.type === "result") {
              this.crashes = 0;
              this.settle(job, msg.results);
            } else {
              this.settle(job, undefined, new FaceError("engine_unavailable", `face inference failed: ${msg.message}`));
            }
            this.pump();
            break;
          }
        }
      });
      worker.on("error", (err) => {
        fail(new FaceError("engine_misconfigured", `face worker failed to start: ${err.message}`, { cause: err }));
      });
      worker.on("exit", (code) => {
        if (!started) fail(new FaceError("engine_misconfigured", `face worker exited during start-up (code ${code})`));
        const job = slot.job;
        this.finish(slot);
        slot.ready = false;
        if (job) this.settle(job, undefined, new FaceError("engine_unavailable", `face worker stopped (code ${code})`));
        if (this.closed || !started || this.slots[index] !== slot) return;
        // Respawn a crashed or timed-out worker; give up after repeated crashes.
        if (++this.crashes > 5) {
          this.initError = new FaceError("engine_unavailable", "face workers keep crashing");
          for (const j of this.queue.splice(0)) this.settle(j, undefined, this.initError);
          return;
        }
        this.spawn(index).catch(() => {});
      });
    });
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (!slot || !slot.ready || slot.job) continue;
      let job = this.queue.shift();
      while (job?.settled) job = this.queue.shift();
      if (!job) return;
      slot.job = job;
      slot.worker.ref();
      slot.timer = setTimeout(() => {
        if (slot.job !== job) return;
        this.settle(job, undefined, new FaceError("engine_unavailable", `face inference exceeded ${this.opts.jobTimeoutMs} ms`));
        void slot.worker.terminate(); // "exit" respawns it
      }, this.opts.jobTimeoutMs);
      const req: WorkerRequest = { type: "detect", id: job.id, images: job.images };
      slot.worker.postMessage(req, job.images.map((i) => i.data));
    }
  }

  private finish(slot: Slot): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.job = undefined;
    slot.worker.unref();
  }

  private settle(job: Job, value?: DetectResult[], err?: unknown): void {
    if (job.settled) return;
    job.settled = true;
    if (job.signal && job.onAbort) job.signal.removeEventListener("abort", job.onAbort);
    if (err !== undefined || !value) job.reject(err);
    else job.resolve(value);
  }
}
