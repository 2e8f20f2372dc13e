/**
 * The chain side of Permit2 payments (x402 `exact` with assetTransferMethod
 * `permit2`, and `upto`): the proxy call the relayer sends, the pre-handler
 * check (Permit2 nonce unused, allowance to Permit2, balance: three reads in
 * one JSON-RPC batch), and the lookups a pending settlement's confirmation
 * needs (nonce used; which transaction used it, e.g. a front-runner's copy).
 */
import {
  BaseError,
  createPublicClient,
  decodeFunctionData,
  encodeEventTopics,
  encodeFunctionData,
  hexToBigInt,
  http,
  isAddressEqual,
  numberToHex,
  pad,
  parseAbi,
  type Address,
  type Hex,
} from "viem";
import { ChainError, PaymentError, SettlementError } from "../errors.js";
import type { PaymentChecker } from "../core/checker.js";
import { PERMIT2_ADDRESS, type Permit2Payment } from "../protocol/permit2.js";
import { EIP3009_ABI } from "./abi.js";
import { AUTHORIZATION_LOG_BLOCKS, findAuthorizationUse, isTransferLog, type RawLog } from "./authorization-log.js";
import type { ExactAuthorization, SettleRequest } from "./settler.js";

/** The x402 Permit2 proxies' settle functions (the interface @x402/evm 2.x calls). */
export const X402_PERMIT2_PROXY_ABI = parseAbi([
  "struct TokenPermissions { address token; uint256 amount; }",
  "struct PermitTransferFrom { TokenPermissions permitted; uint256 nonce; uint256 deadline; }",
  "struct ExactWitness { address to; uint256 validAfter; }",
  "struct UptoWitness { address to; address facilitator; uint256 validAfter; }",
  "function settle(PermitTransferFrom permit, address owner, ExactWitness witness, bytes signature)",
  "function settle(PermitTransferFrom permit, uint256 amount, address owner, UptoWitness witness, bytes signature)",
]);

/** What the pre-check and the confirmation read. */
export const PERMIT2_READ_ABI = parseAbi([
  "function nonceBitmap(address owner, uint256 wordPos) view returns (uint256)",
  "function allowance(address owner, address spender) view returns (uint256)",
  "function balanceOf(address owner) view returns (uint256)",
  "function approve(address spender, uint256 amount) returns (bool)",
]);

/**
 * Calldata of the proxy's `settle` for a Permit2 payment: `exact` moves the
 * permitted amount; `upto` moves `settleAmount` (which must be set, and at
 * most the permitted amount; the proxy also refuses more).
 */
export function permit2SettleCall(p: Permit2Payment, signature: Hex): Hex {
  const permit = { permitted: { token: p.token, amount: BigInt(p.permitted) }, nonce: BigInt(p.nonce), deadline: BigInt(p.deadline) };
  if (p.scheme === "exact") {
    return encodeFunctionData({ abi: X402_PERMIT2_PROXY_ABI, functionName: "settle", args: [permit, p.owner, { to: p.to, validAfter: BigInt(p.validAfter) }, signature] });
  }
  if (p.settleAmount === undefined) throw new SettlementError("unexpected_settle_error", "server402: an upto settlement needs its settleAmount");
  const amount = BigInt(p.settleAmount);
  if (amount > BigInt(p.permitted)) throw new SettlementError("invalid_upto_evm_payload_settlement_exceeds_amount", `upto settleAmount ${amount} exceeds the permitted ${p.permitted}`);
  return encodeFunctionData({
    abi: X402_PERMIT2_PROXY_ABI,
    functionName: "settle",
    args: [permit, amount, p.owner, { to: p.to, facilitator: p.facilitator!, validAfter: BigInt(p.validAfter) }, signature],
  });
}

/** Where a nonce lives in Permit2's unordered nonce bitmap. */
export function nonceSlot(nonce: string): { wordPos: bigint; bit: bigint } {
  const n = BigInt(nonce);
  return { wordPos: n >> 8n, bit: 1n << (n & 0xffn) };
}

type Rpc = <T>(method: string, params: unknown[]) => Promise<T>;

/** True when Permit2 has the payment's nonce marked used (by any transfer). Throws on RPC failure. */
export async function permit2NonceUsed(rpc: Rpc, p: Permit2Payment): Promise<boolean> {
  const { wordPos, bit } = nonceSlot(p.nonce);
  const data = encodeFunctionData({ abi: PERMIT2_READ_ABI, functionName: "nonceBitmap", args: [p.owner, wordPos] });
  const word = BigInt(await rpc<Hex>("eth_call", [{ to: PERMIT2_ADDRESS, data }, "latest"]));
  return (word & bit) !== 0n;
}

