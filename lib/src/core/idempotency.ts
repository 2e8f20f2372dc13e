/**
 * Issue 17 part 3: idempotent retries with the x402 v2 `payment-identifier`
 * extension. A client that sends `extensions["payment-identifier"].info.id`
 * and retries with the same id, the same payment and the same request gets
 * the same paid answer, without a second charge or a second handler run.
 *
 * - The id is claimed in the store *before* the payment is verified, so two
 *   copies of one request can never both run (the later one gets 409 with
 *   `Retry-After`, then the answer once the first is done).
 * - The record is bound to a fingerprint of the exact request: the HTTP
 *   method, path and query, route, the raw body's digest (or an MCP tool's
 *   name and canonical arguments), the offer (network, asset, amount, payTo)
 *   and the whole payment payload (authorization and signature): the same id
 *   with anything else is refused with 409, so an id is never a bearer
 *   capability for another request, another payer or another payment.
 * - The paid answer is kept as a held answer (`Store.putHeldAnswer`, the
 *   mechanism of the money-safety issue's pending settlements) under the
 *   authorization's lock key, bound to the fingerprint; a retry is answered
 *   through the same replay path as a retry of a pending settlement (pending
 *   again while the transfer is unconfirmed, then the paid answer).
 * - Nothing charged (refused payment, handler error, failed settlement): the
 *   record is deleted and the id may be used again.
 * - Bounded: records live a fixed, server-owned time (the authorization's
 *   `validBefore` plus 5 minutes, at most a day), at most `maxEntries` live
 *   records per store (a new id is refused with 503 when full), and the answer
 *   kept is at most the engine's `heldAnswerMaxBytes`.
 */
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { PaymentError } from "../errors.js";
import { paymentIdentifierOf } from "../protocol/payload.js";
import type { Offer } from "../protocol/requirements.js";
import type { Store } from "../state/store.js";

/** Options of the payment-identifier support (`paymentIdentifier` of `paywall()`; `false` turns it off). */
export interface PaymentIdentifierOptions {
  /** Live identifier records kept at most per store; a new id is then refused with 503. Default 10 000. */
  maxEntries?: number;
  /** How long a record outlives its authorization's `validBefore` (ms). Default 300 000. */
  graceMs?: number;
}

/** What a request is, apart from its payment: bound to the id with the payment. */
export interface RequestBinding {
  /** Everything but the body, e.g. `["http", method, path+query, route key]` or `["mcp", tool, args digest]`. */
  parts: string[];
  /**
   * The body's digest, when the binding includes the body (HTTP with settlement after the handler).
   * Called only once the handler is done, or for a retry that will not run the handler.
   */
  body?: () => Promise<string>;
}

/** The record kept under an id (JSON in the store). */
interface PaymentIdRecord {
  v: 1;
  /** The request (without its body) and payment fingerprint. */
  fp: string;
  /** The claim's owner token (the store checks it too; kept here so a stale record can be released). */
  owner: string;
  /** `running`: claimed, payment and handler under way; `kept`: settled or pending, answer held. */
  state: "running" | "kept";
  /** Digest of the body, when bound. */
  body?: string;
  lockKey?: string;
  payer?: string;
}

/** A retry's answer as the engine replays held answers (see `PaymentEngine.replayHeld`). */
export interface HeldRefForReplay {
  lockKey: string;
  payer: string;
  version: 2;
  /** The receipt's network when the route offers several options (else the offer's). */
  network?: string;
}

/** What `PaymentIds.begin` decided. */
export type PaymentIdDecision<R> =
  /** The payment carries no id: today's path. */
  | { kind: "none" }
  /** A new id, claimed: go on, with `hold` on the attempt. */
  | { kind: "claimed"; hold: PaymentIdHold }
  /** A retry of a request whose answer is held: answer it with `replay`. */
  | { kind: "replay"; replay: R }
  /** Refused: 409 (conflict, in progress, answer not kept) or 400 (malformed id); send `error`. */
  | { kind: "refused"; error: PaymentError };

/** A claimed id, carried by the payment attempt until its outcome is known. */
export class PaymentIdHold {
  /** The answer to keep for retries, set by the adapter before settlement (status, headers, body). */
  answer?: { status: number; headers: Record<string, string | string[]>; body: Buffer };
  private boundValue?: Promise<{ bound: string; body?: string }>;
  private done = false;

  constructor(
    private readonly store: Store,
    readonly key: string,
    private readonly record: PaymentIdRecord,
    private readonly expiresAt: number,
    private readonly body: (() => Promise<string>) | undefined,
  ) {}

  /** The digest a held answer is bound to: the fingerprint and, when bound, the body's digest. */
  async bound(): Promise<string> {
    return (await this.binding()).bound;
  }

