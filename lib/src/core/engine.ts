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
import { verifyPayer } from "../protocol/verify.js";
import type { SmartWalletVerifier } from "../chain/smart-wallet.js";
import { decodePermit2, verifyPermit2 } from "../protocol/permit2.js";
import { closeUptoCharge, makeUpto, type UptoPaymentInfo } from "./upto.js";
import type { SettleResponse } from "../protocol/types.js";
import type { LedgerEntry, PayerClaimFailure, ReserveResult, Store, StoredPayment } from "../state/store.js";
import { hashToken, isWellFormedToken } from "../state/tokens.js";
import { ExpiringMap, resolveLimits, TokenBucket, type AbuseLimits, type ResolvedLimits } from "./limits.js";
import { Reconciler, requestToJson, type PaidPayment, type SettlementRecord } from "./reconciler.js";
import { chooseOffer } from "./offers.js";
import { HookRunner, type PaymentHookContext, type PaymentHooks, type VerifiedHookContext } from "./hooks.js";
import { PaymentIds, type HeldRefForReplay, type PaymentIdHold, type PaymentIdentifierOptions } from "./idempotency.js";

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
  /** `upto` payments (usage-based, over Permit2): see {@link UptoPaymentInfo}. */
  scheme?: "exact" | "upto";
  maximum?: string;
  charge?: UptoPaymentInfo["charge"];
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
  /** Only `upto` x402 payments have `charge` (so `req.payment?.charge?.(…)` reads on either kind). */
  charge?: undefined;
}

/** A verified, locked x402 payment waiting for settlement or release. */
export interface X402Attempt {
  decoded: DecodedPayment;
  /** What the settler and checker receive. */
  request: SettleRequest;
  offer: Offer;
  lockKey: string;
  info: X402PaymentInfo;
  /** Issue 17.3: the `payment-identifier` id this payment claimed (set by the adapter after `verifyX402`). */
  paymentId?: PaymentIdHold;
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
  | { type: "failed"; method: "x402" | "token"; reason: string; stage: "verify" | "settle"; resource: string }
  /** A record of money that moved could not be stored yet (it is kept in the outbox and retried): log it and count it. */
  | { type: "record_failed"; what: "ledger" | "nonce" | "payment" | "outbox" | "answer"; reason: string; resource: string; transaction?: string }
  /** The reconciler confirmed or failed a pending transfer, or stored the records it kept. */
  | { type: "reconciled"; outcome: "settled" | "failed" | "recorded"; resource: string; transaction?: string }
  /** A lifecycle hook (`hooks` option) threw: the payment was refused (gating hooks) or went on (observing hooks). */
  | { type: "hook_failed"; hook: string; reason: string; resource: string }
  /** An adapter answered an error whose full story it kept from the client (issue 14 C16): log `detail`. */
  | { type: "error_answer"; status: number; code: string; detail: string; resource: string };

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
  /** How often the reconciler drains the settlement outbox (ms); 0 = only when `reconcile()` is called. Default 5000. */
  reconcileIntervalMs?: number;
  /** Largest answer (body and headers, bytes) kept for a retry while its settlement is pending. Default 1 MiB. */
  heldAnswerMaxBytes?: number;
  /** Longest time a held answer is kept (ms); never past its authorization's lock. Default 1 hour. */
  heldAnswerTtlMs?: number;
  /** Limits against never-charged work and unpaid traffic; see `AbuseLimits` for the defaults. */
  abuseLimits?: AbuseLimits;
  /** Slow path for smart-wallet signatures (ERC-1271 / ERC-6492); without it only EOA signatures are accepted. */
  smartWallets?: SmartWalletVerifier;
  /** Issue 14 B11: age (ms) after which a settlement's intent left in the outbox (its process died) is looked up on the chain. Default 120 000. */
  settlementIntentAgeMs?: number;
  /**
   * Issue 14: the longest one paid answer waits for the store's records of its settlement (the intent
   * before, the ledger, nonce and outbox writes after; a store retrying each write through an outage
   * could otherwise add up), ms. Past it the answer is sent, the writes go on and the reconciler
   * finishes them; the intent, stored first, keeps them safe from a crash. Default 10 000.
   */
  recordWaitMs?: number;
  /** Lifecycle hooks around verification and settlement (see core/hooks.ts for what they may do). */
  hooks?: PaymentHooks;
  /** Issue 17.3: idempotent retries with the x402 v2 `payment-identifier` extension (on by default); `false` turns it off. */
  paymentIdentifier?: PaymentIdentifierOptions | false;
}

