/**
 * Prometheus metrics on an own Registry (never prom-client's global one, so
 * several apps in one process do not collide): payment counters and
 * settlement latency fed by the payment engine's events, request latency by
 * an Express timing middleware.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { collectDefaultMetrics, Counter, Histogram, Registry } from "prom-client";
import type { PaymentEvent } from "server402";

/** The app's metrics. */
export interface Metrics {
  registry: Registry;
  /** Feed with the payment engine's events (never throws). */
  onEvent(e: PaymentEvent): void;
  /** Times every request into `http_request_duration_seconds`. */
  timing: RequestHandler;
  /** `GET /metrics`: with `bearerToken`, only for `Authorization: Bearer <token>`; without it, 404 unless `public`. */
  handler: RequestHandler;
}

/**
 * A bounded label for a payment resource URL: its path (plus `#tool` for
 * MCP), with payment ids collapsed so cardinality stays fixed.
 */
export function resourceLabel(resource: string): string {
  try {
    const u = new URL(resource);
    const path = u.protocol === "mcp:" ? `mcp:${u.pathname}` : u.pathname + u.hash;
    return path.replace(/\/pay_[A-Za-z0-9_-]+/g, "/:paymentId").slice(0, 120);
  } catch {
    return "unknown";
  }
}

/** A bounded label for a request's route: the matched Express route pattern, or "unmatched". */
function routeLabel(req: Request): string {
  const r = req.route as { path?: unknown } | undefined;
  if (typeof r?.path === "string") return (req.baseUrl || "") + r.path;
  if (Array.isArray(r?.path)) return (r.path as unknown[]).includes(req.path) ? req.path : String(r.path[0]);
  return "unmatched";
}

/** Create the registry and every metric. */
export function createMetrics(opts: { defaultMetrics?: boolean; bearerToken?: string; public?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const paymentRequired = new Counter({ name: "server402_payment_required_total", help: "402 (or MCP payment-required) answers served.", labelNames: ["resource"], registers: [registry] });
  const verified = new Counter({ name: "server402_payments_verified_total", help: "Payments verified (x402) or token calls reserved.", labelNames: ["method"], registers: [registry] });
  const settled = new Counter({ name: "server402_payments_settled_total", help: "x402 payments settled on chain, or prepaid token calls consumed.", labelNames: ["method"], registers: [registry] });
  const failed = new Counter({ name: "server402_payments_failed_total", help: "Payments refused or failed, by reason, method and stage.", labelNames: ["method", "reason", "stage"], registers: [registry] });
  const revenue = new Counter({
    name: "server402_revenue_atomic_total",
    help: "Money received by x402 settlements (including prepaid payments), in atomic units of the asset. Token calls spend prepaid money and are not counted again.",
    labelNames: ["asset"],
    registers: [registry],
  });
  const settleSeconds = new Histogram({
    name: "server402_settlement_duration_seconds",
    help: "Time to settle an x402 payment on chain.",
    labelNames: ["method"],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    registers: [registry],
  });
  // issue 14 B11: records of money that moved which the store refused (kept in the outbox and retried)
  const recordFailures = new Counter({ name: "server402_record_failures_total", help: "Settlement records (ledger, nonce, payment, outbox, held answer) the store refused after money moved; kept and retried by the reconciler.", labelNames: ["what"], registers: [registry] });
  const httpSeconds = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time from request to response finished, including paid handlers and settlement.",
    labelNames: ["method", "route", "status"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });

  function onEvent(e: PaymentEvent): void {
    try {
      switch (e.type) {
        case "payment_required":
          paymentRequired.inc({ resource: resourceLabel(e.resource) });
          break;
        case "verified":
          verified.inc({ method: e.method });
          break;
        case "settled":
          settled.inc({ method: e.method });
          if (e.method === "x402") {
            revenue.inc({ asset: e.asset.toLowerCase() }, Number(e.amount));
            settleSeconds.observe({ method: e.method }, e.durationMs / 1000);
          }
          break;
        case "failed":
          failed.inc({ method: e.method, reason: e.reason.slice(0, 64), stage: e.stage });
          break;
        case "record_failed":
          recordFailures.inc({ what: e.what });
          break;
      }
    } catch {
      /* metrics must never break a payment */
    }
  }

  const timing: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.once("finish", () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      httpSeconds.observe({ method: req.method, route: routeLabel(req), status: String(res.statusCode) }, seconds);
    });
    next();
  };

  const expected = opts.bearerToken ? createHash("sha256").update(opts.bearerToken).digest() : undefined;
  const handler: RequestHandler = async (req, res, next) => {
    if (opts.bearerToken === undefined && opts.public === false) {
      return void res.status(404).set("Cache-Control", "no-store").json({ error: "metrics_disabled", message: "metrics are served only with METRICS_TOKEN set (Authorization: Bearer <token>)." });
    }
    if (expected) {
      const auth = req.headers.authorization;
      const given = createHash("sha256").update(auth?.replace(/^Bearer\s+/i, "") ?? "").digest();
      if (!auth || !/^Bearer\s+\S+$/i.test(auth) || !timingSafeEqual(given, expected)) {
        return void res.status(401).set("WWW-Authenticate", "Bearer").set("Cache-Control", "no-store").json({ error: "unauthorized", message: "send Authorization: Bearer <METRICS_TOKEN>." });
      }
    }
    try {
      const text = await registry.metrics();
      res.status(200).set("Content-Type", registry.contentType).set("Cache-Control", "no-store").send(text);
    } catch (err) {
      next(err);
    }
  };

  return { registry, onEvent, timing, handler };
}
