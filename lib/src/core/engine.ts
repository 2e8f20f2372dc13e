/**
 * The payment engine shared by the Express and MCP adapters: verify an x402
 * payment locally, lock its nonce, check the chain, settle it; or reserve,
 * commit and release a prepaid token call. Adapters only translate wire
 * formats and decide when to call which step.
 */
import type { Address, Hex } from "viem";
import { ChainError, PaymentError, SettlementError, StoreError } from "../errors.js";
import type { SettleRequest, SettleResult, Settler } from "../chain/settler.js";
import type { PaymentChecker } from "./checker.js";
import { decodeV1, decodeV2, type DecodedPayment } from "../protocol/payload.js";
import { toRequirementsV1, toRequirementsV2, type Offer } from "../protocol/requirements.js";
import { verifyAuthorization } from "../protocol/verify.js";
import type { SettleResponse } from "../protocol/types.js";
import type { LedgerEntry, PayerClaimFailure, ReserveResult, Store } from "../state/store.js";
import { hashToken, isWellFormedToken } from "../state/tokens.js";
import { ExpiringMap, resolveLimits, TokenBucket, type AbuseLimits, type ResolvedLimits } from "./limits.js";

/** What a paid handler sees as `req.payment`. */
export type PaymentInfo = X402PaymentInfo | TokenPaymentInfo;

export interface X402PaymentInfo {
  method: "x402";
  payer: Address;
  /** Atomic units charged, integer string. */
  amount: string;
  asset: Address;
  /** CAIP-2 network. */
  network: string;
  x402Version: 1 | 2;
  nonce: Hex;
  resource: string;
  serviceId?: string;
  /** Set once settled (in `before` mode, before the handler runs). */
  transaction?: Hex;
}

export interface TokenPaymentInfo {
  method: "token";
  paymentId: string;
  payer?: string;
  /** This call's share of the payment in atomic units, integer string. */
  amount: string;
  asset?: string;
  network?: string;
  serviceId: string;
  /** Calls left after this one, if it succeeds. */
  callsRemaining: number;
  transaction?: string;
}

/** A verified, locked x402 payment waiting for settlement or release. */
export interface X402Attempt {
  decoded: DecodedPayment;
  /** What the settler and checker receive. */
  request: SettleRequest;
  offer: Offer;
  lockKey: string;
  info: X402PaymentInfo;
}

/** A reserved token call waiting for commit or release. */
export interface TokenAttempt {
  reservationId: string;
  info: TokenPaymentInfo;
  /** The token's hash: its failed runs are counted under it (see `AbuseLimits.maxRetries`). */
  tokenHash: string;
}

/** Something that happened, for metrics and logs. Never carries secrets. */
export type PaymentEvent =
  | { type: "payment_required"; resource: string }
  | { type: "verified"; method: "x402" | "token"; resource: string }
  | { type: "settled"; method: "x402" | "token"; amount: string; asset: string; durationMs: number; resource: string }
  | { type: "failed"; method: "x402" | "token"; reason: string; stage: "verify" | "settle"; resource: string };

export interface EngineOptions {
  store: Store;
  settler: Settler;
  /** Pre-handler check (on-chain by default when a chain is configured); omit to skip. */
  checker?: PaymentChecker;
  /** How long a token call stays reserved if the process dies mid-request (ms). Default 120 000. */
  tokenLeaseMs?: number;
  /** Extra seconds a nonce lock outlives the authorization's validBefore. Default 60. */
  nonceLockMarginSeconds?: number;
  /** Receives payment events (metrics, logs). Must not throw. */
  onEvent?: (e: PaymentEvent) => void;
  /** Current time in ms (tests). */
  now?: () => number;
  /** Limits against never-charged work and unpaid traffic; see `AbuseLimits` for the defaults. */
  abuseLimits?: AbuseLimits;
}

/** A store with the same-tick token calls. */
type SyncTokenStore = Store & Required<Pick<Store, "reserveCallSync" | "commitCallSync" | "releaseCallSync">>;

