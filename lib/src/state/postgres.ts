/**
 * Store in PostgreSQL (`pg`), shared by every process that uses the same
 * database and `schema`: the place for money records (payments, their calls,
 * the ledger) when several instances serve one seller.
 *
 * All objects live in one schema (default `server402`), created and migrated
 * on first use; migrations are idempotent and serialized across instances by
 * an advisory lock. Every operation is one statement (several steps run in a
 * PL/pgSQL function), so each is one round trip and one transaction, and
 * durable once it returns (PostgreSQL's default `synchronous_commit = on`).
 *
 * Concurrency: a token call's reserve, commit and release lock the payment's
 * row first (`FOR UPDATE`); the reservations of a payment are only changed
 * under that lock, so every process sees one order of calls per payment.
 * The token calls and ledger appends made during one turn of the event loop
 * go in one function call (one transaction, one commit), which locks all the
 * payment rows it needs up front in payment id order, then the ledger's lock,
 * so two batches never deadlock. A payer's x402 claims (`claimPayerNonce`)
 * are serialized by an advisory lock per payer, so two claims never count the
 * same balance. Housekeeping deletes with `FOR UPDATE SKIP LOCKED`, so it
 * never waits on live requests.
 *
 * Outage: the pool is bounded (`max`), a connection attempt or a query that
 * takes too long fails, and every failure is a `StoreError`
 * (`store_unavailable`, which the adapters answer with 503). The pool
 * reconnects by itself once the database is back. Writes that record money
 * already taken (a ledger record, a nonce's final state, a served token
 * call's commit) are retried through a short outage instead (see
 * `recordRetryMs`), as are the outbox and held answers; a ledger record
 * carries a key of its own (the caller's with `appendLedgerOnce`), so a
 * retry after a lost reply does not write it twice.
 */
import { randomUUID } from "node:crypto";
import type { Pool, PoolConfig } from "pg";
import { ConfigError, StoreError } from "../errors.js";
import { requireOptional } from "../optional.js";
import type { LedgerEntry, NonceState, OutboxItem, PayerClaim, PayerHold, PaymentIdClaim, ReserveFailure, ReserveResult, Store, StoredPayment } from "./store.js";
import {
  DEFAULT_LEDGER_LIMIT,
  DEFAULT_PAYMENT_RETENTION_MS,
  RESERVATION_GC_MS,
  TurnBatch,
  duplicatePaymentError,
  ledgerBody,
  paymentFromRecord,
  toStoreError,
  type BatchedCall,
} from "./shared.js";
import { newReservationId, reservationPaymentId } from "./tokens.js";

/** Options of `PostgresStore`: give either `connectionString` or an existing `pg` `pool`. */
export interface PostgresStoreOptions {
  /** `postgres://user:pass@host:port/db`. The store owns this pool and ends it on `close()`. */
  connectionString?: string;
  /**
   * An existing `pg.Pool`. The store does not end it. Give it a
   * `connectionTimeoutMillis` (and `query_timeout`) or a down database may
   * make requests wait long.
   */
  pool?: Pool;
  /** Schema holding the store's tables (created if missing). Default `server402`. */
  schema?: string;
  /** Most connections the store's own pool opens. Default 10. */
  max?: number;
  /** How long to wait for a connection (new, or a free one of the pool) before failing. Default 2000 ms. */
  connectTimeoutMs?: number;
  /** How long a query may take before it fails (client side; the connection is then dropped). Default 5000 ms. */
  queryTimeoutMs?: number;
  /**
   * How long `appendLedger`, `setNonceState` and `commitCall` keep retrying
   * while the database is unreachable (the money was already taken; the
   * record must not be lost to a restart or failover). Other calls fail at
   * once. Default 30 000 ms; 0 disables.
   */
  recordRetryMs?: number;
  /** How long a payment is kept after it expires. Default 30 days. */
  paymentRetentionMs?: number;
  /** How often expired nonces, old reservations and old payments are deleted. Default 60 000 ms. */
  sweepIntervalMs?: number;
}

/** Schema version this code writes; stored in `<schema>.meta`. */
export const POSTGRES_SCHEMA_VERSION = 2;

/** Payment fields and the columns that hold them (amounts as text, so no digit is lost on the way). */
const PAYMENT_COLUMNS: Record<keyof StoredPayment, string> = {
  paymentId: "payment_id",
  serviceId: "service_id",
  tokenHash: "token_hash",
  status: "status",
  amountCents: "amount_cents",
  amountAtomic: "amount_atomic::text",
  currency: "currency",
  billingMode: "billing_mode",
  maxCalls: "max_calls",
  callsUsed: "calls_used",
  expiresAt: "expires_at",
  createdAt: "created_at",
  paidAt: "paid_at",
  payTo: "pay_to",
  provider: "provider",
  transaction: '"transaction"',
  network: "network",
  payer: "payer",
  createdBy: "created_by",
};
/** `SELECT` list giving a payment's fields under their `StoredPayment` names. */
const PAYMENT_SELECT = Object.entries(PAYMENT_COLUMNS)
  .map(([field, col]) => `${col} AS "${field}"`)
  .join(", ");
const PAYMENT_FIELDS = Object.keys(PAYMENT_COLUMNS) as (keyof StoredPayment)[];
const PAYMENT_INSERT_COLUMNS = Object.values(PAYMENT_COLUMNS)
  .map((c) => c.replace("::text", ""))
  .join(", ");

/**
 * Migrations: entry i brings schema `s` (a quoted identifier) from version i
 * to i + 1. Never edit one that has shipped; add the next. Exported for the
 * tests that build an older schema.
 */