export interface Permit2CheckerOptions {
  rpcUrl: string;
  /** Per-request timeout in ms (one attempt). Default 5000. */
  timeoutMs?: number;
}

/**
 * A pre-handler check for Permit2 payments, in front of `base` (the EIP-3009
 * check) for every other payment: the Permit2 nonce is unused, the payer's
 * allowance to Permit2 covers the amount (else 412
 * `permit2_allowance_required`: the payer must approve Permit2 once) and its
 * balance does. Three `eth_call`s sent as one JSON-RPC batch (one HTTP
 * request); the signature itself was verified locally.
 */
export function permit2Checker(opts: Permit2CheckerOptions, base?: PaymentChecker): PaymentChecker {
  const client = createPublicClient({ transport: http(opts.rpcUrl, { timeout: opts.timeoutMs ?? 5000, retryCount: 0, batch: true }) });
  return {
    onChain: base ? base.onChain : true,
    async check(req: SettleRequest) {
      const p = req.permit2;
      if (!p) return base ? base.check(req) : undefined;
      const { wordPos, bit } = nonceSlot(p.nonce);
      let word: bigint, allowance: bigint, balance: bigint;
      try {
        [word, allowance, balance] = await Promise.all([
          client.readContract({ address: PERMIT2_ADDRESS, abi: PERMIT2_READ_ABI, functionName: "nonceBitmap", args: [p.owner, wordPos] }),
          client.readContract({ address: p.token, abi: PERMIT2_READ_ABI, functionName: "allowance", args: [p.owner, PERMIT2_ADDRESS] }),
          client.readContract({ address: p.token, abi: PERMIT2_READ_ABI, functionName: "balanceOf", args: [p.owner] }),
        ]);
      } catch (err) {
        const detail = err instanceof BaseError ? err.shortMessage : String(err);
        throw new ChainError("the chain RPC could not be reached (Permit2 pre-check failed).", { cause: err, detail: `Permit2 pre-check failed: ${detail}` });
      }
      const needed = BigInt(p.permitted);
      if ((word & bit) !== 0n) throw new PaymentError("permit2_invalid_nonce", "this Permit2 nonce was already used on-chain; sign a new payment.");
      if (allowance < needed) {
        throw new PaymentError(
          "permit2_allowance_required",
          `the payer's allowance to Permit2 (${PERMIT2_ADDRESS}) is ${allowance}, below ${needed}: approve Permit2 on the token once (approve(${PERMIT2_ADDRESS}, amount)) and pay again.`,
          412,
        );
      }
      if (balance < needed) throw new PaymentError("insufficient_funds", `payer balance ${balance} is below the ${p.scheme === "upto" ? "authorized maximum" : "price"} ${needed}.`);
      return { balance };
    },
  };
}

/** The `to` of the transaction that settles `req`: its x402 proxy for a Permit2 payment, else the token. */
export function settleTarget(req: SettleRequest): Address {
  return req.permit2 ? req.permit2.proxy : req.asset;
}

/** Permit2's log of a payer spending its own nonces (`invalidateUnorderedNonces`): no money moves. */
const INVALIDATION_ABI = parseAbi(["event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask)"]);

/**
 * The successful transaction that used Permit2 payment `p` (its transfer of
 * `a.value` from the owner to `p.to`), searched in the
 * `AUTHORIZATION_LOG_BLOCKS` blocks up to `toBlock` (default: latest), with
 * its sender; undefined when Permit2 has the nonce unused or no such
 * transaction is found. Neither Permit2 nor the x402 proxies log the nonce
 * (the proxies' `Settled()` has no arguments), so the candidates are the
 * token's Transfer(owner → to, value) logs, and one counts when its
 * transaction carries this permit: a call of the x402 proxy whose decoded
 * permit, owner and witness are this payment's (the signature bytes are not
 * compared: a malleated copy is still this permit), or, for a call through
 * another contract, calldata holding this nonce and owner as 32-byte words.
 * RPC failures are thrown.
 */
