/**
 * Durable store in one SQLite file (better-sqlite3, WAL journal). Several
 * processes may open the same file: every multi-step operation runs in a
 * `BEGIN IMMEDIATE` transaction, so they stay consistent. The per-request
 * calls (reserve, commit, release) made during one turn of the event loop
 * share one such transaction. better-sqlite3 is synchronous; calls block the
 * event loop for microseconds (longer while waiting up to `busyTimeoutMs` for
 * another process's write lock).
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { StoreError } from "../errors.js";
import { requireOptional } from "../optional.js";
import { payerClaimRefusal, type LedgerEntry, type NonceState, type OutboxItem, type PayerClaim, type PayerHold, type PaymentIdClaim, type ReserveResult, type Store, type StoredPayment } from "./store.js";
import {
  DEFAULT_LEDGER_LIMIT,
  DEFAULT_PAYMENT_RETENTION_MS,
  RESERVATION_GC_MS,
  TurnBatch,
  duplicatePaymentError,
  ledgerBody,
  OPTIONAL_PAYMENT_FIELDS,
  paymentFromRecord,
  paymentToRecord,
  reserveRejection,
  toStoreError,
  type BatchedCall,
} from "./shared.js";
import { newReservationId, reservationPaymentId } from "./tokens.js";

/** Options of `SqliteStore`. */
export interface SqliteStoreOptions {
  /** Database file. Its directory is created if missing. */
  path: string;
  /** How long to wait for another process's write lock before failing. Default 5000 ms. */
  busyTimeoutMs?: number;
  /**
   * SQLite `synchronous` level of the frequent writes (reserve, commit, nonce
   * claims). With WAL, `"normal"` (default) makes every commit survive a
   * killed process (kill -9) but not an OS crash or power loss; `"full"` also
   * survives those at the cost of one fsync per write (about 10x slower on a
   * typical disk). Writes that record money (createPayment, markPaid,
   * setNonceState, appendLedger) always run with `synchronous = FULL`.
   */
  synchronous?: "full" | "normal";
  /** How long a payment is kept after it expires. Default 30 days. */
  paymentRetentionMs?: number;
  /** How often expired nonces, old reservations and old payments are deleted. Default 60 000 ms. */
  sweepIntervalMs?: number;
}

/** Schema version this code writes; stored in `meta.schema_version`. */
export const SQLITE_SCHEMA_VERSION = 1;

