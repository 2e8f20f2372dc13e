/**
 * Batched settlement (issue 20, part 3): plain EIP-3009 payments (an EOA's
 * 65-byte signature) that arrive close together go out in ONE transaction of
 * the relayer wallet, through the X402BatchSettlement contract
 * (lib/contracts/X402BatchSettlement.sol), which runs each
 * `transferWithAuthorization` in its own call: one that reverts is reported
 * (`TransferFailed(index, reason)`) and the others go on.
 *
 * When a batch goes out: as soon as a send slot is free (no earlier batch of
 * this settler still waiting for the node to accept it; one slot per relayer
 * wallet) and either it is full (`maxSize`) or its oldest payment has waited
 * `maxWaitMs`. Payments arriving while a batch is being signed and accepted
 * join the next one, so under load batches grow by themselves and latency
 * stays about one block. The batch transaction goes through the wallet lane
 * like any other (nonce, gas funds, replacement when stuck).
 *
 * Each payment gets its own outcome: the mined hash and receipt (the relayer
 * then checks the token's AuthorizationUsed + Transfer logs of exactly that
 * authorization), or the revert reason of its own call, or the batch's
 * failure when nothing was sent (e.g. 503 relayer_low_funds).
 */
import { concat, decodeEventLog, encodeFunctionData, encodePacked, hexToNumber, isAddressEqual, size, slice, type Abi, type Address, type Hex } from "viem";
import { SettlementError } from "../errors.js";
import type { RawReceipt } from "./authorization-log.js";
import type { SettleRequest } from "./settler.js";
import artifact from "./X402BatchSettlement.artifact.json" with { type: "json" };

/** Options of `relayerSettler({ batch })`. */
export interface BatchOptions {
  /**
   * Address of the X402BatchSettlement contract: `dev.batchSettlement` on the
   * dev chain; on a real chain, deploy it once (README, "Batched settlement").
   */
  contract: Address;
  /** Most payments in one transaction, 1 to {@link MAX_BATCH_SIZE}. Default 100 (≈ 10 M gas limit, within the first tenth of a Base block). */
  maxSize?: number;
  /**
   * How long (ms) the first payment of a batch waits for others before it
   * goes out, 0 to 10000. Default 25. Payments also gather while the previous
   * batch is being sent, so 0 still batches under load.
   */
  maxWaitMs?: number;
}

/** Gas limit of a batch: this much for the transaction, plus {@link PAYMENT_GAS} per payment (unused gas is not paid). */
const BATCH_BASE_GAS = 50_000n;
/** Gas limit per payment of a batch (an EIP-3009 transfer uses ≈ 45–65k inside a batch). */
const PAYMENT_GAS = 100_000n;
/** Most payments in one batch: its gas limit stays under the per-transaction cap of 2^24 (EIP-7825, enforced on Base). */
export const MAX_BATCH_SIZE = Number((2n ** 24n - BATCH_BASE_GAS) / PAYMENT_GAS);
const BATCH_DEFAULTS = { maxSize: 100, maxWaitMs: 25 } as const;

/** The batch contract's runtime code, compared with the code at `contract` before the first batch. */
const BATCH_CONTRACT_RUNTIME = artifact.deployedBytecode as Hex;
const ABI = artifact.abi as Abi;
const NONCE_USED = "invalid_exact_evm_nonce_already_used";

/** A batch handed to a wallet and accepted by the node, and how to wait until it is mined. */
export interface Broadcast {
  mined(): Promise<{ hash: Hex; receipt: RawReceipt }>;
}

export interface BatcherDeps {
  rpc: <T>(method: string, params: unknown[]) => Promise<T>;
  /** Send a call from a relayer wallet; resolves once the node accepted it. Throws like `WalletPool.send`. */
  broadcast(to: Address, data: Hex, gas: bigint): Promise<Broadcast>;
  /** The x402 reason and readable text of a transfer's revert data. */
  revertReason(data: Hex): { reason: string; text: string };
  /** Parallel sends allowed (one per relayer wallet). */
  slots: number;
  chainId: number;
}

interface Item {
  req: SettleRequest;
  key: string;
  at: number;
  resolve: (mined: { hash: Hex; receipt: RawReceipt }) => void;
  reject: (err: unknown) => void;
}

/** Gathers payments into batch transactions, per token. */
export class Batcher {
  private readonly contract: Address;
  private readonly maxSize: number;
  private readonly maxWaitMs: number;
  /** Payments waiting to go out, by token (lowercase). */
  private readonly open = new Map<string, Item[]>();
  private sending = 0;
  private timer: NodeJS.Timeout | undefined;
  private checked: Promise<void> | undefined;

  constructor(
    opts: BatchOptions,
    private readonly d: BatcherDeps,
  ) {
    this.contract = opts.contract;
    this.maxSize = opts.maxSize ?? BATCH_DEFAULTS.maxSize;
    this.maxWaitMs = opts.maxWaitMs ?? BATCH_DEFAULTS.maxWaitMs;
  }

  /**
   * Settle `req` in a batch; `key` names its authorization. Resolves the
   * mined batch (the caller checks this payment's logs in it); rejects with
   * this payment's own revert (not pending, with the batch's hash), or with
   * the batch's sending error. The same authorization twice in one batch is
   * refused at once: the token would take it once.
   */
  add(req: SettleRequest, key: string): Promise<{ hash: Hex; receipt: RawReceipt }> {
    return new Promise((resolve, reject) => {
      const token = req.asset.toLowerCase();
      const items = this.open.get(token) ?? [];
      if (items.some((i) => i.key === key)) {
        reject(new SettlementError(NONCE_USED, `authorization ${req.authorization.nonce} of ${req.authorization.from} is already in this batch`));
        return;
      }
      items.push({ req, key, at: Date.now(), resolve, reject });
      this.open.set(token, items);
      this.pump();
    });
  }

