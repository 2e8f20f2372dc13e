/**
 * In-process store for tests, development and single-instance servers that
 * can afford to lose state on restart. Every operation runs synchronously
 * inside one tick, so each is atomic. Expired state is dropped lazily and by
 * an unref'd timer, so memory stays bounded under sustained traffic.
 */
import { payerClaimRefusal, type LedgerEntry, type NonceState, type OutboxItem, type PayerClaim, type PayerHold, type PaymentIdClaim, type ReserveResult, type Store, type StoredPayment } from "./store.js";
import { DEFAULT_LEDGER_LIMIT, DEFAULT_PAYMENT_RETENTION_MS, RESERVATION_GC_MS, duplicatePaymentError, ledgerBody, reserveRejection } from "./shared.js";
import { newReservationId, reservationPaymentId } from "./tokens.js";

/** Options of `MemoryStore`. */
export interface MemoryStoreOptions {
  /** How often expired nonces, lapsed reservations and old payments are dropped. Default 10 000 ms. */
  sweepIntervalMs?: number;
  /** How long a payment is kept after it expires. Default 30 days. */
  paymentRetentionMs?: number;
  /** Ledger entries kept; the oldest are dropped beyond this (memory is not a durable ledger anyway). Default 10 000. */
  maxLedgerEntries?: number;
}

interface NonceRecord {
  state: NonceState;
  transaction?: string;
  expiresAt: number;
  /** Set by `claimPayerNonce`: the payer's key and this payment's value. */
  payer?: string;
  amount?: string;
}

/** The live reservations of one payment (ids and lease ends); a payment mostly holds none or a few. */
class Leases {
  private readonly ids: string[] = [];
  private readonly ends: number[] = [];

  get size(): number {
    return this.ids.length;
  }

  add(id: string, end: number): void {
    this.ids.push(id);
    this.ends.push(end);
  }

  /** Remove a reservation; false if it is not here. */
  remove(id: string): boolean {
    const i = this.ids.indexOf(id);
    if (i < 0) return false;
    this.removeAt(i);
    return true;
  }

  /** Remove the reservations whose lease ended at or before `t`. */
  dropEnded(t: number): void {
    for (let i = this.ids.length - 1; i >= 0; i--) if (this.ends[i]! <= t) this.removeAt(i);
  }

  private removeAt(i: number): void {
    const last = this.ids.length - 1;
    if (i !== last) {
      this.ids[i] = this.ids[last]!;
      this.ends[i] = this.ends[last]!;
    }
    this.ids.pop();
    this.ends.pop();
  }
}

/** A copy of a payment without its undefined fields, as the other stores return it. */
function copyPayment(p: StoredPayment): StoredPayment {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) if (v !== undefined) out[k] = v;
  return out as unknown as StoredPayment;
}

/** A `Store` kept in this process's memory. Not shared, not durable. */
export class MemoryStore implements Store {
  private readonly nonces = new Map<string, NonceRecord>();
  /** payer key → keys of the nonces claimed for it by `claimPayerNonce` (pruned as they expire) */
  private readonly payerNonces = new Map<string, Set<string>>();
  /** nonce key → failed runs given back, until the lock would have expired */
  private readonly givenBack = new Map<string, { count: number; expiresAt: number }>();
  private readonly payments = new Map<string, StoredPayment>();
  /** tokenHash → paymentId */
  private readonly tokens = new Map<string, string>();
  /** paymentId → its live reservations */
  private readonly leases = new Map<string, Leases>();
  private readonly ledger: LedgerEntry[] = [];
  private nextLedgerId = 1;
  private readonly retentionMs: number;
  private readonly maxLedger: number;
  private timer?: NodeJS.Timeout;

  constructor(opts: MemoryStoreOptions = {}) {
    this.retentionMs = opts.paymentRetentionMs ?? DEFAULT_PAYMENT_RETENTION_MS;
    this.maxLedger = opts.maxLedgerEntries ?? 10_000;
    this.timer = setInterval(() => this.sweep(), opts.sweepIntervalMs ?? 10_000);
    this.timer.unref();
  }

