/**
 * Who used an EIP-3009 authorization (issue 14, front-running): anyone may
 * submit a payer's signed `transferWithAuthorization`, e.g. a bot copying our
 * pending transaction. Our own transaction then reverts although the money
 * moved. The token's `AuthorizationUsed(authorizer, nonce)` log, directly
 * followed in the same receipt by the token's `Transfer(from, to, value)`,
 * proves the signed transfer happened; a cancel (`AuthorizationCanceled`) or
 * a different authorization reusing the nonce never matches.
 */
import { encodeEventTopics, hexToBigInt, hexToNumber, isAddressEqual, isHex, numberToHex, parseAbi, size, type Address, type Hex } from "viem";
import { EIP3009_ABI } from "./abi.js";
import type { ExactAuthorization, SettleRequest } from "./settler.js";

const USED_ABI = parseAbi(["event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)"]);
/** Blocks searched back from the block where the authorization was found used (≈ 2.8 h on Base): never unbounded history. */
export const AUTHORIZATION_LOG_BLOCKS = 5000n;

export interface RawLog {
  address: Address;
  topics: Hex[];
  data: Hex;
  logIndex?: Hex;
  transactionHash?: Hex;
  removed?: boolean;
}
export interface RawReceipt {
  status: Hex;
  /** Sender of the transaction. */
  from?: Address;
  blockNumber?: Hex;
  logs: RawLog[];
}
type Rpc = <T>(method: string, params: unknown[]) => Promise<T>;

/** True when `log` is `Transfer(a.from, a.to, a.value)` emitted by `asset`. */
export function isTransferLog(log: RawLog, asset: Address, a: ExactAuthorization): boolean {
  const [sig, from, to] = encodeEventTopics({ abi: EIP3009_ABI, eventName: "Transfer", args: { from: a.from, to: a.to } }).map((t) => String(t).toLowerCase());
  return (
    isAddressEqual(log.address, asset) &&
    log.topics[0]?.toLowerCase() === sig &&
    log.topics[1]?.toLowerCase() === from &&
    log.topics[2]?.toLowerCase() === to &&
    isHex(log.data) &&
    size(log.data) === 32 &&
    hexToBigInt(log.data) === a.value
  );
}

/**
 * The hash of a successful transaction that used authorization `a` of token
 * `asset` (its AuthorizationUsed log followed by the authorized Transfer),
 * searched in the `AUTHORIZATION_LOG_BLOCKS` blocks up to `toBlock` (default:
 * latest), with its sender; undefined when there is none. RPC failures are thrown.
 */
export async function findAuthorizationUse(rpc: Rpc, asset: Address, a: ExactAuthorization, toBlock?: bigint): Promise<{ transaction: Hex; from?: Address } | undefined> {
  const last = toBlock ?? hexToBigInt(await rpc<Hex>("eth_blockNumber", []));
  const first = last > AUTHORIZATION_LOG_BLOCKS ? last - AUTHORIZATION_LOG_BLOCKS : 0n;
  const topics = encodeEventTopics({ abi: USED_ABI, eventName: "AuthorizationUsed", args: { authorizer: a.from, nonce: a.nonce } });
  const logs = await rpc<RawLog[]>("eth_getLogs", [{ address: asset, topics, fromBlock: numberToHex(first), toBlock: numberToHex(last) }]);
  for (const log of logs) {
    if (log.removed || !log.transactionHash || log.logIndex === undefined) continue;
    const receipt = await rpc<RawReceipt | null>("eth_getTransactionReceipt", [log.transactionHash]);
    if (receipt && usedInReceipt(receipt, asset, a)) return { transaction: log.transactionHash, from: receipt.from };
  }
  return undefined;
}

/**
 * True when the successful transaction of `receipt` used authorization `a` of
 * token `asset`: its `AuthorizationUsed(a.from, a.nonce)` log directly followed
 * by `Transfer(a.from, a.to, a.value)`, both emitted by the token (FiatToken
 * order). Exact per authorization, so it also tells apart the payments of one
 * batch transaction (where a bare Transfer of the same from/to/value may be
 * another payment's).
 */
export function usedInReceipt(receipt: RawReceipt, asset: Address, a: ExactAuthorization): boolean {
  if (hexToNumber(receipt.status) !== 1) return false;
  const [sig, authorizer, nonce] = encodeEventTopics({ abi: USED_ABI, eventName: "AuthorizationUsed", args: { authorizer: a.from, nonce: a.nonce } }).map((t) => String(t).toLowerCase());
  return receipt.logs.some((log, i) => {
    if (log.removed || !isAddressEqual(log.address, asset)) return false;
    if (log.topics[0]?.toLowerCase() !== sig || log.topics[1]?.toLowerCase() !== authorizer || log.topics[2]?.toLowerCase() !== nonce) return false;
    const next = receipt.logs[i + 1];
    return next !== undefined && isTransferLog(next, asset, a);
  });
}

/**
 * True when the successful transaction of `receipt` paid `req`: for EIP-3009 this authorization's own
 * AuthorizationUsed + Transfer (`usedInReceipt`); Permit2 logs no nonce, so its Transfer. The one rule for the
 * relayer's check and the chain lookups of both settlers.
 */
export function paidInReceipt(receipt: RawReceipt, req: SettleRequest): boolean {
  if (req.permit2) return hexToNumber(receipt.status) === 1 && receipt.logs.some((log) => isTransferLog(log, req.asset, req.authorization));
  return usedInReceipt(receipt, req.asset, req.authorization);
}
