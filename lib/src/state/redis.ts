/**
 * Store shared by several server processes through one Redis (standalone or
 * primary/replica; not Redis Cluster, since scripts derive payment keys from
 * the token at run time). Every multi-step operation is one Lua script, so
 * all processes see exactly one order of events.
 *
 * Keys (under `keyPrefix`):
 * - `nonce:<key>`       string `state` or `state:tx`, PXAT = lock expiry
 * - `payer:<payer>`     hash nonce key → amount, the payer's nonces claimed by `claimPayerNonce`
 * - `back:<key>`        string count of a nonce's failed runs given back, PXAT = lock expiry
 * - `pay:<paymentId>`   hash of the payment's fields
 * - `tok:<tokenHash>`   string paymentId
 * - `rsv:<paymentId>`   sorted set reservationId → lease end (ms)
 * - `pending`           sorted set paymentId → expiresAt, pending payments only
 * - `ledger`, `ledger:id` stream with ids `<n>-0`, and its INCR counter
 *
 * The ledger is a stream rather than a list: it is an append-only log whose
 * entry ids are our ledger ids, so `listLedger({ afterId, limit })` is one
 * XRANGE in O(log n) however long the ledger grows (a list would need O(n)
 * LRANGE offsets), and operators can read it with standard stream tooling.
 */
import { createHash } from "node:crypto";
import type { Redis, RedisOptions } from "ioredis";
import { ConfigError } from "../errors.js";
import { requireOptional } from "../optional.js";
import { RESERVED_PAYMENT_FIELDS, type LedgerEntry, type NonceState, type OutboxItem, type PayerClaim, type PayerClaimFailure, type PayerHold, type PaymentIdClaim, type ReserveResult, type ReserveFailure, type ReservedPayment, type Store, type StoredPayment } from "./store.js";
import {
  DEFAULT_LEDGER_LIMIT,
  DEFAULT_PAYMENT_RETENTION_MS,
  RESERVATION_GC_MS,
  TurnBatch,
  duplicatePaymentError,
  ledgerBody,
  paymentFromRecord,
  paymentToRecord,
  toStoreError,
  type BatchedCall,
} from "./shared.js";
import { newReservationId, reservationPaymentId } from "./tokens.js";

/** Options of `RedisStore`: give either `url` or an existing ioredis `client`. */
export interface RedisStoreOptions {
  /** `redis://[user:pass@]host:port[/db]` (or `rediss://`). The store owns this connection and closes it. */
  url?: string;
  /**
   * An existing ioredis client. The store does not close it. Configure it to
   * fail fast (see `url`'s defaults) or a down Redis may make requests hang;
   * `enableAutoPipelining: true` (set on connections the store opens) also
   * batches the x402 nonce commands.
   */
  client?: Redis;
  /** Prefix of every key. Default `server402:`. */
  keyPrefix?: string;
  /** Per-command timeout in ms, for connections the store opens. Default 2000. */
  commandTimeoutMs?: number;
  /** How long a payment is kept after it expires (Redis key expiry). Default 30 days. */
  paymentRetentionMs?: number;
}

/** A Lua script run with EVALSHA, falling back to EVAL when Redis has not cached it. */
interface Script {
  src: string;
  sha: string;
}

function script(src: string): Script {
  return { src, sha: createHash("sha1").update(src).digest("hex") };
}

/** HGETALL-style flat array → record. */
function pairs(flat: string[]): Record<string, string> {
  const r: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) r[flat[i]] = flat[i + 1];
  return r;
}

const RELEASE_NONCE = script(`
if redis.call('GET', KEYS[1]) == 'locked' then redis.call('DEL', KEYS[1]) end
return 0`);

