/**
 * Local relayer settler: our own funded wallet submits EIP-3009
 * `transferWithAuthorization`, pays the gas and waits for the receipt.
 *
 * Per settle: simulate (eth_estimateGas, so a doomed transaction is never
 * broadcast; skipped after an on-chain pre-check) in parallel with fee
 * lookup, then sign + broadcast in a queue that owns the wallet's nonce, then
 * poll for the receipt (or take it from `eth_sendRawTransactionSync`) and
 * check the ERC-20 Transfer log. Nonces, replacement of stuck transactions,
 * the gas-funds check and the wallet pool live in wallet-lane.ts; `sendCall`
 * is the one way to send a call from a relayer wallet. With the `batch`
 * option, plain EIP-3009 payments go out together through batcher.ts (the
 * same lanes send the batch transaction).
 */
import { createRequire } from "node:module";
import {
  BaseError,
  bytesToHex,
  createPublicClient,
  decodeErrorResult,
  encodeFunctionData,
  hexToBigInt,
  hexToBytes,
  hexToNumber,
  http,
  isAddressEqual,
  HttpRequestError,
  isHex,
  keccak256,
  parseAbi,
  RpcRequestError,
  serializeTransaction,
  size,
  slice,
  type TransactionSerializable,
  type Address,
  type Hex,
} from "viem";
import { privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import { ConfigError, SettlementError } from "../errors.js";
import { EIP3009_ABI } from "./abi.js";
import { paidInReceipt, type RawReceipt } from "./authorization-log.js";
import { rpcOrigin } from "./reader.js";
import { bytesSettleCall, MAX_DEPLOY_GAS, needsBytesForm, parseErc6492 } from "./smart-wallet.js";
import { findSettlementUse, permit2NonceInvalidated, permit2NonceUsed, permit2SettleCall, settleTarget } from "./permit2.js";
import type { ExactAuthorization, SettleRequest, SettleResult, Settler } from "./settler.js";
import { validateRelayerOptions } from "./settler-options.js";
import { Batcher, type BatchOptions } from "./batcher.js";
import { HeadWatcher, WalletLane, WalletPool, type Fees, type RelayerEvent } from "./wallet-lane.js";

export interface RelayerSettlerOptions {
  /** JSON-RPC endpoint of the chain. */
  rpcUrl: string;
  /** Chain id; requests for another chain are refused. */
  chainId: number;
  /** Key of the relayer wallet, which pays the gas. Give it its own key: other senders using it cost a nonce resync. */
  privateKey?: Hex;
  /**
   * A pool of relayer wallets sharing the load, instead of `privateKey`: each
   * has its own nonce sequence; a settlement goes out from the least busy
   * wallet that can pay its gas. Give each server process its own keys.
   */
  privateKeys?: Hex[];
  /**
   * A transaction not mined this long after it was sent (dropped by the node,
   * or priced out) is sent again with the same nonce and a 25 % higher fee.
   * Default 10000 (5 blocks on Base); keep it above a few block times.
   */
  replaceAfterMs?: number;
  /** Receives what the sending did: sends, replacements, nonce resyncs, low gas funds. Must not throw. */
  onEvent?: (e: RelayerEvent) => void;
  /** How long to wait for the receipt after broadcast. Default 30000. */
  receiptTimeoutMs?: number;
  /** How often the chain head (eth_blockNumber) is polled while transactions wait for a block; receipts are read when it moves (and at least every second). Default 5 ms for a loopback RPC, 250 ms otherwise. */
  pollingIntervalMs?: number;
  /**
   * How a transaction is sent. `"sync"`: `eth_sendRawTransactionSync` (EIP-7966),
   * which answers with the receipt (waiting at most `receiptTimeoutMs`),
   * saving the receipt round trip; it runs in the nonce queue, so concurrent
   * settlements wait for each other's inclusion: right only for a chain that
   * mines every transaction on arrival. `"poll"`: `eth_sendRawTransaction`,
   * then poll for the receipt outside the queue, so settlements overlap while
   * blocks are produced. `"auto"` (default): `"sync"` when the node reports
   * automine (`anvil_getAutomine` / `hardhat_getAutomine`, asked once), else
   * `"poll"`. A node without the sync method gets `"poll"` from its first answer on.
   */
  sendMode?: "auto" | "sync" | "poll";
  /** Timeout of each RPC request. Default 10000. */
  requestTimeoutMs?: number;
  /**
   * Batched settlement (off by default): plain EIP-3009 payments signed by an
   * EOA that arrive within `maxWaitMs` go out together in one transaction
   * through the X402BatchSettlement contract at `contract`, up to `maxSize`
   * each; one failing payment does not sink the others. Smart-wallet and
   * Permit2 payments still go out one transaction each. Worth it on a chain
   * with block times (gas per payment ≈ 0.625× with 100 per batch, one send for many payments).
   */
  batch?: BatchOptions;
}

/** A {@link Settler} that submits transfers from its own wallet. */
export interface RelayerSettler extends Settler {
  readonly kind: "relayer";
  /** The relayer wallet (needs native gas token); the first one of a pool. */
  readonly address: Address;
  /** The chain it settles on; a paywall whose `network` is another chain is a ConfigError. */
  readonly chainId: number;
  /** Every relayer wallet (one without a pool). */
  readonly addresses: readonly Address[];
}

export type { RelayerEvent } from "./wallet-lane.js";

const FEE_CACHE_MS = 1000;
/** Gas limit for a pre-checked EOA `transferWithAuthorization` (≈ 66–84k used; unused gas is not paid). */
const EOA_TRANSFER_GAS = 150_000n;
/** How old a pre-check's chain reading may be for it to vouch for a transfer; older ones are simulated again. */
const PRECHECK_FRESH_MS = 2000;
/** Pending settlements remembered for retries (oldest forgotten first). */
const MAX_UNRESOLVED = 10_000;
const NONCE_USED = "invalid_exact_evm_nonce_already_used";
/** Revert shapes of EIP-3009 tokens: Error(string) and known custom errors. */
const TOKEN_ERRORS = parseAbi([
  "error Error(string message)",
  "error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed)",
  "error AuthorizationExpired()",
  "error AuthorizationNotYetValid()",
  "error AuthorizationAlreadyUsed()",
  "error AuthorizationUsedOrCanceled()",
  "error SignerMismatch()",
  "error InvalidSignatureV()",
  "error InvalidSignatureS()",
  // Permit2 and the x402 Permit2 proxies
  "error InvalidNonce()",
  "error SignatureExpired(uint256 signatureDeadline)",
  "error InvalidSigner()",
  "error AmountExceedsPermitted()",
  "error UnauthorizedFacilitator()",
  "error PaymentTooEarly()",
]);

interface NativeSigner {
  ecdsaSign(msg32: Uint8Array, seckey: Uint8Array): { signature: Uint8Array; recid: number };
}

/** libsecp256k1 via the `secp256k1` package (≈ 20× faster than JS signing); undefined when it does not load. */
const nativeSigner = ((): NativeSigner | undefined => {
  try {
    return createRequire(import.meta.url)("secp256k1/bindings") as NativeSigner;
  } catch {
    return undefined;
  }
})();

/**
 * Sign a transaction. Signing runs inside the nonce queue, so it is kept
 * fast: native libsecp256k1 when available (deterministic RFC 6979, low-s,
 * the same bytes viem produces), viem otherwise.
 */
function transactionSigner(privateKey: Hex, account: PrivateKeyAccount): (tx: TransactionSerializable) => Promise<Hex> {
  if (!nativeSigner) return (tx) => account.signTransaction(tx);
  const seckey = hexToBytes(privateKey);
  return async (tx) => {
    const { signature, recid } = nativeSigner.ecdsaSign(hexToBytes(keccak256(serializeTransaction(tx))), seckey);
    return serializeTransaction(tx, { r: bytesToHex(signature.subarray(0, 32)), s: bytesToHex(signature.subarray(32, 64)), yParity: recid });
  };
}

/**
 * Map a revert message (or decoded custom error name) of
 * `transferWithAuthorization` to an x402 error reason, the way @x402/evm
 * does (case-insensitive text match).
 */
export function reasonFromRevert(text: string): string {
  const t = text.toLowerCase();
  if (/authorization.*(expired|valid before)|authorizationexpired/.test(t)) return "invalid_exact_evm_payload_authorization_valid_before";
  if (/authorization.*not.*valid|authorizationnotyetvalid/.test(t)) return "invalid_exact_evm_payload_authorization_valid_after";
  if (/authorization.*used|authorizationalreadyused|authorizationusedorcanceled|invalidnonce/.test(t)) return "invalid_exact_evm_nonce_already_used";
  if (/transfer.*exceeds.*balance|insufficient.*balance|erc20insufficientbalance/.test(t)) return "invalid_exact_evm_insufficient_balance";
  if (/invalid.*signature|signermismatch|invalidsignature[vs]|invalidsigner/.test(t)) return "invalid_exact_evm_signature";
  return "invalid_exact_evm_transaction_failed";
}

/**
 * Create a settler that submits `transferWithAuthorization` from the wallet
 * of `privateKey`: the (v,r,s) overload for 65-byte signatures, the `bytes`
 * overload otherwise. Resolves once the transfer is mined and its Transfer
 * log checked. Throws `SettlementError`: a revert reason when simulation
 * fails (nothing broadcast), `unexpected_settle_error` for RPC failures
 * before broadcast, `settlement_pending` with `pending: true` and the tx
 * hash when the outcome after broadcast is unknown. Settling the same
 * authorization again after `pending` waits for that transaction instead of
 * sending another. Concurrent settles are safe: one queue assigns the
 * wallet's nonces.
 */
export function relayerSettler(opts: RelayerSettlerOptions): RelayerSettler {
  validateRelayerOptions(opts); // ConfigError naming the option, before viem sees it
  const { rpcUrl, chainId, receiptTimeoutMs = 30_000, requestTimeoutMs = 10_000 } = opts;
  const pollingIntervalMs = opts.pollingIntervalMs ?? (isLoopback(rpcUrl) ? 5 : 250);
  const sendMode = opts.sendMode ?? "auto";
  const keys = relayerKeys(opts);
  const replaceAfterMs = opts.replaceAfterMs ?? 10_000;
  if (!(Number.isInteger(replaceAfterMs) && replaceAfterMs >= 100)) throw new ConfigError("replaceAfterMs", `must be an integer number of ms, at least 100, got ${String(opts.replaceAfterMs)}.`);
  const onEvent = opts.onEvent;
  const emit = (e: RelayerEvent): void => {
    try {
      onEvent?.(e);
    } catch {
      // a listener must not break a settlement
    }
  };
  const account = privateKeyToAccount(keys[0]!);
  const client = createPublicClient({ transport: http(rpcUrl, { timeout: requestTimeoutMs, retryCount: 0 }) });
  const rpc = <T>(method: string, params: unknown[]): Promise<T> => client.request({ method, params } as never) as Promise<T>;
  /** For eth_sendRawTransactionSync: answers once the transaction is mined, so its timeout is the receipt's. */
  const syncClient = createPublicClient({ transport: http(rpcUrl, { timeout: receiptTimeoutMs, retryCount: 0 }) });
  const where = rpcOrigin(rpcUrl);

  // --- fees, shared by concurrent settles for FEE_CACHE_MS ---
  let feeCache: { at: number; fees: Promise<Fees> } | undefined;
  const fetchFees = async (): Promise<Fees> => {
    const [block, tip] = await Promise.all([
      rpc<{ baseFeePerGas?: Hex }>("eth_getBlockByNumber", ["latest", false]),
      rpc<Hex>("eth_maxPriorityFeePerGas", []).catch(() => "0x0" as Hex),
    ]);
    if (block.baseFeePerGas === undefined) return { type: "legacy", gasPrice: hexToBigInt(await rpc<Hex>("eth_gasPrice", [])) };
    const maxPriorityFeePerGas = hexToBigInt(tip);
    return { type: "eip1559", maxPriorityFeePerGas, maxFeePerGas: 2n * hexToBigInt(block.baseFeePerGas) + maxPriorityFeePerGas };
  };
  const fees = (): Promise<Fees> => {
    if (!feeCache || Date.now() - feeCache.at > FEE_CACHE_MS) {
      const p = fetchFees();
      feeCache = { at: Date.now(), fees: p };
      p.catch(() => {
        if (feeCache?.fees === p) feeCache = undefined;
      });
    }
    return feeCache.fees;
  };

  // --- asset must be a contract (a call to an EOA "succeeds" and would waste gas) ---
  const checkedAssets = new Map<string, Promise<void>>();
  const requireContract = (asset: Address): Promise<void> => {
    const key = asset.toLowerCase();
    let p = checkedAssets.get(key);
    if (!p) {
      p = rpc<Hex>("eth_getCode", [asset, "latest"]).then((code) => {
        if (size(code) === 0) throw new SettlementError("asset_not_deployed_contract", `asset ${asset} has no code on chain ${chainId}`);
      });
      checkedAssets.set(key, p);
      p.catch(() => checkedAssets.delete(key));
    }
    return p;
  };

  // --- simulation: estimateGas reverts exactly when the transfer would ---
  const simulate = async (asset: Address, data: Hex): Promise<bigint> => {
    try {
      const gas = hexToBigInt(await rpc<Hex>("eth_estimateGas", [{ from: account.address, to: asset, data }]));
      return gas + gas / 4n;
    } catch (err) {
      const revert = revertText(err);
      if (revert !== undefined) {
        throw new SettlementError(reasonFromRevert(revert), `transferWithAuthorization would revert: ${revert}`, { cause: err });
      }
      throw rpcFailure("simulation", err);
    }
  };

  // --- sync sends where the chain mines on arrival (see `sendMode`) ---
  let sendSync: Promise<boolean> | boolean | undefined = sendMode === "auto" ? undefined : sendMode === "sync";
  const automine = async (): Promise<boolean> => {
    for (const method of ["anvil_getAutomine", "hardhat_getAutomine"]) {
      const on = await rpc<boolean>(method, []).catch(() => undefined);
      if (typeof on === "boolean") return on;
    }
    return false;
  };
  /** Send a signed transaction; the receipt when the node gave it (sync send), else undefined. */
  const send = async (serialized: Hex): Promise<RawReceipt | undefined> => {
    if (await (sendSync ??= automine().then((on) => (sendSync = on)))) {
      try {
        return (await syncClient.request({ method: "eth_sendRawTransactionSync", params: [serialized] } as never)) as RawReceipt;
      } catch (err) {
        if (rpcErrorCode(err) === 4) return undefined; // EIP-7966 timeout: accepted, not yet mined; poll for it
        if (!methodUnsupported(err)) throw err;
        sendSync = false; // this node lacks the method (nothing was sent): plain sends from now on
      }
    }
    await rpc<Hex>("eth_sendRawTransaction", [serialized]);
    return undefined;
  };

  // --- the wallets: one nonce sequence each (see wallet-lane.ts), sharing the load ---
  const head = new HeadWatcher(rpc, Math.max(pollingIntervalMs, 5));
  const laneDeps = { chainId, rpc, sendRaw: send, fees, emit, head, replaceAfterMs, receiptTimeoutMs, rejectedByNode, describe, where };
  const pool = new WalletPool(
    keys.map((key) => {
      const acct = privateKeyToAccount(key);
      return new WalletLane(acct.address, transactionSigner(key, acct), laneDeps);
    }),
    emit,
  );
  const ours = (a: Address): boolean => pool.addresses.some((x) => isAddressEqual(x, a));

  // --- batched settlement (see batcher.ts): one transaction for many plain EIP-3009 payments ---
  const batcher = opts.batch
    ? new Batcher(opts.batch, {
        rpc,
        chainId,
        slots: pool.lanes.length,
        revertReason: (data) => {
          const text = revertDataText(data) ?? `revert data ${data}`;
          return { reason: reasonFromRevert(text), text };
        },
        broadcast: async (to, data, gas) => {
          const fee = await fees().catch((err: unknown) => Promise.reject(rpcFailure("fee lookup", err)));
          const sent = await pool.send(to, data, gas, fee);
          return { mined: () => sent.lane.mined(sent) };
        },
      })
    : undefined;

  /**
   * Send a call from a relayer wallet (nonce, gas funds, replacement when
   * stuck) and wait until it is mined. `gas` defaults to an estimate + 25 %.
   * Resolves the mined hash and receipt (whatever its status); throws a
   * `SettlementError`: `relayer_low_funds` (503, nothing sent),
   * `unexpected_settle_error` (refused or RPC down, nothing sent), or
   * `settlement_pending` with the hash when the outcome is unknown.
   */
  const sendCall = async (to: Address, data: Hex, gas?: bigint): Promise<{ hash: Hex; receipt: RawReceipt }> => {
    const [limit, fee] = await Promise.all([
      gas ?? estimate(to, data),
      fees().catch((err: unknown) => Promise.reject(rpcFailure("fee lookup", err))),
    ]);
    const sent = await pool.send(to, data, limit, fee);
    return sent.lane.mined(sent);
  };
  const estimate = async (to: Address, data: Hex): Promise<bigint> => {
    try {
      const gas = hexToBigInt(await rpc<Hex>("eth_estimateGas", [{ from: account.address, to, data }]));
      return gas + gas / 4n;
    } catch (err) {
      const revert = revertText(err);
      throw revert !== undefined ? new SettlementError("invalid_exact_evm_transaction_failed", `the call would revert: ${revert}`, { cause: err }) : rpcFailure("simulation", err);
    }
  };
  /** The mined receipt of a transaction sent earlier (a retry of a pending settlement); replaced if it is stuck. */
  const waitForReceipt = async (hash: Hex): Promise<{ hash: Hex; receipt: RawReceipt }> => (pool.laneOf(hash) ?? pool.lanes[0]!).mined({ hash });

  // --- broadcast transactions whose outcome is unknown, so a retry waits for them instead of paying twice ---
  const unresolved = new Map<string, Hex>();
  const remember = (key: string, hash: Hex): void => {
    unresolved.delete(key);
    unresolved.set(key, hash);
    if (unresolved.size > MAX_UNRESOLVED) unresolved.delete(unresolved.keys().next().value!);
  };
  const knownBroadcast = async (key: string): Promise<Hex | undefined> => {
    const hash = unresolved.get(key);
    if (!hash) return undefined;
    const tx = await rpc<unknown>("eth_getTransactionByHash", [hash]).catch(() => hash);
    if (tx !== null) return hash;
    unresolved.delete(key); // dropped by the node: settle afresh
    return undefined;
  };

  // --- smart wallets (ERC-1271 / ERC-6492): deploy a counterfactual wallet through its factory, then the `bytes signature` form ---
  const smartWalletCall = async (req: SettleRequest): Promise<Hex> => {
    const wrapped = parseErc6492(req.signature);
    const from = req.authorization.from;
    const deployed = async () => size(await rpc<Hex>("eth_getCode", [from, "latest"]).catch((err: unknown) => Promise.reject(rpcFailure("code lookup", err)))) > 0;
    if (wrapped && !(await deployed())) {
      const failed = (why: string, cause?: unknown) =>
        new SettlementError("smart_wallet_deployment_failed", `ERC-6492 deployment of ${from} through ${wrapped.factory} ${why}`, { cause });
      try {
        let gas: bigint;
        try {
          gas = hexToBigInt(await rpc<Hex>("eth_estimateGas", [{ from: account.address, to: wrapped.factory, data: wrapped.factoryData }]));
        } catch (err) {
          throw revertText(err) !== undefined ? failed(`would revert: ${revertText(err)}`, err) : rpcFailure("deployment simulation", err);
        }
        if (gas > MAX_DEPLOY_GAS) throw failed(`needs ${gas} gas, more than ${MAX_DEPLOY_GAS}`);
        const { hash, receipt } = await sendCall(wrapped.factory, wrapped.factoryData, gas + gas / 4n);
        if (hexToNumber(receipt.status) !== 1) throw failed(`reverted (${hash})`);
      } catch (err) {
        // a concurrent payment from the same wallet may have deployed it first: then go on. Else nothing was
        // charged yet, so a deployment that failed or is still pending never leaves the payment pending.
        if (!(await deployed().catch(() => false))) {
          throw err instanceof SettlementError && !err.pending ? err : failed(`failed: ${describe(err)}`, err);
        }
      }
      if (!(await deployed())) throw failed("left no code at the payer's address");
    }
    return bytesSettleCall(req.authorization, wrapped?.signature ?? req.signature);
  };

  const submit = async (req: SettleRequest, key: string): Promise<{ hash: Hex; receipt: RawReceipt }> => {
    const smartWallet = !req.permit2 && needsBytesForm(req);
    const data = req.permit2 ? permit2SettleCall(req.permit2, req.signature) : smartWallet ? await smartWalletCall(req) : encodeSettleCall(req.authorization, req.signature);
    const target = settleTarget(req); // the x402 Permit2 proxy for a Permit2 payment, else the token
    // A payment checked on-chain moments ago (nonce unused, balance covers it)
    // with a 65-byte signature verified locally skips the estimate: a fixed
    // limit above any EIP-3009 EOA transfer saves a round trip. A race lost to
    // another spender then reverts on-chain (reported, never charged twice).
    // A reading older than PRECHECK_FRESH_MS (a slow handler ran since) does not vouch: simulate.
    const fresh = req.precheckedAt === undefined || Date.now() - req.precheckedAt <= PRECHECK_FRESH_MS;
    const precheckedEoa = req.prechecked === true && fresh && !smartWallet && !req.permit2 && size(req.signature) === 65;
    const [gas] = await Promise.all([
      precheckedEoa ? EOA_TRANSFER_GAS : simulate(target, data),
      fees().catch((err: unknown) => Promise.reject(rpcFailure("fee lookup", err))),
      requireContract(req.asset).catch((err: unknown) => Promise.reject(err instanceof SettlementError ? err : rpcFailure("code lookup", err))),
      target !== req.asset && requireContract(target).catch((err: unknown) => Promise.reject(err instanceof SettlementError ? err : rpcFailure("code lookup", err))),
    ]);
    // a plain EOA EIP-3009 payment joins a batch when batching is on; the others go out alone
    if (batcher && !smartWallet && !req.permit2 && size(req.signature) === 65) return batcher.add(req, key);
    return sendCall(target, data, gas);
  };

  const inFlight = new Set<string>();

  return {
    kind: "relayer",
    address: account.address,
    chainId,
    addresses: pool.addresses,
    async settle(req: SettleRequest): Promise<SettleResult> {
      const { authorization: auth, asset } = req;
      if (req.chainId !== chainId) {
        throw new SettlementError("invalid_exact_evm_network_mismatch", `relayer is on chain ${chainId}, payment is for chain ${req.chainId}`);
      }
      const key = `${asset}:${auth.from}:${auth.nonce}`.toLowerCase();
      if (inFlight.has(key)) {
        throw new SettlementError("invalid_exact_evm_nonce_already_used", `authorization ${auth.nonce} of ${auth.from} is already being settled`);
      }
      inFlight.add(key);
      try {
        const known = await knownBroadcast(key);
        let hash: Hex;
        let receipt: RawReceipt;
        try {
          ({ hash, receipt } = known ? await waitForReceipt(known) : await submit(req, key));
        } catch (err) {
          if (err instanceof SettlementError && err.pending && err.transaction) remember(key, err.transaction as Hex);
          throw err;
        }
        unresolved.delete(key);
        return await minedResult(req, hash, receipt, true);
      } catch (err) {
        // simulation found the authorization used: by a third party's copy of this payment (then it is paid) or not
        if (err instanceof SettlementError && !err.pending && err.reason === NONCE_USED) {
          const used = await usedBy(req, undefined, true);
          if (used) return used;
        }
        if (err instanceof SettlementError) throw err;
        throw new SettlementError("unexpected_settle_error", "settlement failed unexpectedly.", { cause: err, detail: `settle failed: ${describe(err)}` });
      } finally {
        inFlight.delete(key);
      }
    },
    async confirm(req: SettleRequest, transaction: string): Promise<SettleResult | undefined> {
      // A pending transfer's outcome, nothing sent (issue 14 B10): mined → checked result; still known to the node → undefined;
      // unknown to the node → dropped, which is a failure only when the authorization is still unused on chain.
      const hash = transaction as Hex;
      const { authorization: auth, asset } = req;
      const key = `${asset}:${auth.from}:${auth.nonce}`.toLowerCase();
      let receipt: RawReceipt | null;
      let tx: unknown;
      try {
        receipt = await rpc<RawReceipt | null>("eth_getTransactionReceipt", [hash]);
        tx = receipt ? undefined : await rpc<unknown>("eth_getTransactionByHash", [hash]);
      } catch (err) {
        throw rpcFailure("receipt lookup", err);
      }
      if (receipt) {
        unresolved.delete(key);
        return minedResult(req, hash, receipt);
      }
      if (tx !== null) return undefined;
      let used: boolean;
      try {
        const data = encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [auth.from, auth.nonce] });
        used = req.permit2 ? await permit2NonceUsed(rpc, req.permit2) : hexToBigInt(await rpc<Hex>("eth_call", [{ to: asset, data }, "latest"])) !== 0n;
      } catch (err) {
        throw rpcFailure("authorization lookup", err);
      }
      if (used) {
        // another transaction used it: a copy of this payment settles it; else looked at again until it expires
        const copy = await usedBy(req);
        if (copy) unresolved.delete(key);
        // a Permit2 nonce the payer invalidated itself moved no money: a failure now, not at the deadline
        if (!copy && req.permit2 && (await permit2NonceInvalidated(rpc, req.permit2).catch((err: unknown) => Promise.reject(rpcFailure("nonce invalidation lookup", err))))) {
          unresolved.delete(key);
          throw new SettlementError("settlement_canceled", `the payer invalidated this Permit2 nonce and transaction ${hash} was dropped: nothing was transferred`, { transaction: hash });
        }
        return copy;
      }
      unresolved.delete(key);
      throw new SettlementError("settlement_dropped", `transaction ${hash} was dropped and the authorization is unused: nothing was transferred`, { transaction: hash });
    },
    // issue 14 B11: a settlement whose hash was never recorded (its process died): the transaction that used the authorization, nothing sent
    lookup: (req: SettleRequest) => usedBy(req),
  };

  /**
   * A mined transaction's checked result. When ours reverted (e.g. someone
   * submitted the same signed authorization first), a successful use of this
   * authorization by another transaction settles the payment with that
   * transaction's hash: the signed (to, value) moved exactly as authorized.
   */
  async function minedResult(req: SettleRequest, hash: Hex, receipt: RawReceipt, thirdPartyOnly = false): Promise<SettleResult> {
    try {
      return checkedResult(req, hash, receipt);
    } catch (err) {
      const used = await usedBy(req, receipt.blockNumber === undefined ? undefined : hexToBigInt(receipt.blockNumber), thirdPartyOnly);
      if (used) return used;
      throw err;
    }
  }

  /**
   * The result of another transaction that used `req`'s authorization (up to
   * block `toBlock`), else undefined. `thirdPartyOnly` (a fresh settle): a use
   * by our own wallet is an earlier settlement of ours, so settling again is
   * a replay and stays refused.
   */
  async function usedBy(req: SettleRequest, toBlock?: bigint, thirdPartyOnly = false): Promise<SettleResult | undefined> {
    let found: Awaited<ReturnType<typeof findSettlementUse>>;
    try {
      found = await findSettlementUse(rpc, req, toBlock);
    } catch (err) {
      throw rpcFailure("authorization log lookup", err);
    }
    if (!found || (thirdPartyOnly && (!found.from || ours(found.from)))) return undefined;
    return { transaction: found.transaction, network: req.network, payer: req.authorization.from };
  }

  function rpcFailure(step: string, err: unknown): SettlementError {
    return new SettlementError("unexpected_settle_error", `${step} failed: the chain RPC could not be reached.`, { cause: err, detail: `${step} via ${where} failed: ${describe(err)}` });
  }
}

