/**
 * FaceEngine backed by Alibaba Cloud facebody `CompareFace` (2019-12-30)
 * through the official SDK (`@alicloud/facebody20191230`).
 *
 * The images the server already downloaded and validated are sent inline as
 * Base64 (`ImageDataA` / `ImageDataB`): one round-trip, no OSS. The SDK never
 * retries and its timeouts misbehave on reused keep-alive sockets, so this
 * module sets `readTimeout == connectTimeout`, enforces its own overall
 * deadline, and does its own retry with exponential backoff and jitter.
 */
import { createRequire } from "node:module";
import type FacebodyExports from "@alicloud/facebody20191230";
import type { CompareFaceResponse } from "@alicloud/facebody20191230";
import type OpenApiExports from "@alicloud/openapi-client";
import type TeaUtilExports from "@alicloud/tea-util";
import { redact, retryKind, toFaceError, describeUpstreamError, type RetryKind } from "./alibaba-errors.js";
import { FaceError, type CompareFaceResult, type CompareInput, type FaceEngine } from "./types.js";

// The SDK packages are CJS. A default import yields `module.exports` under
// native ESM but `exports.default` (the client class) when tsx compiles this
// file to CJS (as mocha loads it), so load them with require: always
// `module.exports`, typed by the NodeNext default-import type.
const requireCjs = createRequire(import.meta.url);
const Facebody = requireCjs("@alicloud/facebody20191230") as typeof FacebodyExports;
const OpenApi = requireCjs("@alicloud/openapi-client") as typeof OpenApiExports;
const TeaUtil = requireCjs("@alicloud/tea-util") as typeof TeaUtilExports;

/** The only public endpoint of facebody (all viapi capabilities run in cn-shanghai). */
export const DEFAULT_ALIBABA_ENDPOINT = "facebody.cn-shanghai.aliyuncs.com";

/** Documented per-image limit of CompareFace (5 MB); larger inputs are refused locally. */
export const ALIBABA_MAX_IMAGE_BYTES = 5 * 1024 * 1024;