// Abuse limits. KEYS: nonce, payer, back. ARGV: prefix, key, expiresAt, amount, balance ('' = unknown),
// maxInFlight, maxRetries, now. Mirrors payerClaimRefusal() in store.ts; amounts are added as decimal
// strings, since Lua numbers are doubles.
const CLAIM_PAYER_NONCE = script(`
local function add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and tonumber(a:sub(i, i)) or 0) + (j > 0 and tonumber(b:sub(j, j)) or 0)
    table.insert(out, 1, d % 10)
    carry, i, j = math.floor(d / 10), i - 1, j - 1
  end
  local s = table.concat(out):gsub('^0+', '')
  if s == '' then return '0' end
  return s
end
local v = redis.call('GET', KEYS[1])
if v then
  if v == 'locked' then return {'in_use'} end
  return {'used'}
end
if tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[7]) then return {'retries_exhausted'} end
local fields = redis.call('HGETALL', KEYS[2])
local others, inflight, held = 0, 0, '0'
for i = 1, #fields, 2 do
  local st = redis.call('GET', ARGV[1] .. 'nonce:' .. fields[i])
  if not st then
    redis.call('HDEL', KEYS[2], fields[i])
  else
    others = others + 1
    local state = st:match('^[^:]*')
    if state == 'locked' then inflight = inflight + 1 end
    if state ~= 'settled' then held = add(held, fields[i + 1]) end
  end
end
if inflight >= tonumber(ARGV[6]) then return {'too_many_in_flight'} end
if ARGV[5] ~= '' then
  local need = add(held, ARGV[4])
  if #need > #ARGV[5] or (#need == #ARGV[5] and need > ARGV[5]) then return {'insufficient_funds', held} end
end
redis.call('SET', KEYS[1], 'locked', 'PXAT', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) - tonumber(ARGV[8]) then redis.call('PEXPIREAT', KEYS[2], ARGV[3]) end
return {'ok', others}`);

// KEYS: nonce, back.
const GIVE_BACK_NONCE = script(`
if redis.call('GET', KEYS[1]) ~= 'locked' then return tonumber(redis.call('GET', KEYS[2]) or '0') end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
local n = redis.call('INCR', KEYS[2])
if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return n`);

// KEYS: pay, tok, pending. ARGV: paymentId, expireAt ('' = never), now, status, expiresAt, field, value, ...
const CREATE_PAYMENT = script(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('SET', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
if ARGV[4] == 'pending' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1]) end
return 1`);

// KEYS: pay, pending. ARGV: paymentId, field, value, ...
const MARK_PAID = script(`
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local changed = 0
if status ~= 'paid' then
  redis.call('HSET', KEYS[1], 'status', 'paid', unpack(ARGV, 2))
  redis.call('ZREM', KEYS[2], ARGV[1])
  changed = 1
end
return {changed, redis.call('HGETALL', KEYS[1])}`);

/**
 * The per-request calls made during one turn of the event loop, in one script
 * run (see `RedisStore.batched`). ARGV[1] is the key prefix, then each call
 * as an op letter and its arguments:
 * - `r tokenHash serviceId now leaseUntil reservationIdWithoutPaymentId rsvTtl`
 *   reserve → `{'ok', HMGET of the ReservedPayment fields}` or `{reason, HGETALL}`
 *   (`{'unknown_token'}` alone); the rule of reserveRejection() in shared.ts, in its order;
 * - `c paymentId reservationId` commit → 1 or 0;
 * - `x paymentId reservationId` release → 0.
 * A call that raises an error answers `{'err', message}`; the others still run.
 */
const BATCH = script(`
local prefix = ARGV[1]
local function reserve(tokenHash, serviceId, now, leaseUntil, rid, ttl)
  local pid = redis.call('GET', prefix .. 'tok:' .. tokenHash)
  if not pid then return {'unknown_token'} end
  local pkey = prefix .. 'pay:' .. pid
  local f = redis.call('HMGET', pkey, 'serviceId', 'status', 'callsUsed', 'maxCalls', 'expiresAt')
  if not f[1] then return {'unknown_token'} end
  local used, max = tonumber(f[3]), tonumber(f[4])
  local reason
  if f[1] ~= serviceId then reason = 'wrong_service'
  elseif f[2] == 'paid' and used >= max then reason = 'exhausted'
  elseif now >= tonumber(f[5]) then reason = 'expired'
  elseif f[2] ~= 'paid' then reason = 'pending'
  else
    local rkey = prefix .. 'rsv:' .. pid
    redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now)
    if used + redis.call('ZCARD', rkey) >= max then
      reason = 'exhausted'
    else
      redis.call('ZADD', rkey, leaseUntil, rid .. pid)
      if redis.call('PTTL', rkey) < ttl then redis.call('PEXPIRE', rkey, ttl) end
      return {'ok', redis.call('HMGET', pkey, ${RESERVED_PAYMENT_FIELDS.map((f) => `'${f}'`).join(", ")})}
    end
  end
  return {reason, redis.call('HGETALL', pkey)}