export const POSTGRES_MIGRATIONS: ReadonlyArray<(s: string) => string> = [
  (s) => `
  CREATE TABLE ${s}.nonces (
    key text PRIMARY KEY, state text NOT NULL, "transaction" text, expires_at bigint NOT NULL
  );
  CREATE INDEX nonces_expiry ON ${s}.nonces (expires_at);
  CREATE TABLE ${s}.payments (
    payment_id text PRIMARY KEY, service_id text NOT NULL, token_hash text NOT NULL UNIQUE,
    status text NOT NULL CHECK (status IN ('pending', 'paid')), amount_cents integer NOT NULL,
    amount_atomic numeric(78, 0) NOT NULL, currency text NOT NULL, billing_mode text NOT NULL,
    max_calls integer NOT NULL, calls_used integer NOT NULL CHECK (calls_used >= 0),
    expires_at bigint NOT NULL, created_at bigint NOT NULL, paid_at bigint, pay_to text NOT NULL,
    provider text, "transaction" text, network text, payer text, created_by text
  );
  CREATE INDEX payments_expiry ON ${s}.payments (expires_at);
  CREATE INDEX payments_pending ON ${s}.payments (expires_at) WHERE status = 'pending';
  CREATE TABLE ${s}.reservations (
    payment_id text NOT NULL, id text NOT NULL, lease_until bigint NOT NULL, PRIMARY KEY (payment_id, id)
  );
  CREATE INDEX reservations_lease ON ${s}.reservations (lease_until);
  CREATE TABLE ${s}.ledger (
    id bigserial PRIMARY KEY, time bigint NOT NULL, method text NOT NULL, payer text NOT NULL,
    amount numeric(78, 0) NOT NULL, asset text NOT NULL, network text NOT NULL, "transaction" text,
    resource text NOT NULL, service_id text, payment_id text,
    entry_key text UNIQUE -- drawn by the writer, so a retried append is written once
  );

  -- One payment as JSON under its StoredPayment field names.
  CREATE FUNCTION ${s}.payment_json(pid text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(to_jsonb(x)) FROM (SELECT ${PAYMENT_SELECT} FROM ${s}.payments WHERE payment_id = pid) x
  $$;

  -- Append a ledger record under its key, or return the id of the record
  -- already written under it. The advisory lock, held until commit, makes ids
  -- visible in increasing order, so a reader paging by id never skips one
  -- that commits late.
  CREATE FUNCTION ${s}.append_ledger(e jsonb, k text) RETURNS bigint LANGUAGE plpgsql AS $$
  DECLARE new_id bigint;
  BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('server402 ledger ' || '${s}'));
    INSERT INTO ${s}.ledger (time, method, payer, amount, asset, network, "transaction", resource, service_id, payment_id, entry_key)
    VALUES ((e->>'time')::bigint, e->>'method', e->>'payer', (e->>'amount')::numeric, e->>'asset', e->>'network',
            e->>'transaction', e->>'resource', e->>'serviceId', e->>'paymentId', k)
    ON CONFLICT (entry_key) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
      SELECT id INTO new_id FROM ${s}.ledger WHERE entry_key = k;
    END IF;
    RETURN new_id;
  END $$;

  -- The reserves, commits, releases and ledger appends of one turn of the
  -- event loop, in one transaction (one commit for all). ops: [{o:'r', h:tokenHash,
  -- s:serviceId, n:now, l:leaseUntil, r:idWithoutPaymentId} | {o:'c'|'x', p:paymentId,
  -- r:reservationId} | {o:'l', e:entry, k:key}]. Answers one element per op:
  -- reserve {ok:true, p} | {reason, p?}; commit true|false; release null; append
  -- the ledger id; an op that raises an error answers {err} and is undone alone.
  -- Lock order: payment rows (all up front, by id), then the ledger's lock.
  -- The rejection order mirrors reserveRejection() in shared.ts.
  CREATE FUNCTION ${s}.batch(ops jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
  DECLARE
    op jsonb;
    answers jsonb := '[]'::jsonb;
    res jsonb;
    pids text[];
    p ${s}.payments%ROWTYPE;
    live integer;
    reason text;
    now_ms bigint;
    pid text;
  BEGIN
    -- Lock every payment row this batch touches, in one order (payment id).
    pids := ARRAY(
      SELECT payment_id FROM ${s}.payments
      WHERE token_hash IN (SELECT o->>'h' FROM jsonb_array_elements(ops) o WHERE o->>'o' = 'r')
      UNION SELECT o->>'p' FROM jsonb_array_elements(ops) o WHERE o->>'o' IN ('c', 'x'));
    PERFORM 1 FROM ${s}.payments WHERE payment_id = ANY (pids) ORDER BY payment_id FOR UPDATE;
    FOR op IN SELECT * FROM jsonb_array_elements(ops) LOOP
      BEGIN
        IF op->>'o' = 'r' THEN
          SELECT * INTO p FROM ${s}.payments WHERE token_hash = op->>'h';
          IF NOT FOUND THEN
            res := jsonb_build_object('reason', 'unknown_token');
          ELSE
            now_ms := (op->>'n')::bigint;
            reason := NULL;
            IF p.service_id <> op->>'s' THEN reason := 'wrong_service';
            ELSIF p.status = 'paid' AND p.calls_used >= p.max_calls THEN reason := 'exhausted';
            ELSIF now_ms >= p.expires_at THEN reason := 'expired';
            ELSIF p.status <> 'paid' THEN reason := 'pending';
            ELSE
              SELECT count(*) INTO live FROM ${s}.reservations WHERE payment_id = p.payment_id;
              IF p.calls_used + live >= p.max_calls AND live > 0 THEN
                -- only when lapsed leases could make room: reclaim them (they can no longer commit)
                DELETE FROM ${s}.reservations WHERE payment_id = p.payment_id AND lease_until <= now_ms;
                SELECT count(*) INTO live FROM ${s}.reservations WHERE payment_id = p.payment_id;
              END IF;
              IF p.calls_used + live >= p.max_calls THEN
                reason := 'exhausted';
              ELSE
                INSERT INTO ${s}.reservations (payment_id, id, lease_until)
                VALUES (p.payment_id, (op->>'r') || p.payment_id, (op->>'l')::bigint);
              END IF;
            END IF;
            IF reason IS NULL THEN
              res := jsonb_build_object('ok', true, 'p', ${s}.payment_json(p.payment_id));
            ELSE
              res := jsonb_build_object('reason', reason, 'p', ${s}.payment_json(p.payment_id));
            END IF;
          END IF;
        ELSIF op->>'o' = 'c' THEN
          pid := op->>'p';
          DELETE FROM ${s}.reservations WHERE payment_id = pid AND id = op->>'r';
          IF FOUND THEN
            UPDATE ${s}.payments SET calls_used = calls_used + 1 WHERE payment_id = pid;
          END IF;
          res := to_jsonb(FOUND);
        ELSIF op->>'o' = 'l' THEN
          res := to_jsonb(${s}.append_ledger(op->'e', op->>'k'));
        ELSIF op->>'o' = 'x' THEN
          DELETE FROM ${s}.reservations WHERE payment_id = op->>'p' AND id = op->>'r';
          res := 'null'::jsonb;
        ELSE
          RAISE EXCEPTION 'server402 batch: unknown op %', op->>'o';
        END IF;
      EXCEPTION WHEN OTHERS THEN
        res := jsonb_build_object('err', SQLERRM);
      END;
      answers := answers || jsonb_build_array(res);
    END LOOP;
    RETURN answers;
  END $$;
  `,
  // 2: the money-safety records (issue 14): a payer's holds on its nonces, given-back runs, the outbox, held answers.
  (s) => `
  -- Set by claim_payer_nonce: whose payment a nonce holds, and its value (NULL for a plain claimNonce).
  ALTER TABLE ${s}.nonces ADD COLUMN payer text, ADD COLUMN amount numeric(78, 0);
  CREATE INDEX nonces_payer ON ${s}.nonces (payer) WHERE payer IS NOT NULL;
  CREATE TABLE ${s}.given_back (key text PRIMARY KEY, count integer NOT NULL, expires_at bigint NOT NULL);
  CREATE INDEX given_back_expiry ON ${s}.given_back (expires_at);
  CREATE TABLE ${s}.outbox (id text PRIMARY KEY, record text NOT NULL, seq bigserial NOT NULL);
  CREATE INDEX outbox_order ON ${s}.outbox (seq);
  CREATE TABLE ${s}.held_answers (key text PRIMARY KEY, answer text NOT NULL, expires_at bigint NOT NULL);
  CREATE INDEX held_answers_expiry ON ${s}.held_answers (expires_at);

  -- claimNonce checked against the payer's other live nonces, in one transaction. h: the PayerHold
  -- as JSON. The advisory lock serializes the claims of one payer, so two never both count the
  -- same balance; the checks mirror payerClaimRefusal() in store.ts, in its order.
  CREATE FUNCTION ${s}.claim_payer_nonce(k text, exp bigint, now_ms bigint, h jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
  DECLARE
    st text;
    back integer;
    in_flight integer;
    held numeric;
    others integer;
  BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('server402 payer ' || '${s}' || (h->>'payer')));
    SELECT state INTO st FROM ${s}.nonces WHERE key = k AND expires_at > now_ms;
    IF FOUND THEN
      RETURN jsonb_build_object('ok', false, 'reason', CASE WHEN st = 'locked' THEN 'in_use' ELSE 'used' END);
    END IF;
    SELECT g.count INTO back FROM ${s}.given_back g WHERE g.key = k AND g.expires_at > now_ms;
    IF coalesce(back, 0) > (h->>'maxRetries')::integer THEN
      RETURN jsonb_build_object('ok', false, 'reason', 'retries_exhausted');
    END IF;
    SELECT count(*) FILTER (WHERE state = 'locked'), coalesce(sum(amount) FILTER (WHERE state <> 'settled'), 0), count(*)
      INTO in_flight, held, others
      FROM ${s}.nonces WHERE payer = h->>'payer' AND expires_at > now_ms;
    IF in_flight >= (h->>'maxInFlight')::integer THEN
      RETURN jsonb_build_object('ok', false, 'reason', 'too_many_in_flight');
    END IF;
    IF h ? 'balance' AND held + (h->>'amount')::numeric > (h->>'balance')::numeric THEN
      RETURN jsonb_build_object('ok', false, 'reason', 'insufficient_funds', 'held', held::text);
    END IF;
    INSERT INTO ${s}.nonces AS n (key, state, expires_at, payer, amount)
    VALUES (k, 'locked', exp, h->>'payer', (h->>'amount')::numeric)
    ON CONFLICT (key) DO UPDATE SET state = 'locked', "transaction" = NULL, expires_at = excluded.expires_at,
      payer = excluded.payer, amount = excluded.amount
    WHERE n.expires_at <= now_ms;
    IF NOT FOUND THEN
      -- a plain claimNonce of the same key committed after the check above
      RETURN jsonb_build_object('ok', false, 'reason', 'in_use');
    END IF;
    RETURN jsonb_build_object('ok', true, 'others', others);
  END $$;
  `,
];