/** The shared verify → lock → check → settle machinery. */
export class PaymentEngine {
  readonly store: Store;
  readonly settler: Settler;
  /**
   * True when an `onEvent` listener was given. The token methods use their
   * `resource` argument only for events, so an adapter may pass "" without
   * computing it when this is false (a paid call's events are then not even
   * built).
   */
  readonly observed: boolean;
  private readonly checker?: PaymentChecker;
  private readonly tokenLeaseMs: number;
  private readonly lockMargin: number;
  private readonly emit: (e: PaymentEvent) => void;
  private readonly now: () => number;
  private readonly syncStore?: SyncTokenStore;
  // --- abuse limits (issue 14, A5–A7): what this process remembers to refuse before any store write or RPC ---
  private readonly limits: ResolvedLimits;
  /** lockKey → refusal, for authorizations found used or out of retries (until their lock would expire) */
  private readonly deadNonces = new ExpiringMap<PaymentError>();
  /** payer key → the smallest value found not covered by its balance */
  private readonly shortOfFunds = new ExpiringMap<bigint>();
  /** payer keys whose pre-check passed in the last 10 minutes: their checks are not throttled */
  private readonly goodPayers = new ExpiringMap<true>();
  /** lockKeys being verified in this process right now */
  private readonly verifying = new Set<string>();
  /** pre-checks of payers not in `goodPayers` */
  private readonly newPayerChecks: TokenBucket;
  /** token hash → consecutive failed runs, and until when it is refused */
  private readonly tokenFailures = new ExpiringMap<{ count: number; until: number; cooldown: number }>();

  constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.settler = opts.settler;
    this.checker = opts.checker;
    this.tokenLeaseMs = opts.tokenLeaseMs ?? 120_000;
    this.lockMargin = opts.nonceLockMarginSeconds ?? 60;
    this.emit = opts.onEvent ?? (() => {});
    this.observed = opts.onEvent !== undefined;
    this.now = opts.now ?? Date.now;
    this.limits = resolveLimits(opts.abuseLimits);
    this.newPayerChecks = new TokenBucket(this.limits.newPayerChecksPerSecond, 2 * this.limits.newPayerChecksPerSecond, this.now());
    const st = opts.store;
    if (typeof st.reserveCallSync === "function" && typeof st.commitCallSync === "function" && typeof st.releaseCallSync === "function") {
      this.syncStore = st as SyncTokenStore;
    }
  }

  /** Record that a 402 was served. */
  paymentRequired(resource: string): void {
    this.emit({ type: "payment_required", resource });
  }

  /**
   * Decode, bind and verify an x402 payload object, then take its replay lock
   * and run the pre-handler check. On any refusal nothing stays locked.
   */
  async verifyX402(version: 1 | 2, raw: Record<string, unknown>, offer: Offer, serviceId?: string): Promise<X402Attempt> {
    let locked: string | undefined;
    let verifying: string | undefined;
    try {
      const decoded = version === 1 ? decodeV1(raw, offer) : decodeV2(raw, offer);
      const auth = decoded.authorization;
      const payer = await verifyAuthorization(auth, decoded.signature, {
        asset: offer.asset,
        chainId: offer.network.chainId,
        payTo: offer.payTo,
        amount: offer.amount,
        amountRule: version === 2 ? "exact" : "atLeast",
        now: BigInt(Math.floor(this.now() / 1000)),
      });
      const payerKey = `${offer.network.chainId}:${offer.asset.address}:${auth.from}`.toLowerCase();
      const lockKey = `${payerKey}:${auth.nonce.toLowerCase()}`;
      const expiresAt = Math.min(Number(auth.validBefore + BigInt(this.lockMargin)) * 1000, 8.64e15);
      // Refuse what this process already knows, then what the store knows, before any write or RPC.
      this.refuseLocally(lockKey, payerKey, auth.value);
      this.verifying.add((verifying = lockKey));
      const prior = await this.store.getNonce(lockKey);
      if (prior) throw duplicate(prior.state === "locked");
      const request: SettleRequest = {
        authorization: auth,
        signature: decoded.signature,
        asset: offer.asset.address,
        chainId: offer.network.chainId,
        network: offer.network.caip2,
        v1Network: offer.network.v1Name,
        x402Version: version,
        payload: decoded.payload,
        requirements: version === 1 ? toRequirementsV1(offer) : toRequirementsV2(offer),
      };
      const checkedAt = this.now();
      const balance = this.checker ? await this.precheck(request, lockKey, payerKey, expiresAt) : undefined;
      // The lock, checked in the same step against the payer's other payments: their locked and
      // pending amounts plus this one must be covered by the balance just read (A6), at most
      // maxInFlightPerPayer may run at once, and a given-back authorization only maxRetries times (A5).
      const claim = await this.store.claimPayerNonce(lockKey, expiresAt, {
        payer: payerKey,
        amount: auth.value.toString(),
        balance: balance?.toString(),
        maxInFlight: this.limits.maxInFlightPerPayer,
        maxRetries: this.limits.maxRetries,
      });
      if (!claim.ok) throw this.claimRefusal(claim.reason, claim.held, lockKey, expiresAt, auth.value, balance);
      locked = lockKey;
      // The pre-check vouches for the transfer only when no other payment of this payer was live
      // (a settled one may have moved the balance after it was read): otherwise the settler simulates.
      if (this.checker) {
        request.prechecked = this.checker.onChain === true && claim.others === 0;
        request.precheckedAt = checkedAt;
      }
      const info: X402PaymentInfo = {
        method: "x402",
        payer,
        amount: auth.value.toString(),
        asset: offer.asset.address,
        network: offer.network.caip2,
        x402Version: version,
        nonce: auth.nonce,
        resource: offer.resource,
        serviceId,
      };
      this.emit({ type: "verified", method: "x402", resource: offer.resource });
      return { decoded, request, offer, lockKey, info };
    } catch (err) {
      if (locked) await this.store.releaseNonce(locked).catch(() => {});
      this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "verify", resource: offer.resource });
      throw err;
    } finally {
      if (verifying) this.verifying.delete(verifying);
    }
  }

  /** Throw what this process already knows about an authorization or its payer (A7). */
  private refuseLocally(lockKey: string, payerKey: string, value: bigint): void {
    const now = this.now();
    const dead = this.deadNonces.get(lockKey, now);
    if (dead) throw dead;
    if (this.verifying.has(lockKey)) throw duplicate(true);
    const short = this.shortOfFunds.get(payerKey, now);
    if (short !== undefined && value >= short) {
      throw new PaymentError("insufficient_funds", `the payer's balance was found below ${short} moments ago; fund the payer and try again.`);
    }
  }

  /**
   * Run the pre-handler check. Payers not seen paying recently spend the
   * new-payer budget, unless their check passes (A7). Returns the balance the
   * check read, when it says.
   */
  private async precheck(request: SettleRequest, lockKey: string, payerKey: string, expiresAt: number): Promise<bigint | undefined> {
    const known = this.goodPayers.get(payerKey, this.now()) !== undefined;
    if (!known && !this.newPayerChecks.take(this.now())) {
      throw new PaymentError("chain_check_busy", "too many payments from new payers are being checked; retry in a second.", 503);
    }
    try {
      const state = await this.checker!.check(request);
      if (!known) this.newPayerChecks.refund();
      this.goodPayers.set(payerKey, true, this.now() + 600_000);
      return state?.balance;
    } catch (err) {
      if (err instanceof PaymentError && err.reason === "insufficient_funds") {
        this.shortOfFunds.set(payerKey, request.authorization.value, this.now() + this.limits.insufficientFundsMemoryMs);
        this.goodPayers.delete(payerKey);
      } else if (err instanceof PaymentError && err.reason === "invalid_exact_evm_nonce_already_used") {
        this.deadNonces.set(lockKey, err, expiresAt);
      } else if (!known) {
        this.newPayerChecks.refund(); // the chain did not answer: not the payer's doing
      }
      throw err;
    }
  }

  /** The error for a refused claim; remembers authorizations that can never pass again. */
  private claimRefusal(reason: PayerClaimFailure, held: string | undefined, lockKey: string, expiresAt: number, value: bigint, balance?: bigint): PaymentError {
    switch (reason) {
      case "in_use":
        return duplicate(true);
      case "used":
        return duplicate(false);
      case "retries_exhausted": {
        const err = new PaymentError("retries_exhausted", `this payment authorization already failed ${this.limits.maxRetries + 1} times without being charged; sign a new payment.`);
        this.deadNonces.set(lockKey, err, expiresAt);
        return err;
      }
      case "too_many_in_flight":
        return new PaymentError("too_many_in_flight", `this payer already has ${this.limits.maxInFlightPerPayer} paid requests running; wait for one to finish.`, 429);
      case "insufficient_funds":
        return new PaymentError("insufficient_funds", `payer balance ${balance} does not cover ${value} plus ${held ?? 0} already held for this payer's unsettled payments.`);
    }
  }

  /**
   * Settle a verified payment. On success the nonce is marked settled and a
   * ledger record appended. On failure the lock is released unless the
   * transaction may still land (`pending`), which is recorded instead.
   */
  async settleX402(attempt: X402Attempt, ledgerExtra?: Pick<LedgerEntry, "paymentId" | "serviceId">): Promise<SettleResult> {
    const { offer } = attempt;
    const started = this.now();
    try {
      const result = await this.settler.settle(attempt.request);
      attempt.info.transaction = result.transaction;
      await this.store.setNonceState(attempt.lockKey, "settled", result.transaction).catch(() => {});
      await this.store
        .appendLedger({
          time: this.now(),
          method: "x402",
          payer: attempt.info.payer,
          amount: attempt.info.amount,
          asset: offer.asset.address,
          network: offer.network.caip2,
          transaction: result.transaction,
          resource: offer.resource,
          serviceId: attempt.info.serviceId,
          ...ledgerExtra,
        })
        .catch(() => {});
      this.emit({ type: "settled", method: "x402", amount: attempt.info.amount, asset: offer.asset.address, durationMs: this.now() - started, resource: offer.resource });
      return result;
    } catch (err) {
      if (err instanceof SettlementError && err.pending) {
        await this.store.setNonceState(attempt.lockKey, "pending", err.transaction).catch(() => {});
      } else {
        await this.store.releaseNonce(attempt.lockKey).catch(() => {});
      }
      this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "settle", resource: offer.resource });
      throw err;
    }
  }

  /**
   * Give the lock back: the request failed and nothing was charged. The run
   * counts against the authorization: after `maxRetries` retries it is refused.
   */
  async releaseX402(attempt: X402Attempt): Promise<void> {
    await this.store.giveBackNonce(attempt.lockKey).catch(() => this.store.releaseNonce(attempt.lockKey).catch(() => {}));
  }

  /**
   * Reserve one call of a prepaid token for `serviceId`. Malformed tokens are
   * refused before any store lookup. Throws PaymentError with reason
   * `unknown_token`, `pending`, `expired`, `exhausted` or `wrong_service`
   * (the payment object, without token, is attached as `payment`).
   */
  async reserveToken(token: string, serviceId: string, resource: string): Promise<TokenAttempt> {
    const tokenHash = this.tokenHashOf(token, resource);
    return this.tokenAttempt(await this.store.reserveCall(tokenHash, serviceId, this.now(), this.tokenLeaseMs), resource, tokenHash);
  }

  /**
   * True when the store answers token calls in the same tick (it has
   * `reserveCallSync`, `commitCallSync` and `releaseCallSync`, like
   * `MemoryStore`): then `reserveTokenSync` may be used.
   */
  get syncTokens(): boolean {
    return this.syncStore !== undefined;
  }

  /** `reserveToken` in the same tick, for a store with `syncTokens`; throws the same errors. */
  reserveTokenSync(token: string, serviceId: string, resource: string): TokenAttempt {
    const store = this.syncStore;
    if (!store) throw new TypeError("server402: this store has no reserveCallSync; use reserveToken().");
    const tokenHash = this.tokenHashOf(token, resource);
    return this.tokenAttempt(store.reserveCallSync(tokenHash, serviceId, this.now(), this.tokenLeaseMs), resource, tokenHash);
  }

  private tokenHashOf(token: string, resource: string): string {
    if (!isWellFormedToken(token)) {
      this.emit({ type: "failed", method: "token", reason: "unknown_token", stage: "verify", resource });
      throw new PaymentError("unknown_token", "X-Payment-Token is not a well-formed server402 token.");
    }
    const tokenHash = hashToken(token);
    if (this.tokenFailures.size !== 0) this.refuseFailingToken(tokenHash, resource);
    return tokenHash;
  }

  /** A token whose call was given back after more than `maxRetries` failed runs in a row waits for its cooldown (A5). */
  private refuseFailingToken(tokenHash: string, resource: string): void {
    const now = this.now();
    const f = this.tokenFailures.get(tokenHash, now);
    if (!f || f.until <= now) return;
    this.emit({ type: "failed", method: "token", reason: "retries_exhausted", stage: "verify", resource });
    const seconds = Math.ceil((f.until - now) / 1000);
    const err = new PaymentError("retries_exhausted", `this token's call failed ${this.limits.maxRetries + 1} times in a row without being used; try again in ${seconds} s.`, 429);
    throw Object.assign(err, { retryAfter: seconds });
  }

  /** Count a token call given back after a failed run, or forget the failures once a call is used. */
  private tokenRun(tokenHash: string, used: boolean): void {
    const now = this.now();
    if (used) {
      if (this.tokenFailures.size !== 0) this.tokenFailures.delete(tokenHash);
      return;
    }
    const f = this.tokenFailures.get(tokenHash, now) ?? { count: 0, until: 0, cooldown: this.limits.tokenRetryCooldownMs };
    if (++f.count > this.limits.maxRetries) {
      f.count = 0;
      f.until = now + f.cooldown;
      f.cooldown *= 2;
    }
    // forgotten a day after the last failure
    this.tokenFailures.set(tokenHash, f, now + Math.max(86_400_000, f.until - now));
  }

  private tokenAttempt(r: ReserveResult, resource: string, tokenHash: string): TokenAttempt {
    if (!r.ok) {
      this.emit({ type: "failed", method: "token", reason: r.reason, stage: "verify", resource });
      const err = new PaymentError(r.reason, TOKEN_MESSAGES[r.reason]);
      (err as PaymentError & { payment?: unknown }).payment = r.payment;
      throw err;
    }
    const p = r.payment;
    if (this.observed) this.emit({ type: "verified", method: "token", resource });
    return {
      reservationId: r.reservationId,
      tokenHash,
      info: {
        method: "token",
        paymentId: p.paymentId,
        payer: p.payer,
        amount: (BigInt(p.amountAtomic) / BigInt(p.maxCalls)).toString(),
        network: p.network,
        serviceId: p.serviceId,
        callsRemaining: p.maxCalls - p.callsUsed - 1,
        transaction: p.transaction,
      },
    };
  }

  /**
   * End a reserved call: commit it when `used` (the handler succeeded), else
   * release it. Never throws or rejects; a store failure becomes a `failed`
   * event. In the same tick when the store has `syncTokens`.
   */
  finishToken(attempt: TokenAttempt, resource: string, used: boolean): void {
    const store = this.syncStore;
    if (!store) {
      void (used ? this.commitToken(attempt, resource) : this.releaseToken(attempt));
      return;
    }
    try {
      if (!used) {
        this.tokenRun(attempt.tokenHash, false);
        store.releaseCallSync(attempt.reservationId);
      } else if (store.commitCallSync(attempt.reservationId)) this.tokenSettled(attempt, resource);
    } catch (err) {
      if (used) this.commitFailed(err, resource);
    }
  }

  private tokenSettled(attempt: TokenAttempt, resource: string): void {
    this.tokenRun(attempt.tokenHash, true);
    if (this.observed) this.emit({ type: "settled", method: "token", amount: attempt.info.amount, asset: attempt.info.asset ?? "", durationMs: 0, resource });
  }

  private commitFailed(err: unknown, resource: string): void {
    this.emit({ type: "failed", method: "token", reason: reasonOf(err), stage: "settle", resource });
  }

  /**
   * Count the reserved call as used (the handler succeeded). Never rejects: a
   * store failure is reported as a `failed` event (stage `settle`) and
   * resolves false; the reservation then lapses and the call comes back.
   */
  async commitToken(attempt: TokenAttempt, resource: string): Promise<boolean> {
    let ok: boolean;
    try {
      ok = await this.store.commitCall(attempt.reservationId);
    } catch (err) {
      this.commitFailed(err, resource);
      return false;
    }
    if (ok) this.tokenSettled(attempt, resource);
    return ok;
  }

  /** Give the reserved call back (the handler failed). */
  async releaseToken(attempt: TokenAttempt): Promise<void> {
    this.tokenRun(attempt.tokenHash, false);
    await this.store.releaseCall(attempt.reservationId).catch(() => {});
  }
}

