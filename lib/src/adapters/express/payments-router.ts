/**
 * The prepaid payments API: create a payment object for a service, pay it
 * with x402 (settled before the answer), or have an operator confirm it; then
 * spend its token as `X-Payment-Token` on any route with that serviceId.
 */
import { timingSafeEqual, createHash } from "node:crypto";
import express, { type NextFunction, type Request, type RequestHandler, type Response } from "express";
import { ChainError, ConfigError, PaymentError, SettlementError, StoreError } from "../../errors.js";
import { toPublicPayment } from "../../core/payment-object.js";
import { DEFAULT_PAYMENTS_PATH, type ResolvedRoute } from "../../core/options.js";
import type { X402Attempt } from "../../core/engine.js";
import { decodeHeader, encodeHeader } from "../../protocol/encoding.js";
import { usdCents } from "../../protocol/price.js";
import { settleResponse } from "../../core/engine.js";
import { HEADER } from "../../protocol/types.js";
import type { StoredPayment } from "../../state/store.js";
import { generatePaymentToken, hashToken, newPaymentId } from "../../state/tokens.js";
import { NO_PAYMENT } from "../../protocol/requirements.js";
import type { PaywallMiddleware } from "./paywall.js";

/** Options of the payments API: `paywall({ payments })`, or `paymentsRouter()` with `paywall` added. */
export interface PaymentsApiOptions {
  /** Bearer key for operator routes (confirm, ledger). Without it those routes answer 401. Use at least 16 characters. */
  adminKey?: string;
  /** Mount path. Default: the paywall's `paymentsPath` ("/api/payments"). */
  path?: string;
  /** Payment creations allowed per client address per window. Default 30 per minute. */
  createLimit?: { max: number; windowMs: number };
  /** Most unpaid, unexpired payments that may exist at once. Default 10 000. */
  maxPending?: number;
  /**
   * Most unpaid, unexpired payments one client may have created (this
   * process's count), so one actor cannot fill `maxPending` for everyone.
   * A client is `req.ip` (an IPv6 address counts by its /64). Default 100.
   */
  maxPendingPerClient?: number;
  /** Where the operator ledger is served. Default "/api/ledger". */
  ledgerPath?: string;
}

/** Options of `paymentsRouter()`. */
export interface PaymentsRouterOptions extends PaymentsApiOptions {
  /** The paywall whose routes (those with a `serviceId` and a static price) define the services. */
  paywall: PaywallMiddleware;
}

interface Service {
  serviceId: string;
  route: ResolvedRoute<Request>;
}

const ID = /^pay_[A-Za-z0-9_-]{8,64}$/;

/**
 * The key a client is limited by: its IPv4 address, or the /64 of its IPv6
 * address (one subscriber commonly holds a whole /64).
 */
function clientKey(ip: string | undefined): string {
  if (!ip) return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(":")) return ip;
  const [head = "", tail = ""] = ip.toLowerCase().split("%")[0]!.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

function json(res: Response, status: number, body: unknown) {
  res.status(status).set("Cache-Control", "no-store").json(body);
}

/** Seconds a client is asked to wait after a store or chain outage. */
const OUTAGE_RETRY_AFTER_S = 5;

/**
 * An outage of the store (503) or the chain (502) answers with its code and
 * Retry-After, never a 500; anything else goes to the app's error handler.
 */
function failed(res: Response, next: NextFunction, err: unknown): void {
  const status = err instanceof StoreError ? 503 : err instanceof ChainError ? 502 : 0;
  if (!status) return next(err);
  if (res.headersSent) return void res.destroy();
  res.setHeader("Retry-After", String(OUTAGE_RETRY_AFTER_S));
  const what = err instanceof StoreError ? "the payment store is unavailable" : "the chain could not be reached";
  json(res, status, { error: (err as StoreError).code, message: `${what}; nothing was charged. Try again in a few seconds.` });
}

/**
 * The payments API as its own middleware: `app.use(paymentsRouter({ paywall: pw }))`,
 * for an API served apart from the priced routes (another app or mount).
 * Beside them, `paywall({ payments })` serves the same API from the paywall.
 */
export function paymentsRouter(opts: PaymentsRouterOptions): RequestHandler {
  const pw = opts?.paywall;
  if (!pw || !pw.engine) throw new ConfigError("paymentsRouter.paywall", "pass the middleware returned by paywall({...}).");
  return paymentsApi(pw, opts, "paymentsRouter");
}

