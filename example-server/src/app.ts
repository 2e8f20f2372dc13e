/**
 * The example server's Express app: face comparison priced with server402,
 * the prepaid payments API, the same services as MCP tools, discovery
 * (catalog, OpenAPI, llms.txt) generated from the same route table,
 * health/readiness/metrics, request ids, CORS, and JSON errors for
 * everything that goes wrong.
 */
import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler } from "express";
import { pino, type Logger } from "pino";
import { ChainError, paywall, StoreError, type PaymentEvent, type PaywallMiddleware, type RouteOptions, type Settler, type Store, type PaymentChecker } from "server402";
import { compareHandler, validateFaceRequest, type CompareDeps } from "./face/compare.js";
import { services as defaultServices } from "./service.js";
import type { Config } from "./config.js";
import type { FaceEngine } from "./engine/types.js";
import { PATHS, type ServiceSpec } from "./discovery/catalog.js";
import { discoveryRouter } from "./discovery/router.js";
import { mcpRouter } from "./mcp.js";
import { corsMiddleware } from "./observability/cors.js";
import { healthRouter } from "./observability/health.js";
import { cappedLogger, loggerOf, requestLogging } from "./observability/logging.js";
import { createMetrics, type Metrics } from "./observability/metrics.js";
import { createActivity } from "./web/activity.js";
import { webRouter } from "./web/router.js";

/** What the app is built from. */
export interface AppDeps {
  config: Config;
  payTo: string;
  store: Store;
  settler: Settler;
  /** Pre-handler check; default on-chain through config.rpcUrl. */
  checker?: PaymentChecker | false;
  rpcUrl?: string;
  engine: FaceEngine;
  onEvent?: (e: PaymentEvent) => void;
  /** Called with unexpected errors (for logs). */
  onError?: (err: unknown, req?: Request) => void;
  /** Request and error logs (request id on every line). Default: silent. */
  logger?: Logger;
  /** Chain id the RPC must report for /readyz. */
  chainId?: number;
  /** Sell these instead of service.ts's services (tests, embedders: e.g. another price). */
  services?: readonly ServiceSpec[];
}

/** The built app and what tests and the server need from it. */
export interface App {
  app: Express;
  paywall: PaywallMiddleware;
  /** This app's Prometheus registry and metrics. */
  metrics: Metrics;
}

/** The paywall route table, generated from the service definitions (default: service.ts's). */
export function routeTable(services: readonly ServiceSpec[] = defaultServices): Record<string, RouteOptions<Request>> {
  const routes: Record<string, RouteOptions<Request>> = {};
  for (const s of services) {
    for (const path of [s.endpoint, ...s.legacyEndpoints]) {
      routes[`${s.method} ${path}`] = {
        price: s.price,
        description: s.description,
        mimeType: "application/json",
        serviceId: s.id,
        maxCalls: s.maxCalls,
        tokenTtl: s.tokenTtlSeconds,
        inputSchema: s.inputSchema as unknown as Record<string, unknown>,
        outputSchema: s.outputSchema as unknown as Record<string, unknown>,
      };
    }
  }
  return routes;
}

/** Build the app (no listening). */
export function createApp(deps: AppDeps): App {
  const { config } = deps;
  const services = deps.services ?? defaultServices;
  const logger = cappedLogger(deps.logger ?? pino({ level: "silent" }));
  const metrics = createMetrics({ bearerToken: config.metricsToken, public: config.devchain });
  const activity = createActivity();
  const app = express();
  app.disable("x-powered-by");
  // Only the configured proxies' X-Forwarded-* are believed (rate limits by client, Host); see TRUST_PROXY.
  app.set("trust proxy", config.trustProxy);

  const pw = paywall({
    payTo: deps.payTo,
    network: config.network,
    settler: deps.settler,
    settlement: config.settlement,
    store: deps.store,
    rpcUrl: deps.rpcUrl,
    checker: deps.checker,
    publicUrl: config.publicUrl,
    tokenLeaseMs: config.tokenLeaseMs,
    abuseLimits: { maxRetries: config.paymentMaxRetries },
    handlerTimeoutMs: config.compareTimeoutMs,
    onEvent: (e) => {
      metrics.onEvent(e);
      // issue 14 B11: a record of money that moved which the store refused (kept in the outbox, retried) is logged
      if (e.type === "record_failed") logger.error({ event: e }, "settlement record not stored yet; kept in the outbox");
      else if (e.type === "reconciled") logger.info({ event: e }, "settlement reconciled");
      // issue 14 C16: the client got a code and a plain message; the detail is logged here
      else if (e.type === "error_answer") logger.warn({ event: e }, "payment error answered");
      activity.onEvent(e);
      deps.onEvent?.(e);
    },
    routes: routeTable(services),
    payments: { adminKey: config.adminKey },
  });

  const compareDeps: CompareDeps = {
    engine: deps.engine,
    imageAllowHosts: config.imageAllowHosts,
    imageMaxBytes: config.imageMaxBytes,
    imageMaxPixels: config.imageMaxPixels,
    imageTimeoutMs: config.imageTimeoutMs,
    compareTimeoutMs: config.compareTimeoutMs,
  };
  const onError = (err: unknown, req?: Request) => {
    if (deps.onError) return deps.onError(err, req);
    (req?.res ? loggerOf(req.res, logger) : logger).error({ err }, "unexpected error");
  };

  app.use(requestLogging(logger));
  app.use(metrics.timing);
  app.use(corsMiddleware(config.corsOrigins));
  app.use(healthRouter({ store: deps.store, engine: deps.engine, rpcUrl: deps.rpcUrl, chainId: deps.chainId }));
  if (config.allowedHosts) app.use(allowedHostsOnly(config.allowedHosts));
  app.get(PATHS.metrics, metrics.handler);
  app.use(discoveryRouter(services, pw));

  const faceJson = express.json({ limit: config.bodyLimitBytes, type: () => true });
  const unpaid = unpaidFromHeaders(pw, config.bodyLimitBytes);
  for (const s of services) {
    const paths = [s.endpoint, ...s.legacyEndpoints];
    app.post(paths, unpaid, faceJson, validateFaceRequest(config.imageMaxBytes, config.imageMaxPixels));
  }
  app.use(mcpRouter({ services, paywall: pw, allowedHosts: config.allowedHosts, compare: compareDeps, bodyLimitBytes: config.bodyLimitBytes, timeoutMs: config.mcpTimeoutMs, onError: (err) => onError(err) }));
  app.use(pw);
  for (const s of services) {
    app.post([s.endpoint, ...s.legacyEndpoints], compareHandler(compareDeps, (err) => onError(err)));
  }

  app.get("/api/devchain", (_req, res) => {
    const chain = app.locals.devchain as import("server402/devchain").DevChain | undefined;
    if (!chain) return void res.status(404).json({ error: "not_found", message: "no embedded dev chain runs on this server." });
    res.json({
      rpcUrl: chain.rpcUrl,
      chainId: chain.chainId,
      usdc: chain.usdc,
      payTo: chain.accounts.payTo.address,
      note: "anvil's public test accounts; their keys are worthless outside this dev chain.",
      payers: chain.accounts.payers.map((p) => ({ address: p.address, privateKey: p.privateKey })),
    });
  });

  // Pages for people (web/): `/`, service pages, `/admin`; requests preferring JSON fall through.
  app.use(webRouter({ services, paywall: pw, store: deps.store, metrics, activity, adminKey: config.adminKey, devchain: () => app.locals.devchain !== undefined }));

  app.use((req, res) => {
    res.status(404).json({ error: "not_found", message: `no route ${req.method} ${req.path.slice(0, 200)}; see ${PATHS.services}.` });
  });
  app.use(errorHandler(onError));
  return { app, paywall: pw, metrics };
}