  /**
   * Drop expired nonce locks, reservations lapsed longer than an hour ago and
   * payments past their retention. Runs periodically; callable directly.
   */
  sweep(now = Date.now()): void {
    for (const [key, n] of this.nonces) if (n.expiresAt <= now) this.nonces.delete(key);
    this.sweepPayerNonces(now);
    for (const [paymentId, leases] of this.leases) {
      leases.dropEnded(now - RESERVATION_GC_MS);
      if (leases.size === 0) this.leases.delete(paymentId);
    }
    for (const [paymentId, p] of this.payments) {
      if (p.expiresAt + this.retentionMs > now) continue;
      this.payments.delete(paymentId);
      this.tokens.delete(p.tokenHash);
      this.leases.delete(paymentId);
    }
  }

  /** Number of entries held in each collection (for monitoring and tests). */
  stats(): { nonces: number; payments: number; reservations: number; ledger: number } {
    let reservations = 0;
    for (const l of this.leases.values()) reservations += l.size;
    return { nonces: this.nonces.size, payments: this.payments.size, reservations, ledger: this.ledger.length };
  }

  private liveNonce(key: string): NonceRecord | undefined {
    const n = this.nonces.get(key);
    if (n && n.expiresAt <= Date.now()) {
      this.nonces.delete(key);
      return undefined;
    }
    return n;
  }

  async claimNonce(key: string, expiresAt: number): Promise<boolean> {
    if (this.liveNonce(key)) return false;
    this.nonces.set(key, { state: "locked", expiresAt });
    return true;
  }

  async releaseNonce(key: string): Promise<void> {
    if (this.nonces.get(key)?.state === "locked") this.nonces.delete(key);
  }

  async setNonceState(key: string, state: Exclude<NonceState, "locked">, transaction?: string): Promise<void> {
    const n = this.liveNonce(key);
    if (!n) return;
    n.state = state;
    n.transaction = transaction;
  }

  async getNonce(key: string): Promise<{ state: NonceState; transaction?: string } | undefined> {
    const n = this.liveNonce(key);
    if (!n) return undefined;
    return n.transaction === undefined ? { state: n.state } : { state: n.state, transaction: n.transaction };
  }

  // --- Abuse limits of x402 payments: a payer's held payments and given-back runs ---
  async claimPayerNonce(key: string, expiresAt: number, hold: PayerHold): Promise<PayerClaim> {
    const prior = this.liveNonce(key);
    if (prior) return { ok: false, reason: prior.state === "locked" ? "in_use" : "used" };
    const now = Date.now();
    const back = this.givenBack.get(key);
    const keys = this.payerNonces.get(hold.payer);
    const others: { state: NonceState; amount: string }[] = [];
    for (const k of keys ?? []) {
      const n = this.liveNonce(k);
      if (n?.payer === hold.payer) others.push({ state: n.state, amount: n.amount ?? "0" });
      else keys!.delete(k);
    }
    const refusal = payerClaimRefusal(hold, back && back.expiresAt > now ? back.count : 0, others);
    if (refusal) return { ok: false, ...refusal };
    this.nonces.set(key, { state: "locked", expiresAt, payer: hold.payer, amount: hold.amount });
    if (keys) keys.add(key);
    else this.payerNonces.set(hold.payer, new Set([key]));
    return { ok: true, others: others.length };
  }

  async giveBackNonce(key: string): Promise<number> {
    const n = this.nonces.get(key);
    const back = this.givenBack.get(key);
    const count = (back && back.expiresAt > Date.now() ? back.count : 0) + 1;
    if (n?.state !== "locked") return count - 1;
    this.nonces.delete(key);
    this.givenBack.set(key, { count, expiresAt: Math.max(n.expiresAt, back?.expiresAt ?? 0) });
    return count;
  }

  private sweepPayerNonces(now: number): void {
    for (const [key, b] of this.givenBack) if (b.expiresAt <= now) this.givenBack.delete(key);
    for (const [payer, keys] of this.payerNonces) {
      for (const k of keys) if (!this.nonces.has(k)) keys.delete(k);
      if (keys.size === 0) this.payerNonces.delete(payer);
    }
  }