/** A refused copy of an authorization that is locked (`inUse`) or was used. */
function duplicate(inUse: boolean): PaymentError {
  const what = inUse ? "is being used by another request right now" : "was already used";
  return new PaymentError("duplicate_settlement", `this payment authorization ${what}; sign a new payment.`);
}

const TOKEN_MESSAGES: Record<string, string> = {
  unknown_token: "no payment has this token.",
  pending: "this payment has not been paid yet; pay it first.",
  expired: "this payment has expired; create a new one.",
  exhausted: "this payment has no calls left; create a new one.",
  wrong_service: "this token pays for another service.",
};

/** The reason string of any error, for events and responses. */
export function reasonOf(err: unknown): string {
  if (err instanceof PaymentError || err instanceof SettlementError) return err.reason;
  if (err instanceof ChainError || err instanceof StoreError) return err.code;
  return "unexpected_error";
}

/** The settlement response header value for a result or a failure. */
export function settleResponse(attempt: X402Attempt, outcome: SettleResult | SettlementError | Error): SettleResponse {
  const network = attempt.decoded.x402Version === 1 ? (attempt.offer.network.v1Name ?? attempt.offer.network.caip2) : attempt.offer.network.caip2;
  if (!(outcome instanceof Error)) return { success: true, transaction: outcome.transaction, network, payer: attempt.info.payer };
  return {
    success: false,
    transaction: outcome instanceof SettlementError ? (outcome.transaction ?? "") : "",
    network,
    payer: attempt.info.payer,
    errorReason: reasonOf(outcome),
    errorMessage: outcome.message,
  };
}