/** Rows housekeeping deletes per statement, so it never holds many locks at once. */
const SWEEP_CHUNK = 1000;

/** A reserve, commit or release waiting for the next batch. */
interface Queued extends BatchedCall {
  arg: Record<string, unknown>;
  decode: (reply: unknown) => unknown;
  /** For a commit: retried after a lost connection until this time (ms epoch). */
  retryUntil?: number;
  /** Wait before the next retry, ms. */
  retryDelayMs?: number;
}

/** First and longest wait between retries of a money record, ms. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 1000;

/** SQLSTATEs and socket errors after which the same statement may succeed once the database is back. */
const TRANSIENT_CODE = /^(08...|57P0[123]|53300|E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH|AI_AGAIN))$/;
/** `pg`'s own connection errors carry no code, only these messages. */
const TRANSIENT_MESSAGE = /Connection terminated|timeout exceeded when trying to connect|Query read timeout|connection error|not queryable|Connection ended/i;

/** True when `err` (or the cause a `StoreError` wraps) says the database was unreachable, not that the statement was wrong. */
export function isTransientPgError(err: unknown): boolean {
  const e = (err instanceof StoreError ? err.cause : err) as { code?: unknown; message?: unknown } | undefined;
  if (!e || typeof e !== "object") return false;
  if (typeof e.code === "string") return TRANSIENT_CODE.test(e.code);
  return typeof e.message === "string" && TRANSIENT_MESSAGE.test(e.message);
}

