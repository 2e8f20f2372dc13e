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
import type { SettleResponse } from "../protocol/types.js";
import type { LedgerEntry, ReserveResult, Store } from "../state/store.js";
import { hashToken, isWellFormedToken } from "../state/tokens.js";

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
  /** Slow path for smart-wallet signatures (ERC-1271 / ERC-6492); without it only EOA signatures are accepted. */
  smartWallets?: SmartWalletVerifier;
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
  private readonly smartWallets?: SmartWalletVerifier;

  constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.settler = opts.settler;
    this.checker = opts.checker;
    this.tokenLeaseMs = opts.tokenLeaseMs ?? 120_000;
    this.lockMargin = opts.nonceLockMarginSeconds ?? 60;
    this.emit = opts.onEvent ?? (() => {});
    this.observed = opts.onEvent !== undefined;
    this.now = opts.now ?? Date.now;
    this.smartWallets = opts.smartWallets;
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
  async verifyX402(version: 1 | 2, raw: Record<string, unknown>, offer: Offer, serviceId?: string, acceptOverpayment = false): Promise<X402Attempt> {
    let locked: string | undefined;
    try {
      const decoded = version === 1 ? decodeV1(raw, offer) : decodeV2(raw, offer);
      const auth = decoded.authorization;
      // Never take more than the price silently: v1's "at least" only where the route opted in.
      if (auth.value > offer.amount && !(version === 1 && acceptOverpayment)) {
        throw new PaymentError(
          "invalid_exact_evm_payload_authorization_value_mismatch",
          `authorization.value ${auth.value} is more than the price ${offer.amount}; sign exactly the price (this resource does not take overpayments).`,
        );
      }
      const { payer, kind: signatureKind } = await verifyPayer(auth, decoded.signature, {
        asset: offer.asset,
        chainId: offer.network.chainId,
        payTo: offer.payTo,
        amount: offer.amount,
        amountRule: version === 2 ? "exact" : "atLeast",
        now: BigInt(Math.floor(this.now() / 1000)),
        smartWallets: this.smartWallets,
      });
      const lockKey = `${offer.network.chainId}:${offer.asset.address}:${auth.from}:${auth.nonce}`.toLowerCase();
      const expiresAt = Number(auth.validBefore + BigInt(this.lockMargin)) * 1000;
      if (!(await this.store.claimNonce(lockKey, Math.min(expiresAt, 8.64e15)))) {
        const prior = await this.store.getNonce(lockKey);
        const what = prior?.state === "locked" ? "is being used by another request right now" : "was already used";
        throw new PaymentError("duplicate_settlement", `this payment authorization ${what}; sign a new payment.`);
      }
      locked = lockKey;
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
      };
      if (this.checker) {
        await this.checker.check(request);
        request.prechecked = this.checker.onChain === true;
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

  /** Give the lock back: the request failed and nothing was charged. */
  async releaseX402(attempt: X402Attempt): Promise<void> {
    await this.store.releaseNonce(attempt.lockKey).catch(() => {});
  }

  /**
   * Reserve one call of a prepaid token for `serviceId`. Malformed tokens are
   * refused before any store lookup. Throws PaymentError with reason
   * `unknown_token`, `pending`, `expired`, `exhausted` or `wrong_service`
   * (the payment object, without token, is attached as `payment`).
   */
  async reserveToken(token: string, serviceId: string, resource: string): Promise<TokenAttempt> {
    const tokenHash = this.tokenHashOf(token, resource);
    return this.tokenAttempt(await this.store.reserveCall(tokenHash, serviceId, this.now(), this.tokenLeaseMs), resource);
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
    return this.tokenAttempt(store.reserveCallSync(tokenHash, serviceId, this.now(), this.tokenLeaseMs), resource);
  }

  private tokenHashOf(token: string, resource: string): string {
    if (!isWellFormedToken(token)) {
      this.emit({ type: "failed", method: "token", reason: "unknown_token", stage: "verify", resource });
      throw new PaymentError("unknown_token", "X-Payment-Token is not a well-formed server402 token.");
    }
    return hashToken(token);
  }

  private tokenAttempt(r: ReserveResult, resource: string): TokenAttempt {
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
      if (!used) store.releaseCallSync(attempt.reservationId);
      else if (store.commitCallSync(attempt.reservationId)) this.tokenSettled(attempt, resource);
    } catch (err) {
      if (used) this.commitFailed(err, resource);
    }
  }

  private tokenSettled(attempt: TokenAttempt, resource: string): void {
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
    await this.store.releaseCall(attempt.reservationId).catch(() => {});
  }
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
