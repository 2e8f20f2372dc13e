/**
 * The face-comparison HTTP handlers: strict input validation (runs before the
 * paywall, so a malformed request is never asked to pay), image intake, the
 * engine call, and Alibaba's response envelope.
 */
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { FACE_INPUT_KEYS } from "../service.js";
import type { Logger } from "pino";
import { FaceError, type FaceEngine, type FaceErrorCode } from "../engine/types.js";
import { decodeImageData, DEFAULT_MAX_IMAGE_PIXELS, fetchImage, MAX_IMAGE_URL_LENGTH } from "../images/index.js";

/** A validated request: each side is either a URL to fetch or decoded bytes. */
export interface FaceInput {
  a: { url: string } | { bytes: Buffer };
  b: { url: string } | { bytes: Buffer };
  qualityScoreThreshold?: number;
}

export interface CompareDeps {
  engine: FaceEngine;
  /** Hosts exempt from the private-address rule (tests, controlled deployments). */
  imageAllowHosts?: readonly string[];
  imageMaxBytes: number;
  /** Largest pixel count of one image, read from its header before any decoding (default 4096 × 4096). */
  imageMaxPixels?: number;
  imageTimeoutMs: number;
  /** Overall deadline of one comparison, ms. */
  compareTimeoutMs: number;
}

/** What a client is told when an error's own text came from an engine, a decoder or an upstream service. */
const PLAIN_MESSAGES: Record<FaceErrorCode, string> = {
  invalid_input: "the face engine refused the request.",
  invalid_image: "one of the images could not be decoded; send a JPEG, PNG, BMP or WEBP image.",
  image_too_large: "one of the images is too large for the face engine.",
  no_face: "no face found in one of the images.",
  low_quality: "a face's quality is below the threshold.",
  image_fetch_failed: "an image could not be fetched.",
  image_url_forbidden: "an image URL was refused.",
  upstream_throttled: "the face engine is busy; retry later.",
  upstream_error: "the face engine failed.",
  upstream_timeout: "the face engine did not answer in time.",
  engine_misconfigured: "the face engine is misconfigured on this server.",
  engine_unavailable: "the face engine is unavailable; retry later.",
};

/**
 * The message a client may see: this server's own text, or a plain message
 * per code when the error wraps a lower-level one (decoder, engine, upstream
 * text such as libvips errors or status lines). The full error goes to the logs.
 */
export function clientMessage(err: FaceError): string {
  return err.cause === undefined || err.cause instanceof FaceError ? err.message : PLAIN_MESSAGES[err.code];
}

/** The error envelope, with the same shape as a success; details the client does not get are logged. */
export function faceError(res: Response, err: FaceError, requestId: string): void {
  const message = clientMessage(err);
  if (message !== err.message) (res.locals.log as Logger | undefined)?.warn({ err }, "face comparison failed");
  res.status(err.status).json({ code: err.code, content: "", data: null, message, requestId });
}

function requestIdOf(res: Response): string {
  return (res.getHeader("X-Request-Id") as string | undefined) ?? randomUUID();
}

/**
 * Validate a CompareFace body. Throws FaceError("invalid_input" | "invalid_image" | "image_too_large")
 * naming the wrong key. Shared by HTTP and MCP.
 */