/** A confirmed x402 settlement: whether its records were all stored now (else the outbox keeps them), and the prepaid payment it paid. */
export interface X402Settlement extends SettleResult {
  recorded: boolean;
  payment?: StoredPayment;
}

/** A paid answer held while its settlement was pending, as kept in the store. */
export interface HeldAnswer {
  resource: string;
  /** 0: the handler has not run (settlement `before`): it runs once for a retry after the transfer is confirmed. */
  status: number;
  /** The payment, for a handler that runs on a retry. */
  info?: X402PaymentInfo;
  headers: Record<string, string | string[]>;
  /** Base64. */
  body: string;
  /** Issue 17.3: kept for a `payment-identifier` retry: replayed only to a request with this fingerprint. */
  bound?: string;
}

/** What to answer a retry of an authorization whose answer is held: the paid answer, or "pending" again. */
export type X402Replay =
  | { kind: "paid"; answer: HeldAnswer; response: SettleResponse }
  /** Settlement `before` went pending: now confirmed, the handler runs for this retry (once). */
  | { kind: "run"; info: X402PaymentInfo; response: SettleResponse }
  | { kind: "pending"; error: SettlementError };

/** Marks the duplicate-authorization refusal with what a replay needs (see `replayX402`). */
const HELD_REF = Symbol("server402.heldRef");
interface HeldRef {
  lockKey: string;
  payer: Address;
  version: 1 | 2;
  /** The receipt's network: the option the payment was matched to (a route may offer several). */
  network?: string;
}

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
  private readonly reconciler: Reconciler;
  private readonly heldMaxBytes: number;
  private readonly heldTtlMs: number;
  private readonly recordWaitMs: number;
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
  private readonly smartWallets?: SmartWalletVerifier;
  private readonly hooks?: HookRunner;
  /** Issue 17.3: the `payment-identifier` support; undefined when turned off or the store lacks its methods. */
  readonly paymentIds?: PaymentIds;

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
    this.smartWallets = opts.smartWallets && this.budgeted(opts.smartWallets);
    if (opts.hooks) this.hooks = new HookRunner(opts.hooks, (hook, err, resource) => this.emit({ type: "hook_failed", hook, reason: err instanceof Error ? err.message : String(err), resource }));
    const st = opts.store;
    this.heldMaxBytes = opts.heldAnswerMaxBytes ?? 1 << 20;
    this.heldTtlMs = opts.heldAnswerTtlMs ?? 3600_000;
    this.recordWaitMs = opts.recordWaitMs ?? 10_000;
    this.reconciler = new Reconciler({
      store: st,
      settler: opts.settler,
      emit: (e) => this.emit(e),
      now: this.now,
      graceSeconds: this.lockMargin,
      intervalMs: opts.reconcileIntervalMs ?? 5000,
      intentAgeMs: opts.settlementIntentAgeMs,
    });
    if (opts.paymentIdentifier !== false && PaymentIds.supported(st)) {
      this.paymentIds = new PaymentIds(st, opts.paymentIdentifier ?? {}, this.now, (ref, offer, bound) => this.replayHeld(ref, offer, bound) as never);
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
  async verifyX402(version: 1 | 2, raw: Record<string, unknown>, offer: Offer, serviceId?: string, acceptOverpayment = false): Promise<X402Attempt> {
    let locked: string | undefined;
    let verifying: string | undefined;
    let hookCtx: PaymentHookContext | undefined;
    try {
      // several payment options: verify, lock and settle against the one this payment names (none: refused)
      if (offer.alternatives) offer = await chooseOffer(version, raw, offer);
      const decoded = offer.permit2 ? decodePermit2(version, raw, offer) : version === 1 ? decodeV1(raw, offer) : decodeV2(raw, offer);
      const auth = decoded.authorization;
      if (this.hooks) await this.hooks.gate("onBeforeVerify", (hookCtx = hookContext(version, raw, offer)));
      // Never take more than the price silently: v1's "at least" only where the route opted in.
      if (auth.value > offer.amount && !(version === 1 && acceptOverpayment)) {
        throw new PaymentError(
          "invalid_exact_evm_payload_authorization_value_mismatch",
          `authorization.value ${auth.value} is more than the price ${offer.amount}; sign exactly the price (this resource does not take overpayments).`,
        );
      }
      const { payer, kind: signatureKind } = decoded.permit2
        ? await verifyPermit2(decoded.permit2, decoded.signature, offer.network.chainId, BigInt(Math.floor(this.now() / 1000)), this.smartWallets)
        : await verifyPayer(auth, decoded.signature, {
        asset: offer.asset,
        chainId: offer.network.chainId,
        payTo: offer.payTo,
        amount: offer.amount,
        amountRule: version === 2 ? "exact" : "atLeast",
        now: BigInt(Math.floor(this.now() / 1000)),
        smartWallets: this.smartWallets,
      });
      const payerKey = `${offer.network.chainId}:${offer.asset.address}:${auth.from}`.toLowerCase();
      const lockKey = `${payerKey}:${decoded.permit2 ? "permit2:" : ""}${auth.nonce.toLowerCase()}`;
      const expiresAt = Math.min(Number(auth.validBefore + BigInt(this.lockMargin)) * 1000, 8.64e15);
      // Refuse what this process already knows, then what the store knows, before any write or RPC.
      this.refuseLocally(lockKey, payerKey, auth.value);
      this.verifying.add((verifying = lockKey));
      const prior = await this.store.getNonce(lockKey);
      if (prior) throw withHeldRef(duplicate(prior.state === "locked"), { lockKey, payer, version, network: networkLabel(version, offer) });
      const request: SettleRequest = {
        authorization: auth,
        signature: decoded.signature,
        signatureKind,
        asset: offer.asset.address,
        chainId: offer.network.chainId,
        network: offer.network.caip2,
        v1Network: offer.network.v1Name,
        x402Version: version,
        payload: decoded.payload,
        requirements: version === 1 ? toRequirementsV1(offer) : toRequirementsV2(offer),
        ...(decoded.permit2 ? { permit2: decoded.permit2 } : {}),
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
      if (!claim.ok) {
        const refusal = this.claimRefusal(claim.reason, claim.held, lockKey, expiresAt, auth.value, balance);
        throw claim.reason === "used" || claim.reason === "in_use" ? withHeldRef(refusal, { lockKey, payer, version, network: networkLabel(version, offer) }) : refusal;
      }
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
      if (decoded.permit2?.scheme === "upto") makeUpto(info, offer.asset.decimals);
      if (this.hooks) await this.hooks.gate("onAfterVerify", { ...hookCtx!, payment: hookPayment(info) });
      this.emit({ type: "verified", method: "x402", resource: offer.resource });
      return { decoded, request, offer, lockKey, info };
    } catch (err) {
      if (locked) await this.releaseLock(locked);
      this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "verify", resource: offer.resource });
      if (this.hooks) await this.hooks.observe("onVerifyFailure", { ...(hookCtx ?? hookContext(version, raw, offer)), error: err as Error });
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
   * A smart-wallet check is a chain call made for any signature that is not the payer's own EOA
   * signature, so unpaid traffic could send forged bytes to burn the RPC quota: such calls draw on
   * the new payers' check budget (A7), and one that confirms the signature gives its token back.
   */
  private budgeted(wallets: SmartWalletVerifier): SmartWalletVerifier {
    return {
      verify: async (from, digest, signature) => {
        if (!this.newPayerChecks.take(this.now())) {
          throw new PaymentError("chain_check_busy", "too many payments from new payers are being checked; retry in a second.", 503);
        }
        try {
          const kind = await wallets.verify(from, digest, signature);
          this.newPayerChecks.refund();
          return kind;
        } catch (err) {
          if (!(err instanceof PaymentError)) this.newPayerChecks.refund(); // the chain did not answer: not the payer's doing
          throw err;
        }
      },
    };
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
   * Settle a verified payment. What happened is written before this resolves
   * or throws (issue 14 B10/B11): on success the ledger entry (once per
   * authorization), the prepaid payment `pays` marked paid and the nonce
   * settled; a record the store refuses goes to the outbox (the store's, else
   * this process's memory) with a `record_failed` event, and the reconciler
   * stores it later. A pending transfer is recorded as pending with its
   * outbox entry; the reconciler confirms or fails it. Any other failure
   * releases the lock.
   */
  async settleX402(attempt: X402Attempt, ledgerExtra?: Pick<LedgerEntry, "paymentId" | "serviceId">, pays?: PaidPayment): Promise<X402Settlement> {
    const { offer } = attempt;
    const started = this.now();
    // upto: settle what the handler charged; nothing is sent for 0, and the authorization cannot be used again
    if (attempt.info.scheme === "upto" && closeUptoCharge(attempt) === 0n) return this.settleNothing(attempt);
    // issue 14 B11: the intent is stored before money moves (found after a crash even if the records are refused later); a store that refuses it refuses the payment
    // one deadline for this settlement's store writes: what the intent leaves of recordWaitMs goes to the records after the transfer
    let storeBudget = this.recordWaitMs;
    try {
      const wrote = await this.withinRecordWait(this.reconciler.writeIntent(this.recordOf(attempt, "intent", started, undefined, ledgerExtra, pays)), storeBudget);
      if (wrote === LATE) throw new StoreError("server402: the store did not take the settlement's intent in time; nothing was charged.");
      storeBudget -= this.now() - started;
    } catch (err) {
      await this.releaseLock(attempt.lockKey);
      this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "settle", resource: offer.resource });
      throw err;
    }
    let result: SettleResult;
    try {
      if (this.hooks) await this.hooks.gate("onBeforeSettle", verifiedContext(attempt));
      result = await this.settler.settle(attempt.request);
    } catch (err) {
      if (err instanceof SettlementError && err.pending) {
        const pending = this.recordOf(attempt, "pending", started, err.transaction, ledgerExtra, pays);
        const recording = (async () => {
          await this.store.setNonceState(attempt.lockKey, "pending", err.transaction).catch((e: unknown) => this.recordFailed("nonce", e, offer.resource, err.transaction));
          await this.reconciler.keep(pending);
        })();
        const recordsFrom = this.now();
        if ((await this.withinRecordWait(recording, storeBudget)) === LATE) this.recordLate(pending);
        // issue 17.3: a retry gets "pending", then the answer
        if (attempt.paymentId) await this.keepPaymentId(attempt, storeBudget - (this.now() - recordsFrom));
      } else {
        await this.releaseLock(attempt.lockKey);
        await this.reconciler.dropIntent(attempt.lockKey);
        await attempt.paymentId?.release();
      }
      this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "settle", resource: offer.resource });
      if (this.hooks) await this.hooks.observe("onSettleFailure", { ...verifiedContext(attempt), error: err as Error });
      throw err;
    }
    attempt.info.transaction = result.transaction;
    const rec = this.recordOf(attempt, "settled", started, result.transaction, ledgerExtra, pays);
    const recording = (async () => {
      const w = await this.reconciler.write(rec);
      if (!w.ok) await this.reconciler.keep(rec);
      else await this.reconciler.dropIntent(attempt.lockKey);
      return w;
    })();
    const recordsFrom = this.now();
    let written = await this.withinRecordWait(recording, storeBudget);
    if (written === LATE) written = this.recordLate(rec);
    // issue 17.3: a retry with the same id gets this answer
    if (attempt.paymentId) await this.keepPaymentId(attempt, storeBudget - (this.now() - recordsFrom));
    this.emit({ type: "settled", method: "x402", amount: attempt.info.amount, asset: offer.asset.address, durationMs: this.now() - started, resource: offer.resource });
    if (this.hooks) await this.hooks.observe("onAfterSettle", { ...verifiedContext(attempt), transaction: result.transaction });
    return { ...result, recorded: written.ok, payment: written.payment };
  }

  /** Release an authorization's lock (nothing was charged); a store that refuses leaves it to the reconciler's next pass. */
  private async releaseLock(lockKey: string): Promise<void> {
    await this.store.releaseNonce(lockKey).catch(() => this.reconciler.releaseLater(lockKey));
  }

  /** `work`, or LATE once `left` ms have passed (the work goes on). */
  private async withinRecordWait<T>(work: Promise<T>, left: number): Promise<T | typeof LATE> {
    if (left <= 0) {
      work.catch(() => {});
      return LATE;
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<typeof LATE>((resolve) => {
      timer = setTimeout(() => resolve(LATE), left);
    });
    try {
      return await Promise.race([work, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The records of `rec` were not stored by the deadline: answer now, keep them in memory too (its intent is in the store). */
  private recordLate(rec: SettlementRecord): { ok: false; payment?: StoredPayment } {
    this.reconciler.remember(rec);
    this.emit({ type: "record_failed", what: "outbox", reason: "record_timeout", resource: rec.ledger.resource, transaction: rec.transaction });
    return { ok: false };
  }

  /**
   * An `upto` payment charged 0: nothing moves; its authorization is marked used so it cannot pay another request.
   * The settle hooks run as for a transfer (as in @x402/core, whose upto facilitator answers a zero settlement with
   * success and transaction ""): onBeforeSettle may refuse (lock given back, answer withheld), onAfterSettle observes.
   */
  private async settleNothing(attempt: X402Attempt): Promise<X402Settlement> {
    if (this.hooks) {
      try {
        await this.hooks.gate("onBeforeSettle", verifiedContext(attempt));
      } catch (err) {
        await this.releaseLock(attempt.lockKey);
        await attempt.paymentId?.release();
        this.emit({ type: "failed", method: "x402", reason: reasonOf(err), stage: "settle", resource: attempt.offer.resource });
        await this.hooks.observe("onSettleFailure", { ...verifiedContext(attempt), error: err as Error });
        throw err;
      }
    }
    let recorded = true;
    await this.store.setNonceState(attempt.lockKey, "settled").catch((e: unknown) => {
      recorded = false;
      this.recordFailed("nonce", e, attempt.offer.resource);
    });
    if (attempt.paymentId) await this.keepPaymentId(attempt, this.recordWaitMs); // a retry with the same id gets this answer, as after a transfer
    this.emit({ type: "settled", method: "x402", amount: "0", asset: attempt.offer.asset.address, durationMs: 0, resource: attempt.offer.resource });
    if (this.hooks) await this.hooks.observe("onAfterSettle", { ...verifiedContext(attempt), transaction: "" });
    return { transaction: "" as Hex, network: attempt.offer.network.caip2, payer: attempt.info.payer, recorded };
  }

  private recordOf(attempt: X402Attempt, state: SettlementRecord["state"], startedAt: number, transaction: string | undefined, ledgerExtra?: Pick<LedgerEntry, "paymentId" | "serviceId">, pays?: PaidPayment): SettlementRecord {
    const { offer, info } = attempt;
    return {
      lockKey: attempt.lockKey,
      state,
      transaction,
      request: requestToJson(attempt.request),
      validBefore: attempt.request.authorization.validBefore.toString(),
      ledger: {
        time: this.now(),
        method: "x402",
        payer: info.payer,
        amount: info.amount,
        asset: offer.asset.address,
        network: offer.network.caip2,
        resource: offer.resource,
        serviceId: info.serviceId,
        ...ledgerExtra,
      },
      pays,
      startedAt,
    };
  }

  /**
   * Issue 17.3: hold the attempt's answer (when the adapter gave one) for retries with its id, then mark the id kept.
   * Waits at most `left` ms (what the settlement's record deadline leaves): past it the paid answer goes out, the
   * writes go on (the id stays "in progress" for a retry until they land) and a `record_failed` event says so.
   */
  private async keepPaymentId(attempt: X402Attempt, left: number): Promise<void> {
    const hold = attempt.paymentId!;
    const keeping = (async () => {
      if (hold.answer) await this.putHeld(attempt, hold.answer);
      await hold.keep(attempt.lockKey, attempt.info.payer);
    })();
    if ((await this.withinRecordWait(keeping, left)) === LATE) {
      this.emit({ type: "record_failed", what: "answer", reason: "record_timeout", resource: attempt.offer.resource, transaction: attempt.info.transaction });
    }
  }

  private recordFailed(what: "nonce" | "answer", err: unknown, resource: string, transaction?: string): void {
    this.emit({ type: "record_failed", what, reason: reasonOf(err), resource, transaction });
  }

  /**
   * Drain the settlement outbox once: confirm or fail pending transfers
   * (releasing the payer's lock when one failed) and store the records that
   * could not be stored. Runs in the background every `reconcileIntervalMs`;
   * concurrent calls share the run in progress. Never rejects.
   */
  reconcile(): Promise<void> {
    return this.reconciler.run();
  }

  /** Stop the background reconciler (the outbox stays for the next engine on the same store). */
  stopReconciler(): void {
    this.reconciler.stop();
  }

  /**
   * Keep the answer produced for `attempt` while its settlement is pending,
   * so a retry with the same authorization gets it once the transfer is
   * confirmed. Bounded by `heldAnswerMaxBytes` and `heldAnswerTtlMs` (and
   * the authorization's lock); one that cannot be kept is reported as a
   * `record_failed` event (`what: "answer"`). Never rejects. A payment with
   * a payment identifier that carries its answer has it held already (by
   * `keepPaymentId`), so nothing is written twice.
   */
  async holdAnswer(attempt: X402Attempt, answer: { status: number; headers: Record<string, string | string[]>; body: Buffer } | "run"): Promise<void> {
    if (answer !== "run" && attempt.paymentId?.answer) return;
    return this.putHeld(attempt, answer);
  }

  private async putHeld(attempt: X402Attempt, answer: { status: number; headers: Record<string, string | string[]>; body: Buffer } | "run"): Promise<void> {
    const resource = attempt.offer.resource;
    const held: HeldAnswer =
      answer === "run"
        ? { resource, status: 0, info: attempt.info, headers: {}, body: "" }
        : { resource, status: answer.status, headers: answer.headers, body: answer.body.toString("base64") };
    if (attempt.paymentId) held.bound = await attempt.paymentId.bound().catch(() => "unbound"); // issue 17.3
    const json = JSON.stringify(held);
    if (json.length > this.heldMaxBytes * 1.34 + 1024) {
      return this.recordFailed("answer", new PaymentError("answer_too_large", "answer too large to hold"), resource, attempt.info.transaction);
    }
    const lockEnd = Number(attempt.request.authorization.validBefore + BigInt(this.lockMargin)) * 1000;
    try {
      await this.store.putHeldAnswer(attempt.lockKey, json, Math.min(lockEnd, this.now() + this.heldTtlMs));
    } catch (err) {
      this.recordFailed("answer", err, resource);
    }
  }

  /**
   * For a `duplicate_settlement` refusal of an authorization whose answer
   * is held (its settlement went pending): the paid answer once the transfer
   * is confirmed (a pending one is looked at once more first), or "pending"
   * again. Undefined when there is nothing to replay (answer the refusal).
   * Only a request carrying the same signed authorization, for the same
   * resource, gets here.
   */
  async replayX402(err: unknown, offer: Offer): Promise<X402Replay | undefined> {
    const ref = (err as { [HELD_REF]?: HeldRef } | null)?.[HELD_REF];
    if (!ref) return undefined;
    return this.replayHeld(ref, offer);
  }

  /**
   * The replay of the answer held under `ref.lockKey`: only one held without a fingerprint, or
   * (issue 17.3, a `payment-identifier` retry) one bound to exactly `bound`.
   */
  private async replayHeld(ref: HeldRef | HeldRefForReplay, offer: Offer, bound?: string): Promise<X402Replay | undefined> {
    try {
      const json = await this.store.getHeldAnswer(ref.lockKey);
      if (!json) return undefined;
      const answer = JSON.parse(json) as HeldAnswer;
      if (answer.resource !== offer.resource || answer.bound !== bound) return undefined;
      let nonce = await this.store.getNonce(ref.lockKey);
      if (nonce?.state === "pending") {
        await this.reconciler.runFor(ref.lockKey); // this record only: a retry never sweeps the whole outbox
        nonce = await this.store.getNonce(ref.lockKey);
      }
      const network = ref.network ?? networkLabel(ref.version, offer);
      // settled with no transaction: an upto payment charged 0 (nothing was sent)
      if (nonce?.state === "settled") {
        const response: SettleResponse = { success: true, transaction: nonce.transaction ?? "", network, payer: ref.payer };
        if (answer.status !== 0) return { kind: "paid", answer, response };
        // the handler never ran (settlement before it): it runs for exactly one retry
        if (!answer.info || !(await this.store.claimNonce(`run:${ref.lockKey}`, this.now() + this.heldTtlMs))) return undefined;
        await this.store.deleteHeldAnswer(ref.lockKey);
        return { kind: "run", info: { ...answer.info, transaction: nonce.transaction as Hex }, response };
      }
      if (nonce?.state === "pending") {
        return {
          kind: "pending",
          error: new SettlementError("settlement_pending", "the transfer of this payment is not confirmed yet; retry later with the same payment (you will not be charged twice).", { transaction: nonce.transaction, pending: true }),
        };
      }
    } catch {
      // the store is unreachable: answer the refusal as before
    }
    return undefined;
  }

  /**
   * Give the lock back: the request failed and nothing was charged. The run
   * counts against the authorization: after `maxRetries` retries it is refused.
   */
  async releaseX402(attempt: X402Attempt): Promise<void> {
    await this.store.giveBackNonce(attempt.lockKey).catch(() => this.releaseLock(attempt.lockKey));
    await attempt.paymentId?.release(); // issue 17.3: nothing charged, the id is free again
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
   * release it. Never throws or rejects; a store failure becomes a `failed` event.
   */
  finishToken(attempt: TokenAttempt, resource: string, used: boolean): void {
    void (used ? this.commitToken(attempt, resource) : this.releaseToken(attempt));
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
   * resolves false; the reconciler's next pass commits it, so the delivered
   * call is not given back when its lease lapses.
   */
  async commitToken(attempt: TokenAttempt, resource: string): Promise<boolean> {
    let ok: boolean;
    try {
      ok = await this.store.commitCall(attempt.reservationId);
    } catch (err) {
      this.commitFailed(err, resource);
      this.reconciler.commitLater(attempt.reservationId, () => this.tokenSettled(attempt, resource));
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

/** The network's name as the payment's x402 version writes it: v1's short name where it has one, else CAIP-2. */
function networkLabel(version: number, offer: Offer): string {
  return version === 1 ? (offer.network.v1Name ?? offer.network.caip2) : offer.network.caip2;
}

/** What `withinRecordWait` answers once the deadline passed. */
const LATE = Symbol("server402.late");

/** What a lifecycle hook sees of a payment before it is verified. */
function hookContext(version: 1 | 2, raw: Record<string, unknown>, offer: Offer): PaymentHookContext {
  const requirements = (version === 1 ? toRequirementsV1(offer) : toRequirementsV2(offer)) ?? {};
  return { resource: offer.resource, x402Version: version, paymentPayload: raw, requirements: requirements as unknown as Record<string, unknown> };
}

function hookPayment(info: X402PaymentInfo): VerifiedHookContext["payment"] {
  return { payer: info.payer, amount: info.amount, asset: info.asset, network: info.network, nonce: info.nonce, serviceId: info.serviceId };
}

/** What a lifecycle hook sees of a verified payment. */
function verifiedContext(attempt: X402Attempt): VerifiedHookContext {
  return {
    resource: attempt.offer.resource,
    x402Version: attempt.decoded.x402Version,
    paymentPayload: attempt.decoded.payload as unknown as Record<string, unknown>,
    requirements: (attempt.request.requirements ?? {}) as unknown as Record<string, unknown>,
    payment: hookPayment(attempt.info),
  };
}

/** A refused copy of an authorization that is locked (`inUse`) or was used. */
/** Marks a duplicate-authorization refusal with what `replayX402` needs to find a held answer. */
function withHeldRef(err: PaymentError, ref: HeldRef): PaymentError {
  return Object.assign(err, { [HELD_REF]: ref });
}

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
  const network = networkLabel(attempt.decoded.x402Version, attempt.offer);
  if (!(outcome instanceof Error)) {
    const ok: SettleResponse = { success: true, transaction: outcome.transaction, network, payer: attempt.info.payer };
    return attempt.info.scheme === "upto" ? { ...ok, amount: attempt.info.amount } : ok;
  }
  return {
    success: false,
    transaction: outcome instanceof SettlementError ? (outcome.transaction ?? "") : "",
    network,
    payer: attempt.info.payer,
    errorReason: reasonOf(outcome),
    errorMessage: outcome.message,
  };
}
