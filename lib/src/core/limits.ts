/**
 * Limits against never-charged work and unpaid traffic (issue 14, A5–A7):
 * the options, and the small in-process memories the engine keeps to refuse
 * what it can before any store write or RPC.
 */
import { ConfigError } from "../errors.js";

/** Abuse limits of the payment engine; every field is optional. */
export interface AbuseLimits {
  /**
   * How many times a payment (an x402 authorization, or a token call) that was
   * given back after a failed run may be tried again. The next try is refused
   * without running the handler: an authorization for good (sign a new one), a
   * token for a cooldown. Default 2. An authorization's count is kept in the
   * store (exact across instances); a token's is kept per process, so with N
   * instances a failing token runs at most N × (1 + maxRetries) times per cooldown.
   */
  maxRetries?: number;
  /** x402 payments one payer may have running at once (verified, not yet settled or given back). Default 4. */
  maxInFlightPerPayer?: number;
  /** How long a payer found short of funds on-chain is refused without asking the chain again, in ms. Default 10 000. */
  insufficientFundsMemoryMs?: number;
  /**
   * On-chain pre-checks per second for payers not seen paying in the last
   * 10 minutes, in bursts of twice as many; beyond it such a payment is
   * answered 503 `chain_check_busy` without an RPC. A check that passes does
   * not count, so the budget is spent only by refused (unpaid) traffic. Default 10.
   */
  newPayerChecksPerSecond?: number;
  /** How long a token refused for its failed runs waits before it may be tried again, in ms; doubles each time. Default 60 000. */
  tokenRetryCooldownMs?: number;
}

export type ResolvedLimits = Required<AbuseLimits>;

const DEFAULTS: ResolvedLimits = {
  maxRetries: 2,
  maxInFlightPerPayer: 4,
  insufficientFundsMemoryMs: 10_000,
  newPayerChecksPerSecond: 10,
  tokenRetryCooldownMs: 60_000,
};

const RANGES: Record<keyof AbuseLimits, [number, number]> = {
  maxRetries: [0, 100],
  maxInFlightPerPayer: [1, 10_000],
  insufficientFundsMemoryMs: [0, 3_600_000],
  newPayerChecksPerSecond: [1, 100_000],
  tokenRetryCooldownMs: [0, 86_400_000],
};

/** Fill in the defaults; a value out of range throws a ConfigError naming it. */
export function resolveLimits(given: AbuseLimits | undefined): ResolvedLimits {
  const out = { ...DEFAULTS };
  for (const [k, [min, max]] of Object.entries(RANGES) as [keyof AbuseLimits, [number, number]][]) {
    const v = given?.[k];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`abuseLimits.${k}`, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}.`);
    out[k] = v;
  }
  return out;
}

/** A map whose entries end at a time of their own, holding at most `max` (the oldest written go first). */
export class ExpiringMap<V> {
  private readonly m = new Map<string, { v: V; until: number }>();
  constructor(private readonly max = 10_000) {}

  get(key: string, now: number): V | undefined {
    const e = this.m.get(key);
    if (!e) return undefined;
    if (e.until > now) return e.v;
    this.m.delete(key);
    return undefined;
  }

  set(key: string, v: V, until: number): void {
    this.m.delete(key);
    this.m.set(key, { v, until });
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value!);
  }

  delete(key: string): void {
    this.m.delete(key);
  }

  get size(): number {
    return this.m.size;
  }
}

/** A token bucket: `rate` per second, holding at most `burst`. */
export class TokenBucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  /** Take one token; false when none is left. */
  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Give a taken token back (it was not spent on refused traffic). */
  refund(): void {
    this.tokens = Math.min(this.burst, this.tokens + 1);
  }
}
