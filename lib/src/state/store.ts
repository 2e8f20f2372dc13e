/**
 * The Store interface: every piece of state server402 keeps. Implementations:
 * `MemoryStore` (tests, dev), `SqliteStore` (one durable file), `RedisStore`
 * (shared by several instances). Every method must be atomic with respect to
 * concurrent callers, in this process and (for shared stores) in others.
 * The conformance suite in `test/store-conformance.ts` defines the behaviour.
 *
 * Times are milliseconds since the epoch (numbers). Money is integer strings.
 */

/** Status of a prepaid payment object. */
export type PaymentStatus = "pending" | "paid" | "exhausted" | "expired";

/** A prepaid payment object as stored (the token itself is never stored, only its hash). */
export interface StoredPayment {
  paymentId: string;
  serviceId: string;
  /** SHA-256 hex of the token. */
  tokenHash: string;
  /** Stored status: "pending" or "paid". "exhausted"/"expired" are derived at read time. */
  status: "pending" | "paid";
  /** Price of the whole payment in cents (USD). */
  amountCents: number;
  /** Price in the asset's smallest unit, integer string. */
  amountAtomic: string;
  currency: string;
  billingMode: "per_call";
  maxCalls: number;
  /** Calls committed so far. */
  callsUsed: number;
  /** ms epoch. */
  expiresAt: number;
  createdAt: number;
  paidAt?: number;
  payTo: string;
  provider?: string;
  transaction?: string;
  /** Network (CAIP-2) the payment was settled on, when on-chain. */
  network?: string;
  payer?: string;
  /** Client address that created it (for abuse limits). */
  createdBy?: string;
}

/** Why a token call could not be reserved. */
export type ReserveFailure = "unknown_token" | "pending" | "expired" | "exhausted" | "wrong_service";

/** Field names of `ReservedPayment`. */
export const RESERVED_PAYMENT_FIELDS = ["paymentId", "serviceId", "amountAtomic", "maxCalls", "callsUsed", "payer", "network", "transaction"] as const;

/**
 * The fields of a payment a successful reserve must return (a store may
 * return the whole `StoredPayment`). `callsUsed` counts committed calls,
 * without this reservation.
 */
export type ReservedPayment = Pick<StoredPayment, (typeof RESERVED_PAYMENT_FIELDS)[number]>;

export type ReserveResult =
  | { ok: true; payment: ReservedPayment; reservationId: string }
  | { ok: false; reason: ReserveFailure; payment?: StoredPayment };

/** One durable record of money received. */
export interface LedgerEntry {
  /** Assigned by the store, increasing. */
  id?: number;
  time: number;
  method: "x402" | "token";
  payer: string;
  /** Atomic units, integer string. */
  amount: string;
  asset: string;
  network: string;
  transaction?: string;
  resource: string;
  serviceId?: string;
  /** For `token`: the paymentId. */
  paymentId?: string;
}

/** State of an x402 authorization nonce lock. */
export type NonceState = "locked" | "settled" | "pending";

/** What `claimPayerNonce` checks a new x402 payment against. */
export interface PayerHold {
  /** The payer's key for this asset, e.g. `chainId:asset:from` (lower-case). */
  payer: string;
  /** This payment's value, atomic units, integer string. */
  amount: string;
  /** The payer's balance as just read on-chain, integer string; omitted when unknown (no funds check). */
  balance?: string;
  /** Locked payments the payer may already have (work in flight). */
  maxInFlight: number;
  /** Failed runs given back after which this authorization is refused. */
  maxRetries: number;
}

/** Why `claimPayerNonce` refused. */
export type PayerClaimFailure = "in_use" | "used" | "retries_exhausted" | "too_many_in_flight" | "insufficient_funds";

export type PayerClaim = { ok: true; others: number } | { ok: false; reason: PayerClaimFailure; held?: string };