/** The result of a mined settlement transaction; throws unless it succeeded with the authorized Transfer log. */
function checkedResult(req: SettleRequest, hash: Hex, receipt: RawReceipt): SettleResult {
  if (hexToNumber(receipt.status) !== 1) {
    throw new SettlementError("invalid_exact_evm_transaction_failed", `transaction ${hash} reverted`, { transaction: hash });
  }
  // EIP-3009: the token's AuthorizationUsed log of this very authorization, followed by its Transfer (a batch holds
  // other payments' Transfers, maybe of the same from/to/value); Permit2 emits no such log: its Transfer.
  if (!paidInReceipt(receipt, req)) {
    throw new SettlementError("invalid_exact_evm_transfer_event_mismatch", `transaction ${hash} has no matching Transfer log`, { transaction: hash });
  }
  return { transaction: hash, network: req.network, payer: req.authorization.from };
}

/** Calldata of `transferWithAuthorization`: (v,r,s) for 65-byte signatures, `bytes` otherwise. */
function encodeSettleCall(a: ExactAuthorization, signature: Hex): Hex {
  const head = [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce] as const;
  if (size(signature) === 65) {
    const vByte = hexToNumber(slice(signature, 64, 65));
    const v = vByte < 27 ? vByte + 27 : vByte;
    return encodeFunctionData({
      abi: EIP3009_ABI,
      functionName: "transferWithAuthorization",
      args: [...head, v, slice(signature, 0, 32), slice(signature, 32, 64)],
    });
  }
  return encodeFunctionData({ abi: EIP3009_ABI, functionName: "transferWithAuthorization", args: [...head, signature] });
}