export function parseFaceInput(body: unknown, maxBytes: number, maxPixels: number = DEFAULT_MAX_IMAGE_PIXELS): FaceInput {
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new FaceError("invalid_input", `send a JSON object with keys ${FACE_INPUT_KEYS.join(", ")}.`);
  }
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !(FACE_INPUT_KEYS as readonly string[]).includes(k));
  if (unknown.length) {
    const hints = unknown.map((k) => {
      const match = FACE_INPUT_KEYS.find((e) => e.toLowerCase() === k.toLowerCase());
      return match ? `${k} (did you mean ${match}?)` : k;
    });
    throw new FaceError("invalid_input", `unknown key(s) ${hints.join(", ")}; expected keys are ${FACE_INPUT_KEYS.join(", ")}.`);
  }
  const side = (s: "A" | "B"): FaceInput["a"] => {
    const url = b[`ImageURL${s}`];
    const data = b[`ImageData${s}`];
    if (url !== undefined && data !== undefined) throw new FaceError("invalid_input", `give ImageURL${s} or ImageData${s}, not both.`);
    if (url === undefined && data === undefined) throw new FaceError("invalid_input", `image ${s} is missing: give ImageURL${s} (http/https URL) or ImageData${s} (base64).`);
    if (url !== undefined) {
      if (typeof url !== "string" || url.length === 0 || url.length > MAX_IMAGE_URL_LENGTH) {
        throw new FaceError("invalid_input", `ImageURL${s} must be a non-empty string of at most ${MAX_IMAGE_URL_LENGTH} characters.`);
      }
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw new FaceError("invalid_input", `ImageURL${s} is not a valid URL.`);
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new FaceError("image_url_forbidden", `ImageURL${s} must use http or https.`);
      return { url };
    }
    if (typeof data !== "string" || data.length === 0) throw new FaceError("invalid_input", `ImageData${s} must be a non-empty base64 string.`);
    try {
      return { bytes: decodeImageData(data, maxBytes, maxPixels).bytes };
    } catch (err) {
      if (err instanceof FaceError) throw new FaceError(err.code, `ImageData${s}: ${err.message}`);
      throw err;
    }
  };
  const q = b.QualityScoreThreshold;
  if (q !== undefined && (typeof q !== "number" || !Number.isFinite(q) || q < 0 || q > 100)) {
    throw new FaceError("invalid_input", "QualityScoreThreshold must be a number from 0 to 100.");
  }
  return { a: side("A"), b: side("B"), qualityScoreThreshold: q as number | undefined };
}

/** Middleware: validate the body before the paywall; 400 on any problem. */
export function validateFaceRequest(maxBytes: number, maxPixels?: number): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    try {
      res.locals.faceInput = parseFaceInput(req.body, maxBytes, maxPixels);
      next();
    } catch (err) {
      if (err instanceof FaceError) return faceError(res, err, requestIdOf(res));
      next(err);
    }
  };
}

/** Fetch URL sides, run the engine, and build the success envelope. Shared by HTTP and MCP. */
export async function runComparison(input: FaceInput, deps: CompareDeps, signal?: AbortSignal) {
  const deadline = AbortSignal.timeout(deps.compareTimeoutMs);
  const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
  const load = async (s: FaceInput["a"], name: string) => {
    if ("bytes" in s) return s.bytes;
    try {
      return (await fetchImage(s.url, { maxBytes: deps.imageMaxBytes, maxPixels: deps.imageMaxPixels, timeoutMs: deps.imageTimeoutMs, allowHosts: deps.imageAllowHosts, signal: combined })).bytes;
    } catch (err) {
      if (err instanceof FaceError) throw new FaceError(err.code, `ImageURL${name}: ${err.message}`, { cause: err });
      throw err;
    }
  };
  const [imageA, imageB] = await Promise.all([load(input.a, "A"), load(input.b, "B")]);
  const { result, requestId } = await deps.engine.compare({ imageA, imageB, qualityScoreThreshold: input.qualityScoreThreshold, signal: combined });
  if (deadline.aborted) throw new FaceError("upstream_timeout", `the comparison took longer than ${deps.compareTimeoutMs} ms.`);
  return { code: "200", content: "", data: { Action: "CompareFace", Result: result }, message: "success", requestId };
}

/** The paid handler. A failure answers >= 400, so the paywall never charges it. */
export function compareHandler(deps: CompareDeps, onError?: (err: unknown) => void): RequestHandler {
  return async (_req: Request, res: Response) => {
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) abort.abort(new Error("client went away"));
    };
    res.once("close", onClose);
    try {
      const out = await runComparison(res.locals.faceInput as FaceInput, deps, abort.signal);
      res.status(200).json(out);
    } catch (err) {
      const fe = err instanceof FaceError ? err : new FaceError("upstream_error", "the face engine failed unexpectedly.", { cause: err });
      if (!(err instanceof FaceError) && !abort.signal.aborted) onError?.(err);
      faceError(res, fe, requestIdOf(res));
    } finally {
      res.off("close", onClose);
    }
  };
}
