/**
 * Settlement: turning a verified EIP-3009 authorization into an on-chain
 * transfer. Two implementations share this interface: `relayerSettler`
 * (our own wallet submits `transferWithAuthorization`) and
 * `facilitatorSettler` (an x402 facilitator does it over HTTP).
 */
import type { Address, Hex } from "viem";
import type { ExactAuthorization, SignatureKind } from "../protocol/signature.js";
import type { Permit2Payment } from "../protocol/permit2.js";

export type { ExactAuthorization } from "../protocol/signature.js";

/** Everything a settler needs to move the money for one verified payment. */
export interface SettleRequest {
  authorization: ExactAuthorization;
  /** 65-byte EOA signature (or longer for smart wallets). */
  signature: Hex;
  /** How the signature was verified; `erc1271` / `erc6492` settle through the token's `bytes signature` form. */
  signatureKind?: SignatureKind;
  /** Token contract address. */
  asset: Address;
  /** Chain id the authorization is signed for. */
  chainId: number;
  /** CAIP-2 network id, e.g. `eip155:84532`. */
  network: string;
  /** v1 network name when one exists, e.g. `base-sepolia`. */
  v1Network?: string;
  /** Protocol version the client used (facilitators need the matching body shape). */
  x402Version: 1 | 2;
  /** The decoded payment payload exactly as the client sent it. */
  payload: unknown;
  /** The server's own requirements, in the shape of `x402Version`. */
  requirements: unknown;
  /**
   * True when an on-chain pre-check (nonce unused, balance sufficient) passed
   * for this request; a settler may then skip its own simulation.
   */
  prechecked?: boolean;
  /** When that pre-check read the chain (ms epoch); a settler trusts an old reading less. */
  precheckedAt?: number;
  /**
   * Set for a Permit2 payment (x402 `exact` with assetTransferMethod `permit2`, or `upto`):
   * the transfer goes through the x402 Permit2 proxy instead of the token's
   * `transferWithAuthorization`; `authorization` is its EIP-3009-shaped view
   * (value = the amount settled).
   */
  permit2?: Permit2Payment;
}

/** A completed settlement. */
export interface SettleResult {
  transaction: Hex;
  /** CAIP-2 network id. */
  network: string;
  payer: Address;
}

export interface Settler {
  /** "relayer" | "facilitator" | custom. */
  readonly kind: string;
  /** Optional: the one chain this settler can settle on. The paywall refuses (ConfigError) a `network` on another chain. */
  readonly chainId?: number;
  /**
   * Move the money. Resolves only once the transfer is confirmed.
   * Throws `SettlementError` (with `pending: true` and the tx hash when the
   * transaction was broadcast but no receipt arrived in time).
   */
  settle(req: SettleRequest): Promise<SettleResult>;
  /**
   * Optional: the outcome of a transfer `settle` left pending with hash
   * `transaction`, without sending anything. Resolves the result once it is
   * mined and checked, undefined while it may still be; throws a
   * `SettlementError` (not pending) once it certainly failed (reverted, or
   * dropped with the authorization unused). The reconciler uses it.
   */
  confirm?(req: SettleRequest, transaction: string): Promise<SettleResult | undefined>;
  /**
   * Optional (issue 14 B10): the outcome of a transfer `settle` left pending
   * without a transaction hash (e.g. a facilitator that did not answer in
   * time), read without sending anything: resolves the result once the
   * authorization was used by the authorized transfer, undefined while it may
   * still be; throws a `SettlementError` (not pending) once it certainly
   * failed. Without it the reconciler calls `settle` again.
   */
  lookup?(req: SettleRequest): Promise<SettleResult | undefined>;
}

/**
 * Reads on-chain facts needed before running a paid handler. Throws
 * `ChainError` when the RPC is unreachable.
 */
export interface ChainReader {
  /** EIP-3009 `authorizationState(authorizer, nonce)`: true when used or cancelled. */
  authorizationUsed(asset: Address, from: Address, nonce: Hex): Promise<boolean>;
  /** ERC-20 `balanceOf`. */
  balanceOf(asset: Address, owner: Address): Promise<bigint>;
  /** Both facts the pre-handler check needs, in one round trip where the reader can (optional). */
  paymentState?(asset: Address, from: Address, nonce: Hex): Promise<{ used: boolean; balance: bigint }>;
}
