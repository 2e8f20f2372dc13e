/**
 * Classification of failures of the Alibaba facebody SDK (`@alicloud/*`):
 * which ones are worth another attempt, and which {@link FaceError} each one
 * becomes. Upstream errors are recognised by their Alibaba `Code` (prefix
 * match), never by HTTP status alone: the same code can arrive as 400 or 404.
 */
import { FaceError, type FaceErrorCode } from "./types.js";

/** Why a failed attempt may be retried; `undefined` = never retry. */
export type RetryKind = "throttled" | "server" | "timeout" | "reset";

/** The fields of an SDK rejection this module reads (all optional: it may be anything). */
interface SdkErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  statusCode?: unknown;
  data?: unknown;
}

/** What an SDK rejection says about itself, normalised. */
export interface UpstreamErrorInfo {
  /** Alibaba `Code` (e.g. `InvalidImage.NotFoundFace`) or a Node error code (`ECONNRESET`). */
  code?: string;
  /** HTTP status of an upstream error reply. */
  status?: number;
  /** Upstream `RequestId`, when the reply carried one. */
  requestId?: string;
  /** Upstream `Message`, with the `[pk=…,tag=…]` routing prefix removed. */
  upstreamMessage?: string;
  /** `name` of the rejection (`Error`, `SyntaxError`, `RequestTimeoutError`, …). */
  name?: string;
  /** `message` of the rejection. */
  message: string;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v.length > 0 ? v : undefined;
}

/** Extract code, status, RequestId and message from whatever the SDK rejected with. */
export function describeUpstreamError(err: unknown): UpstreamErrorInfo {
  const e = (typeof err === "object" && err !== null ? err : {}) as SdkErrorLike;
  const data = (typeof e.data === "object" && e.data !== null ? e.data : {}) as Record<string, unknown>;
  const status =
    typeof e.statusCode === "number" && Number.isFinite(e.statusCode)
      ? e.statusCode
      : typeof data.statusCode === "number"
        ? data.statusCode
        : undefined;
  const code = str(data.Code) ?? str(data.code) ?? str(e.code);
  const rawMessage = str(data.Message) ?? str(data.message);
  return {
    code: code === "undefined" ? undefined : code,
    status,
    requestId: str(data.RequestId) ?? str(data.requestId),
    upstreamMessage: rawMessage?.replace(/^\s*\[pk=[^\]]*\]\s*/, ""),
    name: str(e.name),
    message: str(e.message) ?? (typeof err === "string" ? err : String(err)),
  };
}

function startsWithAny(code: string, prefixes: readonly string[]): boolean {
  return prefixes.some((p) => code === p || code.startsWith(`${p}.`) || (p.endsWith("*") && code.startsWith(p.slice(0, -1))));
}

/** Credential, signature, permission and API-access codes: the operator must fix the configuration. */
export const MISCONFIGURATION_CODES: readonly string[] = Object.freeze([
  "SignatureDoesNotMatch",
  "IncompleteSignature",
  "InvalidAccessKeyId",
  "InvalidAccessKeySecret",
  "InvalidSecurityToken",
  "MissingSecurityToken",
  "InvalidCredentials",
  "AuthFailed",
  "InvalidApi",
  "Forbidden*",
  "NoPermission",
  "EntityNotExist.Role",
  "InvalidAction",
  "InvalidVersion",
  "InvalidTimeStamp",
  "InvalidRegionId",
]);

/** Request-shape codes (we sent something the API does not accept). */
export const INVALID_INPUT_CODES: readonly string[] = Object.freeze([
  "InvalidParameter",
  "ParameterError",
  "MissingParameter",
  "ClientError.IllegalArgument",
  "IllegalUrlParameter",
]);

const NO_FACE = /(NotFoundFace|NoFace|FaceNotFound|NotFound\.Face|FaceNotExist)$/i;
const TOO_LARGE = /\.(Size|FileSize|ImageSize|TooLarge|TooBig|Exceed\w*|Resolution)$/i;
const SMALL_HINT = /small|less than|too low|小/i;

function isReset(info: UpstreamErrorInfo): boolean {
  return info.status === undefined && (info.code === "ECONNRESET" || /socket hang up/i.test(info.message));
}

/**
 * Whether a failed attempt may be retried, and why. Only `Throttling*`
 * (whatever its status), 5xx replies, the SDK's `RequestTimeoutError` and
 * connection resets qualify; any other 4xx never does.
 */
export function retryKind(err: unknown): RetryKind | undefined {
  if (err instanceof FaceError) return undefined;
  const info = describeUpstreamError(err);
  if (info.code && info.status !== undefined && startsWithAny(info.code, ["Throttling"])) return "throttled";
  if (info.status !== undefined) return info.status >= 500 ? "server" : undefined;
  if (info.name === "RequestTimeoutError") return "timeout";
  if (isReset(info)) return "reset";
  return undefined;
}