/** `claimPayerNonce`'s decision from the payer's other live nonces; shared by the stores. */
export function payerClaimRefusal(hold: PayerHold, givenBack: number, others: { state: NonceState; amount: string }[]): { reason: PayerClaimFailure; held?: string } | undefined {
  if (givenBack > hold.maxRetries) return { reason: "retries_exhausted" };
  let inFlight = 0;
  let held = 0n;
  for (const o of others) {
    if (o.state === "locked") inFlight++;
    if (o.state !== "settled") held += BigInt(o.amount);
  }
  if (inFlight >= hold.maxInFlight) return { reason: "too_many_in_flight" };
  if (hold.balance !== undefined && held + BigInt(hold.amount) > BigInt(hold.balance)) return { reason: "insufficient_funds", held: held.toString() };
  return undefined;
}

export interface Store {
  /**
   * Claim the lock for an x402 authorization, key `asset:from:nonce` (lower-case).
   * Returns true only for the one caller that created it. The lock lives until
   * `expiresAt` (the authorization's validBefore plus a margin), after which the
   * authorization is worthless anyway.
   */
  claimNonce(key: string, expiresAt: number): Promise<boolean>;
  /** Release a claimed lock (the request failed, nothing was charged) so the authorization may be retried. Only a `locked` nonce is released. */
  releaseNonce(key: string): Promise<void>;
  /** Record the final state of a claimed nonce (`settled`, or `pending` when the receipt did not arrive). */
  setNonceState(key: string, state: Exclude<NonceState, "locked">, transaction?: string): Promise<void>;
  /** Current state of a nonce, or undefined. */
  getNonce(key: string): Promise<{ state: NonceState; transaction?: string } | undefined>;

  // --- Abuse limits of x402 payments: a payer's held payments and given-back runs (see `PayerHold`) ---
  /**
   * `claimNonce` checked against the payer's other payments in the same atomic step. Refused when
   * the key is live (`in_use` while locked, else `used`), when runs of this authorization were given
   * back (`giveBackNonce`) more than `hold.maxRetries` times (`retries_exhausted`), when the payer
   * already has `hold.maxInFlight` locked payments (`too_many_in_flight`), or when the amounts of the
   * payer's locked and pending payments plus `hold.amount` exceed `hold.balance` (`insufficient_funds`,
   * with `held`, the others' sum). On success `others` counts the payer's other live nonces in any state.
   */
  claimPayerNonce(key: string, expiresAt: number, hold: PayerHold): Promise<PayerClaim>;
  /** `releaseNonce` after a failed run, counting that run against the key (kept until the lock would have expired). Returns the count. */
  giveBackNonce(key: string): Promise<number>;

  /** Insert a new payment. Throws if paymentId or tokenHash exists. */
  createPayment(payment: StoredPayment): Promise<void>;
  getPayment(paymentId: string): Promise<StoredPayment | undefined>;
  /**
   * Atomically move a payment from pending to paid. Returns the payment and
   * `changed: true` for the one caller that did it; `changed: false` if it was
   * already paid (or undefined if unknown).
   */
  markPaid(paymentId: string, paid: { paidAt: number; transaction?: string; provider?: string; network?: string; payer?: string }): Promise<{ payment: StoredPayment; changed: boolean } | undefined>;
  /** Number of payments still pending and not expired at `now`. */
  countPending(now: number): Promise<number>;

  /**
   * Atomically reserve one call on the payment whose token hashes to `tokenHash`
   * for `serviceId`: succeeds only if it is paid, not expired at `now`, and
   * `callsUsed + live reservations < maxCalls`. The reservation lapses at
   * `now + leaseMs` unless committed or released (a crashed process gives the call back).
   */
  reserveCall(tokenHash: string, serviceId: string, now: number, leaseMs: number): Promise<ReserveResult>;
  /**
   * Turn a reservation into a used call. A lapsed reservation that nobody reclaimed still commits.
   * Returns false if the reservation is unknown (released, or lapsed and reclaimed by another reserve).
   */
  commitCall(reservationId: string): Promise<boolean>;
  /** Give a reserved call back. Idempotent. */
  releaseCall(reservationId: string): Promise<void>;
  // --- lease renewal (issue 14 A4) ---
  /**
   * Keep a reservation alive while its handler runs: its lease now ends at
   * `now + leaseMs`. Returns false if the reservation is unknown (committed,
   * released, or lapsed and reclaimed by another reserve); a lapsed
   * reservation nobody reclaimed is renewed (as it would still commit).
   */
  renewCall(reservationId: string, now: number, leaseMs: number): Promise<boolean>;
  // --- end lease renewal ---