/** Calls per batch function call; a longer queue is split. */
const MAX_BATCH = 500;

/** `pg` returns bigint columns as strings; this is the one place they become numbers. */
function ledgerFromRow(r: Record<string, unknown>): LedgerEntry {
  const e: Record<string, unknown> = {
    time: Number(r.time),
    method: r.method,
    payer: r.payer,
    amount: r.amount,
    asset: r.asset,
    network: r.network,
    transaction: r.transaction,
    resource: r.resource,
    serviceId: r.serviceId,
    paymentId: r.paymentId,
  };
  return { ...(ledgerBody(e as unknown as LedgerEntry) as LedgerEntry), id: Number(r.id) };
}

/** A `Store` in PostgreSQL, shared by every process using the same database and schema. */
export class PostgresStore implements Store {
  /** The `pg` pool in use. */
  readonly pool: Pool;
  /** The schema, as given. */
  readonly schema: string;
  private readonly owned: boolean;
  /** The schema as a quoted SQL identifier. */
  private readonly s: string;
  private readonly retentionMs: number;
  private readonly recordRetryMs: number;
  private migrated = false;
  private migrating?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private closed = false;
  /** Batches sent and not yet answered; `close()` waits for them before ending the pool. */
  private readonly inflight = new Set<Promise<void>>();
  /** Calls queued for the next batch function call (see `batched`). */
  private readonly batch = new TurnBatch<Queued>((calls) => {
    for (let from = 0; from < calls.length; from += MAX_BATCH) this.track(this.send(calls.slice(from, from + MAX_BATCH)));
  });
  /** SQL text of each statement, built once for this schema. */
  private readonly q: ReturnType<typeof statements>;

