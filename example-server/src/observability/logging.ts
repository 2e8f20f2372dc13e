/**
 * Request logging: a request id on every request (a sane incoming
 * `X-Request-Id` is kept, otherwise a new UUID), echoed in the response and
 * bound to a per-request pino child logger, and one access line per request.
 *
 * Secrets never reach the logs: headers, bodies and query strings are not
 * logged at all, and the logger redacts payment headers, tokens, keys and
 * Authorization wherever they would appear anyway.
 */
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { stdSerializers, type Logger } from "pino";

/** Paths pino censors (defence in depth: nothing logs these on purpose). */
export const REDACT_PATHS = [
  "headers",
  "req.headers",
  "res.headers",
  "authorization",
  "*.authorization",
  "token",
  "*.token",
  "paymentToken",
  "*.paymentToken",
  "adminKey",
  "*.adminKey",
  "privateKey",
  "*.privateKey",
  "accessKeySecret",
  "*.accessKeySecret",
  "signature",
  "*.signature",
  '["x-payment"]',
  '*["x-payment"]',
  '["payment-signature"]',
  '*["payment-signature"]',
  '["x-payment-token"]',
  '*["x-payment-token"]',
];

/** A logger that censors {@link REDACT_PATHS}. */
export function redactingLogger(logger: Logger): Logger {
  return logger.child({}, { redact: { paths: REDACT_PATHS, censor: "[redacted]" } });
}

/** Longest string a log line carries per field; error texts can hold client input (a cancel reason, an echoed URL). */
export const LOG_STRING_MAX = 2048;

/** `v` with every string cut to {@link LOG_STRING_MAX} characters, arrays to 20 items, nesting to 6 levels. */
export function capForLog(v: unknown, depth = 0): unknown {
  if (typeof v === "string") return v.length > LOG_STRING_MAX ? `${v.slice(0, LOG_STRING_MAX)}… [${v.length - LOG_STRING_MAX} more characters]` : v;
  if (!v || typeof v !== "object") return v;
  if (depth >= 6) return "[nested too deep]";
  if (Array.isArray(v)) return v.slice(0, 20).map((x) => capForLog(x, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v).slice(0, 50)) out[k] = capForLog(x, depth + 1);
  return out;
}

/** A logger whose `err` field (the only place client text can reach a line) is serialized and capped by {@link capForLog}. */
export function cappedLogger(logger: Logger): Logger {
  return logger.child({}, { serializers: { err: (e: unknown) => capForLog(e instanceof Error ? stdSerializers.err(e) : e) } });
}

const SANE_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** The per-request logger (falls back to `fallback` outside {@link requestLogging}). */
export function loggerOf(res: Response, fallback: Logger): Logger {
  return (res.locals.log as Logger | undefined) ?? fallback;
}

/** Middleware: request id, per-request logger in `res.locals.log`, and one access line when the response ends. */
export function requestLogging(logger: Logger): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const incoming = req.headers["x-request-id"];
    const id = typeof incoming === "string" && SANE_ID.test(incoming) ? incoming : randomUUID();
    const started = process.hrtime.bigint();
    const log = logger.child({ reqId: id });
    res.locals.requestId = id;
    res.locals.log = log;
    res.setHeader("X-Request-Id", id);
    let done = false;
    const finish = (aborted: boolean) => {
      if (done) return;
      done = true;
      const durationMs = Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100;
      const line = { method: req.method, path: req.path.slice(0, 200), status: res.statusCode, durationMs, ...(aborted ? { aborted: true } : {}) };
      if (res.statusCode >= 500) log.warn(line, "request failed");
      else log.info(line, "request");
    };
    res.once("finish", () => finish(false));
    res.once("close", () => finish(!res.writableFinished));
    next();
  };
}