  private binding(): Promise<{ bound: string; body?: string }> {
    return (this.boundValue ??= (async () => {
      const body = this.body ? await this.body() : undefined;
      return { bound: boundOf(this.record.fp, body), body };
    })());
  }

  /** The payment was settled or is pending: its answer (held before this) is kept for retries. Never rejects. */
  async keep(lockKey: string, payer: string): Promise<void> {
    if (this.done) return;
    this.done = true;
    try {
      // a body that cannot be read whole (the client left mid-upload) binds nothing: its retry gets 409, never a charge
      const body = await this.binding().then((b) => b.body, () => undefined);
      const rec: PaymentIdRecord = { ...this.record, state: "kept", lockKey, payer, ...(body !== undefined ? { body } : {}) };
      await this.store.updatePaymentId(this.key, this.record.owner, JSON.stringify(rec), this.expiresAt);
    } catch {
      // the record stays "running" until it expires: a retry gets 409 (in progress), never a second charge
    }
  }

  /** Nothing was charged: forget the id so it may be used again. Never rejects. */
  async release(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.store.releasePaymentId(this.key, this.record.owner).catch(() => {});
  }
}

/** The payment-identifier support of one engine. */
export class PaymentIds {
  private readonly maxEntries: number;
  private readonly graceMs: number;

  constructor(
    private readonly store: Store,
    opts: PaymentIdentifierOptions,
    private readonly now: () => number,
    /** The engine's replay of a held answer bound to `bound`; undefined when none is held. */
    private readonly replay: <R>(ref: HeldRefForReplay, offer: Offer, bound: string) => Promise<R | undefined>,
  ) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.graceMs = opts.graceMs ?? 300_000;
  }

  /** True when `store` has the payment-identifier methods (a store written before them does not). */
  static supported(store: Store): boolean {
    const s = store as Partial<Store>;
    return typeof s.claimPaymentId === "function" && typeof s.updatePaymentId === "function" && typeof s.releasePaymentId === "function";
  }

  /**
   * Look at a v2 payment payload before it is verified: no id → `none`; a new id → claimed; a retry
   * of the same request and payment → its held answer (or 409 while it runs); anything else with the
   * same id → 409. A store failure throws (the adapters answer 503).
   */
  async begin<R>(raw: Record<string, unknown>, offer: Offer, request: RequestBinding): Promise<PaymentIdDecision<R>> {
    let id: string | undefined;
    try {
      id = paymentIdentifierOf(raw);
    } catch (err) {
      return { kind: "refused", error: err as PaymentError };
    }
    if (id === undefined) return { kind: "none" };
    const key = `${offer.network.caip2}:${offer.payTo.toLowerCase()}:${id}`;
    const fp = fingerprint(raw, offer, request.parts);
    const record: PaymentIdRecord = { v: 1, fp, owner: randomBytes(16).toString("hex"), state: "running" };
    const expiresAt = this.lifetime(raw);
    for (let attempt = 0; ; attempt++) {
      const claim = await this.store.claimPaymentId(key, record.owner, JSON.stringify(record), expiresAt, this.maxEntries);
      if (claim.ok) return { kind: "claimed", hold: new PaymentIdHold(this.store, key, record, expiresAt, request.body) };
      if ("full" in claim) {
        const err = new PaymentError("payment_identifier_store_full", "too many payment identifiers are in use right now; retry shortly.", 503);
        return { kind: "refused", error: Object.assign(err, { retryAfter: 1 }) };
      }
      const prior = parseRecord(claim.record);
      if (!prior || prior.state === "running") {
        if (prior && prior.fp !== fp) return { kind: "refused", error: conflict() };
        const err = new PaymentError("payment_identifier_in_progress", "a request with this payment identifier is being processed; retry shortly with the same payment to get its answer.", 409);
        return { kind: "refused", error: Object.assign(err, { retryAfter: 1 }) };
      }
      if (prior.fp !== fp) return { kind: "refused", error: conflict() };
      const body = prior.body !== undefined && request.body ? await request.body() : undefined;
      if (prior.body !== body) return { kind: "refused", error: conflict() };
      const replay = await this.replay<R>({ lockKey: prior.lockKey!, payer: prior.payer!, version: 2 }, offer, boundOf(fp, body));
      if (replay) return { kind: "replay", replay };
      const nonce = await this.store.getNonce(prior.lockKey!);
      if (!nonce && attempt === 0) {
        // the earlier attempt's transfer finally failed (nothing charged) or its lock is over: the id is free again
        await this.store.releasePaymentId(key, prior.owner);
        continue;
      }
      const tx = nonce?.transaction ? ` (transaction ${nonce.transaction})` : "";
      return {
        kind: "refused",
        error: new PaymentError(
          "payment_identifier_answer_unavailable",
          `the request with this payment identifier was paid${tx}, but its answer was not kept for a retry (too large, or settled before the handler ran); you were not charged again.`,
          409,
        ),
      };
    }
  }

  /** Server-owned: the authorization's validBefore plus the grace, within [now + grace, now + 1 day]. */
  private lifetime(raw: Record<string, unknown>): number {
    const now = this.now();
    const vb = ((raw.payload as { authorization?: { validBefore?: unknown } } | undefined)?.authorization?.validBefore);
    const seconds = typeof vb === "string" && /^[0-9]{1,15}$/.test(vb) ? Number(vb) : 0;
    return Math.min(Math.max(seconds * 1000 + this.graceMs, now + this.graceMs), now + 86_400_000);
  }
}