  /**
   * Opens no connection yet: the schema is created or migrated by the first
   * operation. Use `PostgresStore.open()` to do that up front, so a wrong URL
   * or a down database fails at start-up.
   */
  constructor(opts: PostgresStoreOptions) {
    this.schema = opts.schema ?? "server402";
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(this.schema)) {
      throw new ConfigError("schema", "PostgresStore schema must be a plain identifier (letters, digits, _; at most 63)");
    }
    this.s = `"${this.schema}"`;
    this.q = statements(this.s);
    this.retentionMs = opts.paymentRetentionMs ?? DEFAULT_PAYMENT_RETENTION_MS;
    this.recordRetryMs = opts.recordRetryMs ?? 30_000;
    if (opts.pool) {
      this.pool = opts.pool;
      this.owned = false;
    } else {
      if (!opts.connectionString) throw new ConfigError("store", "PostgresStore needs `connectionString` or `pool`");
      type PgModule = { Pool: new (config: PoolConfig) => Pool };
      const mod = requireOptional<PgModule & { default?: PgModule }>("pg", "pg", "PostgresStore (server402/postgres)");
      const pg = mod.default ?? mod;
      this.pool = new pg.Pool({
        connectionString: opts.connectionString,
        max: opts.max ?? 10,
        connectionTimeoutMillis: opts.connectTimeoutMs ?? 2000,
        query_timeout: opts.queryTimeoutMs ?? 5000,
        idleTimeoutMillis: 30_000,
        keepAlive: true,
        application_name: "server402",
      });
      this.owned = true;
    }
    // An idle connection the server dropped (restart, failover) is reported here;
    // without a listener it would crash the process. The pool replaces it.
    this.pool.on("error", () => {});
    this.timer = setInterval(() => void this.sweep().catch(() => {}), opts.sweepIntervalMs ?? 60_000);
    this.timer.unref();
  }

  /** A store whose schema is created or migrated before it is returned. Throws `StoreError` if the database cannot be reached. */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const store = new PostgresStore(opts);
    try {
      await store.ready();
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    return store;
  }

  /** Create or migrate the schema once; a failure (database down) is retried by the next operation. */
  private ready(): Promise<void> | undefined {
    if (this.migrated) return undefined;
    this.migrating ??= this.migrate().then(
      () => {
        this.migrated = true;
      },
      (err: unknown) => {
        this.migrating = undefined;
        throw toStoreError("PostgresStore", "migrate", err);
      },
    );
    return this.migrating;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    // A connection lost while checked out is reported through the query that fails; this keeps the event from crashing the process.
    const onError = () => {};
    client.on("error", onError);
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      // Several instances may start at once: one migrates, the others wait and then see the new version.
      await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`server402 migrate ${this.schema}`]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.s}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.s}.meta (key text PRIMARY KEY, value text NOT NULL)`);
      const row = (await client.query(`SELECT value FROM ${this.s}.meta WHERE key = 'schema_version'`)).rows[0] as { value: string } | undefined;
      const version = row ? Number(row.value) : 0;
      if (version > POSTGRES_SCHEMA_VERSION) {
        throw new StoreError(
          `server402: PostgreSQL schema ${this.schema} is at version ${version}, newer than this server402 supports (${POSTGRES_SCHEMA_VERSION}); upgrade server402`,
        );
      }
      for (let v = version; v < POSTGRES_SCHEMA_VERSION; v++) await client.query(POSTGRES_MIGRATIONS[v]!(this.s));
      if (version < POSTGRES_SCHEMA_VERSION) {
        await client.query(
          `INSERT INTO ${this.s}.meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
          [String(POSTGRES_SCHEMA_VERSION)],
        );
      }
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch((e: Error) => {
        broken = e;
      });
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  /** Run one statement (after the schema is ready) and wrap failures in `StoreError`. */
  private async query(op: string, text: string, values: unknown[] = []): Promise<Array<Record<string, unknown>>> {
    try {
      await this.ready();
      return (await this.pool.query({ text, values })).rows as Array<Record<string, unknown>>;
    } catch (err) {
      throw toStoreError("PostgresStore", op, err);
    }
  }

  /** Run `fn` (a write that records money already taken), again after a transient failure, until `recordRetryMs` has passed. */
  private async recording<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.recordRetryMs;
    for (let delay = RETRY_FIRST_MS; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        return await fn();
      } catch (err) {
        if (this.closed || !isTransientPgError(err) || Date.now() + delay > deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /**
   * Delete expired nonces, given-back counts and held answers, reservations
   * lapsed more than an hour ago and payments past their retention, in
   * chunks, skipping rows live requests hold. Runs periodically.
   */
  async sweep(now = Date.now()): Promise<void> {
    const chunked = async (op: string, text: string, values: unknown[]) => {
      while ((await this.query(op, text, values)).length === SWEEP_CHUNK);
    };
    await chunked("sweep", this.q.sweepNonces, [now]);
    await chunked("sweep", this.q.sweepReservations, [now - RESERVATION_GC_MS]);
    await chunked("sweep", this.q.sweepGivenBack, [now]);
    await chunked("sweep", this.q.sweepHeldAnswers, [now]);
    if (Number.isFinite(this.retentionMs)) await chunked("sweep", this.q.sweepPayments, [now - this.retentionMs]);
  }

  async claimNonce(key: string, expiresAt: number): Promise<boolean> {
    return (await this.query("claimNonce", this.q.claimNonce, [key, expiresAt, Date.now()])).length === 1;
  }

  async releaseNonce(key: string): Promise<void> {
    await this.query("releaseNonce", this.q.releaseNonce, [key]);
  }

  async setNonceState(key: string, state: Exclude<NonceState, "locked">, transaction?: string): Promise<void> {
    await this.recording(() => this.query("setNonceState", this.q.setNonceState, [state, transaction ?? null, key, Date.now()]));
  }

  async getNonce(key: string): Promise<{ state: NonceState; transaction?: string } | undefined> {
    const row = (await this.query("getNonce", this.q.getNonce, [key, Date.now()]))[0] as { state: NonceState; transaction: string | null } | undefined;
    if (!row) return undefined;
    return row.transaction === null ? { state: row.state } : { state: row.state, transaction: row.transaction };
  }

  async claimPayerNonce(key: string, expiresAt: number, hold: PayerHold): Promise<PayerClaim> {
    const rows = await this.query("claimPayerNonce", this.q.claimPayerNonce, [key, expiresAt, Date.now(), JSON.stringify(hold)]);
    return rows[0]!.r as PayerClaim;
  }

  async giveBackNonce(key: string): Promise<number> {
    return Number((await this.query("giveBackNonce", this.q.giveBackNonce, [key, Date.now()]))[0]!.n);
  }

  async createPayment(payment: StoredPayment): Promise<void> {
    try {
      await this.query(
        "createPayment",
        this.q.insertPayment,
        PAYMENT_FIELDS.map((f) => payment[f] ?? null),
      );
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code === "23505") throw duplicatePaymentError(payment.paymentId);
      throw err;
    }
  }

  async getPayment(paymentId: string): Promise<StoredPayment | undefined> {
    const row = (await this.query("getPayment", this.q.getPayment, [paymentId]))[0];
    return row && paymentFromRecord(row);
  }

  async markPaid(
    paymentId: string,
    paid: { paidAt: number; transaction?: string; provider?: string; network?: string; payer?: string },
  ): Promise<{ payment: StoredPayment; changed: boolean } | undefined> {
    const values = [paymentId, paid.paidAt, paid.transaction ?? null, paid.provider ?? null, paid.network ?? null, paid.payer ?? null];
    const updated = (await this.query("markPaid", this.q.markPaid, values))[0];
    if (updated) return { payment: paymentFromRecord(updated), changed: true };
    // Not pending (or unknown): read it in a new statement, which sees a concurrent markPaid's commit.
    const payment = await this.getPayment(paymentId);
    return payment && { payment, changed: false };
  }

  async countPending(now: number): Promise<number> {
    return Number((await this.query("countPending", this.q.countPending, [now]))[0]!.n);
  }

  reserveCall(tokenHash: string, serviceId: string, now: number, leaseMs: number): Promise<ReserveResult> {
    // The payment id is only known inside the function; the id's unique part is drawn here.
    const placeholder = newReservationId("");
    return this.batched("reserveCall", { o: "r", h: tokenHash, s: serviceId, n: now, l: now + leaseMs, r: placeholder }, (reply): ReserveResult => {
      const r = reply as { ok?: true; reason?: ReserveFailure; p?: Record<string, unknown> };
      if (!r.p) return { ok: false, reason: "unknown_token" };
      const payment = paymentFromRecord(r.p);
      if (r.ok) return { ok: true, payment, reservationId: placeholder + payment.paymentId };
      return { ok: false, reason: r.reason!, payment };
    });
  }

  commitCall(reservationId: string): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve(false);
    // Retried through an outage: the call was served. A retry after a lost reply answers false, the call counted once.
    return this.batched("commitCall", { o: "c", p: paymentId, r: reservationId }, (reply) => reply === true, Date.now() + this.recordRetryMs);
  }

  releaseCall(reservationId: string): Promise<void> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve();
    return this.batched("releaseCall", { o: "x", p: paymentId, r: reservationId }, () => undefined);
  }

  /**
   * Its own statement rather than a batch op: renewals come every few seconds
   * per running handler, not per request. It locks only the reservation's
   * row; a reserve that reclaims the lapsed lease at the same time either
   * deletes it first (then this answers false) or sees the new lease.
   */
  async renewCall(reservationId: string, now: number, leaseMs: number): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return false;
    return (await this.query("renewCall", this.q.renewCall, [paymentId, reservationId, now + leaseMs])).length === 1;
  }

  /**
   * Queue a reserve, commit or release for the batch sent once this turn of
   * the event loop has taken in all ready I/O (setImmediate): under load one
   * function call, one transaction and one round trip serve many paid
   * requests; alone, a call waits less than a millisecond. A promise settles
   * only after the batch committed.
   */
  private batched<T>(op: string, arg: Record<string, unknown>, decode: (reply: unknown) => T, retryUntil?: number): Promise<T> {
    if (this.closed) return Promise.reject(toStoreError("PostgresStore", op, new Error("the store is closed")));
    return new Promise<T>((resolve, reject) => this.batch.add({ op, arg, decode, resolve: resolve as (v: unknown) => void, reject, retryUntil }));
  }

  /** Send one run of queued calls and settle their promises. */
  private async send(calls: Queued[]): Promise<void> {
    let replies: unknown[];
    try {
      const rows = await this.query("batch", this.q.batch, [JSON.stringify(calls.map((c) => c.arg))]);
      replies = rows[0]!.r as unknown[];
    } catch (err) {
      const transient = !this.closed && isTransientPgError(err);
      for (const c of calls) {
        const delay = c.retryDelayMs ?? RETRY_FIRST_MS;
        if (transient && c.retryUntil !== undefined && Date.now() + delay <= c.retryUntil) {
          c.retryDelayMs = Math.min(delay * 2, RETRY_MAX_MS);
          setTimeout(() => this.batch.add(c), delay);
        } else {
          c.reject(toStoreError("PostgresStore", c.op, err instanceof StoreError ? err.cause ?? err : err));
        }
      }
      return;
    }
    for (let i = 0; i < calls.length; i++) {
      const c = calls[i]!;
      const reply = replies[i] as { err?: string } | null;
      try {
        if (reply !== null && typeof reply === "object" && "err" in reply) throw toStoreError("PostgresStore", c.op, String(reply.err));
        c.resolve(c.decode(reply));
      } catch (err) {
        c.reject(toStoreError("PostgresStore", c.op, err));
      }
    }
  }

  /**
   * Appends made during one turn go in the turn's batch: one commit (one
   * fsync) for all of them, where one each would queue every append behind
   * the previous one's commit on the ledger's lock.
   */
  appendLedger(entry: LedgerEntry): Promise<number> {
    const arg = { o: "l", e: ledgerBody(entry), k: randomUUID() };
    return this.batched("appendLedger", arg, (reply) => Number(reply), Date.now() + this.recordRetryMs);
  }

  async listLedger(opts: { afterId?: number; limit?: number } = {}): Promise<LedgerEntry[]> {
    const limit = opts.limit ?? DEFAULT_LEDGER_LIMIT;
    if (limit <= 0) return [];
    return (await this.query("listLedger", this.q.listLedger, [opts.afterId ?? 0, limit])).map(ledgerFromRow);
  }

  // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
  // Written after money moved, so retried through a short outage like the other money records.

  async putOutbox(id: string, record: string): Promise<void> {
    await this.recording(() => this.query("putOutbox", this.q.putOutbox, [id, record]));
  }

  async listOutbox(limit: number): Promise<OutboxItem[]> {
    if (limit <= 0) return [];
    return (await this.query("listOutbox", this.q.listOutbox, [limit])) as unknown as OutboxItem[];
  }

  async deleteOutbox(id: string): Promise<void> {
    await this.query("deleteOutbox", this.q.deleteOutbox, [id]);
  }

  /** `appendLedger` under the caller's key: the batch's append writes one row per key (a unique column). */
  appendLedgerOnce(key: string, entry: LedgerEntry): Promise<number> {
    const arg = { o: "l", e: ledgerBody(entry), k: key };
    return this.batched("appendLedgerOnce", arg, (reply) => Number(reply), Date.now() + this.recordRetryMs);
  }

  async releasePendingNonce(key: string): Promise<void> {
    await this.query("releasePendingNonce", this.q.releasePendingNonce, [key]);
  }

  async putHeldAnswer(key: string, answer: string, expiresAt: number): Promise<void> {
    await this.recording(() => this.query("putHeldAnswer", this.q.putHeldAnswer, [key, answer, expiresAt]));
  }

  async getHeldAnswer(key: string): Promise<string | undefined> {
    const row = (await this.query("getHeldAnswer", this.q.getHeldAnswer, [key, Date.now()]))[0];
    return row ? (row.answer as string) : undefined;
  }

  async deleteHeldAnswer(key: string): Promise<void> {
    await this.query("deleteHeldAnswer", this.q.deleteHeldAnswer, [key]);
  }

  // ---- Payment identifiers (issue 17 part 3): idempotent retries ----
  // Their table and function are created on first use (IF NOT EXISTS / OR REPLACE, under an advisory
  // lock, in one transaction), so they need no numbered migration. The `maxEntries` count is read
  // in the claim's statement: claims of other keys made at the same moment may pass it by a few.
  private pidReady?: Promise<void>;

  private paymentIdsReady(): Promise<void> {
    const s = this.s;
    this.pidReady ??= this.query(
      "paymentIds",
      `SELECT pg_advisory_xact_lock(hashtext('server402 payment ids ' || '${this.schema}'));
      CREATE TABLE IF NOT EXISTS ${s}.payment_ids (key text PRIMARY KEY, owner text NOT NULL, record text NOT NULL, expires_at bigint NOT NULL);
      CREATE INDEX IF NOT EXISTS payment_ids_expiry ON ${s}.payment_ids (expires_at);
      CREATE OR REPLACE FUNCTION ${s}.claim_payment_id(k text, o text, rec text, exp bigint, now_ms bigint, max_n integer) RETURNS jsonb LANGUAGE plpgsql AS $$
      DECLARE r text;
      BEGIN
        SELECT record INTO r FROM ${s}.payment_ids WHERE key = k AND expires_at > now_ms;
        IF FOUND THEN RETURN jsonb_build_object('ok', false, 'record', r); END IF;
        IF (SELECT count(*) FROM ${s}.payment_ids WHERE expires_at > now_ms) >= max_n THEN
          RETURN jsonb_build_object('ok', false, 'full', true);
        END IF;
        INSERT INTO ${s}.payment_ids AS p (key, owner, record, expires_at) VALUES (k, o, rec, exp)
        ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, record = excluded.record, expires_at = excluded.expires_at
        WHERE p.expires_at <= now_ms;
        IF NOT FOUND THEN
          -- a concurrent claim of the same key committed first
          SELECT record INTO r FROM ${s}.payment_ids WHERE key = k;
          RETURN jsonb_build_object('ok', false, 'record', coalesce(r, ''));
        END IF;
        DELETE FROM ${s}.payment_ids WHERE key IN (
          SELECT key FROM ${s}.payment_ids WHERE expires_at <= now_ms LIMIT 100 FOR UPDATE SKIP LOCKED);
        RETURN jsonb_build_object('ok', true);
      END $$;`,
    ).then(
      () => undefined,
      (err: unknown) => {
        this.pidReady = undefined;
        throw err;
      },
    );
    return this.pidReady;
  }

  async claimPaymentId(key: string, owner: string, record: string, expiresAt: number, maxEntries: number): Promise<PaymentIdClaim> {
    await this.paymentIdsReady();
    const rows = await this.query("claimPaymentId", `SELECT ${this.s}.claim_payment_id($1, $2, $3, $4, $5, $6) AS r`, [key, owner, record, expiresAt, Date.now(), maxEntries]);
    const r = rows[0]!.r as { ok: boolean; record?: string; full?: boolean };
    if (r.ok) return { ok: true };
    return r.full ? { ok: false, full: true } : { ok: false, record: r.record ?? "" };
  }

  async updatePaymentId(key: string, owner: string, record: string, expiresAt: number): Promise<boolean> {
    await this.paymentIdsReady();
    const sql = `UPDATE ${this.s}.payment_ids SET record = $3, expires_at = $4 WHERE key = $1 AND owner = $2 AND expires_at > $5 RETURNING 1`;
    return (await this.recording(() => this.query("updatePaymentId", sql, [key, owner, record, expiresAt, Date.now()]))).length === 1;
  }

  async releasePaymentId(key: string, owner: string): Promise<void> {
    await this.paymentIdsReady();
    await this.query("releasePaymentId", `DELETE FROM ${this.s}.payment_ids WHERE key = $1 AND owner = $2`, [key, owner]);
  }
  // ---- end payment identifiers ----

  async ping(): Promise<void> {
    await this.query("ping", "SELECT 1");
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.closed) return;
    this.closed = true;
    this.batch.flush(); // queued calls are still sent
    await Promise.allSettled([...this.inflight]);
    if (this.owned) await this.pool.end().catch(() => {});
  }
}

