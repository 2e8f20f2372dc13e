/**
 * The `onProtectedRequest` hook (as @x402/express 2.x's): runs for every
 * request to a priced route before any payment is asked for or taken, and
 * may let it through unpaid (`{ grantAccess: true }`, e.g. for your own API
 * keys: the handler runs with no `req.payment`) or refuse it
 * (`{ abort: true, reason, message? }` → 403). A hook that throws refuses
 * the request (503 `hook_failed`): it never gives work away.
 */
import type { NextFunction, Request, Response } from "express";
import type { PaymentOptions, ResolvedRoute } from "../../core/options.js";
import { normalizePath } from "../routes.js";

/** What `onProtectedRequest` receives. */
export interface ProtectedRequestContext {
  /** The Express request. */
  req: Request;
  method: string;
  /** The mount-relative path. */
  path: string;
  /** The route table key that priced it, e.g. "POST /api/x". */
  route: string;
}

/** What `onProtectedRequest` may return. */
export type ProtectedRequestResult = void | { grantAccess: true } | { abort: true; reason: string; message?: string };

/** The Express-only hooks of `paywall()` / `requirePayment()`. */
export interface ExpressHooks {
  onProtectedRequest?: (ctx: ProtectedRequestContext) => ProtectedRequestResult | Promise<ProtectedRequestResult>;
}

const REASON = /^[A-Za-z0-9_.-]{1,64}$/;

function refuse(res: Response, status: number, error: string, message: string): void {
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Cache-Control", "no-store");
  if (status === 503) res.setHeader("Retry-After", "2");
  res.end(JSON.stringify({ error, message }));
}

/** Wrap the paywall middleware with the `onProtectedRequest` hook, when one is given (else return it as is). */
export function withProtectedRequestHook<M extends (req: Request, res: Response, next: NextFunction) => unknown>(
  middleware: M,
  options: PaymentOptions,
  pick: (method: string, path: string) => ResolvedRoute<Request> | undefined,
): M {
  const hook = (options.hooks as ExpressHooks | undefined)?.onProtectedRequest;
  if (typeof hook !== "function") return middleware;
  const wrapped = async function server402Protected(req: Request, res: Response, next: NextFunction): Promise<unknown> {
    const path = normalizePath(req.path);
    const route = pick(req.method, path);
    if (!route) return middleware(req, res, next);
    let out: ProtectedRequestResult;
    try {
      out = await hook({ req, method: req.method, path, route: route.key });
    } catch {
      return refuse(res, 503, "hook_failed", "the server could not decide on this request right now (onProtectedRequest failed); retry later.");
    }
    if (out && "grantAccess" in out && out.grantAccess === true) return next();
    if (out && "abort" in out && out.abort === true) {
      const reason = typeof out.reason === "string" && REASON.test(out.reason) ? out.reason : "forbidden";
      return refuse(res, 403, reason, typeof out.message === "string" && out.message ? out.message : `this request is refused (${reason}).`);
    }
    return middleware(req, res, next);
  };
  return wrapped as unknown as M;
}
