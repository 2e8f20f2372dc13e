/**
 * Typed errors. Every error server402 throws or reports carries a stable
 * machine-readable `code`; messages are for humans and may change.
 */

import type { StoredPayment } from "./state/store.js";

/**
 * Every `code` a server402 error can carry, in one list (README's error table
 * is checked against it by test/error-table.test.ts).
 */
export const SERVER402_ERROR_CODES = [
  "invalid_config",
  "missing_dependency",
  "payment_refused",
  "duplicate_payment",
  "settlement_failed",
  "store_unavailable",
  "chain_unavailable",
  "devchain_failed",
  "relayer_low_funds",
] as const;

/** Every `code` a server402 error can carry. */
export type Server402ErrorCode = (typeof SERVER402_ERROR_CODES)[number];

/** Base class of every error thrown by server402. */
export class Server402Error extends Error {
  /** Stable machine-readable code, e.g. `invalid_config`. */
  readonly code: Server402ErrorCode;
  /**
   * What happened in full, for logs only: it may name RPC endpoints, wallet
   * addresses or upstream text. `message` is what clients may see.
   */
  readonly detail?: string;
  constructor(code: Server402ErrorCode, message: string, options?: { cause?: unknown; detail?: string }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    if (options?.detail !== undefined) this.detail = options.detail;
  }
}

/** Thrown at startup when options are invalid. The message says how to fix it. */
export class ConfigError extends Server402Error {
  /** The option path that is wrong, e.g. `routes["GET /x"].price`. */
  readonly option: string;
  constructor(option: string, message: string) {
    super("invalid_config", `server402: invalid option ${option}: ${message}`);
    this.option = option;
  }
}

/** An optional package that a feature needs is not installed; the message is the one line to fix it. */
export class MissingDependencyError extends Server402Error {
  /** The npm package(s) to install, e.g. `better-sqlite3`. */
  readonly dependency: string;
  constructor(dependency: string, feature: string, options?: { cause?: unknown }) {
    super("missing_dependency", `${feature} needs ${dependency}: npm install ${dependency}`, options);
    this.dependency = dependency;
  }
}

/**
 * A payment was refused. `reason` is an x402 error reason string
 * (e.g. `invalid_exact_evm_payload_signature`) or one of server402's own
 * (e.g. `duplicate_payment`); it is what clients see.
 */
export class PaymentError extends Server402Error {
  readonly reason: string;
  /** HTTP status to answer with (402 unless noted). */
  readonly status: number;
  /** The prepaid payment a refused token belongs to (e.g. exhausted or expired), when known. */
  payment?: StoredPayment;
  constructor(reason: string, message: string, status = 402, options?: { cause?: unknown }) {
    super("payment_refused", message, options);
    this.reason = reason;
    this.status = status;
  }
}

/** Settlement could not be completed (transfer failed, timed out or facilitator failed). */
export class SettlementError extends Server402Error {
  readonly reason: string;
  /** Transaction hash when one was broadcast. */
  readonly transaction?: string;
  /** True when the outcome is unknown (broadcast, no receipt yet). */
  readonly pending: boolean;
  constructor(reason: string, message: string, opts: { transaction?: string; pending?: boolean; cause?: unknown; detail?: string } = {}) {
    super("settlement_failed", message, { cause: opts.cause, detail: opts.detail });
    this.reason = reason;
    this.transaction = opts.transaction;
    this.pending = opts.pending ?? false;
  }

  /**
   * HTTP status to answer with: 504 when the outcome is unknown (`pending`),
   * 502 when the settlement infrastructure failed (`unexpected_settle_error`:
   * RPC, relayer wallet or facilitator unreachable), else 402 (the payment
   * itself was refused on-chain).
   */
  get status(): 402 | 502 | 503 | 504 {
    if (this.pending) return 504;
    return this.reason === "unexpected_settle_error" ? 502 : 402;
  }
}

/**
 * The relayer wallet(s) cannot pay the gas of one more transaction on top of
 * those already in flight (code and reason `relayer_low_funds`, HTTP 503).
 * Raised before anything is sent: nothing was charged. Top up `wallet`.
 */
export class RelayerFundsError extends SettlementError {
  override readonly code: Server402ErrorCode = "relayer_low_funds";
  /** The wallet that came closest to covering it (the only one without a pool). */
  readonly wallet: string;
  /** Its native balance and what it needed (this transaction's maximum fee plus those in flight), in wei, as integer strings. */
  readonly balance: string;
  readonly needed: string;
  constructor(wallet: string, balance: bigint, needed: bigint) {
    super("relayer_low_funds", "the settlement wallet is low on gas funds; nothing was charged. Retry later.", {
      detail: `relayer ${wallet} holds ${balance} wei, needs ${needed} wei for this transaction and those in flight`,
    });
    this.wallet = wallet;
    this.balance = balance.toString();
    this.needed = needed.toString();
  }
  override get status(): 503 {
    return 503;
  }
}

/** A store backend failed (connection lost, disk error). */
export class StoreError extends Server402Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super("store_unavailable", message, options);
  }
}

/** A chain RPC call failed or timed out. */
export class ChainError extends Server402Error {
  constructor(message: string, options?: { cause?: unknown; detail?: string }) {
    super("chain_unavailable", message, options);
  }
}
