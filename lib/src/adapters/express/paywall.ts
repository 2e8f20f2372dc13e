/**
 * Express adapter: `paywall({ routes, ... })` for `app.use`, and
 * `requirePayment({ price, ... })` for one route. Both answer x402 v1 and v2
 * clients on the same route and accept prepaid `X-Payment-Token`s.
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { ChainError, ConfigError, PaymentError, Server402Error, SettlementError, StoreError } from "../../errors.js";
import { PaymentEngine, reasonOf, settleResponse, type PaymentInfo, type TokenAttempt, type X402Attempt, type X402Replay } from "../../core/engine.js";
import { DEFAULT_PAYMENTS_PATH, type PaymentOptions, type ResolvedRoute, type RouteOptions } from "../../core/options.js";
import { decodeHeader, encodeHeader } from "../../protocol/encoding.js";
import { resolvePrice } from "../../protocol/price.js";
import { NO_PAYMENT, type Offer } from "../../protocol/requirements.js";
import { HEADER } from "../../protocol/types.js";
import type { StoredPayment } from "../../state/store.js";
import { toPublicPayment } from "../../core/payment-object.js";
import { bufferResponse } from "./buffer.js";
import { withProtectedRequestHook } from "./protected-request.js";
import { endBeforeBody } from "./unread-body.js";
import { outageAnswer, reportErrorAnswer } from "../error-detail.js";
import { paymentsApi, type PaymentsApiOptions } from "./payments-router.js";
import { normalizePath, RouteTable } from "../routes.js";
import { buildPaidRoutes, offerOf, paymentRequiredOf, type PaidRoutes } from "../paid-routes.js";
import { createPaywallPage, type PaywallPageSetting } from "./paywall-page.js";
import { httpBodyDigest, sendPaymentIdRefusal, type PaymentIdHold } from "../../core/idempotency.js";
import { LeaseKeeper } from "../../core/leases.js";

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by server402 on paid requests. */
      payment?: PaymentInfo;
    }
  }
}

/** Options of `paywall()`. */
export interface PaywallOptions extends PaymentOptions, PaywallPageSetting {
  /** Route table: `{ "POST /api/x": { price: "$0.20", ... } }`. Keys are matched against the mount-relative path. */
  routes: Record<string, RouteOptions<Request>>;
  /**
   * Also serve the prepaid payments API (create, show, pay, confirm, ledger)
   * from this middleware, under `paymentsPath`. Without it, mount
   * `paymentsRouter({ paywall })` if you sell prepaid tokens.
   */
  payments?: Omit<PaymentsApiOptions, "path">;
}

/** The middleware, with the resolved configuration attached for the payments router, MCP and catalogs. */
export interface PaywallMiddleware extends RequestHandler, PaidRoutes<Request> {
  /** @internal The shared engine (store, settler), for the payments router and the MCP adapter; not in the published types. */
  readonly engine: PaymentEngine;
  /** Resolved routes, in match order. */
  readonly routes: readonly ResolvedRoute<Request>[];
  /** The options given. */
  readonly options: PaymentOptions;
  /** Build the offer for a route and absolute resource URL (dynamic prices resolved with `req`). */
  offerFor(route: ResolvedRoute<Request>, resource: string, req?: Request): Promise<Offer>;
  /** The 402 answer for an offer: v1 body (with extra keys) and v2 header value. */
  paymentRequired(offer: Offer, route: ResolvedRoute<Request>, error: string, origin: string): { body: Record<string, unknown>; header: string };
  /** @internal Answer 402 for an offer with a reason (used by the payments router). */
  send402(res: Response, offer: Offer, route: ResolvedRoute<Request>, origin: string, reason: string, message?: string, extra?: Record<string, unknown>): void;
  /** @internal Answer a payment failure with the right status and headers. */
  sendError(res: Response, err: unknown, offer: Offer, route: ResolvedRoute<Request>, origin: string, version?: 1 | 2, attempt?: X402Attempt): void;
  /** The public origin for a request (publicUrl option, or protocol + host). */
  origin(req: Request): string;
}

const MAX_CACHE = 1000;

/** Seconds a client should wait before retrying after a store or chain outage (Retry-After). */
const RETRY_AFTER_SECONDS = "2";

/**
 * Key of a cached 402 answer. The advertised schema is part of it: on a route
 * keyed without a verb it names the request's method (v1 `outputSchema`, v2
 * bazaar), so a DELETE is not answered with a GET's discovery data.
 */