end
local function commit(pid, rid)
  if redis.call('ZREM', prefix .. 'rsv:' .. pid, rid) == 0 then return 0 end
  local pkey = prefix .. 'pay:' .. pid
  if redis.call('EXISTS', pkey) == 0 then return 0 end
  redis.call('HINCRBY', pkey, 'callsUsed', 1)
  return 1
end
local function release(pid, rid)
  redis.call('ZREM', prefix .. 'rsv:' .. pid, rid)
  return 0
end
local out = {}
local i = 2
while i <= #ARGV do
  local op = ARGV[i]
  local ok, res
  if op == 'r' then
    ok, res = pcall(reserve, ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6]))
    i = i + 7
  elseif op == 'c' then
    ok, res = pcall(commit, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'x' then
    ok, res = pcall(release, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  else
    return redis.error_reply('server402 batch: unknown op ' .. tostring(op))
  end
  if not ok then res = {'err', type(res) == 'table' and res.err or tostring(res)} end
  out[#out + 1] = res
end
return out`);

/** Calls per batch script run; a longer queue is split. */
const MAX_BATCH = 500;

/** A reserve, commit or release waiting for the next batch. */
interface Queued extends BatchedCall {
  args: (string | number)[];
  decode: (reply: unknown) => unknown;
}

// KEYS: ledger:id, ledger. ARGV: entry JSON.
const APPEND_LEDGER = script(`
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 'e', ARGV[1])
return id`);

/** A `Store` in Redis, shared by every process using the same Redis and `keyPrefix`. */
export class RedisStore implements Store {
  /** The ioredis client in use. */
  readonly client: Redis;
  private readonly owned: boolean;
  private readonly prefix: string;
  /** Prefix as Redis sees it (the client's own `keyPrefix` included), for keys built inside scripts. */
  private readonly luaPrefix: string;
  private readonly retentionMs: number;
  /** Calls queued for the next batch script run (see `batched`). */
  private readonly batch = new TurnBatch<Queued>((calls) => {
    for (let from = 0; from < calls.length; from += MAX_BATCH) void this.send(calls.slice(from, from + MAX_BATCH));
  });

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? "server402:";
    this.retentionMs = opts.paymentRetentionMs ?? DEFAULT_PAYMENT_RETENTION_MS;
    if (opts.client) {
      this.client = opts.client;
      this.owned = false;
    } else {
      if (!opts.url) throw new ConfigError("store", "RedisStore needs `url` or `client`");
      const mod = requireOptional<{ Redis?: typeof Redis; default?: typeof Redis }>("ioredis", "ioredis", "RedisStore (server402/redis)");
      const IORedis = mod.Redis ?? mod.default ?? (mod as unknown as typeof Redis);
      const fastFail: RedisOptions = {
        // A down Redis must fail requests within ~2 s, not queue them forever.
        connectTimeout: 1500,
        commandTimeout: opts.commandTimeoutMs ?? 2000,
        maxRetriesPerRequest: 1,
        // Queue while (re)connecting so start-up does not race, bounded by the limits above.
        enableOfflineQueue: true,
        enableAutoPipelining: true,
        retryStrategy: (times) => Math.min(100 * times, 1000),
      };
      this.client = new IORedis(opts.url, fastFail);
      this.owned = true;
      // Failures reach callers as StoreError; without a listener ioredis logs every reconnect error.
      this.client.on("error", () => {});
    }
    this.luaPrefix = (this.client.options.keyPrefix ?? "") + this.prefix;
  }

  private async eval(s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error)?.message).startsWith("NOSCRIPT")) throw err;
      return this.client.eval(s.src, keys.length, ...keys, ...args);
    }
  }

  /** Run `fn`, wrapping backend failures in `StoreError`. */
  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toStoreError("RedisStore", op, err);
    }
  }

  private expireAt(expiresAt: number): number | "" {
    return Number.isFinite(this.retentionMs) ? expiresAt + this.retentionMs : "";
  }

  claimNonce(key: string, expiresAt: number): Promise<boolean> {
    return this.run("claimNonce", async () => (await this.client.set(this.prefix + "nonce:" + key, "locked", "PXAT", expiresAt, "NX")) === "OK");
  }

  releaseNonce(key: string): Promise<void> {
    return this.run("releaseNonce", async () => {
      await this.eval(RELEASE_NONCE, [this.prefix + "nonce:" + key], []);
    });
  }

  setNonceState(key: string, state: Exclude<NonceState, "locked">, transaction?: string): Promise<void> {
    return this.run("setNonceState", async () => {
      await this.client.set(this.prefix + "nonce:" + key, transaction ? `${state}:${transaction}` : state, "KEEPTTL", "XX");
    });
  }

  getNonce(key: string): Promise<{ state: NonceState; transaction?: string } | undefined> {
    return this.run("getNonce", async () => {
      const v = await this.client.get(this.prefix + "nonce:" + key);
      if (v === null) return undefined;
      const i = v.indexOf(":");
      return i < 0 ? { state: v as NonceState } : { state: v.slice(0, i) as NonceState, transaction: v.slice(i + 1) };
    });
  }

  // --- Abuse limits of x402 payments: a payer's held payments and given-back runs ---
  claimPayerNonce(key: string, expiresAt: number, hold: PayerHold): Promise<PayerClaim> {
    return this.run("claimPayerNonce", async () => {
      const p = this.prefix;
      const r = (await this.eval(
        CLAIM_PAYER_NONCE,
        [p + "nonce:" + key, p + "payer:" + hold.payer, p + "back:" + key],
        [p, key, expiresAt, hold.amount, hold.balance ?? "", hold.maxInFlight, hold.maxRetries, Date.now()],
      )) as [string, (number | string)?];
      if (r[0] === "ok") return { ok: true, others: Number(r[1]) };
      return r[1] === undefined ? { ok: false, reason: r[0] as PayerClaimFailure } : { ok: false, reason: r[0] as PayerClaimFailure, held: String(r[1]) };
    });
  }

  giveBackNonce(key: string): Promise<number> {
    return this.run("giveBackNonce", async () => Number(await this.eval(GIVE_BACK_NONCE, [this.prefix + "nonce:" + key, this.prefix + "back:" + key], [])));
  }

  createPayment(payment: StoredPayment): Promise<void> {
    return this.run("createPayment", async () => {
      const created = await this.eval(
        CREATE_PAYMENT,
        [this.prefix + "pay:" + payment.paymentId, this.prefix + "tok:" + payment.tokenHash, this.prefix + "pending"],
        [
          payment.paymentId,
          this.expireAt(payment.expiresAt),
          Date.now(),
          payment.status,
          payment.expiresAt,
          ...Object.entries(paymentToRecord(payment)).flat(),
        ],
      );
      if (created !== 1) throw duplicatePaymentError(payment.paymentId);
    });
  }

  getPayment(paymentId: string): Promise<StoredPayment | undefined> {
    return this.run("getPayment", async () => {
      const r = await this.client.hgetall(this.prefix + "pay:" + paymentId);
      return Object.keys(r).length ? paymentFromRecord(r) : undefined;
    });
  }

  markPaid(
    paymentId: string,
    paid: { paidAt: number; transaction?: string; provider?: string; network?: string; payer?: string },
  ): Promise<{ payment: StoredPayment; changed: boolean } | undefined> {
    return this.run("markPaid", async () => {
      const fields = Object.entries(paid).filter(([, v]) => v !== undefined && v !== null).flat() as (string | number)[];
      const res = (await this.eval(MARK_PAID, [this.prefix + "pay:" + paymentId, this.prefix + "pending"], [paymentId, ...fields])) as
        | [number, string[]]
        | null;
      return res ? { payment: paymentFromRecord(pairs(res[1])), changed: res[0] === 1 } : undefined;
    });
  }

  countPending(now: number): Promise<number> {
    return this.run("countPending", () => this.client.zcount(this.prefix + "pending", `(${now}`, "+inf"));
  }

  reserveCall(tokenHash: string, serviceId: string, now: number, leaseMs: number): Promise<ReserveResult> {
    // The payment id is only known inside the script; the id's unique part is drawn here.
    const placeholder = newReservationId("");
    return this.batched("reserveCall", ["r", tokenHash, serviceId, now, now + leaseMs, placeholder, leaseMs + RESERVATION_GC_MS], (reply): ReserveResult => {
      const [outcome, fields] = reply as [string, (string | null)[]?];
      if (!fields) return { ok: false, reason: "unknown_token" };
      if (outcome !== "ok") return { ok: false, reason: outcome as ReserveFailure, payment: paymentFromRecord(pairs(fields as string[])) };
      const p: Record<string, string> = {};
      for (let i = 0; i < RESERVED_PAYMENT_FIELDS.length; i++) if (fields[i] !== null) p[RESERVED_PAYMENT_FIELDS[i]!] = fields[i]!;
      const payment = { ...p, maxCalls: Number(p.maxCalls), callsUsed: Number(p.callsUsed) } as ReservedPayment;
      return { ok: true, payment, reservationId: placeholder + payment.paymentId };
    });
  }

  commitCall(reservationId: string): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve(false);
    return this.batched("commitCall", ["c", paymentId, reservationId], (reply) => reply === 1);
  }

  releaseCall(reservationId: string): Promise<void> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve();
    return this.batched("releaseCall", ["x", paymentId, reservationId], () => undefined);
  }

  // --- lease renewal (issue 14 A4) ---
  /** KEYS: rsv. ARGV: reservationId, leaseUntil, key TTL. Only an existing reservation is renewed. */
  private static readonly RENEW_CALL = script(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1`);

  renewCall(reservationId: string, now: number, leaseMs: number): Promise<boolean> {
    const paymentId = reservationPaymentId(reservationId);
    if (paymentId === undefined) return Promise.resolve(false);
    return this.run("renewCall", async () => {
      const renewed = await this.eval(RedisStore.RENEW_CALL, [this.prefix + "rsv:" + paymentId], [reservationId, now + leaseMs, leaseMs + RESERVATION_GC_MS]);
      return renewed === 1;
    });
  }
  // --- end lease renewal ---

  /**
   * Queue a reserve, commit or release for the batch sent once this turn of
   * the event loop has taken in all ready I/O (setImmediate): under load one
   * script run and one round trip serve many paid requests. The script runs
   * atomically like any other, so concurrent processes still see one order.
   */
  private batched<T>(op: string, args: (string | number)[], decode: (reply: unknown) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => this.batch.add({ op, args, decode, resolve: resolve as (v: unknown) => void, reject }));
  }

  /** Send one run of queued calls (at most MAX_BATCH) and settle their promises. */
  private async send(calls: Queued[]): Promise<void> {
    const argv: (string | number)[] = [this.luaPrefix];
    for (const c of calls) for (const a of c.args) argv.push(a);
    let replies: unknown[];
    try {
      replies = (await this.eval(BATCH, [], argv)) as unknown[];
    } catch (err) {
      for (const c of calls) c.reject(toStoreError("RedisStore", c.op, err));
      return;
    }
    for (let i = 0; i < calls.length; i++) {
      const c = calls[i]!;
      const reply = replies[i];
      try {
        if (Array.isArray(reply) && reply[0] === "err") throw toStoreError("RedisStore", c.op, String(reply[1]));
        c.resolve(c.decode(reply));
      } catch (err) {
        c.reject(toStoreError("RedisStore", c.op, err));
      }
    }
  }

  appendLedger(entry: LedgerEntry): Promise<number> {
    return this.run("appendLedger", async () =>
      Number(await this.eval(APPEND_LEDGER, [this.prefix + "ledger:id", this.prefix + "ledger"], [JSON.stringify(ledgerBody(entry))])),
    );
  }

  listLedger(opts: { afterId?: number; limit?: number } = {}): Promise<LedgerEntry[]> {
    return this.run("listLedger", async () => {
      const limit = opts.limit ?? DEFAULT_LEDGER_LIMIT;
      if (limit <= 0) return [];
      const rows = await this.client.xrange(this.prefix + "ledger", `${(opts.afterId ?? 0) + 1}-0`, "+", "COUNT", limit);
      return rows.map(([id, fields]) => ({ ...(JSON.parse(fields[1]) as LedgerEntry), id: parseInt(id, 10) }));
    });
  }

  ping(): Promise<void> {
    return this.run("ping", async () => {
      await this.client.ping();
    });
  }

  async close(): Promise<void> {
    this.batch.flush(); // queued calls are still sent
    if (!this.owned || this.client.status === "end") return;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
  // Keys: `outbox` hash id → record and `outbox:age` sorted set id → first write (ms);
  // `lkey:<key>` ledger id appended under key (kept LEDGER_KEY_TTL_MS); `held:<key>` string, PXAT = expiry.

  putOutbox(id: string, record: string): Promise<void> {
    return this.run("putOutbox", async () => {
      await this.eval(PUT_OUTBOX, [this.prefix + "outbox", this.prefix + "outbox:age"], [id, record, Date.now()]);
    });
  }

  listOutbox(limit: number): Promise<OutboxItem[]> {
    return this.run("listOutbox", async () => {
      if (limit <= 0) return [];
      const ids = await this.client.zrange(this.prefix + "outbox:age", "0", String(limit - 1));
      if (ids.length === 0) return [];
      const records = await this.client.hmget(this.prefix + "outbox", ...ids);
      const out: OutboxItem[] = [];
      for (let i = 0; i < ids.length; i++) if (records[i] !== null) out.push({ id: ids[i]!, record: records[i]! });
      return out;
    });
  }

  deleteOutbox(id: string): Promise<void> {
    return this.run("deleteOutbox", async () => {
      await this.client.multi().hdel(this.prefix + "outbox", id).zrem(this.prefix + "outbox:age", id).exec();
    });
  }

  appendLedgerOnce(key: string, entry: LedgerEntry): Promise<number> {
    return this.run("appendLedgerOnce", async () =>
      Number(
        await this.eval(
          APPEND_LEDGER_ONCE,
          [this.prefix + "ledger:id", this.prefix + "ledger", this.prefix + "lkey:" + key],
          [JSON.stringify(ledgerBody(entry)), LEDGER_KEY_TTL_MS],
        ),
      ),
    );
  }

  releasePendingNonce(key: string): Promise<void> {
    return this.run("releasePendingNonce", async () => {
      await this.eval(RELEASE_PENDING_NONCE, [this.prefix + "nonce:" + key], []);
    });
  }

  putHeldAnswer(key: string, answer: string, expiresAt: number): Promise<void> {
    return this.run("putHeldAnswer", async () => {
      await this.client.set(this.prefix + "held:" + key, answer, "PXAT", expiresAt);
    });
  }

  getHeldAnswer(key: string): Promise<string | undefined> {
    return this.run("getHeldAnswer", async () => (await this.client.get(this.prefix + "held:" + key)) ?? undefined);
  }

  deleteHeldAnswer(key: string): Promise<void> {
    return this.run("deleteHeldAnswer", async () => {
      await this.client.del(this.prefix + "held:" + key);
    });
  }

  // ---- Payment identifiers (issue 17 part 3): idempotent retries ----
  // Keys: `pid:<key>` hash {owner, record}, PXAT = expiry; `pid:index` sorted set key → expiry (ms),
  // which counts the live records for `maxEntries`. Each call is one script.

  claimPaymentId(key: string, owner: string, record: string, expiresAt: number, maxEntries: number): Promise<PaymentIdClaim> {
    return this.run("claimPaymentId", async () => {
      const r = (await this.eval(CLAIM_PAYMENT_ID, [this.prefix + "pid:" + key, this.prefix + "pid:index"], [key, owner, record, expiresAt, maxEntries, Date.now()])) as [number, string?];
      if (r[0] === 1) return { ok: true };
      if (r[0] === 2) return { ok: false, full: true };
      return { ok: false, record: r[1]! };
    });
  }

  updatePaymentId(key: string, owner: string, record: string, expiresAt: number): Promise<boolean> {
    return this.run("updatePaymentId", async () => (await this.eval(UPDATE_PAYMENT_ID, [this.prefix + "pid:" + key, this.prefix + "pid:index"], [key, owner, record, expiresAt])) === 1);
  }

  releasePaymentId(key: string, owner: string): Promise<void> {
    return this.run("releasePaymentId", async () => {
      await this.eval(RELEASE_PAYMENT_ID, [this.prefix + "pid:" + key, this.prefix + "pid:index"], [key, owner]);
    });
  }
  // ---- end payment identifiers ----
}

// KEYS: pid:<key>, pid:index. ARGV: key, owner, record, expiresAt, maxEntries, now.
// Answers {1} claimed, {0, record} a live record, {2} full.
const CLAIM_PAYMENT_ID = script(`
local rec = redis.call('HGET', KEYS[1], 'record')
if rec then return {0, rec} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {2} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'record', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return {1}`);

// KEYS: pid:<key>, pid:index. ARGV: key, owner, record, expiresAt.
const UPDATE_PAYMENT_ID = script(`
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1`);

// KEYS: pid:<key>, pid:index. ARGV: key, owner.
const RELEASE_PAYMENT_ID = script(`
if redis.call('HGET', KEYS[1], 'owner') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0`);

/** How long the key of a once-only ledger append is remembered (30 days): far longer than any retry. */
const LEDGER_KEY_TTL_MS = 30 * 24 * 3600_000;

// KEYS: outbox, outbox:age. ARGV: id, record, now.
const PUT_OUTBOX = script(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
return 0`);

// KEYS: ledger:id, ledger, lkey:<key>. ARGV: entry JSON, key ttl ms.
const APPEND_LEDGER_ONCE = script(`
local known = redis.call('GET', KEYS[3])
if known then return tonumber(known) end
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 'e', ARGV[1])
redis.call('SET', KEYS[3], id, 'PX', ARGV[2])
return id`);

const RELEASE_PENDING_NONCE = script(`
local v = redis.call('GET', KEYS[1])
if v and (v == 'pending' or string.sub(v, 1, 8) == 'pending:') then redis.call('DEL', KEYS[1]) end
return 0`);