function clip(s: string, max = 200): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** Replace every occurrence of each secret (AccessKey secret, STS token) with `***`. */
export function redact(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join("***");
  return out;
}

/**
 * A credential-free copy of an SDK rejection, used as `FaceError.cause`:
 * keeps name, message (redacted), code, status and RequestId, drops the
 * request/response objects the SDK may attach.
 */
export class AlibabaUpstreamError extends Error {
  /** Alibaba `Code` or Node error code. */
  readonly code?: string;
  /** HTTP status of the upstream reply, if any. */
  readonly statusCode?: number;
  /** Upstream RequestId, if any. */
  readonly requestId?: string;
  constructor(info: UpstreamErrorInfo, secrets: readonly (string | undefined)[]) {
    super(redact(info.message, secrets));
    this.name = info.name && info.name !== "Error" ? `AlibabaUpstreamError(${info.name})` : "AlibabaUpstreamError";
    this.code = info.code;
    this.statusCode = info.status;
    this.requestId = info.requestId;
  }
}

/** Context for {@link toFaceError}. */
export interface MapContext {
  /** Strings that must never appear in a produced message (AccessKey secret, STS token). */
  secrets?: readonly (string | undefined)[];
  /** The overall budget, quoted in timeout messages. */
  timeoutMs?: number;
}

/** Pure classification: which FaceError code an upstream failure becomes. */
export function classifyUpstreamError(info: UpstreamErrorInfo): FaceErrorCode {
  const code = info.code ?? "";
  if (info.status !== undefined) {
    if (startsWithAny(code, ["Throttling"])) return "upstream_throttled";
    if (startsWithAny(code, MISCONFIGURATION_CODES)) return "engine_misconfigured";
    if (/^(InvalidImage|InvalidFile|InvalidFace)\./.test(code) || NO_FACE.test(code)) {
      if (NO_FACE.test(code)) return "no_face";
      if (/Quality/i.test(code)) return "low_quality";
      if (TOO_LARGE.test(code)) return SMALL_HINT.test(info.upstreamMessage ?? "") ? "invalid_image" : "image_too_large";
      return "invalid_image";
    }
    if (info.status === 413) return "image_too_large";
    if (startsWithAny(code, INVALID_INPUT_CODES)) return "invalid_input";
    if (info.status === 408 || (info.status >= 500 && /Timeout/i.test(code))) return "upstream_timeout";
    return "upstream_error";
  }
  if (info.name === "RequestTimeoutError") return "upstream_timeout";
  if (code === "InvalidCredentials" || /RegionId is empty/.test(info.message)) return "engine_misconfigured";
  return "upstream_error";
}

const MESSAGES: Record<FaceErrorCode, (c: string, m: string, t?: number) => string> = {
  invalid_input: (c, m) => `face engine rejected the request (${c})${m ? `: ${m}` : ""}`,
  invalid_image: (c, m) => `face engine could not use an image (${c})${m ? `: ${m}` : ""}`,
  image_too_large: (c, m) => `image too large for the face engine (${c})${m ? `: ${m}` : ""}`,
  no_face: () => "no face found in one of the images",
  low_quality: (c) => `face quality below the threshold (${c})`,
  image_fetch_failed: (c, m) => `face engine could not fetch an image (${c})${m ? `: ${m}` : ""}`,
  image_url_forbidden: (c) => `image URL refused (${c})`,
  upstream_throttled: (c) => `face engine is throttling requests (${c}); retry later`,
  upstream_error: (c) => `face engine failed (${c})`,
  upstream_timeout: (c, _m, t) => (t ? `face engine did not answer within ${t} ms (${c})` : `face engine timed out (${c})`),
  engine_misconfigured: (c) => `face engine is misconfigured: upstream refused credentials or API access (${c})`,
  engine_unavailable: (c) => `face engine unavailable (${c})`,
};

/**
 * Turn any SDK rejection into a {@link FaceError} carrying the upstream
 * RequestId. Messages never contain the configured secrets; the `cause` is a
 * sanitised {@link AlibabaUpstreamError}, not the SDK object.
 */
export function toFaceError(err: unknown, ctx: MapContext = {}): FaceError {
  if (err instanceof FaceError) return err;
  const secrets = ctx.secrets ?? [];
  const info = describeUpstreamError(err);
  const faceCode = classifyUpstreamError(info);
  const label =
    info.code ??
    (info.name === "SyntaxError" ? "unparseable response" : info.name && info.name !== "Error" ? info.name : "unknown error");
  const upstreamMessage = info.upstreamMessage ? clip(info.upstreamMessage) : "";
  const message = redact(MESSAGES[faceCode](label, upstreamMessage, ctx.timeoutMs), secrets);
  return new FaceError(faceCode, message, {
    cause: new AlibabaUpstreamError(info, secrets),
    upstreamRequestId: info.requestId,
  });
}