function cacheKey(route: ResolvedRoute<Request>, base: string, resource: string, amount: bigint, reason: string, schema: Record<string, unknown>): string {
  return `${route.key}|${(schema.input as { method?: string } | undefined)?.method}|${base}|${resource}|${amount}|${reason}`;
}

/** Create the engine and resolve routes; shared by `paywall` and `requirePayment`. */
function build(options: PaymentOptions, routes: Record<string, RouteOptions<Request>>) {
  return buildPaidRoutes(options, routes);
}

/** `publicUrl`, else `req.protocol` + `://` + `req.host` (both honour Express's `trust proxy` setting). */
function origin(req: Request, options: PaymentOptions): string {
  return options.publicUrl ?? `${req.protocol}://${req.host}`;
}

/** The absolute URL of a request: origin, the router's base URL, then the (normalised) path. */
function resourceUrl(req: Request, base: string, path: string): string {
  const baseUrl = req.baseUrl;
  return base + (baseUrl && path === "/" ? baseUrl : baseUrl + path);
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * One middleware for `app.use` that prices every route in `options.routes`.
 * Unpriced requests pass through untouched.
 */
export function paywall(options: PaywallOptions): PaywallMiddleware {
  if (!options || typeof options.routes !== "object" || options.routes === null || Object.keys(options.routes).length === 0) {
    throw new ConfigError("routes", 'give at least one priced route, e.g. { "POST /api/thing": { price: "$0.01" } }.');
  }
  if (options.payments !== undefined && (typeof options.payments !== "object" || options.payments === null)) {
    throw new ConfigError("payments", "give the payments API's options as an object, e.g. { adminKey: process.env.ADMIN_KEY }.");
  }
  const { engine, table } = build(options, options.routes);
  return makeMiddleware(engine, table, options, (method, path) => table.match(method, path)?.value, options.payments);
}

/** The same engine on one route: `app.post(path, requirePayment({ price, payTo, settler }), handler)`. */
export function requirePayment(options: PaymentOptions & RouteOptions<Request> & PaywallPageSetting): PaywallMiddleware {
  const { engine, table } = build(options, { "/*": options });
  const route = table.routes[0]!.value;
  return makeMiddleware(engine, table, options, () => route);
}

function makeMiddleware(
  engine: PaymentEngine,
  table: RouteTable<ResolvedRoute<Request>>,
  options: PaymentOptions,
  pick: (method: string, path: string) => ResolvedRoute<Request> | undefined,
  paymentsApiOptions?: PaymentsApiOptions,
): PaywallMiddleware {
  const cache = new Map<string, { body: string; header: string }>();
  const leases = new LeaseKeeper(engine.store, options.tokenLeaseMs ?? 120_000);
  const acceptTokens = options.acceptTokens !== false;
  const paymentsPath = options.paymentsPath ?? DEFAULT_PAYMENTS_PATH;
  // The HTML 402 page for browsers (paywall-page.ts); undefined when `paywallPage: false`.
  const page = createPaywallPage((options as PaywallPageSetting).paywallPage, { offerFor, paymentRequired, served: (r) => engine.paymentRequired(r) });

  async function offerFor(route: ResolvedRoute<Request>, resource: string, req?: Request): Promise<Offer> {
    let price = route.staticPrice;
    if (!price) price = resolvePrice(await route.priceFn!(req as Request), route.asset, `routes[${JSON.stringify(route.key)}].price(req)`);
    return offerOf(route, price, resource, req?.method);
  }

  function paymentRequired(offer: Offer, route: ResolvedRoute<Request>, error: string, base: string) {
    return paymentRequiredOf(offer, route, error, base, options, engine.paymentIds !== undefined);
  }

  function send402(res: Response, offer: Offer, route: ResolvedRoute<Request>, base: string, reason: string, message?: string, extra?: Record<string, unknown>, status = 402) {
    const key = !message && !extra ? cacheKey(route, base, offer.resource, offer.amount, reason, offer.outputSchema) : undefined;
    let cached = key ? cache.get(key) : undefined;
    if (!cached) {
      const { body, header } = paymentRequired(offer, route, reason, base);
      if (message) body.message = message;
      if (extra) Object.assign(body, extra);
      cached = { body: JSON.stringify(body), header };
      if (key) {
        if (cache.size >= MAX_CACHE) cache.clear();
        cache.set(key, cached);
      }
    }
    write402(res, cached, offer.resource, status);
  }

  function write402(res: Response, answer: { body: string; header: string }, resource: string, status = 402) {
    engine.paymentRequired(resource);
    res.statusCode = status;
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.setHeader("Cache-Control", "no-store");
    res.setHeader(HEADER.v2Required, answer.header);
    endBeforeBody(res.req, res, answer.body);
  }

  function sendError(res: Response, err: unknown, offer: Offer, route: ResolvedRoute<Request>, base: string, version?: 1 | 2, attempt?: X402Attempt) {
    if (attempt && err instanceof Error && (err instanceof SettlementError || err instanceof PaymentError)) {
      res.setHeader(version === 2 ? HEADER.v2Response : HEADER.v1Response, encodeHeader(settleResponse(attempt, err)));
    }
    if (err instanceof PaymentError && (err.status === 429 || err.status === 503)) {
      // a refusal that is no payment problem (too much at once): its own status, and when to retry
      res.statusCode = err.status;
      res.setHeader("Content-Type", "application/json; charset=utf-8");
      res.setHeader("Cache-Control", "no-store");
      res.setHeader("Retry-After", String((err as PaymentError & { retryAfter?: number }).retryAfter ?? 1));
      return void res.end(JSON.stringify({ error: err.reason, message: err.message }));
    }
    if (err instanceof PaymentError) {
      const payment = (err as PaymentError & { payment?: StoredPayment }).payment;
      // the v2 HTTP transport answers a malformed PAYMENT-SIGNATURE with 400 (v1's X-PAYMENT keeps 402)
      const status = version === 2 && err.reason === "invalid_payload" ? 400 : err.status === 412 ? 412 : 402; // 412: permit2_allowance_required
      return send402(res, offer, route, base, err.reason, err.message, payment ? { payment: toPublicPayment(payment, Date.now()) } : undefined, status);
    }
    if (err instanceof SettlementError && err.status === 402) {
      reportError(402, err.reason, err, offer.resource);
      return send402(res, offer, route, base, err.reason, `payment settlement failed: ${err.message}`);
    }
    // An outage (store, chain, settlement infrastructure, or anything unexpected while taking the
    // payment) is never a 500: 502/503/504 with a code, and Retry-After since it is worth retrying.
    // The client gets the code and a plain message; what happened in full goes to onEvent (C16).
    const status = err instanceof SettlementError ? err.status : err instanceof ChainError ? 502 : 503;
    const code = err instanceof SettlementError || err instanceof StoreError || err instanceof ChainError ? reasonOf(err) : "service_unavailable";
    const message = err instanceof SettlementError ? err.message : outageAnswer(err).message;
    reportError(status, code, err, offer.resource);
    res.statusCode = status;
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.setHeader("Cache-Control", "no-store");
    res.setHeader("Retry-After", RETRY_AFTER_SECONDS);
    res.end(JSON.stringify({ error: code, message }));
  }

  /** Issue 14 C16: an error answer's full story (its detail and causes) goes to `onEvent`, for the logs. */
  function reportError(status: number, code: string, err: unknown, resource: string): void {
    reportErrorAnswer(options.onEvent, status, code, err, resource);
  }

  /** A refused token: build the offer (only now) and answer 402 with the reason (503 for a store outage). */
  async function refuseToken(req: Request, res: Response, next: NextFunction, err: unknown, route: ResolvedRoute<Request>, path: string) {
    // only the store is asked on this path: whatever else it threw is a store outage
    if (!(err instanceof Server402Error)) err = new StoreError("server402: the store failed to reserve a token call", { cause: err });
    const base = origin(req, options);
    const resource = resourceUrl(req, base, path);
    let offer: Offer;
    try {
      offer = await offerFor(route, resource, req);
    } catch (e) {
      return next(e);
    }
    sendError(res, err, offer, route, base);
  }

  /** Token path: reserve one call of the token, run the handler, then use the call or give it back. */
  async function handleToken(req: Request, res: Response, next: NextFunction, token: string, route: ResolvedRoute<Request>, path: string): Promise<void> {
    const serviceId = route.options.serviceId;
    if (!acceptTokens || !serviceId) {
      return refuseToken(req, res, next, new PaymentError("tokens_not_accepted", "this route does not accept X-Payment-Token; pay with x402."), route, path);
    }
    const advertised = route.options.resource ?? resourceUrl(req, origin(req, options), path);
    let attempt: TokenAttempt | undefined;
    let gone = false;
    // The status that went on the wire: an error handler may set 500 on `res` after a streamed 200 was
    // sent (the client got paid bytes). Node sends every head through `writeHead`, so the first one counts.
    let sentStatus: number | undefined;
    // 'close' follows 'finish', or comes alone when the client went away. The call is used once a
    // status < 400 is on the wire (an aborted stream was still delivered in part); it is given back
    // when the status is ≥ 400 or nothing was sent (issue 14 A3).
    res.on("close", () => {
      if (!attempt) return void (gone = true);
      leases.untrack(attempt);
      engine.finishToken(attempt, advertised, res.headersSent && (sentStatus ?? res.statusCode) < 400);
    });
    let reserved: TokenAttempt;
    const reservedAt = Date.now();
    try {
      reserved = await engine.reserveToken(token, serviceId, advertised);
    } catch (err) {
      return refuseToken(req, res, next, err, route, path);
    }
    // the response closed while the call was being reserved: give the call back, run nothing
    if (gone) return engine.finishToken(reserved, advertised, false);
    attempt = reserved;
    const writeHead = res.writeHead;
    res.writeHead = function (this: Response, ...args: unknown[]) {
      const out = (writeHead as (...a: unknown[]) => Response).apply(this, args);
      sentStatus ??= this.statusCode;
      return out;
    } as Response["writeHead"];
    // a reservation that may lapse (store unreachable for renewals): cut the answer before a second use can start
    leases.track(reserved, reservedAt, () => {
      res.destroy();
      reportErrorAnswer(options.onEvent, 503, "store_unavailable", new StoreError("server402: the token call's lease could not be renewed before it would lapse; the answer was cut"), advertised);
    });
    req.payment = reserved.info;
    next();
  }

  async function handleX402(req: Request, res: Response, next: NextFunction, version: 1 | 2, raw: string, route: ResolvedRoute<Request>, offer: Offer, base: string) {
    const name = version === 1 ? "X-PAYMENT" : "PAYMENT-SIGNATURE";
    let attempt: X402Attempt;
    let idHold: PaymentIdHold | undefined;
    try {
      const payload = decodeHeader(raw, name);
      if (version === 2 && engine.paymentIds) {
        // issue 17.3 payment-identifier: a retry of the same paid request gets its answer again; anything else with its id, 409
        const bound = { parts: ["http", req.method, req.originalUrl, route.key], body: route.settlement === "before" ? undefined : httpBodyDigest(req) };
        const d = await engine.paymentIds.begin<X402Replay>(payload, offer, bound);
        if (d.kind === "replay") return sendReplay(req, res, next, d.replay, version, offer, route, base);
        if (d.kind === "refused") return d.error.status === 402 ? sendError(res, d.error, offer, route, base, version) : sendPaymentIdRefusal(res, d.error);
        if (d.kind === "claimed") idHold = d.hold;
      }
      attempt = await engine.verifyX402(version, payload, offer, route.options.serviceId, route.options.acceptOverpayment);
      attempt.paymentId = idHold;
    } catch (err) {
      await idHold?.release();
      // issue 14 B10: a retry of an authorization whose answer was held while its settlement was pending
      const replay = await engine.replayX402(err, offer);
      if (replay) return sendReplay(req, res, next, replay, version, offer, route, base);
      return sendError(res, err, offer, route, base, version);
    }
    const responseHeader = version === 2 ? HEADER.v2Response : HEADER.v1Response;
    req.payment = attempt.info;

    if (route.settlement === "before") {
      try {
        const result = await engine.settleX402(attempt);
        res.setHeader(responseHeader, encodeHeader(settleResponse(attempt, result)));
      } catch (err) {
        if (err instanceof SettlementError && err.pending) {
          await engine.holdAnswer(attempt, "run"); // issue 14 B10: the handler runs for a retry once the transfer is confirmed
          res.setHeader("Retry-After", "5");
        }
        return sendError(res, err, offer, route, base, version, attempt);
      }
      return next();
    }

    const buffered = bufferResponse(res);
    next();
    const { closed } = await buffered.done;
    if (closed || buffered.status() >= 400) {
      await engine.releaseX402(attempt);
      if (!closed) buffered.flush();
      return;
    }
    try {
      if (attempt.paymentId) attempt.paymentId.answer = buffered.held(); // issue 17.3: kept for a retry with the same id
      const result = await engine.settleX402(attempt);
      // the client went away while the transfer was settled: keep its paid answer for a retry with the same payment
      if (res.destroyed) return engine.holdAnswer(attempt, buffered.held());
      res.setHeader(responseHeader, encodeHeader(settleResponse(attempt, result)));
      appendCacheControlPrivate(res);
      buffered.flush([responseHeader, "cache-control"]);
    } catch (err) {
      // issue 14 B10: a retry with the same payment gets the held answer once the transfer is confirmed
      if (err instanceof SettlementError && err.pending) await engine.holdAnswer(attempt, buffered.held());
      buffered.discard();
      if (err instanceof SettlementError && err.pending) res.setHeader("Retry-After", "5");
      sendError(res, err, offer, route, base, version, attempt);
    }
  }

  /** Issue 14 B10: answer a retry with the held paid answer, or "pending" again. */
  function sendReplay(req: Request, res: Response, next: NextFunction, replay: X402Replay, version: 1 | 2, offer: Offer, route: ResolvedRoute<Request>, base: string) {
    if (replay.kind === "pending") {
      res.setHeader("Retry-After", "5");
      return sendError(res, replay.error, offer, route, base, version);
    }
    if (replay.kind === "run") {
      req.payment = replay.info;
      res.setHeader(version === 2 ? HEADER.v2Response : HEADER.v1Response, encodeHeader(replay.response));
      return next();
    }
    res.statusCode = replay.answer.status;
    for (const [name, v] of Object.entries(replay.answer.headers)) res.setHeader(name, v);
    res.setHeader(version === 2 ? HEADER.v2Response : HEADER.v1Response, encodeHeader(replay.response));
    appendCacheControlPrivate(res);
    res.end(Buffer.from(replay.answer.body, "base64"));
  }

  /** Everything but the token path: build the offer, then x402 or a 402. */
  async function handleOffer(req: Request, res: Response, next: NextFunction, route: ResolvedRoute<Request>, resource: string, base: string, v1?: string, v2?: string) {
    let offer: Offer;
    try {
      offer = await offerFor(route, resource, req);
    } catch (err) {
      return next(err);
    }
    if (v2 !== undefined) return handleX402(req, res, next, 2, v2, route, offer, base);
    if (v1 !== undefined) return handleX402(req, res, next, 1, v1, route, offer, base);
    return send402(res, offer, route, base, NO_PAYMENT);
  }

  const middleware = function server402(req: Request, res: Response, next: NextFunction): void | Promise<void> {
    if (page !== undefined && page.asset(req, res, req.method, req.path)) return;
    // the payments API (paywall({ payments })) first; what it does not serve goes on to the priced routes
    if (api) return void api(req, res, (err?: unknown) => (err ? next(err) : void priced(req, res, next)));
    return priced(req, res, next);
  } as PaywallMiddleware;

  function priced(req: Request, res: Response, next: NextFunction): void | Promise<void> {
    // OPTIONS too: a key without a verb covers it (CORS preflights are a CORS middleware's, mounted before)
    const method = req.method;
    const path = normalizePath(req.path);
    const route = pick(method, path);
    if (!route) return next();
    const headers = req.headers;
    const token = headerValue(headers[HEADER.token]);
    if (token !== undefined) return handleToken(req, res, next, token, route, path);
    const base = origin(req, options);
    const resource = resourceUrl(req, base, path);
    const v2 = headerValue(headers[HEADER.v2Payment]);
    const v1 = headerValue(headers[HEADER.v1Payment]);
    // the page's script signs EIP-3009 only: a Permit2 route answers browsers with the plain 402
    if (v2 === undefined && v1 === undefined && page !== undefined && !route.permit2 && page.wants(method, headers)) return page.send(req, res, next, route, resource, base);
    if (v2 === undefined && v1 === undefined && route.staticPrice) {
      // an unpaid request for a static price is answered from the cache
      const hit = cache.get(cacheKey(route, base, route.options.resource ?? resource, route.staticPrice.amount, NO_PAYMENT, route.outputSchema(method)));
      if (hit) return write402(res, hit, route.options.resource ?? resource);
    }
    return handleOffer(req, res, next, route, resource, base, v1, v2);
  }

  const pw = Object.assign(withProtectedRequestHook(middleware, options, pick), {
    engine,
    routes: table.routes.map((r) => r.value),
    options,
    offerFor,
    paymentRequired,
    send402,
    sendError,
    origin: (req: Request) => origin(req, options),
  });
  const api = paymentsApiOptions ? paymentsApi(pw, { ...paymentsApiOptions, path: paymentsPath }, "payments") : undefined;
  return pw;
}

function appendCacheControlPrivate(res: Response) {
  const cc = res.getHeader("Cache-Control");
  if (!cc) res.setHeader("Cache-Control", "private");
  else if (!/\bprivate\b/.test(String(cc))) res.setHeader("Cache-Control", `${cc}, private`);
}
