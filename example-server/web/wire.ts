/**
 * The x402 v2 wire shapes the pages read and write, and their base64 JSON
 * encoding: small, so the face page loads them up front and viem only when
 * someone pays with a wallet.
 */
import type { Hex } from "viem";

/** One entry of PAYMENT-REQUIRED's `accepts`. */
export interface Requirements {
  scheme: string;
  network: string;
  amount: string;
  asset: Hex;
  payTo: Hex;
  maxTimeoutSeconds: number;
  extra?: { name?: string; version?: string };
}

export interface PaymentRequired {
  x402Version: number;
  resource: { url: string; description?: string; mimeType?: string };
  accepts: Requirements[];
  extensions?: Record<string, unknown>;
}

/** The EIP-712 typed data of a transfer authorization. */
export interface TransferTypedData {
  domain: { name: string; version: string; chainId: number; verifyingContract: Hex };
  types: { TransferWithAuthorization: { name: string; type: string }[] };
  primaryType: "TransferWithAuthorization";
  message: { from: Hex; to: Hex; value: bigint; validAfter: bigint; validBefore: bigint; nonce: Hex };
}

/** Something that signs for one address. */
export interface Signer {
  address: Hex;
  signTypedData(td: TransferTypedData): Promise<Hex>;
}

export function decodeBase64Json<T>(b64: string): T {
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))) as T;
}

export function encodeBase64Json(value: unknown): string {
  let s = "";
  for (const b of new TextEncoder().encode(JSON.stringify(value))) s += String.fromCharCode(b);
  return btoa(s);
}

export function chainIdOf(offer: Requirements): number {
  const m = /^eip155:(\d+)$/.exec(offer.network);
  if (!m) throw new Error(`this page pays EVM networks only, not ${offer.network}.`);
  return Number(m[1]);
}