  async createPayment(payment: StoredPayment): Promise<void> {
    if (this.payments.has(payment.paymentId) || this.tokens.has(payment.tokenHash)) throw duplicatePaymentError(payment.paymentId);
    this.payments.set(payment.paymentId, copyPayment(payment));
    this.tokens.set(payment.tokenHash, payment.paymentId);
  }

  async getPayment(paymentId: string): Promise<StoredPayment | undefined> {
    const p = this.payments.get(paymentId);
    return p && copyPayment(p);
  }

  async markPaid(
    paymentId: string,
    paid: { paidAt: number; transaction?: string; provider?: string; network?: string; payer?: string },
  ): Promise<{ payment: StoredPayment; changed: boolean } | undefined> {
    const p = this.payments.get(paymentId);
    if (!p) return undefined;
    if (p.status === "paid") return { payment: copyPayment(p), changed: false };
    p.status = "paid";
    p.paidAt = paid.paidAt;
    if (paid.transaction !== undefined) p.transaction = paid.transaction;
    if (paid.provider !== undefined) p.provider = paid.provider;
    if (paid.network !== undefined) p.network = paid.network;
    if (paid.payer !== undefined) p.payer = paid.payer;
    return { payment: copyPayment(p), changed: true };
  }

  async countPending(now: number): Promise<number> {
    let n = 0;
    for (const p of this.payments.values()) if (p.status === "pending" && p.expiresAt > now) n++;
    return n;
  }

  async reserveCall(tokenHash: string, serviceId: string, now: number, leaseMs: number): Promise<ReserveResult> {
    const paymentId = this.tokens.get(tokenHash);
    const p = paymentId === undefined ? undefined : this.payments.get(paymentId);
    if (!p) return { ok: false, reason: "unknown_token" };
    let leases = this.leases.get(p.paymentId);
    leases?.dropEnded(now);
    const reason = reserveRejection(p, serviceId, now, leases?.size ?? 0);
    if (reason) return { ok: false, reason, payment: copyPayment(p) };
    // kept when emptied, for the payment's next call (the sweep drops idle ones)
    if (!leases) this.leases.set(p.paymentId, (leases = new Leases()));
    const reservationId = newReservationId(p.paymentId);
    leases.add(reservationId, now + leaseMs);
    return { ok: true, payment: copyPayment(p), reservationId };
  }