  /** Append a ledger record; returns its id. */
  appendLedger(entry: LedgerEntry): Promise<number>;
  /** Read ledger records with id > `afterId`, oldest first, at most `limit`. */
  listLedger(opts?: { afterId?: number; limit?: number }): Promise<LedgerEntry[]>;

  /** Cheap round trip proving the backend is reachable. */
  ping(): Promise<void>;
  /** Close connections / file handles. */
  close(): Promise<void>;

  // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
  // What happened to a payment after money moved is written here before the client is answered, and
  // kept until every record it implies is stored; the engine's reconciler drains it.

  /** Add or replace the outbox entry `id` (an x402 lock key); `record` is the engine's JSON. Durable where the store is. */
  putOutbox(id: string, record: string): Promise<void>;
  /** Up to `limit` outbox entries (oldest first where the store can tell). */
  listOutbox(limit: number): Promise<OutboxItem[]>;
  /** Delete an outbox entry. Idempotent. */
  deleteOutbox(id: string): Promise<void>;
  /**
   * Append `entry` to the ledger unless an entry was appended under `key`
   * before; returns that entry's id either way. Atomic, so a retried write
   * never records one payment twice.
   */
  appendLedgerOnce(key: string, entry: LedgerEntry): Promise<number>;
  /** Delete a nonce whose state is `pending` (its transfer finally failed; nothing was charged). */
  releasePendingNonce(key: string): Promise<void>;
  /** Keep the answer held for a pending settlement (`answer` is the engine's JSON) until `expiresAt`. Replaces. */
  putHeldAnswer(key: string, answer: string, expiresAt: number): Promise<void>;
  /** The held answer under `key`, unless it expired. */
  getHeldAnswer(key: string): Promise<string | undefined>;
  /** Forget a held answer. Idempotent. */
  deleteHeldAnswer(key: string): Promise<void>;

  // ---- Payment identifiers (issue 17 part 3): idempotent retries of x402 v2 payments ----
  // One record per identifier (`key`, the engine's), owned by the request that claimed it (`owner`, a
  // random token); `record` is the engine's JSON. The paid answer itself is a held answer (above).

  /**
   * Create the record `key` owned by `owner`, unless a live one exists (then it is returned, unchanged).
   * Refused with `full` when `maxEntries` live records exist. Atomic: of concurrent claims of one key,
   * exactly one gets `ok`. An expired record counts as absent.
   */
  claimPaymentId(key: string, owner: string, record: string, expiresAt: number, maxEntries: number): Promise<PaymentIdClaim>;
  /** Replace the record `key` and its expiry while `owner` holds it; false when it does not (released, expired, or another's). */
  updatePaymentId(key: string, owner: string, record: string, expiresAt: number): Promise<boolean>;
  /** Delete the record `key` while `owner` holds it (nothing was charged: the identifier may be used again). Idempotent. */
  releasePaymentId(key: string, owner: string): Promise<void>;
  // ---- end payment identifiers ----
}

/** What `Store.claimPaymentId` answers: claimed, the live record of another request, or no room. */
export type PaymentIdClaim = { ok: true } | { ok: false; record: string } | { ok: false; full: true };

/** One outbox entry (see `Store.putOutbox`). */
export interface OutboxItem {
  id: string;
  record: string;
}

/** Derive the public status of a stored payment at time `now`. */
export function paymentStatus(p: StoredPayment, now: number): PaymentStatus {
  if (p.status === "paid" && p.callsUsed >= p.maxCalls) return "exhausted";
  if (now >= p.expiresAt) return "expired";
  return p.status;
}