/** Migrations: entry i brings the schema from version i to i + 1. */
const MIGRATIONS = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE nonces (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, "transaction" TEXT, expiresAt INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX nonces_expiry ON nonces (expiresAt);
  CREATE TABLE payments (
    paymentId TEXT PRIMARY KEY, serviceId TEXT NOT NULL, tokenHash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL, amountCents INTEGER NOT NULL, amountAtomic TEXT NOT NULL,
    currency TEXT NOT NULL, billingMode TEXT NOT NULL, maxCalls INTEGER NOT NULL,
    callsUsed INTEGER NOT NULL, expiresAt INTEGER NOT NULL, createdAt INTEGER NOT NULL,
    paidAt INTEGER, payTo TEXT NOT NULL, provider TEXT, "transaction" TEXT, network TEXT,
    payer TEXT, createdBy TEXT
  );
  CREATE INDEX payments_expiry ON payments (expiresAt);
  CREATE INDEX payments_pending ON payments (expiresAt) WHERE status = 'pending';
  CREATE TABLE reservations (
    paymentId TEXT NOT NULL, id TEXT NOT NULL, leaseUntil INTEGER NOT NULL, PRIMARY KEY (paymentId, id)
  ) WITHOUT ROWID;
  CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, method TEXT NOT NULL,
    payer TEXT NOT NULL, amount TEXT NOT NULL, asset TEXT NOT NULL, network TEXT NOT NULL,
    "transaction" TEXT, resource TEXT NOT NULL, serviceId TEXT, paymentId TEXT
  );
  `,
];

const OPTIONAL_PAYMENT_COLUMNS = Object.fromEntries(OPTIONAL_PAYMENT_FIELDS.map((k) => [k, null]));
const OPTIONAL_LEDGER_COLUMNS = { transaction: null, serviceId: null, paymentId: null };

type Row = Record<string, unknown>;

/** A reserve, commit or release waiting for the next batch transaction. */
interface Queued extends BatchedCall {
  fn: () => unknown;
}

/** A `Store` in one SQLite file, durable across restarts and crashes. */
export class SqliteStore implements Store {
  private readonly db: BetterSqlite3.Database;
  private readonly s: ReturnType<SqliteStore["prepare"]>;
  private readonly t: ReturnType<SqliteStore["transactions"]>;
  private readonly baseSync: "FULL" | "NORMAL";
  private readonly retentionMs: number;
  private timer?: NodeJS.Timeout;
  /** Calls queued for the next batch transaction (see `batched`). */
  private readonly batch = new TurnBatch<Queued>((calls) => this.runBatch(calls));

  constructor(opts: SqliteStoreOptions) {
    const Database = requireOptional<typeof BetterSqlite3>("better-sqlite3", "better-sqlite3", "SqliteStore (server402/sqlite)");
    this.retentionMs = opts.paymentRetentionMs ?? DEFAULT_PAYMENT_RETENTION_MS;
    let db: BetterSqlite3.Database | undefined;
    try {
      if (opts.path !== ":memory:") mkdirSync(dirname(opts.path), { recursive: true });
      this.db = db = new Database(opts.path, { timeout: opts.busyTimeoutMs ?? 5000 });
      this.db.pragma("journal_mode = WAL");
      this.baseSync = opts.synchronous === "full" ? "FULL" : "NORMAL";
      this.db.pragma(`synchronous = ${this.baseSync}`);
      this.migrate();
      this.s = this.prepare();
      this.t = this.transactions();
      this.sweep();
    } catch (err) {
      if (db?.open) db.close();
      throw toStoreError("SqliteStore", `open ${opts.path}`, err);
    }
    this.timer = setInterval(() => {
      try {
        this.sweep();
      } catch {
        // Housekeeping only; the next operation reports a broken database.
      }
    }, opts.sweepIntervalMs ?? 60_000);
    this.timer.unref();
  }

  private migrate(): void {
    this.db
      .transaction(() => {
        const hasMeta = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
        const row = hasMeta ? (this.db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined) : undefined;
        const version = row ? Number(row.value) : 0;
        if (version > SQLITE_SCHEMA_VERSION) {
          throw new StoreError(`server402: database schema version ${version} is newer than this server402 supports (${SQLITE_SCHEMA_VERSION}); upgrade server402`);
        }
        for (let v = version; v < SQLITE_SCHEMA_VERSION; v++) this.db.exec(MIGRATIONS[v]);
        if (version < SQLITE_SCHEMA_VERSION) {
          this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)").run(String(SQLITE_SCHEMA_VERSION));
        }
      })
      .immediate();
  }

  private prepare() {
    const db = this.db;
    return {
      claimNonce: db.prepare(
        `INSERT INTO nonces (key, state, expiresAt) VALUES (?, 'locked', ?)
         ON CONFLICT (key) DO UPDATE SET state = 'locked', "transaction" = NULL, expiresAt = excluded.expiresAt
         WHERE nonces.expiresAt <= ?`,
      ),
      releaseNonce: db.prepare("DELETE FROM nonces WHERE key = ? AND state = 'locked'"),
      setNonceState: db.prepare(`UPDATE nonces SET state = ?, "transaction" = ? WHERE key = ? AND expiresAt > ?`),
      getNonce: db.prepare(`SELECT state, "transaction" FROM nonces WHERE key = ? AND expiresAt > ?`),
      insertPayment: db.prepare(
        `INSERT INTO payments (paymentId, serviceId, tokenHash, status, amountCents, amountAtomic, currency,
           billingMode, maxCalls, callsUsed, expiresAt, createdAt, paidAt, payTo, provider, "transaction",
           network, payer, createdBy)
         VALUES (@paymentId, @serviceId, @tokenHash, @status, @amountCents, @amountAtomic, @currency,
           @billingMode, @maxCalls, @callsUsed, @expiresAt, @createdAt, @paidAt, @payTo, @provider, @transaction,
           @network, @payer, @createdBy)`,
      ),
      getPayment: db.prepare("SELECT * FROM payments WHERE paymentId = ?"),
      paymentByToken: db.prepare("SELECT * FROM payments WHERE tokenHash = ?"),
      markPaid: db.prepare(
        `UPDATE payments SET status = 'paid', paidAt = @paidAt,
           "transaction" = coalesce(@transaction, "transaction"), provider = coalesce(@provider, provider),
           network = coalesce(@network, network), payer = coalesce(@payer, payer)
         WHERE paymentId = @paymentId AND status = 'pending'`,
      ),
      countPending: db.prepare("SELECT count(*) AS n FROM payments WHERE status = 'pending' AND expiresAt > ?").pluck(),
      reclaim: db.prepare("DELETE FROM reservations WHERE paymentId = ? AND leaseUntil <= ?"),
      countLive: db.prepare("SELECT count(*) FROM reservations WHERE paymentId = ?").pluck(),
      insertReservation: db.prepare("INSERT INTO reservations (id, paymentId, leaseUntil) VALUES (?, ?, ?)"),
      deleteReservation: db.prepare("DELETE FROM reservations WHERE paymentId = ? AND id = ?"),
      useCall: db.prepare("UPDATE payments SET callsUsed = callsUsed + 1 WHERE paymentId = ?"),
      appendLedger: db.prepare(
        `INSERT INTO ledger (time, method, payer, amount, asset, network, "transaction", resource, serviceId, paymentId)
         VALUES (@time, @method, @payer, @amount, @asset, @network, @transaction, @resource, @serviceId, @paymentId)`,
      ),
      listLedger: db.prepare("SELECT * FROM ledger WHERE id > ? ORDER BY id LIMIT ?"),
      sweepNonces: db.prepare("DELETE FROM nonces WHERE expiresAt <= ?"),
      sweepReservations: db.prepare("DELETE FROM reservations WHERE leaseUntil <= ?"),
      sweepPaymentReservations: db.prepare(
        "DELETE FROM reservations WHERE paymentId IN (SELECT paymentId FROM payments WHERE expiresAt <= ?)",
      ),
      sweepPayments: db.prepare("DELETE FROM payments WHERE expiresAt <= ?"),
      ping: db.prepare("SELECT 1"),
      syncFull: db.prepare("PRAGMA synchronous = FULL"),
      syncBase: db.prepare(`PRAGMA synchronous = ${this.baseSync}`),
    };
  }

  /** The multi-statement operations, as better-sqlite3 transaction functions (run with `.immediate`). */
  private transactions() {
    const { db, s } = this;
    const savepoint = db.transaction((fn: () => unknown) => fn());
    return {
      markPaid: db.transaction((paymentId: string, paid: Parameters<Store["markPaid"]>[1]) => {
        const changed =
          s.markPaid.run({
            paymentId,
            paidAt: paid.paidAt,
            transaction: paid.transaction ?? null,
            provider: paid.provider ?? null,
            network: paid.network ?? null,
            payer: paid.payer ?? null,
          }).changes === 1;
        const row = s.getPayment.get(paymentId) as Row | undefined;
        return row && { payment: paymentFromRecord(row), changed };
      }),
      reserve: db.transaction((tokenHash: string, serviceId: string, now: number, leaseMs: number): ReserveResult => {
        const row = s.paymentByToken.get(tokenHash) as Row | undefined;
        if (!row) return { ok: false, reason: "unknown_token" };
        const payment = paymentFromRecord(row);
        let live = s.countLive.get(payment.paymentId) as number;
        let reason = reserveRejection(payment, serviceId, now, live);
        if (reason === "exhausted" && live > 0) {
          // only when lapsed leases could make room: reclaim them (they can no longer commit) and look again
          s.reclaim.run(payment.paymentId, now);
          live = s.countLive.get(payment.paymentId) as number;
          reason = reserveRejection(payment, serviceId, now, live);
        }
        if (reason) return { ok: false, reason, payment };
        const reservationId = newReservationId(payment.paymentId);
        s.insertReservation.run(reservationId, payment.paymentId, now + leaseMs);
        return { ok: true, payment, reservationId };
      }),
      commit: db.transaction((reservationId: string, paymentId: string) => {
        if (s.deleteReservation.run(paymentId, reservationId).changes === 0) return false;
        return s.useCall.run(paymentId).changes === 1;
      }),
      /** Run queued calls, each in its own savepoint; one failing does not undo the others. */
      batch: db.transaction((queue: Queued[], results: Array<{ ok: boolean; value: unknown }>) => {
        for (let i = 0; i < queue.length; i++) {
          try {
            results[i] = { ok: true, value: savepoint(queue[i]!.fn) };
          } catch (err) {
            results[i] = { ok: false, value: err };
          }
        }
      }),
      sweep: db.transaction((now: number) => {
        s.sweepNonces.run(now);
        s.sweepReservations.run(now - RESERVATION_GC_MS);
        if (Number.isFinite(this.retentionMs)) {
          s.sweepPaymentReservations.run(now - this.retentionMs);
          s.sweepPayments.run(now - this.retentionMs);
        }
      }),
    };
  }

  /** Run `fn` and wrap any backend failure in `StoreError`. */
  private run<T>(op: string, fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(toStoreError("SqliteStore", op, err));
    }
  }

  /**
   * Queue `fn` for the batch transaction that runs once this turn of the
   * event loop has taken in all ready I/O (setImmediate). Under load, many
   * paid requests' reserves, commits and releases then share one write lock,
   * one WAL append and the occasional checkpoint instead of paying for one
   * each; alone, a call waits less than a millisecond. Each call runs in its
   * own savepoint and its promise settles only after the transaction
   * committed, so nothing is reported done that a crash could undo.
   */
  private batched<T>(op: string, fn: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => this.batch.add({ op, fn, resolve: resolve as (v: unknown) => void, reject }));
  }

  /** Run queued calls in one `BEGIN IMMEDIATE` transaction and settle their promises. */
  private runBatch(queue: Queued[]): void {
    const results: Array<{ ok: boolean; value: unknown }> = new Array(queue.length);
    try {
      if (!this.db.open) throw toStoreError("SqliteStore", "batch", "the database connection is not open");
      this.t.batch.immediate(queue, results);
    } catch (err) {
      for (const q of queue) q.reject(toStoreError("SqliteStore", q.op, err));
      return;
    }
    for (let i = 0; i < queue.length; i++) {
      const q = queue[i]!;
      const r = results[i]!;
      if (r.ok) q.resolve(r.value);
      else q.reject(toStoreError("SqliteStore", q.op, r.value));
    }
  }

  /** Like `run`, with `synchronous = FULL` for the commit(s) `fn` makes: for writes that record money. */
  private durable<T>(op: string, fn: () => T): Promise<T> {
    return this.run(op, () => {
      if (this.baseSync === "FULL") return fn();
      this.s.syncFull.run();
      try {
        return fn();
      } finally {
        this.s.syncBase.run();
      }
    });
  }

  /**
   * Delete expired nonces, reservations lapsed more than an hour ago and
   * payments past their retention. Runs at open and periodically.
   */
  sweep(now = Date.now()): void {
    this.t.sweep.immediate(now);
  }

  claimNonce(key: string, expiresAt: number): Promise<boolean> {
    return this.run("claimNonce", () => {
      const now = Date.now();
      return this.s.claimNonce.run(key, expiresAt, now).changes === 1;
    });
  }

  releaseNonce(key: string): Promise<void> {
    return this.run("releaseNonce", () => {
      this.s.releaseNonce.run(key);
    });
  }

  setNonceState(key: string, state: Exclude<NonceState, "locked">, transaction?: string): Promise<void> {
    return this.durable("setNonceState", () => {
      this.s.setNonceState.run(state, transaction ?? null, key, Date.now());
    });
  }

  getNonce(key: string): Promise<{ state: NonceState; transaction?: string } | undefined> {
    return this.run("getNonce", () => {
      const row = this.s.getNonce.get(key, Date.now()) as { state: NonceState; transaction: string | null } | undefined;
      if (!row) return undefined;
      return row.transaction === null ? { state: row.state } : { state: row.state, transaction: row.transaction };
    });
  }

  // --- Abuse limits of x402 payments: a payer's held payments and given-back runs ---
  // Their tables are created on first use (IF NOT EXISTS), so they need no schema migration; rows
  // whose nonce is gone are deleted with it (payer_nonces) or at expiry (given_back), at most once a minute.
  private abuse?: ReturnType<SqliteStore["prepareAbuse"]>;
  private abuseSweptAt = 0;

  private prepareAbuse() {
    const db = this.db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS payer_nonces (key TEXT PRIMARY KEY, payer TEXT NOT NULL, amount TEXT NOT NULL) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS payer_nonces_payer ON payer_nonces (payer);
      CREATE TABLE IF NOT EXISTS given_back (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expiresAt INTEGER NOT NULL) WITHOUT ROWID;
    `);
    const s = {
      nonce: db.prepare("SELECT state, expiresAt FROM nonces WHERE key = ? AND expiresAt > ?"),
      givenBack: db.prepare("SELECT count FROM given_back WHERE key = ? AND expiresAt > ?").pluck(),
      others: db.prepare("SELECT n.state, p.amount FROM payer_nonces p JOIN nonces n ON n.key = p.key WHERE p.payer = ? AND n.expiresAt > ?"),
      claim: db.prepare(
        `INSERT INTO nonces (key, state, expiresAt) VALUES (?, 'locked', ?)
         ON CONFLICT (key) DO UPDATE SET state = 'locked', "transaction" = NULL, expiresAt = excluded.expiresAt`,
      ),
      hold: db.prepare("INSERT OR REPLACE INTO payer_nonces (key, payer, amount) VALUES (?, ?, ?)"),
      release: db.prepare("DELETE FROM nonces WHERE key = ? AND state = 'locked' RETURNING expiresAt").pluck(),
      countBack: db.prepare(
        `INSERT INTO given_back (key, count, expiresAt) VALUES (?, 1, ?)
         ON CONFLICT (key) DO UPDATE SET count = CASE WHEN given_back.expiresAt > ? THEN given_back.count + 1 ELSE 1 END,
           expiresAt = max(given_back.expiresAt, excluded.expiresAt)
         RETURNING count`,
      ).pluck(),
      sweepHolds: db.prepare("DELETE FROM payer_nonces WHERE key NOT IN (SELECT key FROM nonces)"),
      sweepBack: db.prepare("DELETE FROM given_back WHERE expiresAt <= ?"),
    };
    const claim = db.transaction((key: string, expiresAt: number, hold: PayerHold, now: number): PayerClaim => {
      if (now - this.abuseSweptAt > 60_000) {
        this.abuseSweptAt = now;
        s.sweepHolds.run();
        s.sweepBack.run(now);
      }
      const prior = s.nonce.get(key, now) as { state: NonceState } | undefined;
      if (prior) return { ok: false, reason: prior.state === "locked" ? "in_use" : "used" };
      const others = s.others.all(hold.payer, now) as { state: NonceState; amount: string }[];
      const refusal = payerClaimRefusal(hold, (s.givenBack.get(key, now) as number | undefined) ?? 0, others);
      if (refusal) return { ok: false, ...refusal };
      s.claim.run(key, expiresAt);
      s.hold.run(key, hold.payer, hold.amount);
      return { ok: true, others: others.length };
    });
    const giveBack = db.transaction((key: string, now: number): number => {
      const expiresAt = s.release.get(key) as number | undefined;
      if (expiresAt === undefined) return (s.givenBack.get(key, now) as number | undefined) ?? 0;
      return s.countBack.get(key, expiresAt, now) as number;
    });
    return { claim, giveBack };
  }

  claimPayerNonce(key: string, expiresAt: number, hold: PayerHold): Promise<PayerClaim> {
    return this.run("claimPayerNonce", () => (this.abuse ??= this.prepareAbuse()).claim.immediate(key, expiresAt, hold, Date.now()));
  }

  giveBackNonce(key: string): Promise<number> {
    return this.run("giveBackNonce", () => (this.abuse ??= this.prepareAbuse()).giveBack.immediate(key, Date.now()));
  }

  createPayment(payment: StoredPayment): Promise<void> {
    return this.durable("createPayment", () => {
      try {
        this.s.insertPayment.run({ ...OPTIONAL_PAYMENT_COLUMNS, ...paymentToRecord(payment) });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE") throw duplicatePaymentError(payment.paymentId);
        throw err;
      }
    });
  }

  getPayment(paymentId: string): Promise<StoredPayment | undefined> {
    return this.run("getPayment", () => {
      const row = this.s.getPayment.get(paymentId) as Row | undefined;
      return row && paymentFromRecord(row);
    });
  }

  markPaid(
    paymentId: string,
    paid: { paidAt: number; transaction?: string; provider?: string; network?: string; payer?: string },
  ): Promise<{ payment: StoredPayment; changed: boolean } | undefined> {
    return this.durable("markPaid", () => this.t.markPaid.immediate(paymentId, paid));
  }

  countPending(now: number): Promise<number> {
    return this.run("countPending", () => this.s.countPending.get(now) as number);
  }

  reserveCall(tokenHash: string, serviceId: string, now: number, leaseMs: number): Promise<ReserveResult> {
    return this.batched("reserveCall", () => this.t.reserve(tokenHash, serviceId, now, leaseMs));
  }

  commitCall(reservationId: string): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve(false);
    return this.batched("commitCall", () => this.t.commit(reservationId, paymentId));
  }

  releaseCall(reservationId: string): Promise<void> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve();
    return this.batched("releaseCall", () => {
      this.s.deleteReservation.run(paymentId, reservationId);
    });
  }

  // --- lease renewal (issue 14 A4) ---
  private renewStatement?: BetterSqlite3.Statement;
  renewCall(reservationId: string, now: number, leaseMs: number): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve(false);
    return this.batched("renewCall", () => {
      this.renewStatement ??= this.db.prepare("UPDATE reservations SET leaseUntil = ? WHERE paymentId = ? AND id = ?");
      return this.renewStatement.run(now + leaseMs, paymentId, reservationId).changes === 1;
    });
  }
  // --- end lease renewal ---

  appendLedger(entry: LedgerEntry): Promise<number> {
    return this.durable("appendLedger", () => Number(this.s.appendLedger.run({ ...OPTIONAL_LEDGER_COLUMNS, ...ledgerBody(entry) }).lastInsertRowid));
  }

  listLedger(opts: { afterId?: number; limit?: number } = {}): Promise<LedgerEntry[]> {
    return this.run("listLedger", () =>
      (this.s.listLedger.all(opts.afterId ?? 0, opts.limit ?? DEFAULT_LEDGER_LIMIT) as (Row & { id: number })[]).map(
        (row) => ({ ...(ledgerBody(row as unknown as LedgerEntry) as LedgerEntry), id: row.id }),
      ),
    );
  }

  ping(): Promise<void> {
    return this.run("ping", () => {
      this.s.ping.get();
    });
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.db.open) this.batch.flush(); // queued calls still run
    return this.run("close", () => {
      if (this.db.open) this.db.close();
    });
  }

  // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
  // Their tables are created on first use (IF NOT EXISTS), apart from the numbered migrations.
  private rec?: ReturnType<SqliteStore["prepareRecords"]>;

  private records() {
    return (this.rec ??= this.prepareRecords());
  }

  private prepareRecords() {
    const db = this.db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS outbox (id TEXT PRIMARY KEY, record TEXT NOT NULL, createdAt INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS outbox_age ON outbox (createdAt);
      CREATE TABLE IF NOT EXISTS ledger_keys (key TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS held_answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, expiresAt INTEGER NOT NULL) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS held_answers_expiry ON held_answers (expiresAt);
    `);
    const s = {
      putOutbox: db.prepare("INSERT INTO outbox (id, record, createdAt) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record"),
      listOutbox: db.prepare("SELECT id, record FROM outbox ORDER BY createdAt, id LIMIT ?"),
      deleteOutbox: db.prepare("DELETE FROM outbox WHERE id = ?"),
      ledgerKey: db.prepare("SELECT id FROM ledger_keys WHERE key = ?").pluck(),
      insertLedgerKey: db.prepare("INSERT INTO ledger_keys (key, id) VALUES (?, ?)"),
      releasePending: db.prepare("DELETE FROM nonces WHERE key = ? AND state = 'pending'"),
      putHeld: db.prepare("INSERT OR REPLACE INTO held_answers (key, answer, expiresAt) VALUES (?, ?, ?)"),
      dropExpiredHeld: db.prepare("DELETE FROM held_answers WHERE expiresAt <= ?"),
      getHeld: db.prepare("SELECT answer FROM held_answers WHERE key = ? AND expiresAt > ?").pluck(),
      deleteHeld: db.prepare("DELETE FROM held_answers WHERE key = ?"),
    };
    const appendOnce = db.transaction((key: string, entry: LedgerEntry): number => {
      const known = s.ledgerKey.get(key) as number | undefined;
      if (known !== undefined) return known;
      const id = Number(this.s.appendLedger.run({ ...OPTIONAL_LEDGER_COLUMNS, ...ledgerBody(entry) }).lastInsertRowid);
      s.insertLedgerKey.run(key, id);
      return id;
    });
    return { ...s, appendOnce };
  }

  putOutbox(id: string, record: string): Promise<void> {
    return this.durable("putOutbox", () => {
      this.records().putOutbox.run(id, record, Date.now());
    });
  }

  listOutbox(limit: number): Promise<OutboxItem[]> {
    return this.run("listOutbox", () => this.records().listOutbox.all(limit) as OutboxItem[]);
  }

  deleteOutbox(id: string): Promise<void> {
    return this.run("deleteOutbox", () => {
      this.records().deleteOutbox.run(id);
    });
  }

  appendLedgerOnce(key: string, entry: LedgerEntry): Promise<number> {
    return this.durable("appendLedgerOnce", () => this.records().appendOnce.immediate(key, entry));
  }

  releasePendingNonce(key: string): Promise<void> {
    return this.run("releasePendingNonce", () => {
      this.records().releasePending.run(key);
    });
  }

  putHeldAnswer(key: string, answer: string, expiresAt: number): Promise<void> {
    return this.durable("putHeldAnswer", () => {
      const r = this.records();
      r.dropExpiredHeld.run(Date.now());
      r.putHeld.run(key, answer, expiresAt);
    });
  }

  getHeldAnswer(key: string): Promise<string | undefined> {
    return this.run("getHeldAnswer", () => (this.records().getHeld.get(key, Date.now()) as string | undefined) ?? undefined);
  }

  deleteHeldAnswer(key: string): Promise<void> {
    return this.run("deleteHeldAnswer", () => {
      this.records().deleteHeld.run(key);
    });
  }

  // ---- Payment identifiers (issue 17 part 3): idempotent retries ----
  // Their table is created on first use (IF NOT EXISTS), so it needs no schema migration. A claim
  // runs in one IMMEDIATE transaction, so processes sharing the file see one order of claims.
  private pids?: ReturnType<SqliteStore["preparePaymentIds"]>;

  private preparePaymentIds() {
    const db = this.db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS payment_ids (key TEXT PRIMARY KEY, owner TEXT NOT NULL, record TEXT NOT NULL, expiresAt INTEGER NOT NULL) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS payment_ids_expiry ON payment_ids (expiresAt);
    `);
    const s = {
      get: db.prepare("SELECT record FROM payment_ids WHERE key = ? AND expiresAt > ?").pluck(),
      dropExpired: db.prepare("DELETE FROM payment_ids WHERE expiresAt <= ?"),
      count: db.prepare("SELECT count(*) FROM payment_ids").pluck(),
      put: db.prepare("INSERT OR REPLACE INTO payment_ids (key, owner, record, expiresAt) VALUES (?, ?, ?, ?)"),
      update: db.prepare("UPDATE payment_ids SET record = ?, expiresAt = ? WHERE key = ? AND owner = ? AND expiresAt > ?"),
      release: db.prepare("DELETE FROM payment_ids WHERE key = ? AND owner = ?"),
    };
    const claim = db.transaction((key: string, owner: string, record: string, expiresAt: number, maxEntries: number, now: number): PaymentIdClaim => {
      const live = s.get.get(key, now) as string | undefined;
      if (live !== undefined) return { ok: false, record: live };
      if ((s.count.get() as number) >= maxEntries) {
        s.dropExpired.run(now);
        if ((s.count.get() as number) >= maxEntries) return { ok: false, full: true };
      }
      s.put.run(key, owner, record, expiresAt);
      return { ok: true };
    });
    return { ...s, claim };
  }

  claimPaymentId(key: string, owner: string, record: string, expiresAt: number, maxEntries: number): Promise<PaymentIdClaim> {
    return this.run("claimPaymentId", () => (this.pids ??= this.preparePaymentIds()).claim.immediate(key, owner, record, expiresAt, maxEntries, Date.now()));
  }

  updatePaymentId(key: string, owner: string, record: string, expiresAt: number): Promise<boolean> {
    return this.durable("updatePaymentId", () => (this.pids ??= this.preparePaymentIds()).update.run(record, expiresAt, key, owner, Date.now()).changes === 1);
  }

  releasePaymentId(key: string, owner: string): Promise<void> {
    return this.run("releasePaymentId", () => {
      (this.pids ??= this.preparePaymentIds()).release.run(key, owner);
    });
  }
  // ---- end payment identifiers ----
}
