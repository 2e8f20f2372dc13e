/**
 * Pure helpers shared by the store implementations: record mapping, the
 * reserve decision, error wrapping and common defaults.
 */
import { Server402Error, StoreError } from "../errors.js";
import { paymentStatus, type LedgerEntry, type ReserveFailure, type StoredPayment } from "./store.js";

/** Default time a payment is kept after it expires before a store may delete it (30 days). */
export const DEFAULT_PAYMENT_RETENTION_MS = 30 * 24 * 3600_000;

/**
 * A reservation whose lease ended more than this long ago may be deleted by
 * housekeeping even if no reserve on its payment reclaimed it; committing it
 * afterwards returns false.
 */
export const RESERVATION_GC_MS = 3600_000;

/** `listLedger` page size when no limit is given. */
export const DEFAULT_LEDGER_LIMIT = 1000;

const NUMBER_FIELDS = ["amountCents", "maxCalls", "callsUsed", "expiresAt", "createdAt"] as const;
const STRING_FIELDS = ["paymentId", "serviceId", "tokenHash", "status", "amountAtomic", "currency", "billingMode", "payTo"] as const;
/** The optional string fields of a payment (`paidAt` is its one optional number). */
export const OPTIONAL_STRING_FIELDS = ["provider", "transaction", "network", "payer", "createdBy"] as const;
/** The optional fields of a payment (null or missing in a row or hash). */
export const OPTIONAL_PAYMENT_FIELDS = ["paidAt", ...OPTIONAL_STRING_FIELDS] as const;

/** The lists above name every field of `StoredPayment` (a compile error otherwise). */
type Listed = (typeof NUMBER_FIELDS)[number] | (typeof STRING_FIELDS)[number] | (typeof OPTIONAL_PAYMENT_FIELDS)[number];
export const EVERY_PAYMENT_FIELD_LISTED: [Exclude<keyof StoredPayment, Listed>] extends [never] ? true : never = true;

/** The fields of a payment as a flat record, undefined ones left out. */
export function paymentToRecord(p: StoredPayment): Record<string, string | number> {
  const r: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(p)) if (v !== undefined && v !== null) r[k] = v as string | number;
  return r;
}

/**
 * A payment from a flat record (an SQLite row or a Redis hash): numbers are
 * coerced, null or missing optional fields are left out.
 */
export function paymentFromRecord(r: Record<string, unknown>): StoredPayment {
  const p: Record<string, unknown> = {};
  for (const k of STRING_FIELDS) p[k] = String(r[k]);
  for (const k of NUMBER_FIELDS) p[k] = Number(r[k]);
  if (r.paidAt !== undefined && r.paidAt !== null) p.paidAt = Number(r.paidAt);
  for (const k of OPTIONAL_STRING_FIELDS) if (r[k] !== undefined && r[k] !== null) p[k] = String(r[k]);
  return p as unknown as StoredPayment;
}

/** A ledger entry without undefined fields and without `id` (which the store assigns). */
export function ledgerBody(entry: LedgerEntry): Omit<LedgerEntry, "id"> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(entry)) if (k !== "id" && v !== undefined && v !== null) out[k] = v;
  return out as Omit<LedgerEntry, "id">;
}

/**
 * Why a call on `p` cannot be reserved for `serviceId` at `now` when `live`
 * unlapsed reservations exist, or undefined if it can. The reserve rule: the
 * Memory and SQLite stores call it; the Redis Lua and PostgreSQL SQL scripts
 * repeat it in their own language, since there the check and the reservation
 * are one atomic step on the server.
 */
export function reserveRejection(p: StoredPayment, serviceId: string, now: number, live: number): ReserveFailure | undefined {
  if (p.serviceId !== serviceId) return "wrong_service";
  const status = paymentStatus(p, now);
  if (status !== "paid") return status;
  if (p.callsUsed + live >= p.maxCalls) return "exhausted";
  return undefined;
}

/** The error `createPayment` throws when the payment id or token hash already exists. */
export function duplicatePaymentError(paymentId: string): Server402Error {
  return new Server402Error("duplicate_payment", `server402: payment ${paymentId} (or its token) already exists`);
}

/** Wrap a backend failure in `StoreError`; server402's own errors pass through. */
export function toStoreError(store: string, op: string, err: unknown): Server402Error {
  if (err instanceof Server402Error) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new StoreError(`server402: ${store} ${op} failed: ${msg}`, { cause: err });
}

/** A store call waiting in a `TurnBatch`: what to report, and how. */
export interface BatchedCall {
  /** Operation name for errors (`reserveCall`, ...). */
  op: string;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/**
 * Collects calls made during one turn of the event loop and hands them over
 * together once that turn has taken in all ready I/O (setImmediate), so a
 * store can serve them with one transaction or one round trip. A lone call
 * waits less than a millisecond.
 */
export class TurnBatch<C extends BatchedCall> {
  private calls: C[] = [];
  constructor(private readonly run: (calls: C[]) => void) {}

  /** Queue a call; the first of a turn schedules the hand-over. */
  add(call: C): void {
    if (this.calls.push(call) === 1) setImmediate(this.flush);
  }

  /** Hand over what is queued now (also called by `close()` so nothing queued is lost). */
  readonly flush = (): void => {
    const calls = this.calls;
    if (calls.length === 0) return;
    this.calls = [];
    this.run(calls);
  };
}