/** @internal The payments API for `pw` as an Express router; `label` names the options in ConfigErrors. */
export function paymentsApi(pw: PaywallMiddleware, opts: PaymentsApiOptions, label: string): express.Router {
  if (opts.adminKey !== undefined && (typeof opts.adminKey !== "string" || opts.adminKey.length < 16)) {
    throw new ConfigError(`${label}.adminKey`, "must be a string of at least 16 characters (e.g. `openssl rand -hex 32`).");
  }
  const base = opts.path ?? pw.options.paymentsPath ?? DEFAULT_PAYMENTS_PATH;
  const ledgerPath = opts.ledgerPath ?? "/api/ledger";
  const limit = opts.createLimit ?? { max: 30, windowMs: 60_000 };
  const maxPending = opts.maxPending ?? 10_000;
  const store = pw.engine.store;
  const services = new Map<string, Service>();
  for (const route of pw.routes) {
    const id = route.options.serviceId;
    if (id && route.staticPrice && !services.has(id)) services.set(id, { serviceId: id, route });
  }
  const adminHash = opts.adminKey ? createHash("sha256").update(opts.adminKey).digest() : undefined;
  const windows = new Map<string, { start: number; count: number }>();
  const maxPerClient = opts.maxPendingPerClient ?? 100;
  if (!Number.isInteger(maxPerClient) || maxPerClient < 1) throw new ConfigError(`${label}.maxPendingPerClient`, "must be a whole number of at least 1.");
  /** Payments each client created that were unpaid and unexpired when last looked at. */
  const pendingByClient = new Map<string, Array<{ id: string; expiresAt: number }>>();

  /** True when `client` already has `maxPerClient` unpaid, unexpired payments (paid ones are looked up only at the limit). */
  async function clientFull(client: string, now: number): Promise<boolean> {
    let list = pendingByClient.get(client)?.filter((e) => e.expiresAt > now);
    if (!list?.length) {
      pendingByClient.delete(client);
      return false;
    }
    if (list.length >= maxPerClient) {
      const still = await Promise.all(list.map(async (e) => (await store.getPayment(e.id))?.status === "pending"));
      list = list.filter((_, i) => still[i]);
    }
    pendingByClient.set(client, list);
    return list.length >= maxPerClient;
  }

  function rememberPending(client: string, id: string, expiresAt: number): void {
    if (pendingByClient.size > 50_000) {
      const now = Date.now();
      for (const [k, list] of pendingByClient) if (!list.some((e) => e.expiresAt > now)) pendingByClient.delete(k);
    }
    const list = pendingByClient.get(client) ?? [];
    list.push({ id, expiresAt });
    pendingByClient.set(client, list);
  }

  function rateLimited(ip: string, now: number): boolean {
    const w = windows.get(ip);
    if (!w || now - w.start >= limit.windowMs) {
      if (windows.size > 50_000) windows.clear();
      windows.set(ip, { start: now, count: 1 });
      return false;
    }
    return ++w.count > limit.max;
  }

  function admin(req: Request, res: Response): boolean {
    const auth = req.headers.authorization;
    if (!adminHash || !auth || !/^Bearer\s+\S+$/i.test(auth)) {
      json(res, 401, { error: "unauthorized", message: adminHash ? "send Authorization: Bearer <admin key>." : "operator routes are disabled: configure an admin key." });
      return false;
    }
    const given = createHash("sha256").update(auth.replace(/^Bearer\s+/i, "")).digest();
    if (!timingSafeEqual(given, adminHash)) {
      json(res, 403, { error: "forbidden", message: "the admin key is wrong." });
      return false;
    }
    return true;
  }

  async function load(id: string, res: Response): Promise<StoredPayment | undefined> {
    const p = ID.test(id) ? await store.getPayment(id) : undefined;
    if (!p) json(res, 404, { error: "payment_not_found", message: `no payment ${JSON.stringify(id.slice(0, 80))}.` });
    return p;
  }

  function payOffer(req: Request, p: StoredPayment, svc: Service) {
    const origin = pw.origin(req);
    return pw.offerFor(
      { ...svc.route, staticPrice: { amount: BigInt(p.amountAtomic), asset: svc.route.staticPrice!.asset }, description: `Prepaid payment ${p.paymentId}: ${p.maxCalls} call(s) of ${p.serviceId}`, options: { ...svc.route.options, resource: undefined } },
      `${origin}${base}/${p.paymentId}/pay`,
    );
  }

  const parse = express.json({ limit: "4kb" });
  /** JSON body parsing whose failures answer JSON 400/413 here instead of reaching the app's error handler. */
  const body = (req: Request, res: Response, next: (err?: unknown) => void) =>
    parse(req, res, (err?: unknown) => {
      if (!err) return next();
      const tooLarge = (err as { type?: string }).type === "entity.too.large";
      json(res, tooLarge ? 413 : 400, { error: tooLarge ? "body_too_large" : "invalid_json", message: tooLarge ? "the body is larger than 4 KB." : "the body is not valid JSON." });
    });

  async function create(req: Request, res: Response, next: NextFunction) {
    try {
      const b = req.body;
      if (!b || typeof b !== "object" || Array.isArray(b)) return json(res, 400, { error: "invalid_body", message: 'send JSON like {"serviceId":"face-comparison"}.' });
      const unknown = Object.keys(b).filter((k) => k !== "serviceId" && k !== "providerId");
      if (unknown.length) return json(res, 400, { error: "invalid_body", message: `unknown field(s) ${unknown.join(", ")}; expected serviceId and optional providerId.` });
      if (typeof b.serviceId !== "string" || !b.serviceId) return json(res, 400, { error: "invalid_body", message: "serviceId (string) is required." });
      if (b.providerId !== undefined && (typeof b.providerId !== "string" || b.providerId.length > 64)) return json(res, 400, { error: "invalid_body", message: "providerId must be a string of at most 64 characters." });
      const svc = services.get(b.serviceId);
      if (!svc) return json(res, 404, { error: "unknown_service", message: `no service ${JSON.stringify(b.serviceId.slice(0, 64))}.`, serviceIds: [...services.keys()] });
      const now = Date.now();
      const client = clientKey(req.ip);
      if (rateLimited(client, now)) return json(res, 429, { error: "rate_limited", message: `at most ${limit.max} payments per ${limit.windowMs / 1000} s per client.` });
      if (await clientFull(client, now)) return json(res, 429, { error: "too_many_pending_for_client", message: `this client already has ${maxPerClient} unpaid payments; pay them or let them expire.` });
      if ((await store.countPending(now)) >= maxPending) return json(res, 429, { error: "too_many_pending", message: "too many unpaid payments exist; pay or let them expire." });
      const route = svc.route;
      const amount = route.staticPrice!.amount * BigInt(route.maxCalls);
      const token = generatePaymentToken();
      const p: StoredPayment = {
        paymentId: newPaymentId(),
        serviceId: svc.serviceId,
        tokenHash: hashToken(token),
        status: "pending",
        amountCents: usdCents(amount, route.staticPrice!.asset.decimals),
        amountAtomic: amount.toString(),
        currency: "USD",
        billingMode: "per_call",
        maxCalls: route.maxCalls,
        callsUsed: 0,
        expiresAt: now + route.tokenTtl * 1000,
        createdAt: now,
        payTo: route.payTo,
        provider: b.providerId,
        createdBy: req.ip,
      };
      await store.createPayment(p);
      rememberPending(client, p.paymentId, p.expiresAt);
      const offer = await payOffer(req, p, svc);
      const { body: required } = pw.paymentRequired(offer, route, NO_PAYMENT, pw.origin(req));
      json(res, 201, {
        ...toPublicPayment(p, now),
        token,
        pay: { method: "POST", url: offer.resource, x402: { x402Version: 1, accepts: required.accepts } },
        use: { header: "X-Payment-Token", mcpArgument: "paymentToken" },
      });
    } catch (err) {
      failed(res, next, err);
    }
  }

  async function show(id: string, res: Response, next: NextFunction) {
    try {
      const p = await load(id, res);
      if (p) json(res, 200, toPublicPayment(p, Date.now()));
    } catch (err) {
      failed(res, next, err);
    }
  }

  async function pay(req: Request, res: Response, next: NextFunction, id: string) {
    let lock: string | undefined;
    let attempt: X402Attempt | undefined;
    try {
      const p = await load(id, res);
      if (!p) return;
      const now = Date.now();
      if (p.status === "paid") return json(res, 200, { ...toPublicPayment(p, now), message: "already paid; nothing was charged." });
      const svc = services.get(p.serviceId);
      if (!svc) return json(res, 404, { error: "unknown_service", message: `service ${p.serviceId} is no longer offered.` });
      const offer = await payOffer(req, p, svc);
      const origin = pw.origin(req);
      if (now >= p.expiresAt) return pw.send402(res, offer, svc.route, origin, "expired", "this payment expired before it was paid; create a new one.", { payment: toPublicPayment(p, now) });
      const v2 = req.headers[HEADER.v2Payment];
      const v1 = req.headers[HEADER.v1Payment];
      const raw = typeof v2 === "string" ? v2 : typeof v1 === "string" ? v1 : undefined;
      if (raw === undefined) return pw.send402(res, offer, svc.route, origin, NO_PAYMENT, undefined, { payment: toPublicPayment(p, now) });
      const version = typeof v2 === "string" ? 2 : 1;
      lock = `pay:${p.paymentId}`;
      if (!(await store.claimNonce(lock, p.expiresAt + 3600_000))) {
        lock = undefined;
        return json(res, 409, { error: "payment_in_progress", message: "this payment is being paid by another request; check its status." });
      }
      try {
        attempt = await pw.engine.verifyX402(version, decodeHeader(raw, version === 2 ? "PAYMENT-SIGNATURE" : "X-PAYMENT"), offer, p.serviceId);
        // The engine marks the payment paid and settles the lock with the ledger entry; what the store
        // refuses stays in the outbox until stored (issue 14 B11). After money moved the lock is never released.
        const result = await pw.engine.settleX402(attempt, { paymentId: p.paymentId, serviceId: p.serviceId }, { paymentId: p.paymentId, lock, provider: p.provider ?? "x402" });
        lock = undefined;
        res.setHeader(version === 2 ? HEADER.v2Response : HEADER.v1Response, encodeHeader(settleResponse(attempt, result)));
        const now = Date.now();
        if (result.payment) return json(res, 200, toPublicPayment(result.payment, now));
        // charged, but the store did not take the record yet: show the payment as paid; its token works once stored
        const shown: StoredPayment = { ...p, status: "paid", paidAt: now, transaction: result.transaction, provider: p.provider ?? "x402", network: result.network, payer: result.payer };
        json(res, 200, { ...toPublicPayment(shown, now), message: "paid; the record is being stored, the token works in a few seconds." });
      } catch (err) {
        if (err instanceof SettlementError && err.pending) lock = undefined; // kept until the reconciler confirms or fails the transfer
        if (err instanceof PaymentError || (err as { code?: string }).code) return pw.sendError(res, err, offer, svc.route, origin, version, attempt);
        throw err;
      }
    } catch (err) {
      failed(res, next, err);
    } finally {
      if (lock) await store.releaseNonce(lock).catch(() => {});
    }
  }

  async function confirm(req: Request, res: Response, next: NextFunction, id: string) {
    try {
      if (!admin(req, res)) return;
      const p = await load(id, res);
      if (!p) return;
      const now = Date.now();
      if (p.status === "paid") return json(res, 200, { ...toPublicPayment(p, now), message: "already paid." });
      if (now >= p.expiresAt) return json(res, 409, { error: "expired", message: "this payment expired; create a new one.", payment: toPublicPayment(p, now) });
      const b = req.body && typeof req.body === "object" ? req.body : {};
      const provider = typeof b.provider === "string" ? b.provider.slice(0, 64) : "manual";
      const reference = typeof b.reference === "string" ? b.reference.slice(0, 128) : undefined;
      const r = await store.markPaid(p.paymentId, { paidAt: now, provider, transaction: reference });
      if (r?.changed) {
        await store.appendLedger({ time: now, method: "token", payer: provider, amount: p.amountAtomic, asset: "USD", network: "off-chain", transaction: reference, resource: `${base}/${p.paymentId}`, serviceId: p.serviceId, paymentId: p.paymentId });
      }
      json(res, 200, toPublicPayment(r!.payment, now));
    } catch (err) {
      failed(res, next, err);
    }
  }

  async function ledger(req: Request, res: Response, next: NextFunction) {
    try {
      if (!admin(req, res)) return;
      // An empty parameter (`?afterId=&limit=`) means its default.
      const afterId = Number(req.query.afterId || 0);
      const lim = Number(req.query.limit || 100);
      if (!Number.isInteger(afterId) || afterId < 0 || !Number.isInteger(lim) || lim < 1 || lim > 1000) {
        return json(res, 400, { error: "invalid_query", message: "afterId must be an integer ≥ 0 and limit an integer 1–1000." });
      }
      const entries = await store.listLedger({ afterId, limit: lim });
      json(res, 200, { entries, nextAfterId: entries.length ? entries[entries.length - 1]!.id : afterId });
    } catch (err) {
      failed(res, next, err);
    }
  }

  const router = express.Router();
  router.post(base, body, create);
  router.get(`${base}/:paymentId`, (req, res, next) => void show(req.params.paymentId as string, res, next));
  router.post(`${base}/:paymentId/pay`, (req, res, next) => void pay(req, res, next, req.params.paymentId as string));
  router.post(`${base}/:paymentId/confirm`, body, (req, res, next) => void confirm(req, res, next, req.params.paymentId as string));
  router.get(ledgerPath, ledger);
  // a payment id that is not valid percent-encoding fails the router's decoding of `:paymentId`
  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (!(err instanceof URIError)) return next(err);
    json(res, 400, { error: "invalid_path", message: "the payment id in the path is not valid percent-encoding." });
  });
  return router;
}