/** Structured logger subset (pino-compatible). Never receives credentials. */
export interface AlibabaEngineLogger {
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

/** Options of {@link createAlibabaEngine}. */
export interface AlibabaEngineOptions {
  /** AccessKey id (RAM user with AliyunVIAPIFullAccess). */
  accessKeyId: string;
  /** AccessKey secret. Kept inside the SDK client; never logged nor put in an error. */
  accessKeySecret: string;
  /** STS token, when the key pair is temporary. Treated like the secret. */
  securityToken?: string;
  /** `host[:port]`, no scheme (a leading `http(s)://` is stripped and sets `protocol`). Default {@link DEFAULT_ALIBABA_ENDPOINT}. */
  endpoint?: string;
  /** `https` (default) or `http` (local emulator). */
  protocol?: "https" | "http";
  /** Region id passed to the SDK (default `cn-shanghai`). */
  regionId?: string;
  /**
   * Overall budget of one `compare()` in ms, retries and backoff included
   * (default 10000). Also the SDK read and connect timeout of each attempt
   * (set to the budget left).
   */
  timeoutMs?: number;
  /** Extra attempts after the first, for retryable failures only (default 2). */
  retries?: number;
  /** First backoff step in ms; doubles per retry, with jitter (default 200). */
  retryBaseMs?: number;
  /** Per-image byte limit checked before any network I/O (default {@link ALIBABA_MAX_IMAGE_BYTES}). */
  maxImageBytes?: number;
  /** Receives retry warnings and misconfiguration errors. */
  logger?: AlibabaEngineLogger;
}

/** Below this many ms left in the budget, no further attempt is started. */
const MIN_ATTEMPT_MS = 25;

/** Fields of the SDK model `CompareFaceResponseBodyData` (camelCase), loosely typed for validation. */
export interface SdkCompareFaceData {
  confidence?: unknown;
  thresholds?: unknown;
  rectAList?: unknown;
  rectBList?: unknown;
  landmarksAList?: unknown;
  landmarksBList?: unknown;
  isMaskA?: unknown;
  isMaskB?: unknown;
  qualityScoreA?: unknown;
  qualityScoreB?: unknown;
  messageTips?: unknown;
}

/**
 * SDK `Data` model (camelCase) → {@link CompareFaceResult} (Alibaba wire names).
 * Returns `undefined` when the mandatory fields (Confidence, three
 * Thresholds) are missing or not numbers. Absent optional fields stay absent.
 */
export function fromSdkData(data: SdkCompareFaceData | undefined): CompareFaceResult | undefined {
  if (!data) return undefined;
  const num = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
  const nums = (v: unknown): v is number[] => Array.isArray(v) && v.every(num);
  if (!num(data.confidence) || !nums(data.thresholds) || data.thresholds.length < 3) return undefined;
  const t = data.thresholds;
  const result: CompareFaceResult = {
    Confidence: data.confidence,
    Thresholds: [t[0], t[1], t[2]],
    RectAList: nums(data.rectAList) ? [...data.rectAList] : [],
    RectBList: nums(data.rectBList) ? [...data.rectBList] : [],
  };
  if (num(data.qualityScoreA)) result.QualityScoreA = data.qualityScoreA;
  if (num(data.qualityScoreB)) result.QualityScoreB = data.qualityScoreB;
  if (num(data.isMaskA)) result.IsMaskA = data.isMaskA;
  if (num(data.isMaskB)) result.IsMaskB = data.isMaskB;
  if (nums(data.landmarksAList)) result.LandmarksAList = [...data.landmarksAList];
  if (nums(data.landmarksBList)) result.LandmarksBList = [...data.landmarksBList];
  if (typeof data.messageTips === "string" && data.messageTips.length > 0) result.MessageTips = data.messageTips;
  return result;
}

/** {@link CompareFaceResult} (Alibaba wire names) → SDK `Data` model fields (camelCase); inverse of {@link fromSdkData}. */
export function toSdkData(result: CompareFaceResult): SdkCompareFaceData {
  const out: SdkCompareFaceData = {
    confidence: result.Confidence,
    thresholds: [...result.Thresholds],
    rectAList: [...result.RectAList],
    rectBList: [...result.RectBList],
  };
  if (result.QualityScoreA !== undefined) out.qualityScoreA = result.QualityScoreA;
  if (result.QualityScoreB !== undefined) out.qualityScoreB = result.QualityScoreB;
  if (result.IsMaskA !== undefined) out.isMaskA = result.IsMaskA;
  if (result.IsMaskB !== undefined) out.isMaskB = result.IsMaskB;
  if (result.LandmarksAList !== undefined) out.landmarksAList = [...result.LandmarksAList];
  if (result.LandmarksBList !== undefined) out.landmarksBList = [...result.LandmarksBList];
  if (result.MessageTips !== undefined) out.messageTips = result.MessageTips;
  return out;
}

/** Thrown internally when the overall budget runs out. */
class DeadlineExceeded extends Error {}
/** Thrown internally when the caller's signal aborts. */
class CallerAborted extends Error {}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CallerAborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function positive(name: string, v: number, allowZero = false): number {
  if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new FaceError("engine_misconfigured", `alibaba engine: ${name} must be a ${allowZero ? "non-negative" : "positive"} number`);
  }
  return v;
}

/**
 * Create the Alibaba CompareFace engine. Throws `FaceError('engine_misconfigured')`
 * synchronously on missing credentials or invalid numbers; makes no network
 * call until `compare()`.
 *
 * Retry policy (within the one `timeoutMs` budget): `Throttling*`, HTTP 5xx
 * and the SDK's `RequestTimeoutError` up to `retries` times with backoff
 * `retryBaseMs · 2^(n-1)` scaled by a random factor in [0.5, 1); a connection
 * reset (`ECONNRESET` / `socket hang up`, e.g. a stale keep-alive socket) at
 * most once, immediately. Every other failure, in particular any other 4xx,
 * is final.
 */