  /** Send every batch that is due while a slot is free; else wake when the next one is due. */
  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    let nextDue = Infinity;
    for (const [token, items] of this.open) {
      while (items.length > 0) {
        const now = Date.now();
        const dueAt = items[0]!.at + this.maxWaitMs;
        if (items.length < this.maxSize && now < dueAt) {
          nextDue = Math.min(nextDue, dueAt);
          break;
        }
        if (this.sending >= this.d.slots) return; // pumped again when a send is accepted
        void this.send(items.splice(0, this.maxSize));
      }
      if (items.length === 0) this.open.delete(token);
    }
    if (nextDue < Infinity) {
      this.timer = setTimeout(() => this.pump(), Math.max(0, nextDue - Date.now()));
      this.timer.unref();
    }
  }

  private async send(items: Item[]): Promise<void> {
    this.sending++;
    let sent: Broadcast;
    try {
      await this.checkContract();
      const data = encodeBatch(items[0]!.req.asset, items.map((i) => i.req));
      sent = await this.d.broadcast(this.contract, data, BATCH_BASE_GAS + PAYMENT_GAS * BigInt(items.length));
    } catch (err) {
      for (const i of items) i.reject(err); // nothing sent (or pending with the hash): each payment gets the batch's error
      return;
    } finally {
      this.sending--;
      this.pump();
    }
    let mined: { hash: Hex; receipt: RawReceipt };
    try {
      mined = await sent.mined();
    } catch (err) {
      for (const i of items) i.reject(err);
      return;
    }
    const failed = this.failedCalls(mined.receipt);
    items.forEach((item, index) => {
      const data = failed.get(index);
      if (data === undefined) return item.resolve(mined); // the caller checks this authorization's own logs
      const { reason, text } = this.d.revertReason(data);
      item.reject(new SettlementError(reason, `transfer ${index} of batch ${mined.hash} reverted: ${text}`, { transaction: mined.hash }));
    });
  }

  /** Revert data of each call that failed in a mined batch, by its index (only this contract's events count). */
  private failedCalls(receipt: RawReceipt): Map<number, Hex> {
    const failed = new Map<number, Hex>();
    if (hexToNumber(receipt.status) !== 1) return failed;
    for (const log of receipt.logs) {
      if (log.removed || !isAddressEqual(log.address, this.contract)) continue;
      try {
        const ev = decodeEventLog({ abi: ABI, topics: log.topics as [Hex, ...Hex[]], data: log.data });
        if (ev.eventName === "TransferFailed") {
          const args = ev.args as unknown as { index: bigint; reason: Hex };
          failed.set(Number(args.index), args.reason);
        }
      } catch {
        // not one of its events
      }
    }
    return failed;
  }

  /** The code at `contract` must be X402BatchSettlement's (checked once; a failed look-up is tried again). */
  private checkContract(): Promise<void> {
    this.checked ??= this.d.rpc<Hex>("eth_getCode", [this.contract, "latest"]).then(
      (code) => {
        if (size(code) === 0) {
          throw new SettlementError("unexpected_settle_error", "batched settlement is misconfigured; nothing was charged.", {
            detail: `batch.contract ${this.contract} has no code on chain ${this.d.chainId}: deploy X402BatchSettlement there (README, "Batched settlement")`,
          });
        }
        if (code.toLowerCase() !== BATCH_CONTRACT_RUNTIME.toLowerCase()) {
          throw new SettlementError("unexpected_settle_error", "batched settlement is misconfigured; nothing was charged.", {
            detail: `batch.contract ${this.contract} on chain ${this.d.chainId} is not this server402 version's X402BatchSettlement (its code differs)`,
          });
        }
      },
      (err: unknown) => {
        this.checked = undefined;
        throw new SettlementError("unexpected_settle_error", "the chain RPC could not be reached.", { cause: err, detail: `batch contract code lookup failed: ${String(err)}` });
      },
    );
    return this.checked;
  }
}

/**
 * The batch contract's `settle(token, payments)` call for `reqs` (all of
 * token `token`): `payments` packs each authorization with no ABI padding
 * (calldata is most of what a batch adds per payment):
 * flag (1) | from (20) | [to (20) | value (32), when flag is 1] | validAfter, validBefore, nonce (32 each) | v (1) | r (32) | s (32);
 * flag 0 means "same to and value as the previous record".
 */
export function encodeBatch(token: Address, reqs: SettleRequest[]): Hex {
  const records = reqs.map((req, i) => {
    const a = req.authorization;
    const prev = reqs[i - 1]?.authorization;
    const same = prev !== undefined && isAddressEqual(prev.to, a.to) && prev.value === a.value;
    const vByte = hexToNumber(slice(req.signature, 64, 65));
    const head = same ? encodePacked(["uint8", "address"], [0, a.from]) : encodePacked(["uint8", "address", "address", "uint256"], [1, a.from, a.to, a.value]);
    const tail = encodePacked(
      ["uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"],
      [a.validAfter, a.validBefore, a.nonce, vByte < 27 ? vByte + 27 : vByte, slice(req.signature, 0, 32), slice(req.signature, 32, 64)],
    );
    return concat([head, tail]);
  });
  return encodeFunctionData({ abi: ABI, functionName: "settle", args: [token, concat(records)] });
}