  async commitCall(reservationId: string): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    const leases = paymentId === undefined ? undefined : this.leases.get(paymentId);
    if (!leases?.remove(reservationId)) return false;
    const p = this.payments.get(paymentId!);
    if (!p) return false;
    p.callsUsed++;
    return true;
  }

  async releaseCall(reservationId: string): Promise<void> {
    const paymentId = reservationPaymentId(reservationId);
    this.leases.get(paymentId ?? "")?.remove(reservationId);
  }

  // --- lease renewal (issue 14 A4) ---
  async renewCall(reservationId: string, now: number, leaseMs: number): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    const leases = paymentId === undefined ? undefined : this.leases.get(paymentId);
    if (!leases?.remove(reservationId)) return false;
    leases.add(reservationId, now + leaseMs);
    return true;
  }
  // --- end lease renewal ---

  async appendLedger(entry: LedgerEntry): Promise<number> {
    const id = this.nextLedgerId++;
    this.ledger.push({ ...ledgerBody(entry), id });
    // Trim in chunks so appends stay O(1) amortised.
    if (this.ledger.length > this.maxLedger + Math.max(16, this.maxLedger >> 4)) this.ledger.splice(0, this.ledger.length - this.maxLedger);
    return id;
  }

  async listLedger(opts: { afterId?: number; limit?: number } = {}): Promise<LedgerEntry[]> {
    const afterId = opts.afterId ?? 0;
    const limit = opts.limit ?? DEFAULT_LEDGER_LIMIT;
    // Ids are increasing: binary search the first entry with id > afterId.
    let lo = 0;
    let hi = this.ledger.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ledger[mid].id! <= afterId) lo = mid + 1;
      else hi = mid;
    }
    return this.ledger.slice(lo, lo + Math.max(0, limit)).map((e) => ({ ...e }));
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
  private readonly outbox = new Map<string, string>();
  /** Ledger key → id, the newest `maxLedger` kept (as many as the ledger itself). */
  private readonly ledgerKeys = new Map<string, number>();
  private readonly held = new Map<string, { answer: string; expiresAt: number }>();

  async putOutbox(id: string, record: string): Promise<void> {
    this.outbox.set(id, record);
  }

  async listOutbox(limit: number): Promise<OutboxItem[]> {
    const out: OutboxItem[] = [];
    for (const [id, record] of this.outbox) {
      if (out.length >= limit) break;
      out.push({ id, record });
    }
    return out;
  }

  async deleteOutbox(id: string): Promise<void> {
    this.outbox.delete(id);
  }

  async appendLedgerOnce(key: string, entry: LedgerEntry): Promise<number> {
    const known = this.ledgerKeys.get(key);
    if (known !== undefined) return known;
    // appendLedger's body runs in this tick and takes the next id: the key is set before anything can interleave
    const id = this.nextLedgerId;
    void this.appendLedger(entry);
    this.ledgerKeys.set(key, id);
    if (this.ledgerKeys.size > this.maxLedger) this.ledgerKeys.delete(this.ledgerKeys.keys().next().value!);
    return id;
  }

  async releasePendingNonce(key: string): Promise<void> {
    if (this.nonces.get(key)?.state === "pending") this.nonces.delete(key);
  }

  async putHeldAnswer(key: string, answer: string, expiresAt: number): Promise<void> {
    if (this.held.size >= MAX_HELD_ANSWERS) {
      const now = Date.now();
      for (const [k, h] of this.held) if (h.expiresAt <= now) this.held.delete(k);
      if (this.held.size >= MAX_HELD_ANSWERS) this.held.delete(this.held.keys().next().value!);
    }
    this.held.delete(key);
    this.held.set(key, { answer, expiresAt });
  }

  async getHeldAnswer(key: string): Promise<string | undefined> {
    const h = this.held.get(key);
    if (h && h.expiresAt <= Date.now()) this.held.delete(key);
    else return h?.answer;
    return undefined;
  }

  async deleteHeldAnswer(key: string): Promise<void> {
    this.held.delete(key);
  }

  // ---- Payment identifiers (issue 17 part 3): idempotent retries ----
  private readonly paymentIds = new Map<string, { owner: string; record: string; expiresAt: number }>();

  async claimPaymentId(key: string, owner: string, record: string, expiresAt: number, maxEntries: number): Promise<PaymentIdClaim> {
    const now = Date.now();
    const live = this.paymentIds.get(key);
    if (live && live.expiresAt > now) return { ok: false, record: live.record };
    this.paymentIds.delete(key);
    if (this.paymentIds.size >= maxEntries) {
      for (const [k, r] of this.paymentIds) if (r.expiresAt <= now) this.paymentIds.delete(k);
      if (this.paymentIds.size >= maxEntries) return { ok: false, full: true };
    }
    this.paymentIds.set(key, { owner, record, expiresAt });
    return { ok: true };
  }

  async updatePaymentId(key: string, owner: string, record: string, expiresAt: number): Promise<boolean> {
    const r = this.paymentIds.get(key);
    if (!r || r.owner !== owner || r.expiresAt <= Date.now()) return false;
    r.record = record;
    r.expiresAt = expiresAt;
    return true;
  }

  async releasePaymentId(key: string, owner: string): Promise<void> {
    if (this.paymentIds.get(key)?.owner === owner) this.paymentIds.delete(key);
  }
  // ---- end payment identifiers ----
}

/** Held answers a MemoryStore keeps at most (the oldest give way): memory stays bounded. */
const MAX_HELD_ANSWERS = 1000;
