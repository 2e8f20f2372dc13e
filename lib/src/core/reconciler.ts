/**
 * Settlement records after money moved (issue 14, B10/B11). Every x402
 * settlement whose transfer is pending, or whose records (ledger entry, nonce
 * state, prepaid payment marked paid) could not all be stored, is written to
 * an outbox before the client is answered: the store's, or this process's
 * memory while the store refuses writes. The reconciler drains it in the
 * background: it confirms or fails pending transfers and stores what is
 * missing, so a settled payment always ends up on record, exactly once.
 */
import type { Address, Hex } from "viem";
import { SettlementError } from "../errors.js";
import type { SettleRequest, SettleResult, Settler } from "../chain/settler.js";
import type { LedgerEntry, Store, StoredPayment } from "../state/store.js";

/** The prepaid payment (payments API) an x402 settlement pays: marked paid, and its pay lock settled, once the transfer is confirmed. */
export interface PaidPayment {
  paymentId: string;
  /** The payments API's lock on paying it (a nonce key); released only when the transfer finally fails. */
  lock: string;
  provider: string;
}

/** What the outbox keeps for one x402 settlement until every record it implies is stored. */
export interface SettlementRecord {
  /** The authorization's nonce lock key; also the outbox id and the ledger key (one entry per authorization). */
  lockKey: string;
  /**
   * `intent`: written before the settler is called (issue 14 B11), so a settlement whose records the store
   * refused afterwards is still found after a crash; it is confirmed only by looking (never sent again).
   */
  state: "intent" | "pending" | "settled";
  transaction?: string;
  /** The settle request as JSON (bigints as strings), to confirm or retry a pending transfer. */
  request: string;
  /** The authorization's validBefore (unix seconds): a transfer not mined by then can no longer move money. */
  validBefore: string;
  ledger: LedgerEntry;
  pays?: PaidPayment;
  /** When settlement started (ms). */
  startedAt: number;
}

/** What the reconciler reports (the engine turns these into its payment events). */
export type RecordEvent =
  | { type: "record_failed"; what: "ledger" | "nonce" | "payment" | "outbox" | "answer"; reason: string; resource: string; transaction?: string }
  | { type: "reconciled"; outcome: "settled" | "failed" | "recorded"; resource: string; transaction?: string }
  | { type: "settled"; method: "x402"; amount: string; asset: string; durationMs: number; resource: string }
  | { type: "failed"; method: "x402"; reason: string; stage: "settle"; resource: string };

export interface ReconcilerOptions {
  store: Store;
  settler: Settler;
  emit: (e: RecordEvent) => void;
  now: () => number;
  /** Seconds after validBefore a pending transfer is still looked for. */
  graceSeconds: number;
  /** Interval of the background runs (ms); 0 = none (call `run()`). */
  intervalMs: number;
  /** Age (ms) after which an `intent` entry's settlement is taken as abandoned (its process died) and looked up on the chain. Default 120 000. */
  intentAgeMs?: number;
}

/** Outbox entries handled per run. */
const BATCH = 100;
const NONCE_USED = "invalid_exact_evm_nonce_already_used";