function conflict(): PaymentError {
  return new PaymentError(
    "payment_identifier_conflict",
    "this payment identifier was already used with a different payment or a different request; use a new identifier for a new request.",
    409,
  );
}

function parseRecord(json: string): PaymentIdRecord | undefined {
  try {
    const r = JSON.parse(json) as PaymentIdRecord;
    return r && r.v === 1 && typeof r.fp === "string" ? r : undefined;
  } catch {
    return undefined;
  }
}

function sha256(s: string | Buffer): string {
  return createHash("sha256").update(s).digest("hex");
}

function boundOf(fp: string, body: string | undefined): string {
  return sha256(`${fp}\n${body ?? ""}`);
}

/** The fingerprint of a request (without its body) and its payment. */
function fingerprint(raw: Record<string, unknown>, offer: Offer, parts: string[]): string {
  return sha256(
    JSON.stringify([
      "server402 payment-identifier v1",
      ...parts,
      offer.network.caip2,
      offer.asset.address.toLowerCase(),
      offer.amount.toString(),
      offer.payTo.toLowerCase(),
      sha256(canonicalJson(raw)),
    ]),
  );
}

/** JSON with object keys sorted, so equal values give equal text whatever their key order. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x ?? null)).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null) ?? "null";
}

/** Digest of canonical JSON (an MCP tool's arguments). */
export function jsonDigest(v: unknown): string {
  return sha256(canonicalJson(v));
}

/**
 * The body digest of an HTTP request, as server402 sees its bytes go by:
 * every chunk the app (or its body parser, mounted after the paywall) reads
 * is hashed on the way; what nobody read is read when the digest is asked
 * for (the handler is done by then, or will not run). A body that a parser
 * mounted before the paywall already read is represented by its parsed value
 * (`req.body`, canonical JSON), the same for a retry through the same app.
 */
export function httpBodyDigest(req: IncomingMessage & { body?: unknown }): () => Promise<string> {
  if (req.readableEnded) {
    const b = req.body;
    const parsed = Buffer.isBuffer(b) || typeof b === "string" ? `parsed:${sha256(b)}` : `parsed:${sha256(canonicalJson(b ?? null))}`;
    return () => Promise.resolve(parsed);
  }
  const hash = createHash("sha256");
  let ended = false;
  let result: Promise<string> | undefined;
  const emit = req.emit;
  req.emit = function (this: IncomingMessage, event: string | symbol, ...args: unknown[]) {
    if (event === "data" && !ended) {
      const chunk = args[0];
      hash.update(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    } else if (event === "end") {
      ended = true;
    }
    return (emit as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as IncomingMessage["emit"];
  return () =>
    (result ??= new Promise<string>((resolve, reject) => {
      let digest: string | undefined;
      const finish = () => {
        req.emit = emit;
        resolve((digest ??= `raw:${hash.digest("hex")}`));
      };
      if (ended || req.readableEnded) return finish();
      if (req.destroyed) return req.complete && req.readableLength === 0 ? finish() : reject(new PaymentError("invalid_payload", "the request body did not arrive whole.", 400));
      const timer = setTimeout(() => reject(new PaymentError("invalid_payload", "the request body did not arrive in time.", 400)), BODY_WAIT_MS);
      timer.unref();
      req.once("end", finish);
      req.once("error", reject);
      req.once("close", () => (ended || req.readableEnded ? finish() : reject(new PaymentError("invalid_payload", "the request body did not arrive whole.", 400))));
      req.resume();
    }));
}

/** Longest wait for the rest of a body nobody read (the handler is done, or will not run). */
const BODY_WAIT_MS = 10_000;

/** Answer a payment-identifier refusal over HTTP: its status (409, 503), `Retry-After` when worth retrying, JSON `{ error, message }`. */
export function sendPaymentIdRefusal(res: ServerResponse, err: PaymentError): void {
  res.statusCode = err.status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Cache-Control", "no-store");
  const retryAfter = (err as PaymentError & { retryAfter?: number }).retryAfter;
  if (retryAfter !== undefined) res.setHeader("Retry-After", String(retryAfter));
  res.end(JSON.stringify({ error: err.reason, message: err.message }));
}