export async function findPermit2Use(rpc: Rpc, p: Permit2Payment, a: ExactAuthorization, toBlock?: bigint): Promise<{ transaction: Hex; from?: Address } | undefined> {
  if (!(await permit2NonceUsed(rpc, p))) return undefined;
  const last = toBlock ?? hexToBigInt(await rpc<Hex>("eth_blockNumber", []));
  const first = last > AUTHORIZATION_LOG_BLOCKS ? last - AUTHORIZATION_LOG_BLOCKS : 0n;
  const topics = encodeEventTopics({ abi: EIP3009_ABI, eventName: "Transfer", args: { from: p.owner, to: p.to } });
  const logs = await rpc<RawLog[]>("eth_getLogs", [{ address: p.token, topics, fromBlock: numberToHex(first), toBlock: numberToHex(last) }]);
  const seen = new Set<string>();
  for (const log of logs) {
    // logs are only kept for successful transactions
    if (log.removed || !log.transactionHash || seen.has(log.transactionHash) || !isTransferLog(log, p.token, a)) continue;
    seen.add(log.transactionHash);
    const tx = await rpc<{ from?: Address; to?: Address | null; input?: Hex } | null>("eth_getTransactionByHash", [log.transactionHash]);
    if (tx?.input && carriesPermit(tx.to ?? undefined, tx.input, p)) return { transaction: log.transactionHash, from: tx.from };
  }
  return undefined;
}

/** True when a transaction to `to` with calldata `input` submits permit `p` (see {@link findPermit2Use}). */
function carriesPermit(to: Address | undefined, input: Hex, p: Permit2Payment): boolean {
  if (to && isAddressEqual(to, p.proxy)) {
    let args: readonly unknown[];
    try {
      ({ args } = decodeFunctionData({ abi: X402_PERMIT2_PROXY_ABI, data: input }));
    } catch {
      return false;
    }
    // exact: (permit, owner, witness, signature); upto: (permit, amount, owner, witness, signature)
    const [permit, owner, witness] = (args.length === 4 ? args : [args[0], args[2], args[3]]) as [
      { permitted: { token: Address; amount: bigint }; nonce: bigint; deadline: bigint },
      Address,
      { to: Address; validAfter: bigint; facilitator?: Address },
    ];
    return (
      isAddressEqual(owner, p.owner) &&
      isAddressEqual(permit.permitted.token, p.token) &&
      permit.permitted.amount === BigInt(p.permitted) &&
      permit.nonce === BigInt(p.nonce) &&
      permit.deadline === BigInt(p.deadline) &&
      isAddressEqual(witness.to, p.to) &&
      witness.validAfter === BigInt(p.validAfter) &&
      (p.facilitator === undefined || (witness.facilitator !== undefined && isAddressEqual(witness.facilitator, p.facilitator)))
    );
  }
  const body = input.toLowerCase();
  return hasWord(body, numberToHex(BigInt(p.nonce), { size: 32 })) && hasWord(body, pad(p.owner.toLowerCase() as Hex));
}

/** True when 32-byte `word` appears in `hex` at a whole byte (a wrapper's calldata nests the call at any byte offset). */
function hasWord(hex: string, word: Hex): boolean {
  const w = word.slice(2);
  for (let i = hex.indexOf(w, 2); i >= 0; i = hex.indexOf(w, i + 1)) if (i % 2 === 0) return true;
  return false;
}

/** True when the owner invalidated this payment's nonce itself (Permit2 `UnorderedNonceInvalidation` log in the searched window). */
export async function permit2NonceInvalidated(rpc: Rpc, p: Permit2Payment): Promise<boolean> {
  const { wordPos, bit } = nonceSlot(p.nonce);
  const last = hexToBigInt(await rpc<Hex>("eth_blockNumber", []));
  const first = last > AUTHORIZATION_LOG_BLOCKS ? last - AUTHORIZATION_LOG_BLOCKS : 0n;
  const topics = encodeEventTopics({ abi: INVALIDATION_ABI, eventName: "UnorderedNonceInvalidation", args: { owner: p.owner } });
  const logs = await rpc<RawLog[]>("eth_getLogs", [{ address: PERMIT2_ADDRESS, topics, fromBlock: numberToHex(first), toBlock: numberToHex(last) }]);
  return logs.some((l) => !l.removed && l.data.length === 130 && hexToBigInt(`0x${l.data.slice(2, 66)}`) === wordPos && (hexToBigInt(`0x${l.data.slice(66)}`) & bit) !== 0n);
}

/** The transaction that used `req`'s authorization (EIP-3009) or permit (Permit2), up to `toBlock`; see findAuthorizationUse / findPermit2Use. */
export function findSettlementUse(rpc: Rpc, req: SettleRequest, toBlock?: bigint): Promise<{ transaction: Hex; from?: Address } | undefined> {
  return req.permit2 ? findPermit2Use(rpc, req.permit2, req.authorization, toBlock) : findAuthorizationUse(rpc, req.asset, req.authorization, toBlock);
}
