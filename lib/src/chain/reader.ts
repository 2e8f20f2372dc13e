/**
 * ChainReader over JSON-RPC: the on-chain facts checked before a paid
 * handler runs (EIP-3009 nonce state, token balance).
 */
import { BaseError, createPublicClient, decodeFunctionResult, encodeFunctionData, http, HttpRequestError, RpcRequestError, type Address, type Hex } from "viem";
import { getHttpRpcClient } from "viem/utils";
import { ChainError } from "../errors.js";
import { EIP3009_ABI } from "./abi.js";
import type { ChainReader } from "./settler.js";
import { validateReaderOptions } from "./settler-options.js";

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
  validateReaderOptions(opts);
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
      throw new ChainError(`the chain RPC could not be reached (${what} failed).`, { cause: err, detail: `${what} via ${where} failed: ${detail}` });
    }
  }

  const authorizationUsed = (asset: Address, from: Address, nonce: Hex) =>
    read("authorizationState", () => client.readContract({ address: asset, abi: EIP3009_ABI, functionName: "authorizationState", args: [from, nonce] }));
  const balanceOf = (asset: Address, owner: Address) =>
    read("balanceOf", () => client.readContract({ address: asset, abi: EIP3009_ABI, functionName: "balanceOf", args: [owner] }));

  // Both pre-check reads as one JSON-RPC batch: one HTTP request instead of two.
  const batchClient = getHttpRpcClient(rpcUrl, { timeout: timeoutMs });
  let batches = true; // false once the endpoint answered a batch with something else than an array
  const call = (to: Address, data: Hex) => ({ jsonrpc: "2.0" as const, method: "eth_call", params: [{ to, data }, "latest"] });
  async function separately(asset: Address, from: Address, nonce: Hex): Promise<{ used: boolean; balance: bigint }> {
    const [used, balance] = await Promise.all([authorizationUsed(asset, from, nonce), balanceOf(asset, from)]);
    return { used, balance };
  }
  async function paymentState(asset: Address, from: Address, nonce: Hex): Promise<{ used: boolean; balance: bigint }> {
    if (!batches) return separately(asset, from, nonce);
    const body = [
      { ...call(asset, encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [from, nonce] })), id: 1 },
      { ...call(asset, encodeFunctionData({ abi: EIP3009_ABI, functionName: "balanceOf", args: [from] })), id: 2 },
    ];
    let replies: unknown;
    try {
      replies = await read("authorizationState + balanceOf", () => batchClient.request({ body }));
    } catch (err) {
      // an endpoint that answered with an error (JSON-RPC or HTTP 4xx) may only refuse batches; a timeout or a dead endpoint is reported as is
      const c = err instanceof ChainError ? err.cause : undefined;
      if (!(c instanceof RpcRequestError || (c instanceof HttpRequestError && (c.status ?? 0) >= 400 && (c.status ?? 0) < 500))) throw err;
    }
    if (!Array.isArray(replies)) {
      const state = await separately(asset, from, nonce);
      batches = false; // the separate reads work where the batch did not: keep to them
      return state;
    }
    const result = (id: number): Hex => {
      const r = replies.find((x: { id?: unknown }) => x?.id === id) as { result?: Hex; error?: { message?: string } } | undefined;
      if (typeof r?.result === "string") return r.result;
      const what = id === 1 ? "authorizationState" : "balanceOf";
      throw new ChainError(`the chain RPC could not answer (${what} failed).`, { detail: `${what} via ${where} failed: ${r?.error?.message ?? "no result in the batch answer"}` });
    };
    try {
      return {
        used: decodeFunctionResult({ abi: EIP3009_ABI, functionName: "authorizationState", data: result(1) }),
        balance: decodeFunctionResult({ abi: EIP3009_ABI, functionName: "balanceOf", data: result(2) }),
      };
    } catch (err) {
      if (err instanceof ChainError) throw err;
      throw new ChainError("the chain RPC gave an undecodable answer to the pre-check.", { cause: err, detail: `pre-check via ${where}: undecodable answer: ${err instanceof BaseError ? err.shortMessage : String(err)}` });
    }
  }

  return { authorizationUsed, balanceOf, paymentState };
}

/** Scheme + host of an RPC URL, so API keys in paths or queries never reach logs. */
export function rpcOrigin(rpcUrl: string): string {
  try {
    return new URL(rpcUrl).origin;
  } catch {
    return "<invalid rpc url>";
  }
}