/** A settle request as JSON: bigints become decimal strings. */
export function requestToJson(req: SettleRequest): string {
  return JSON.stringify(req, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

function requestFromJson(json: string): SettleRequest {
  const req = JSON.parse(json) as SettleRequest;
  const a = req.authorization as unknown as Record<string, string>;
  req.authorization = {
    from: a.from as Address,
    to: a.to as Address,
    value: BigInt(a.value),
    validAfter: BigInt(a.validAfter),
    validBefore: BigInt(a.validBefore),
    nonce: a.nonce as Hex,
  };
  req.prechecked = false;
  return req;
}

function reasonText(err: unknown): string {
  if (err instanceof SettlementError) return err.reason;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" ? code : "unexpected_error";
}

/** Writes settlement records, keeps what could not be written, and drains the outbox. */
export class Reconciler {
  /** Records the store did not take (it refused writes); tried first on every run. */
  private readonly unstored = new Map<string, SettlementRecord>();
  private readonly unreleased = new Set<string>();
  /** Token calls delivered whose commit the store refused, with what to do once committed. */
  private readonly uncommitted = new Map<string, () => void>();
  private running?: Promise<void>;
  /** Records a retry of their payment is moving forward right now (see `runFor`): a pass leaves them alone. */
  private readonly single = new Map<string, Promise<void>>();
  private readonly timer?: NodeJS.Timeout;

  constructor(private readonly o: ReconcilerOptions) {
    if (o.intervalMs > 0) {
      this.timer = setInterval(() => void this.run(), o.intervalMs);
      this.timer.unref();
    }
  }

  /** Records held in this process's memory because the store refused them. */
  get unstoredCount(): number {
    return this.unstored.size;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * Store every record of a confirmed settlement: the ledger entry (once per
   * authorization), the prepaid payment marked paid, the nonce settled. Each
   * failure is reported; `ok` is true when all were stored.
   */
  async write(rec: SettlementRecord): Promise<{ ok: boolean; payment?: StoredPayment }> {
    const { store } = this.o;
    const tx = rec.transaction;
    let ok = true;
    const failed = (what: "ledger" | "nonce" | "payment", err: unknown) => {
      ok = false;
      this.o.emit({ type: "record_failed", what, reason: reasonText(err), resource: rec.ledger.resource, transaction: tx });
    };
    try {
      await store.appendLedgerOnce(rec.lockKey, { ...rec.ledger, transaction: tx });
    } catch (err) {
      failed("ledger", err);
    }
    let payment: StoredPayment | undefined;
    if (rec.pays) {
      try {
        const paid = await store.markPaid(rec.pays.paymentId, { paidAt: rec.ledger.time, transaction: tx, provider: rec.pays.provider, network: rec.ledger.network, payer: rec.ledger.payer });
        payment = paid?.payment;
        await store.setNonceState(rec.pays.lock, "settled", tx);
      } catch (err) {
        failed("payment", err);
      }
    }
    try {
      await store.setNonceState(rec.lockKey, "settled", tx);
    } catch (err) {
      failed("nonce", err);
    }
    return { ok, payment };
  }

  /** Keep `rec` in the outbox until it is fully recorded: the store's, else (reported) this process's memory. */
  async keep(rec: SettlementRecord): Promise<void> {
    try {
      await this.o.store.putOutbox(rec.lockKey, JSON.stringify(rec));
      this.unstored.delete(rec.lockKey);
    } catch (err) {
      this.unstored.set(rec.lockKey, rec);
      this.o.emit({ type: "record_failed", what: "outbox", reason: reasonText(err), resource: rec.ledger.resource, transaction: rec.transaction });
    }
  }

  /**
   * Issue 14 B11: put the settlement's intent in the store before any money moves. Throws the
   * store's error when it refuses: then the settlement must not start (the answer is refused).
   */
  async writeIntent(rec: SettlementRecord): Promise<void> {
    await this.o.store.putOutbox(rec.lockKey, JSON.stringify(rec));
  }

  /**
   * Issue 14: a record whose writes did not finish by the engine's deadline is answered for now and
   * kept in memory too (its intent is in the store); the writes go on and the reconciler finishes them.
   */
  remember(rec: SettlementRecord): void {
    this.unstored.set(rec.lockKey, rec);
  }

  /** The settlement failed before money moved: its intent is no longer needed (left for the reconciler if the store refuses). */
  async dropIntent(lockKey: string): Promise<void> {
    await this.o.store.deleteOutbox(lockKey).catch(() => {});
  }

  /** A lock the store could not release (it was down): released by the next pass, so it is not held until it expires. */
  releaseLater(lockKey: string): void {
    this.unreleased.add(lockKey);
  }

  /**
   * A delivered token call whose commit the store refused (it was down): committed by the next pass, so
   * the call is not given back when its lease lapses (a lapsed reservation nobody reclaimed still commits).
   * `onCommitted` runs once it is.
   */
  commitLater(reservationId: string, onCommitted: () => void): void {
    this.uncommitted.set(reservationId, onCommitted);
  }

  /** One pass over the outbox (memory first). Concurrent calls share the pass in progress. */
  run(): Promise<void> {
    return (this.running ??= this.pass().finally(() => (this.running = undefined)));
  }

  /**
   * Move the one record of `lockKey` forward (a retry of its payment asks): a pass in progress does it,
   * else only that record is confirmed, so a retry never costs a pass over every pending record.
   * Concurrent calls for one record share the look. Never rejects.
   */
  runFor(lockKey: string): Promise<void> {
    if (this.running) return this.running;
    let look = this.single.get(lockKey);
    if (!look) {
      look = this.oneByKey(lockKey).catch(() => {}).finally(() => this.single.delete(lockKey));
      this.single.set(lockKey, look);
    }
    return look;
  }

  private async oneByKey(lockKey: string): Promise<void> {
    const kept = this.unstored.get(lockKey);
    if (kept) return this.one(kept, false);
    const item = (await this.o.store.listOutbox(BATCH)).find((i) => i.id === lockKey);
    if (item) await this.one(JSON.parse(item.record) as SettlementRecord, true);
  }

  private async pass(): Promise<void> {
    for (const [id, onCommitted] of [...this.uncommitted]) {
      const ok = await this.o.store.commitCall(id).catch(() => undefined);
      if (ok === undefined) continue; // still down
      this.uncommitted.delete(id);
      if (ok) onCommitted(); // false: reclaimed by another use after its lease lapsed, or the refused commit had landed
    }
    for (const key of [...this.unreleased]) {
      if (await this.o.store.releaseNonce(key).then(() => true, () => false)) this.unreleased.delete(key);
    }
    for (const rec of [...this.unstored.values()]) if (!this.single.has(rec.lockKey)) await this.one(rec, false);
    let items;
    try {
      items = await this.o.store.listOutbox(BATCH);
    } catch {
      return; // the store is down: the next run tries again
    }
    for (const item of items) {
      if (this.unstored.has(item.id) || this.single.has(item.id)) continue;
      let rec: SettlementRecord;
      try {
        rec = JSON.parse(item.record) as SettlementRecord;
      } catch {
        continue;
      }
      await this.one(rec, true);
    }
  }

  /** Move one record forward: confirm or fail a pending transfer, then store what is missing. */
  private async one(rec: SettlementRecord, inStore: boolean): Promise<void> {
    const { store, emit } = this.o;
    const resource = rec.ledger.resource;
    // an intent is the mark of a settlement in progress: looked at only once its process is taken as gone
    if (rec.state === "intent" && this.o.now() - rec.startedAt < (this.o.intentAgeMs ?? 120_000)) return;
    if (rec.state === "pending" || rec.state === "intent") {
      const outcome = await this.confirm(rec);
      if (outcome === "pending") {
        if (!inStore) await this.keep(rec);
        return;
      }
      if (outcome instanceof SettlementError) {
        try {
          await store.releasePendingNonce(rec.lockKey);
          await store.releaseNonce(rec.lockKey); // in case recording "pending" had failed
          if (rec.pays) await store.releaseNonce(rec.pays.lock);
          await store.deleteHeldAnswer(rec.lockKey);
          await store.deleteOutbox(rec.lockKey);
        } catch {
          if (!inStore) this.unstored.set(rec.lockKey, rec);
          return; // tried again on the next run
        }
        this.unstored.delete(rec.lockKey);
        emit({ type: "failed", method: "x402", reason: outcome.reason, stage: "settle", resource });
        emit({ type: "reconciled", outcome: "failed", resource, transaction: rec.transaction });
        return;
      }
      rec = { ...rec, state: "settled", transaction: outcome.transaction };
      emit({ type: "settled", method: "x402", amount: rec.ledger.amount, asset: rec.ledger.asset, durationMs: this.o.now() - rec.startedAt, resource });
      emit({ type: "reconciled", outcome: "settled", resource, transaction: rec.transaction });
    }
    const written = await this.write(rec);
    if (!written.ok) return this.keep(rec);
    try {
      await store.deleteOutbox(rec.lockKey);
    } catch {
      // stored twice at worst on the next run: every record is idempotent
    }
    this.unstored.delete(rec.lockKey);
    emit({ type: "reconciled", outcome: "recorded", resource, transaction: rec.transaction });
  }

  /**
   * The outcome of a pending transfer: its result once mined, a
   * SettlementError once it can no longer move money, else "pending". Asks
   * the settler's `confirm` when it has one, else settles again (a settler
   * must then answer a repeated authorization with the first outcome).
   */
  private async confirm(rec: SettlementRecord): Promise<SettleResult | SettlementError | "pending"> {
    const { settler } = this.o;
    const req = requestFromJson(rec.request);
    try {
      if (settler.confirm && rec.transaction) {
        const r = await settler.confirm(req, rec.transaction);
        if (r) return r;
      } else if (settler.lookup) {
        const r = await settler.lookup(req);
        if (r) return r;
      } else if (rec.state === "intent") {
        // never sent again: the settler cannot look without sending, so only the authorization's expiry ends it
      } else {
        return await settler.settle(req);
      }
    } catch (err) {
      // a definite failure ends it; an unknown outcome (RPC trouble, "already used" by maybe our own transfer) is looked at again
      if (err instanceof SettlementError && !err.pending && err.reason !== "unexpected_settle_error" && err.reason !== NONCE_USED) return err;
    }
    if (this.o.now() / 1000 > Number(rec.validBefore) + this.o.graceSeconds) {
      return new SettlementError("settlement_expired", `no confirmed transfer before the authorization expired${rec.transaction ? ` (transaction ${rec.transaction})` : ""}`, { transaction: rec.transaction });
    }
    return "pending";
  }
}
