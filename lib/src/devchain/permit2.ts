/**
 * The dev chain's Permit2 contracts: Uniswap's Permit2 at its canonical
 * address (the precompiled runtime code that @uniswap/v4-periphery ships,
 * see scripts/compile-permit2.ts), our x402 `exact` and `upto` Permit2
 * proxies at the addresses the official x402 v2 clients sign for, and a
 * plain ERC-20 without EIP-3009 (6 decimals) to pay through them. All
 * planted with anvil_setCode: nothing is deployed, no constructor runs.
 */
import type { Address, Hex, PublicClient } from "viem";
import { PERMIT2_ADDRESS, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY } from "../protocol/permit2.js";
import artifact from "./Permit2.artifact.json" with { type: "json" };

/** Where the plain ERC-20 is planted. */
export const PLAIN_TOKEN_ADDRESS: Address = "0x0000000000000000000000000000000000402020";

/** The Permit2 contracts of a dev chain. */
export interface DevPermit2 {
  permit2: Address;
  exactProxy: Address;
  uptoProxy: Address;
  /** A plain ERC-20 (no EIP-3009, no EIP-2612), 6 decimals, name "Plain Test Dollar"; payers must approve Permit2 on it once. */
  token: Address;
}

/** ABI of the plain token (ERC-20 plus the dev `mint`). */
export const PLAIN_TOKEN_ABI = artifact.token.abi;

/** Plant the four contracts (four anvil_setCode calls, in parallel). */
export async function plantPermit2(client: PublicClient): Promise<DevPermit2> {
  const set = (address: Address, code: string) => client.request({ method: "anvil_setCode", params: [address, code as Hex] } as never);
  await Promise.all([
    set(PERMIT2_ADDRESS, artifact.permit2.runtime),
    set(X402_EXACT_PERMIT2_PROXY, artifact.exactProxy.runtime),
    set(X402_UPTO_PERMIT2_PROXY, artifact.uptoProxy.runtime),
    set(PLAIN_TOKEN_ADDRESS, artifact.token.runtime),
  ]);
  return { permit2: PERMIT2_ADDRESS, exactProxy: X402_EXACT_PERMIT2_PROXY, uptoProxy: X402_UPTO_PERMIT2_PROXY, token: PLAIN_TOKEN_ADDRESS };
}
