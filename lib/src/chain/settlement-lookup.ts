/**
 * The outcome of a settlement read from the chain, without sending anything
 * (issue 14 B10, facilitator path): a facilitator that did not answer in
 * time, cut the connection, or refused a transfer that a third party's copy
 * of the authorization made, leaves the outcome unknown to us. The token's
 * `authorizationState` and its AuthorizationUsed + Transfer logs tell
 * whether the signed transfer happened, and by which transaction; for a
 * Permit2 payment, Permit2's nonce bitmap and the transaction carrying the
 * permit (chain/permit2.ts `findPermit2Use`).
 */
import { createPublicClient, encodeEventTopics, encodeFunctionData, hexToBigInt, hexToNumber, http, numberToHex, parseAbi, type Hex } from "viem";
import { SettlementError } from "../errors.js";
import { EIP3009_ABI } from "./abi.js";
import { AUTHORIZATION_LOG_BLOCKS, paidInReceipt, type RawLog, type RawReceipt } from "./authorization-log.js";
import { findSettlementUse, permit2NonceInvalidated, permit2NonceUsed } from "./permit2.js";
import { rpcOrigin } from "./reader.js";
import type { SettleRequest, SettleResult } from "./settler.js";

const CANCELED_ABI = parseAbi(["event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce)"]);
/** Seconds of clock difference allowed between this process and block timestamps when telling a fresh use from an old one. */
const CLOCK_SLACK_S = 5;

export interface SettlementLookup {
  /** Chain id the RPC serves (asked once). */
  chainId(): Promise<number>;
  /**
   * The outcome of a settlement whose result is unknown: the result (with
   * the transaction that used the authorization) once the authorized transfer
   * happened; undefined while the authorization is unused (or used by a
   * transaction not found yet); throws a SettlementError (not pending) once
   * the payer canceled it. `transaction`, when known, is looked at first.
   * RPC failures are thrown as SettlementError `unexpected_settle_error`.
   */
  outcome(req: SettleRequest, transaction?: string): Promise<SettleResult | undefined>;
  /** A use of the authorization by a transaction mined at or after `sinceMs` (e.g. a copy that front-ran ours), else undefined. */
  usedSince(req: SettleRequest, sinceMs: number): Promise<SettleResult | undefined>;
}

/** A lookup over `rpcUrl` (one attempt per request, `timeoutMs` each). */
export function settlementLookup(rpcUrl: string, timeoutMs = 10_000): SettlementLookup {
  const client = createPublicClient({ transport: http(rpcUrl, { timeout: timeoutMs, retryCount: 0 }) });
  const where = rpcOrigin(rpcUrl);
  const rpc = async <T>(method: string, params: unknown[]): Promise<T> => {
    try {
      return (await client.request({ method, params } as never)) as T;
    } catch (err) {
      throw new SettlementError("unexpected_settle_error", "the chain RPC could not be reached to look up the settlement.", {
        cause: err,
        detail: `settlement lookup (${method}) via ${where} failed: ${(err as Error)?.message ?? String(err)}`,
      });
    }
  };
  let chain: Promise<number> | undefined;
  const chainId = () => (chain ??= rpc<Hex>("eth_chainId", []).then(hexToNumber)).catch((err: unknown) => {
    chain = undefined;
    throw err;
  });

  const resultOf = (req: SettleRequest, transaction: Hex): SettleResult => ({ transaction, network: req.network, payer: req.authorization.from });

  async function used(req: SettleRequest): Promise<boolean> {
    if (req.permit2) return permit2NonceUsed(rpc, req.permit2);
    const data = encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [req.authorization.from, req.authorization.nonce] });
    return hexToBigInt(await rpc<Hex>("eth_call", [{ to: req.asset, data }, "latest"])) !== 0n;
  }

  /** True when the payer canceled this authorization (AuthorizationCanceled log, or Permit2's UnorderedNonceInvalidation, in the searched window). */
  async function canceled(req: SettleRequest): Promise<boolean> {
    if (req.permit2) return permit2NonceInvalidated(rpc, req.permit2);
    const last = hexToBigInt(await rpc<Hex>("eth_blockNumber", []));
    const first = last > AUTHORIZATION_LOG_BLOCKS ? last - AUTHORIZATION_LOG_BLOCKS : 0n;
    const topics = encodeEventTopics({ abi: CANCELED_ABI, eventName: "AuthorizationCanceled", args: { authorizer: req.authorization.from, nonce: req.authorization.nonce } });
    const logs = await rpc<RawLog[]>("eth_getLogs", [{ address: req.asset, topics, fromBlock: numberToHex(first), toBlock: numberToHex(last) }]);
    return logs.some((l) => !l.removed);
  }

  async function findUse(req: SettleRequest) {
    try {
      return await findSettlementUse(rpc, req);
    } catch (err) {
      if (err instanceof SettlementError) throw err;
      throw new SettlementError("unexpected_settle_error", "the chain RPC could not be reached to look up the settlement.", { cause: err });
    }
  }

  return {
    chainId,
    async outcome(req, transaction) {
      if (transaction && /^0x[0-9a-fA-F]{64}$/.test(transaction)) {
        const receipt = await rpc<RawReceipt | null>("eth_getTransactionReceipt", [transaction]);
        if (receipt && paidInReceipt(receipt, req)) {
          return resultOf(req, transaction as Hex);
        }
      }
      if (!(await used(req))) return undefined;
      const found = await findUse(req);
      if (found) return resultOf(req, found.transaction);
      if (await canceled(req)) {
        throw new SettlementError("settlement_canceled", "the payer canceled this authorization: nothing was transferred.", { transaction });
      }
      return undefined;
    },
    async usedSince(req, sinceMs) {
      if (!(await used(req))) return undefined;
      const found = await findUse(req);
      if (!found) return undefined;
      const receipt = await rpc<RawReceipt | null>("eth_getTransactionReceipt", [found.transaction]);
      if (!receipt?.blockNumber) return undefined;
      const block = await rpc<{ timestamp: Hex } | null>("eth_getBlockByNumber", [receipt.blockNumber, false]);
      if (!block || hexToNumber(block.timestamp) < Math.floor(sinceMs / 1000) - CLOCK_SLACK_S) return undefined; // an older use: a replay, not this payment
      return resultOf(req, found.transaction);
    },
  };
}