/**
 * The revert reason when `err` is an execution revert: the decoded
 * `Error(string)` / custom error, else the node's message. Undefined for
 * transport failures.
 */
function revertText(err: unknown): string | undefined {
  if (!(err instanceof BaseError)) return undefined;
  let data: Hex | undefined;
  let reverted = false;
  err.walk((e) => {
    const x = e as { code?: unknown; data?: unknown; details?: unknown };
    if (x.code === 3 || (typeof x.details === "string" && /revert/i.test(x.details))) reverted = true;
    if (typeof x.data === "string" && isHex(x.data) && size(x.data) >= 4) data = x.data;
    return false;
  });
  if (!reverted && data === undefined) return undefined;
  // a decoded revert, else (unknown custom error) the node's message
  return (data !== undefined ? revertDataText(data) : undefined) ?? (err.details || err.shortMessage);
}

/** The readable revert of raw revert data: a decoded `Error(string)` / known custom error, else undefined. */
function revertDataText(data: Hex): string | undefined {
  if (size(data) < 4) return undefined;
  try {
    const decoded = decodeErrorResult({ abi: TOKEN_ERRORS, data });
    if (decoded.errorName === "Error") return String(decoded.args[0]);
    return `${decoded.errorName}(${(decoded.args ?? []).map(String).join(", ")})`;
  } catch {
    return undefined;
  }
}

