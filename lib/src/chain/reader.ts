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

/** Most payments whose pre-check reads share one JSON-RPC batch request (2 calls each). */
const MAX_PAYMENTS_PER_BATCH = 25;

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

  // Both pre-check reads as one JSON-RPC batch, and the payments checked at the same moment (in one turn of
  // the event loop) share it: one HTTP request for up to MAX_PAYMENTS_PER_BATCH payments instead of one each.
  const batchClient = getHttpRpcClient(rpcUrl, { timeout: timeoutMs });
  let batches = true; // false once the endpoint answered a batch of one payment with something else than an array
  const call = (to: Address, data: Hex) => ({ jsonrpc: "2.0" as const, method: "eth_call", params: [{ to, data }, "latest"] });
  async function separately(asset: Address, from: Address, nonce: Hex): Promise<{ used: boolean; balance: bigint }> {
    const [used, balance] = await Promise.all([authorizationUsed(asset, from, nonce), balanceOf(asset, from)]);
    return { used, balance };
  }
  interface Ask {
    asset: Address;
    from: Address;
    nonce: Hex;
    resolve: (state: { used: boolean; balance: bigint }) => void;
    reject: (err: unknown) => void;
  }
  let queued: Ask[] = [];
  function paymentState(asset: Address, from: Address, nonce: Hex): Promise<{ used: boolean; balance: bigint }> {
    if (!batches) return separately(asset, from, nonce);
    return new Promise((resolve, reject) => {
      queued.push({ asset, from, nonce, resolve, reject });
      if (queued.length === 1) setImmediate(flush);
    });
  }
  function flush(): void {
    const asks = queued;
    queued = [];
    for (let i = 0; i < asks.length; i += MAX_PAYMENTS_PER_BATCH) void readBatch(asks.slice(i, i + MAX_PAYMENTS_PER_BATCH));
  }
  /** One JSON-RPC batch for `asks` (ids 2i+1 and 2i+2 for the i-th payment); each ask settles with its own facts or error. */
  async function readBatch(asks: Ask[]): Promise<void> {
    const body = asks.flatMap((a, i) => [
      { ...call(a.asset, encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [a.from, a.nonce] })), id: 2 * i + 1 },
      { ...call(a.asset, encodeFunctionData({ abi: EIP3009_ABI, functionName: "balanceOf", args: [a.from] })), id: 2 * i + 2 },
    ]);
    let replies: unknown;
    try {
      replies = await read("authorizationState + balanceOf", () => batchClient.request({ body }));
    } catch (err) {
      // an endpoint that answered with an error (JSON-RPC or HTTP 4xx) may only refuse batches; a timeout or a dead endpoint is reported as is
      const c = err instanceof ChainError ? err.cause : undefined;
      if (!(c instanceof RpcRequestError || (c instanceof HttpRequestError && (c.status ?? 0) >= 400 && (c.status ?? 0) < 500))) {
        for (const a of asks) a.reject(err);
        return;
      }
    }
    type Reply = { id?: unknown; result?: Hex; error?: { message?: string } };
    const byId = new Map<unknown, Reply>();
    if (Array.isArray(replies)) for (const r of replies as (Reply | null)[]) if (r && typeof r.id === "number") byId.set(r.id, r);
    if (byId.size === 0) {
      // refused (an error for the whole batch, not per call); a batch of several payments may be refused for its size: each alone
      if (asks.length > 1) return void (await Promise.all(asks.map((a) => readBatch([a]))));
      const a = asks[0]!;
      try {
        const state = await separately(a.asset, a.from, a.nonce);
        batches = false; // the separate reads work where the batch did not: keep to them
        a.resolve(state);
      } catch (err) {
        a.reject(err);
      }
      return;
    }
    const result = (id: number, what: string): Hex => {
      const r = byId.get(id);
      if (typeof r?.result === "string") return r.result;
      throw new ChainError(`the chain RPC could not answer (${what} failed).`, { detail: `${what} via ${where} failed: ${r?.error?.message ?? "no result in the batch answer"}` });
    };
    asks.forEach((a, i) => {
      try {
        a.resolve({
          used: decodeFunctionResult({ abi: EIP3009_ABI, functionName: "authorizationState", data: result(2 * i + 1, "authorizationState") }),
          balance: decodeFunctionResult({ abi: EIP3009_ABI, functionName: "balanceOf", data: result(2 * i + 2, "balanceOf") }),
        });
      } catch (err) {
        a.reject(
          err instanceof ChainError
            ? err
            : new ChainError("the chain RPC gave an undecodable answer to the pre-check.", { cause: err, detail: `pre-check via ${where}: undecodable answer: ${err instanceof BaseError ? err.shortMessage : String(err)}` }),
        );
      }
    });
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