/** The request headers that carry a payment (x402 v1, v2, prepaid token). */
const PAYMENT_HEADERS = ["x-payment", "payment-signature", "x-payment-token"] as const;

/**
 * A request without any payment header is answered from its headers alone,
 * before its body is read: 413 when Content-Length is over the limit, else
 * the paywall's 402. An unpaid request so costs the same whatever its body.
 * A request that carries a payment goes on to body parsing and validation
 * before the paywall, so a malformed paid request is refused (400) and never
 * charged.
 */
function unpaidFromHeaders(pw: PaywallMiddleware, bodyLimitBytes: number): RequestHandler {
  return (req, res, next) => {
    if (PAYMENT_HEADERS.some((h) => req.headers[h] !== undefined)) return next();
    const length = Number(req.headers["content-length"]);
    if (length > bodyLimitBytes) {
      return void res.status(413).set("Cache-Control", "no-store").json({ error: "body_too_large", message: `the request body is larger than ${bodyLimitBytes} bytes.` });
    }
    pw(req, res, next);
  };
}

/**
 * Without PUBLIC_URL the origin of payment URLs comes from the request's
 * Host (or a trusted proxy's X-Forwarded-Host): answer only the names the
 * operator allowed, so a forged one never reaches a 402 or a payment's URL.
 */
function allowedHostsOnly(allowed: readonly string[]): RequestHandler {
  const names = new Set(allowed);
  return (req, res, next) => {
    if (names.has(req.hostname?.toLowerCase() ?? "")) return next();
    res.status(400).set("Cache-Control", "no-store").json({ error: "invalid_host", message: "this server does not answer for that host name." });
  };
}

/** JSON for every error: body-parser's 400/413, and a last-resort 500 that never leaks internals. */
export function errorHandler(onError?: (err: unknown, req?: Request) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const e = err as { type?: string; status?: number; expose?: boolean; message?: string };
    let status = 500;
    let code = "internal_error";
    let message = "unexpected server error";
    if (e?.type === "entity.too.large") [status, code, message] = [413, "body_too_large", "the request body is larger than allowed."];
    else if (e?.type === "entity.parse.failed") [status, code, message] = [400, "invalid_json", "the request body is not valid JSON."];
    else if (e?.type === "encoding.unsupported" || e?.type === "charset.unsupported") [status, code, message] = [415, "unsupported_encoding", e.message ?? "unsupported encoding"];
    else if (err instanceof URIError) [status, code, message] = [400, "invalid_path", "the URL has invalid percent-encoding."];
    else if (typeof e?.status === "number" && e.status >= 400 && e.status < 500) [status, code, message] = [e.status, "bad_request", e.expose ? (e.message ?? "bad request") : "bad request"];
    else if (err instanceof StoreError || err instanceof ChainError) {
      // An outage is not a bug: 503 with its code and when to come back; the details go to the logs.
      [status, code, message] = [503, err.code, err instanceof StoreError ? "the payment store is unavailable; nothing was charged. Try again shortly." : "the chain could not be reached; nothing was charged. Try again shortly."];
      onError?.(err, req);
    }
    if (status === 500) onError?.(err, req);
    if (res.headersSent) return void res.destroy();
    if (status === 503) res.setHeader("Retry-After", "5");
    res.status(status).set("Cache-Control", "no-store").json({ error: code, message });
  };
}