/**
 * True when the node (or its HTTP front) answered with a refusal, so the
 * transaction was certainly not accepted: a JSON-RPC error or an HTTP 4xx.
 * Timeouts, network errors and 5xx leave the outcome unknown.
 */
function rejectedByNode(err: unknown): boolean {
  if (!(err instanceof BaseError)) return false;
  return err.walk((e) => e instanceof RpcRequestError || (e instanceof HttpRequestError && (e.status ?? 0) >= 400 && (e.status ?? 0) < 500)) !== null;
}

/** The JSON-RPC error code in `err`'s chain, if any. */
function rpcErrorCode(err: unknown): number | undefined {
  if (!(err instanceof BaseError)) return undefined;
  const found = err.walk((e) => e instanceof RpcRequestError) as RpcRequestError | null;
  return found?.code;
}

/** True when the node answered that it has no such method (the call did nothing). */
function methodUnsupported(err: unknown): boolean {
  const code = rpcErrorCode(err);
  return code === -32601 || code === -32004 || (code !== undefined && /method.*(not found|not supported|does not exist|not available)/i.test(describe(err)));
}

function describe(err: unknown): string {
  if (err instanceof BaseError) return err.details || err.shortMessage;
  return err instanceof Error ? err.message : String(err);
}

/** The relayer keys: `privateKeys` (a pool) or `privateKey`, exactly one of them. */
function relayerKeys(opts: RelayerSettlerOptions): Hex[] {
  const keys = opts.privateKeys ?? (opts.privateKey === undefined ? [] : [opts.privateKey]);
  if (opts.privateKeys !== undefined && opts.privateKey !== undefined) throw new ConfigError("privateKeys", "give either privateKey (one wallet) or privateKeys (a pool), not both.");
  if (keys.length === 0) throw new ConfigError(opts.privateKeys ? "privateKeys" : "privateKey", "is required: the key of a funded relayer wallet (0x and 64 hex digits).");
  const seen = new Set<string>();
  keys.forEach((k, i) => {
    if (typeof k !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(k)) throw new ConfigError(opts.privateKeys ? `privateKeys[${i}]` : "privateKey", "must be a private key: 0x and 64 hex digits.");
    if (seen.has(k.toLowerCase())) throw new ConfigError(`privateKeys[${i}]`, "repeats a key: each wallet of the pool needs its own key (one nonce sequence each).");
    seen.add(k.toLowerCase());
  });
  return keys;
}

function isLoopback(rpcUrl: string): boolean {
  try {
    const host = new URL(rpcUrl).hostname;
    return host === "localhost" || host === "[::1]" || host.startsWith("127.");
  } catch {
    return false;
  }
}
