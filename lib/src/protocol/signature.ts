/**
 * What the protocol layer knows about an exact-scheme payment's signed
 * authorization and its signature; the chain layer builds on these.
 */
import { size, slice, type Address, type Hex } from "viem";

/** The EIP-3009 TransferWithAuthorization message, integers as bigint. */
export interface ExactAuthorization {
  from: Address;
  to: Address;
  value: bigint;
  validAfter: bigint;
  validBefore: bigint;
  nonce: Hex;
}

/** How a payment's signature was checked: locally (`eoa`) or on-chain by the wallet (`erc1271`, `erc6492`). */
export type SignatureKind = "eoa" | "erc1271" | "erc6492";

/** The ERC-6492 suffix that marks a wrapped signature. */
export const ERC6492_MAGIC: Hex = "0x6492649264926492649264926492649264926492649264926492649264926492";

/**
 * The longest signature accepted, in bytes, ERC-6492 wrapper included; longer
 * ones are refused before any chain call. A passkey smart wallet's wrapped
 * signature is about 1.5 KB, and a payment header (8192 characters of
 * base64) cannot carry much more than 2.5 KB of signature anyway.
 */
export const MAX_SIGNATURE_BYTES = 2048;

/** True when `signature` ends with the ERC-6492 magic suffix. */
export function isErc6492(signature: Hex): boolean {
  return size(signature) > 32 && slice(signature, -32).toLowerCase() === ERC6492_MAGIC;
}

/** Checks a signature the local EOA path could not confirm (implemented in chain/smart-wallet.ts). */
export interface SmartWalletVerifier {
  /**
   * Resolve with the kind when the wallet at `from` accepts `signature` over
   * `digest`; throw PaymentError when it does not, ChainError when the chain
   * cannot be asked.
   */
  verify(from: Address, digest: Hex, signature: Hex): Promise<Exclude<SignatureKind, "eoa">>;
}