export function createAlibabaEngine(opts: AlibabaEngineOptions): FaceEngine {
  if (typeof opts.accessKeyId !== "string" || opts.accessKeyId.trim() === "") {
    throw new FaceError("engine_misconfigured", "alibaba engine: accessKeyId is required");
  }
  if (typeof opts.accessKeySecret !== "string" || opts.accessKeySecret.trim() === "") {
    throw new FaceError("engine_misconfigured", "alibaba engine: accessKeySecret is required");
  }
  const timeoutMs = positive("timeoutMs", opts.timeoutMs ?? 10_000);
  const retries = Math.floor(positive("retries", opts.retries ?? 2, true));
  const retryBaseMs = positive("retryBaseMs", opts.retryBaseMs ?? 200, true);
  const maxImageBytes = positive("maxImageBytes", opts.maxImageBytes ?? ALIBABA_MAX_IMAGE_BYTES);
  let endpoint = (opts.endpoint ?? DEFAULT_ALIBABA_ENDPOINT).trim().replace(/\/+$/, "");
  let protocol: "https" | "http" = opts.protocol ?? "https";
  const scheme = /^(https?):\/\//i.exec(endpoint);
  if (scheme) {
    protocol = scheme[1].toLowerCase() as "https" | "http";
    endpoint = endpoint.slice(scheme[0].length);
  }
  if (endpoint === "" || /[/?#\s]/.test(endpoint)) {
    throw new FaceError("engine_misconfigured", "alibaba engine: endpoint must be host[:port]");
  }
  const secrets = [opts.accessKeySecret, opts.securityToken];
  const logger = opts.logger;

  const client = new Facebody.default(
    new OpenApi.Config({
      accessKeyId: opts.accessKeyId,
      accessKeySecret: opts.accessKeySecret,
      securityToken: opts.securityToken,
      endpoint,
      protocol,
      regionId: opts.regionId ?? "cn-shanghai",
      readTimeout: timeoutMs,
      connectTimeout: timeoutMs,
      userAgent: "server402-example",
    }),
  );
  let closed = false;

  /** One SDK call, bounded by `budgetMs` and the caller's signal. */
  function attemptOnce(
    request: InstanceType<typeof Facebody.CompareFaceRequest>,
    budgetMs: number,
    signal: AbortSignal | undefined,
  ): Promise<CompareFaceResponse> {
    const sdkTimeout = Math.max(1, Math.ceil(budgetMs));
    const runtime = new TeaUtil.RuntimeOptions({ readTimeout: sdkTimeout, connectTimeout: sdkTimeout, autoretry: false });
    const call = client.compareFaceWithOptions(request, runtime);
    // A call that loses the race settles later (at the latest at its own SDK timeout): swallow it.
    call.catch(() => undefined);
    return new Promise<CompareFaceResponse>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        cleanup();
        reject(new CallerAborted());
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new DeadlineExceeded());
      }, budgetMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      call.then(
        (v) => {
          cleanup();
          resolve(v);
        },
        (e: unknown) => {
          cleanup();
          reject(e);
        },
      );
    });
  }

  function validate(input: CompareInput): void {
    for (const [name, buf] of [
      ["imageA", input.imageA],
      ["imageB", input.imageB],
    ] as const) {
      if (!(buf instanceof Uint8Array) || buf.length === 0) throw new FaceError("invalid_input", `${name} is empty`);
      if (buf.length > maxImageBytes) {
        throw new FaceError("image_too_large", `${name} is ${buf.length} bytes; the face engine accepts at most ${maxImageBytes}`);
      }
    }
    const q = input.qualityScoreThreshold;
    if (q !== undefined && (typeof q !== "number" || !Number.isFinite(q) || q < 0 || q > 100)) {
      throw new FaceError("invalid_input", "qualityScoreThreshold must be a number between 0 and 100");
    }
  }

  function interpret(resp: CompareFaceResponse, threshold: number | undefined): { result: CompareFaceResult; requestId: string } {
    const requestId = resp.body?.requestId ?? resp.headers?.["x-acs-request-id"] ?? "";
    const result = fromSdkData(resp.body?.data);
    if (!result) {
      throw new FaceError("upstream_error", "face engine returned a malformed result", { upstreamRequestId: requestId || undefined });
    }
    if (threshold !== undefined && threshold > 0) {
      const tips = result.MessageTips ?? "";
      const low =
        /quality score less threshold/i.test(tips) ||
        (result.QualityScoreA !== undefined && result.QualityScoreA < threshold) ||
        (result.QualityScoreB !== undefined && result.QualityScoreB < threshold);
      if (low) {
        throw new FaceError(
          "low_quality",
          `face quality below the threshold ${threshold} (A ${result.QualityScoreA ?? "?"}, B ${result.QualityScoreB ?? "?"})`,
          { upstreamRequestId: requestId || undefined },
        );
      }
    }
    return { result, requestId };
  }

  function backoffMs(retryNo: number, kind: RetryKind): number {
    if (kind === "reset") return 0;
    const step = retryBaseMs * 2 ** (retryNo - 1);
    return Math.round(step * (0.5 + Math.random() * 0.5));
  }

  async function compare(input: CompareInput): Promise<{ result: CompareFaceResult; requestId: string }> {
    if (closed) throw new FaceError("engine_unavailable", "alibaba engine is closed");
    validate(input);
    const { signal } = input;
    const aborted = () => new FaceError("upstream_timeout", "comparison aborted by the caller", { cause: signal?.reason });
    if (signal?.aborted) throw aborted();
    const request = new Facebody.CompareFaceRequest({
      imageDataA: Buffer.from(input.imageA.buffer, input.imageA.byteOffset, input.imageA.byteLength).toString("base64"),
      imageDataB: Buffer.from(input.imageB.buffer, input.imageB.byteOffset, input.imageB.byteLength).toString("base64"),
      qualityScoreThreshold: input.qualityScoreThreshold,
    });
    const deadline = Date.now() + timeoutMs;
    let retried = 0;
    let resetRetried = false;
    for (let attempt = 1; ; attempt++) {
      try {
        const resp = await attemptOnce(request, deadline - Date.now(), signal);
        return interpret(resp, input.qualityScoreThreshold);
      } catch (err) {
        if (err instanceof FaceError) throw err;
        if (err instanceof CallerAborted) throw aborted();
        if (err instanceof DeadlineExceeded) {
          throw new FaceError("upstream_timeout", `face engine did not answer within ${timeoutMs} ms`, {
            cause: new Error(`deadline of ${timeoutMs} ms exceeded during attempt ${attempt}`),
          });
        }
        const kind = retryKind(err);
        const allowed = kind !== undefined && retried < retries && !(kind === "reset" && resetRetried);
        const delay = allowed ? backoffMs(retried + 1, kind) : 0;
        if (allowed && Date.now() + delay + MIN_ATTEMPT_MS < deadline) {
          const info = describeUpstreamError(err);
          logger?.warn(
            { engine: "alibaba", attempt, retryIn: delay, kind, code: info.code, status: info.status, upstreamRequestId: info.requestId },
            "alibaba CompareFace attempt failed; retrying",
          );
          retried++;
          if (kind === "reset") resetRetried = true;
          try {
            await sleep(delay, signal);
          } catch {
            throw aborted();
          }
          continue;
        }
        const faceError = toFaceError(err, { secrets, timeoutMs });
        if (faceError.code === "engine_misconfigured") {
          const info = describeUpstreamError(err);
          logger?.error(
            {
              engine: "alibaba",
              code: info.code,
              status: info.status,
              upstreamRequestId: info.requestId,
              upstreamMessage: info.upstreamMessage && redact(info.upstreamMessage, secrets),
            },
            "alibaba CompareFace refused our credentials or API access; check the AccessKey, RAM policy and service activation",
          );
        }
        throw faceError;
      }
    }
  }

  return {
    name: "alibaba",
    ready: async () => {
      if (closed) throw new FaceError("engine_unavailable", "alibaba engine is closed");
    },
    compare,
    close: async () => {
      closed = true;
    },
  };
}