/** The statements of a store on schema `s` (a quoted identifier). */
function statements(s: string) {
  const placeholders = PAYMENT_FIELDS.map((_, i) => `$${i + 1}`).join(", ");
  return {
    claimNonce: `INSERT INTO ${s}.nonces AS n (key, state, expires_at) VALUES ($1, 'locked', $2)
      ON CONFLICT (key) DO UPDATE SET state = 'locked', "transaction" = NULL, expires_at = excluded.expires_at,
        payer = NULL, amount = NULL
      WHERE n.expires_at <= $3 RETURNING 1`,
    releaseNonce: `DELETE FROM ${s}.nonces WHERE key = $1 AND state = 'locked'`,
    setNonceState: `UPDATE ${s}.nonces SET state = $1, "transaction" = $2 WHERE key = $3 AND expires_at > $4`,
    getNonce: `SELECT state, "transaction" FROM ${s}.nonces WHERE key = $1 AND expires_at > $2`,
    insertPayment: `INSERT INTO ${s}.payments (${PAYMENT_INSERT_COLUMNS}) VALUES (${placeholders})`,
    getPayment: `SELECT ${PAYMENT_SELECT} FROM ${s}.payments WHERE payment_id = $1`,
    markPaid: `UPDATE ${s}.payments SET status = 'paid', paid_at = $2,
        "transaction" = coalesce($3, "transaction"), provider = coalesce($4, provider),
        network = coalesce($5, network), payer = coalesce($6, payer)
      WHERE payment_id = $1 AND status = 'pending' RETURNING ${PAYMENT_SELECT}`,
    countPending: `SELECT count(*) AS n FROM ${s}.payments WHERE status = 'pending' AND expires_at > $1`,
    batch: `SELECT ${s}.batch($1::jsonb) AS r`,
    listLedger: `SELECT id, time, method, payer, amount::text AS amount, asset, network, "transaction",
        resource, service_id AS "serviceId", payment_id AS "paymentId"
      FROM ${s}.ledger WHERE id > $1 ORDER BY id LIMIT $2`,
    claimPayerNonce: `SELECT ${s}.claim_payer_nonce($1, $2, $3, $4::jsonb) AS r`,
    // Release a locked nonce and count the failed run against its key until the lock would have expired.
    // The count read at the end is the statement's snapshot, from before a concurrent give-back's.
    giveBackNonce: `WITH gone AS (DELETE FROM ${s}.nonces WHERE key = $1 AND state = 'locked' RETURNING expires_at)
      , up AS (INSERT INTO ${s}.given_back AS g (key, count, expires_at) SELECT $1, 1, expires_at FROM gone
          ON CONFLICT (key) DO UPDATE SET count = CASE WHEN g.expires_at > $2 THEN g.count + 1 ELSE 1 END,
            expires_at = greatest(g.expires_at, excluded.expires_at)
          RETURNING count)
      SELECT coalesce((SELECT count FROM up), (SELECT count FROM ${s}.given_back WHERE key = $1 AND expires_at > $2), 0) AS n`,
    renewCall: `UPDATE ${s}.reservations SET lease_until = $3 WHERE payment_id = $1 AND id = $2 RETURNING 1`,
    putOutbox: `INSERT INTO ${s}.outbox (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = excluded.record`,
    listOutbox: `SELECT id, record FROM ${s}.outbox ORDER BY seq LIMIT $1`,
    deleteOutbox: `DELETE FROM ${s}.outbox WHERE id = $1`,
    releasePendingNonce: `DELETE FROM ${s}.nonces WHERE key = $1 AND state = 'pending'`,
    putHeldAnswer: `INSERT INTO ${s}.held_answers (key, answer, expires_at) VALUES ($1, $2, $3)
      ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, expires_at = excluded.expires_at`,
    getHeldAnswer: `SELECT answer FROM ${s}.held_answers WHERE key = $1 AND expires_at > $2`,
    deleteHeldAnswer: `DELETE FROM ${s}.held_answers WHERE key = $1`,
    sweepGivenBack: `DELETE FROM ${s}.given_back WHERE key IN (
        SELECT key FROM ${s}.given_back WHERE expires_at <= $1 LIMIT ${SWEEP_CHUNK} FOR UPDATE SKIP LOCKED) RETURNING 1`,
    sweepHeldAnswers: `DELETE FROM ${s}.held_answers WHERE key IN (
        SELECT key FROM ${s}.held_answers WHERE expires_at <= $1 LIMIT ${SWEEP_CHUNK} FOR UPDATE SKIP LOCKED) RETURNING 1`,
    sweepNonces: `DELETE FROM ${s}.nonces WHERE key IN (
        SELECT key FROM ${s}.nonces WHERE expires_at <= $1 LIMIT ${SWEEP_CHUNK} FOR UPDATE SKIP LOCKED) RETURNING 1`,
    sweepReservations: `DELETE FROM ${s}.reservations WHERE (payment_id, id) IN (
        SELECT payment_id, id FROM ${s}.reservations WHERE lease_until <= $1 LIMIT ${SWEEP_CHUNK} FOR UPDATE SKIP LOCKED) RETURNING 1`,
    // Payment row first, then its reservations: the lock order of every other writer.
    sweepPayments: `WITH gone AS (
        DELETE FROM ${s}.payments WHERE payment_id IN (
          SELECT payment_id FROM ${s}.payments WHERE expires_at <= $1 LIMIT ${SWEEP_CHUNK} FOR UPDATE SKIP LOCKED)
        RETURNING payment_id)
      , rsv AS (DELETE FROM ${s}.reservations WHERE payment_id IN (SELECT payment_id FROM gone))
      SELECT 1 FROM gone`,
  };
}
