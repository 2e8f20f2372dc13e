/**
 * Store shared by several server processes through one Redis (standalone or
 * primary/replica; not Redis Cluster, since scripts derive payment keys from
 * the token at run time). Every multi-step operation is one Lua script, so
 * all processes see exactly one order of events.
 *
 * Keys (under `keyPrefix`):
 * - `nonce:<key>`       string `state` or `state:tx`, PXAT = lock expiry
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
import { createRequire } from "node:module";
import type { Redis, RedisOptions } from "ioredis";
import { ConfigError } from "../errors.js";
import type { LedgerEntry, NonceState, ReserveResult, ReserveFailure, Store, StoredPayment } from "./store.js";
import {
  DEFAULT_LEDGER_LIMIT,
  DEFAULT_PAYMENT_RETENTION_MS,
  RESERVATION_GC_MS,
  duplicatePaymentError,
  ledgerBody,
  paymentFromRecord,
  paymentToRecord,
  toStoreError,
} from "./shared.js";
import { newReservationId, reservationPaymentId } from "./tokens.js";

/** Options of `RedisStore`: give either `url` or an existing ioredis `client`. */
export interface RedisStoreOptions {
  /** `redis://[user:pass@]host:port[/db]` (or `rediss://`). The store owns this connection and closes it. */
  url?: string;
  /**
   * An existing ioredis client. The store does not close it. Configure it to
   * fail fast (see `url`'s defaults) or a down Redis may make requests hang.
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

// KEYS: tok. ARGV: prefix, serviceId, now, leaseUntil, reservation id without its payment id, rsv key ttl.
// Mirrors reserveRejection() in shared.ts.
const RESERVE = script(`
local pid = redis.call('GET', KEYS[1])
if not pid then return {'unknown_token'} end
local flat = redis.call('HGETALL', ARGV[1] .. 'pay:' .. pid)
if #flat == 0 then return {'unknown_token'} end
local p = {}
for i = 1, #flat, 2 do p[flat[i]] = flat[i + 1] end
local now = tonumber(ARGV[3])
local used, max = tonumber(p.callsUsed), tonumber(p.maxCalls)
if p.serviceId ~= ARGV[2] then return {'wrong_service', flat} end
if p.status == 'paid' and used >= max then return {'exhausted', flat} end
if now >= tonumber(p.expiresAt) then return {'expired', flat} end
if p.status ~= 'paid' then return {'pending', flat} end
local rkey = ARGV[1] .. 'rsv:' .. pid
redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now)
if used + redis.call('ZCARD', rkey) >= max then return {'exhausted', flat} end
redis.call('ZADD', rkey, ARGV[4], ARGV[5] .. pid)
if redis.call('PTTL', rkey) < tonumber(ARGV[6]) then redis.call('PEXPIRE', rkey, ARGV[6]) end
return {'ok', flat}`);

// KEYS: rsv, pay. ARGV: reservationId.
const COMMIT = script(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'callsUsed', 1)
return 1`);

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

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? "server402:";
    this.retentionMs = opts.paymentRetentionMs ?? DEFAULT_PAYMENT_RETENTION_MS;
    if (opts.client) {
      this.client = opts.client;
      this.owned = false;
    } else {
      if (!opts.url) throw new ConfigError("store", "RedisStore needs `url` or `client`");
      let IORedis: typeof Redis;
      try {
        const mod = createRequire(import.meta.url)("ioredis");
        IORedis = mod.Redis ?? mod.default ?? mod;
      } catch (err) {
        throw new ConfigError("store", `RedisStore needs the ioredis package (npm install ioredis): ${(err as Error).message}`);
      }
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
    return this.run("reserveCall", async (): Promise<ReserveResult> => {
      // The payment id is only known inside the script; the id's random part is drawn here.
      const placeholder = newReservationId("");
      const [outcome, flat] = (await this.eval(
        RESERVE,
        [this.prefix + "tok:" + tokenHash],
        [this.luaPrefix, serviceId, now, now + leaseMs, placeholder, leaseMs + RESERVATION_GC_MS],
      )) as [string, string[]?];
      if (!flat) return { ok: false, reason: "unknown_token" };
      const payment = paymentFromRecord(pairs(flat));
      if (outcome !== "ok") return { ok: false, reason: outcome as ReserveFailure, payment };
      return { ok: true, payment, reservationId: placeholder + payment.paymentId };
    });
  }

  commitCall(reservationId: string): Promise<boolean> {
    return this.run("commitCall", async () => {
      const paymentId = reservationPaymentId(reservationId);
      if (paymentId === undefined) return false;
      return (await this.eval(COMMIT, [this.prefix + "rsv:" + paymentId, this.prefix + "pay:" + paymentId], [reservationId])) === 1;
    });
  }

  releaseCall(reservationId: string): Promise<void> {
    return this.run("releaseCall", async () => {
      const paymentId = reservationPaymentId(reservationId);
      if (paymentId !== undefined) await this.client.zrem(this.prefix + "rsv:" + paymentId, reservationId);
    });
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
    if (!this.owned || this.client.status === "end") return;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}
