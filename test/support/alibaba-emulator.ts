/**
 * A local stand-in for Alibaba Cloud facebody `CompareFace` (2019-12-30) that
 * speaks the wire protocol the official Node SDK really sends (signature V3,
 * `ACS3-HMAC-SHA256`): `POST /`, action and version in `x-acs-action` /
 * `x-acs-version`, form-urlencoded (chunked) body, `x-acs-content-sha256`.
 *
 * It verifies the signature against the configured AccessKey pair, records
 * every request, and replies according to a per-request script so tests can
 * drive successes, every documented error shape, 5xx, garbage, hangs, slow
 * replies and dropped connections.
 */
import { createHash, createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

/** Alibaba `Data` object of a successful CompareFace reply (wire field names). */
export interface AlibabaCompareFaceData {
  Confidence: number;
  Thresholds: number[];
  RectAList: number[];
  RectBList: number[];
  LandmarksAList?: number[];
  LandmarksBList?: number[];
  IsMaskA?: number;
  IsMaskB?: number;
  QualityScoreA?: number;
  QualityScoreB?: number;
  MessageTips?: string;
}

/**
 * A realistic success payload (values from a public capture of the live
 * service, see the shared reference).
 */
export const SAMPLE_COMPARE_FACE_DATA: Readonly<AlibabaCompareFaceData> = Object.freeze({
  Confidence: 89.926315,
  QualityScoreA: 99.394356,
  QualityScoreB: 99.01318,
  IsMaskA: 0,
  IsMaskB: 0,
  Thresholds: [61.0, 69.0, 75.0],
  RectAList: [170, 94, 139, 169],
  RectBList: [156, 102, 146, 176],
  LandmarksAList: [206, 140, 275, 138, 240, 175, 218, 218, 266, 217],
  LandmarksBList: [193, 169, 264, 161, 230, 207, 212, 247, 265, 241],
});

/**
 * HTTP status and message the emulator uses for an error code when a script
 * entry does not give its own. Statuses follow the facebody error table and
 * the POP gateway; `Throttling` (503) and `Throttling.User` (400) are
 * assumptions — the engine must classify by code, never by status.
 */
export const ALIBABA_ERROR_DEFAULTS: Readonly<Record<string, { status: number; message: string }>> = Object.freeze({
  "InvalidImage.NotFoundFace": { status: 400, message: "input image not found face" },
  "InvalidImage.Format": { status: 400, message: "image format is not supported" },
  "InvalidImage.DecodeError": { status: 400, message: "image decode error" },
  "InvalidImage.Resolution": { status: 400, message: "image resolution exceeds the limit 4096x4096" },
  "InvalidImage.Download": { status: 400, message: "image download failed" },
  "InvalidImage.URL": { status: 400, message: "image url is invalid" },
  "InvalidImage.Region": { status: 400, message: "image url region is not cn-shanghai" },
  "InvalidFile.Content": { status: 400, message: "BASE64 Data Illegal" },
  "InvalidFile.Decode": { status: 400, message: "file decode error" },
  "InvalidFile.Resolution": { status: 400, message: "file resolution exceeds the limit" },
  InvalidParameter: { status: 400, message: "The specified parameter is not valid." },
  ParameterError: { status: 400, message: "parameter error" },
  MissingParameter: { status: 400, message: "A required parameter is missing." },
  "ClientError.IllegalArgument": { status: 400, message: "illegal argument" },
  IllegalUrlParameter: { status: 400, message: "url can not be opened" },
  Throttling: { status: 503, message: "Request was denied due to request throttling." },
  "Throttling.User": { status: 400, message: "Request was denied due to user flow control." },
  "Throttling.Api": { status: 400, message: "Request was denied due to api flow control." },
  AuthFailed: { status: 403, message: "authentication failed" },
  "InvalidApi.NotPurchase": { status: 403, message: "the service is not activated" },
  "InvalidApi.ForbiddenInvoke": { status: 400, message: "the capability may not be invoked" },
  "InvalidAccessKeyId.NotFound": { status: 404, message: "Specified access key is not found." },
  "InvalidAccessKeyId.Inactive": { status: 400, message: "Specified access key is disabled." },
  InvalidAccessKeySecret: { status: 400, message: "Specified access key secret is not valid." },
  SignatureDoesNotMatch: { status: 400, message: "Specified signature is not matched with our calculation." },
  IncompleteSignature: { status: 400, message: "The request signature does not conform to Aliyun standards." },
  "InvalidSecurityToken.MismatchWithAccessKey": { status: 400, message: "Specified security token does not match the access key." },
  "InvalidTimeStamp.Expired": { status: 400, message: "Specified time stamp or date value is expired." },
  SignatureNonceUsed: { status: 400, message: "Specified signature nonce was used already." },
  "InvalidAction.NotFound": { status: 400, message: "Specified api is not found, please check your url and method." },
  InvalidVersion: { status: 400, message: "Specified parameter Version is not valid." },
  "EntityNotExist.Role": { status: 400, message: "the role AliyunVIAPIFullAccess is missing" },
  InternalError: { status: 500, message: "The request processing has failed due to some unknown error." },
  "InternalError.Algo": { status: 500, message: "algorithm error" },
  "InternalError.Timeout": { status: 500, message: "algorithm timeout" },
  ServiceUnavailable: { status: 503, message: "The request has failed due to a temporary failure of the server." },
});

/**
 * What the emulator does with one request that passed authentication.
 * `delayMs` (where allowed) waits that long before acting: a slow reply.
 */
export type EmulatorBehaviour =
  /** 200 with `{RequestId, Data}`; `data` overrides fields of the sample. */
  | { kind: "success"; data?: Partial<AlibabaCompareFaceData> | Record<string, unknown>; delayMs?: number }
  /** POP error JSON `{RequestId, HostId, Code, Message, Recommend}`. */
  | { kind: "error"; code: string; status?: number; message?: string; delayMs?: number }
  /** Any status with a verbatim body (HTML 502, non-JSON garbage, ...). */
  | { kind: "raw"; status: number; body: string; contentType?: string; delayMs?: number }
  /** Read the request, never answer (until `close()`). */
  | { kind: "hang" }
  /** Read the request, then destroy the socket without a response. */
  | { kind: "drop"; delayMs?: number }
  /** Send 200 headers and half a JSON body, then stall forever. */
  | { kind: "stall"; delayMs?: number };

/** Shorthand constructors for {@link EmulatorBehaviour}s. */
export const behave = {
  /** Successful comparison. */
  success: (data?: Partial<AlibabaCompareFaceData> | Record<string, unknown>, delayMs?: number): EmulatorBehaviour => ({
    kind: "success",
    data,
    delayMs,
  }),
  /** Upstream error with its default (or given) HTTP status and message. */
  error: (code: string, opts: { status?: number; message?: string; delayMs?: number } = {}): EmulatorBehaviour => ({
    kind: "error",
    code,
    ...opts,
  }),
  /** A JSON 5xx (`InternalError` unless told otherwise). */
  serverError: (status = 500, code = "InternalError"): EmulatorBehaviour => ({ kind: "error", code, status }),
  /** Non-JSON body with the given status (200 by default). */
  garbage: (status = 200): EmulatorBehaviour => ({
    kind: "raw",
    status,
    body: "<html><body>502 Bad Gateway</body></html>",
    contentType: "text/html",
  }),
  /** Never reply. */
  hang: (): EmulatorBehaviour => ({ kind: "hang" }),
  /** Reply `inner` after `delayMs`. */
  slow: (delayMs: number, inner: EmulatorBehaviour = { kind: "success" }): EmulatorBehaviour =>
    inner.kind === "hang" ? inner : { ...inner, delayMs },
  /** Drop the connection without a response. */
  drop: (): EmulatorBehaviour => ({ kind: "drop" }),
  /** Headers and a partial body, then nothing. */
  stall: (): EmulatorBehaviour => ({ kind: "stall" }),
};

/** One request as the emulator saw it. */
export interface EmulatorRequest {
  /** Sequence number, from 1. */
  seq: number;
  /** `Date.now()` when the request headers arrived. */
  receivedAt: number;
  method: string;
  /** Path including query string. */
  url: string;
  /** From `x-acs-action`, or `?Action=` (legacy RPC style). */
  action?: string;
  version?: string;
  /** Client port of the TCP connection: equal ports = a reused keep-alive socket. */
  remotePort?: number;
  /** Lower-cased request headers as received. */
  headers: http.IncomingHttpHeaders;
  /** Decoded form-body parameters (ImageDataA, ImageDataB, QualityScoreThreshold, ...). */
  params: Record<string, string>;
  bodyBytes: number;
  /** AccessKey id from the `authorization` credential. */
  accessKeyId?: string;
  /** The ACS3 signature matched the configured secret. */
  signatureVerified: boolean;
  /** `x-acs-content-sha256` equals the SHA-256 of the received body. */
  contentHashVerified: boolean;
  /** What the emulator did: behaviour kind, or the auth error code it returned. */
  outcome: string;
  /** RequestId the emulator put in its reply (absent for hang/drop/stall). */
  requestId?: string;
}

/** Options of {@link startAlibabaEmulator}. */
export interface AlibabaEmulatorOptions {
  accessKeyId: string;
  accessKeySecret: string;
  /** When set, requests must carry this STS token in `x-acs-security-token`. */
  securityToken?: string;
  /** Allowed clock skew for `x-acs-date` (default 15 min). */
  maxClockSkewMs?: number;
}

/** A running emulator. */
export interface AlibabaEmulator {
  /** `127.0.0.1:PORT` — pass as the SDK `endpoint` with `protocol: 'http'`. */
  readonly endpoint: string;
  /** Append behaviours consumed one per authenticated request, in order. */
  script(...behaviours: EmulatorBehaviour[]): void;
  /** Behaviour once the script is exhausted (initially a success). */
  setDefault(behaviour: EmulatorBehaviour): void;
  /** All requests received so far (including rejected ones). */
  readonly requests: EmulatorRequest[];
  /** Requests for `CompareFace` that passed authentication. */
  attempts(): EmulatorRequest[];
  /** Forget recorded requests and the remaining script; default back to success. */
  reset(): void;
  /** Stop listening and destroy every open connection (also hung ones). */
  close(): Promise<void>;
}

const HOST_ID = "facebody.cn-shanghai.aliyuncs.com";

function newRequestId(): string {
  return randomUUID().toUpperCase();
}

function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** RFC 3986 encoding as ACS3 canonicalisation requires. */
function acsEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

interface ParsedAuthorization {
  algorithm: string;
  credential: string;
  signedHeaders: string[];
  signature: string;
}

function parseAuthorization(value: string | undefined): ParsedAuthorization | undefined {
  if (!value) return undefined;
  const space = value.indexOf(" ");
  if (space <= 0) return undefined;
  const algorithm = value.slice(0, space);
  const fields = new Map<string, string>();
  for (const part of value.slice(space + 1).split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get("Credential");
  const signedHeaders = fields.get("SignedHeaders");
  const signature = fields.get("Signature");
  if (!credential || !signedHeaders || !signature) return undefined;
  return { algorithm, credential, signedHeaders: signedHeaders.split(";"), signature };
}

function headerValue(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

/** Headers the SDK always signs; a request that leaves one out is refused. */
const REQUIRED_SIGNED = ["host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"];

function expectedSignature(
  req: http.IncomingMessage,
  auth: ParsedAuthorization,
  secret: string,
): string {
  const url = new URL(req.url ?? "/", "http://emulator");
  const query = [...url.searchParams.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${acsEncode(v)}`)
    .join("&");
  const canonicalHeaders = auth.signedHeaders
    .map((name) => `${name}:${(headerValue(req.headers, name) ?? "").trim()}\n`)
    .join("");
  const canonicalRequest = [
    req.method ?? "",
    url.pathname,
    query,
    canonicalHeaders,
    auth.signedHeaders.join(";"),
    headerValue(req.headers, "x-acs-content-sha256") ?? "",
  ].join("\n");
  const stringToSign = `${auth.algorithm}\n${sha256Hex(canonicalRequest)}`;
  return createHmac("sha256", secret).update(stringToSign).digest("hex");
}

function safeEqualHex(a: string, b: string): boolean {
  const ba = Buffer.from(a);
  const bb = Buffer.from(b);
  return ba.length === bb.length && timingSafeEqual(ba, bb);
}

/**
 * Start the emulator on an ephemeral port of 127.0.0.1.
 * Each authenticated CompareFace request consumes one scripted behaviour, or
 * uses the default (success) when the script is empty.
 */
export async function startAlibabaEmulator(opts: AlibabaEmulatorOptions): Promise<AlibabaEmulator> {
  const maxSkew = opts.maxClockSkewMs ?? 15 * 60_000;
  const requests: EmulatorRequest[] = [];
  let queue: EmulatorBehaviour[] = [];
  let fallback: EmulatorBehaviour = { kind: "success" };
  const usedNonces = new Set<string>();
  const timers = new Set<NodeJS.Timeout>();
  let seq = 0;

  function later(ms: number | undefined, fn: () => void): void {
    if (!ms || ms <= 0) return fn();
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  function sendJson(res: http.ServerResponse, status: number, body: unknown, requestId: string): void {
    if (res.destroyed || res.writableEnded) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json;charset=utf-8",
      "content-length": Buffer.byteLength(text),
      "x-acs-request-id": requestId,
    });
    res.end(text);
  }

  function sendError(res: http.ServerResponse, rec: EmulatorRequest, code: string, status?: number, message?: string): void {
    const def = ALIBABA_ERROR_DEFAULTS[code];
    const requestId = newRequestId();
    rec.requestId = requestId;
    sendJson(
      res,
      status ?? def?.status ?? 400,
      {
        RequestId: requestId,
        HostId: HOST_ID,
        Code: code,
        Message: message ?? def?.message ?? code,
        Recommend: `https://api.aliyun.com/troubleshoot?q=${encodeURIComponent(code)}&product=facebody&requestId=${requestId}`,
      },
      requestId,
    );
  }

  /** Returns the auth error code, or undefined when the request is authentic. */
  function authenticate(req: http.IncomingMessage, body: Buffer, rec: EmulatorRequest): string | undefined {
    rec.contentHashVerified = headerValue(req.headers, "x-acs-content-sha256") === sha256Hex(body);
    const auth = parseAuthorization(headerValue(req.headers, "authorization"));
    if (!auth || auth.algorithm !== "ACS3-HMAC-SHA256") return "IncompleteSignature";
    rec.accessKeyId = auth.credential;
    const signed = new Set(auth.signedHeaders);
    for (const name of REQUIRED_SIGNED) if (!signed.has(name)) return "IncompleteSignature";
    for (const name of Object.keys(req.headers)) {
      if ((name.startsWith("x-acs-") || name === "content-type") && !signed.has(name)) return "IncompleteSignature";
    }
    if (auth.credential !== opts.accessKeyId) return "InvalidAccessKeyId.NotFound";
    rec.signatureVerified = safeEqualHex(expectedSignature(req, auth, opts.accessKeySecret), auth.signature);
    if (!rec.signatureVerified) return "SignatureDoesNotMatch";
    if (!rec.contentHashVerified) return "SignatureDoesNotMatch";
    if (opts.securityToken !== undefined) {
      if (headerValue(req.headers, "x-acs-security-token") !== opts.securityToken) return "InvalidSecurityToken.MismatchWithAccessKey";
      if (headerValue(req.headers, "x-acs-accesskey-id") !== opts.accessKeyId) return "InvalidSecurityToken.MismatchWithAccessKey";
    }
    const date = Date.parse(headerValue(req.headers, "x-acs-date") ?? "");
    if (!Number.isFinite(date) || Math.abs(Date.now() - date) > maxSkew) return "InvalidTimeStamp.Expired";
    const nonce = headerValue(req.headers, "x-acs-signature-nonce") ?? "";
    if (usedNonces.has(nonce)) return "SignatureNonceUsed";
    usedNonces.add(nonce);
    return undefined;
  }

  function act(behaviour: EmulatorBehaviour, req: http.IncomingMessage, res: http.ServerResponse, rec: EmulatorRequest): void {
    rec.outcome = behaviour.kind;
    switch (behaviour.kind) {
      case "hang":
        return;
      case "drop":
        return later(behaviour.delayMs, () => req.socket.destroy());
      case "stall":
        return later(behaviour.delayMs, () => {
          if (res.destroyed) return;
          res.writeHead(200, { "content-type": "application/json;charset=utf-8", "content-length": "400" });
          res.write('{"RequestId":"');
        });
      case "raw":
        return later(behaviour.delayMs, () => {
          if (res.destroyed || res.writableEnded) return;
          res.writeHead(behaviour.status, {
            "content-type": behaviour.contentType ?? "text/plain",
            "content-length": Buffer.byteLength(behaviour.body),
          });
          res.end(behaviour.body);
        });
      case "error":
        return later(behaviour.delayMs, () => sendError(res, rec, behaviour.code, behaviour.status, behaviour.message));
      case "success":
        return later(behaviour.delayMs, () => {
          const data: Record<string, unknown> = { ...SAMPLE_COMPARE_FACE_DATA, ...behaviour.data };
          // Mimic the service: a quality threshold above a score adds a tip, the call still succeeds.
          const threshold = Number(rec.params.QualityScoreThreshold ?? "0");
          if (threshold > 0 && behaviour.data?.MessageTips === undefined) {
            const tips: string[] = [];
            if (typeof data.QualityScoreA === "number" && data.QualityScoreA < threshold) tips.push("imageA quality score less threshold");
            if (typeof data.QualityScoreB === "number" && data.QualityScoreB < threshold) tips.push("imageB quality score less threshold");
            if (tips.length) data.MessageTips = tips.join(";");
          }
          const requestId = newRequestId();
          rec.requestId = requestId;
          sendJson(res, 200, { RequestId: requestId, Data: data }, requestId);
        });
    }
  }

  const server = http.createServer((req, res) => {
    const rec: EmulatorRequest = {
      seq: ++seq,
      receivedAt: Date.now(),
      method: req.method ?? "",
      url: req.url ?? "",
      remotePort: req.socket.remotePort,
      headers: req.headers,
      params: {},
      bodyBytes: 0,
      signatureVerified: false,
      contentHashVerified: false,
      outcome: "pending",
    };
    requests.push(rec);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => undefined);
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      rec.bodyBytes = body.length;
      const url = new URL(req.url ?? "/", "http://emulator");
      rec.action = headerValue(req.headers, "x-acs-action") ?? url.searchParams.get("Action") ?? undefined;
      rec.version = headerValue(req.headers, "x-acs-version") ?? url.searchParams.get("Version") ?? undefined;
      if ((headerValue(req.headers, "content-type") ?? "").startsWith("application/x-www-form-urlencoded")) {
        rec.params = Object.fromEntries(new URLSearchParams(body.toString("utf8")));
      }
      const authError = authenticate(req, body, rec);
      if (authError) {
        rec.outcome = authError;
        return sendError(res, rec, authError);
      }
      if (rec.action !== "CompareFace" || req.method !== "POST") {
        rec.outcome = "InvalidAction.NotFound";
        return sendError(res, rec, "InvalidAction.NotFound");
      }
      if (rec.version !== "2019-12-30") {
        rec.outcome = "InvalidVersion";
        return sendError(res, rec, "InvalidVersion");
      }
      act(queue.shift() ?? fallback, req, res, rec);
    });
  });
  // Node's own defaults would cut hung requests after 5 min; tests close() first.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `127.0.0.1:${port}`,
    script: (...behaviours) => {
      queue.push(...behaviours);
    },
    setDefault: (behaviour) => {
      fallback = behaviour;
    },
    requests,
    attempts: () => requests.filter((r) => r.action === "CompareFace" && r.signatureVerified),
    reset: () => {
      requests.length = 0;
      queue = [];
      fallback = { kind: "success" };
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
