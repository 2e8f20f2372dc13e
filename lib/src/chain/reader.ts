/**
 * ChainReader over JSON-RPC: the on-chain facts checked before a paid
 * handler runs (EIP-3009 nonce state, token balance).
 */
import { BaseError, createPublicClient, http, type Address, type Hex } from "viem";
import { ChainError } from "../errors.js";
import { EIP3009_ABI } from "./abi.js";
import type { ChainReader } from "./settler.js";

export interface ChainReaderOptions {
  /** JSON-RPC endpoint (http or https). */
  rpcUrl: string;
  /** Chain id the endpoint must serve; checked on first use. */
  chainId: number;
  /** Per-request timeout in ms (one attempt, no retries). Default 5000. */
  timeoutMs?: number;
}

/**
 * Create a {@link ChainReader} backed by `rpcUrl`. Every failure (network
 * error, timeout, revert, wrong chain) surfaces as a `ChainError`; the
 * first call also checks that the endpoint serves `chainId`.
 */
export function createChainReader(opts: ChainReaderOptions): ChainReader {
  const { rpcUrl, chainId, timeoutMs = 5000 } = opts;
  const client = createPublicClient({ transport: http(rpcUrl, { timeout: timeoutMs, retryCount: 0 }) });
  const where = rpcOrigin(rpcUrl);

  let chainCheck: Promise<void> | undefined;
  const checkChain = (): Promise<void> =>
    (chainCheck ??= client.getChainId().then((actual) => {
      if (actual !== chainId) throw new ChainError(`RPC ${where} serves chain ${actual}, expected ${chainId}`);
    })).catch((err: unknown) => {
      chainCheck = undefined;
      throw err;
    });

  async function read<T>(what: string, call: () => Promise<T>): Promise<T> {
    try {
      const [, value] = await Promise.all([checkChain(), call()]);
      return value;
    } catch (err) {
      if (err instanceof ChainError) throw err;
      const detail = err instanceof BaseError ? err.shortMessage : String(err);
      throw new ChainError(`${what} via ${where} failed: ${detail}`, { cause: err });
    }
  }

  return {
    authorizationUsed: (asset: Address, from: Address, nonce: Hex) =>
      read("authorizationState", () =>
        client.readContract({ address: asset, abi: EIP3009_ABI, functionName: "authorizationState", args: [from, nonce] }),
      ),
    balanceOf: (asset: Address, owner: Address) =>
      read("balanceOf", () => client.readContract({ address: asset, abi: EIP3009_ABI, functionName: "balanceOf", args: [owner] })),
  };
}

/** Scheme + host of an RPC URL, so API keys in paths or queries never reach logs. */
export function rpcOrigin(rpcUrl: string): string {
  try {
    return new URL(rpcUrl).origin;
  } catch {
    return "<invalid rpc url>";
  }
}
