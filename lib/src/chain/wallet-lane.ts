/**
 * The relayer's sending machinery at real block times (issue 20, part 2):
 * one nonce sequence per relayer wallet ("lane"), a pool of lanes sharing
 * the load, and a head watcher that wakes receipt waiters once per block.
 *
 * - Pipelining: a lane assigns nonces locally, one after another in its
 *   queue, and only awaits the node's acceptance of each transaction (a
 *   round trip), never its receipt: many settlements are in flight from one
 *   wallet, each with its own nonce.
 * - No nonce gap: a transaction the node refuses never entered the mempool,
 *   so its nonce is given to the next send (nothing later was signed with a
 *   higher one meanwhile: the queue is sequential). A send whose outcome is
 *   unknown makes the lane re-read its nonce from the node before the next
 *   send. A transaction that was accepted and later dropped (or stays
 *   unmined) is sent again with the same nonce and a higher fee after
 *   `replaceAfterMs`, which also fills the gap it left for the ones behind it.
 * - Replacement: same nonce, same call, fees raised by 25 % (at least the
 *   current ones); "already known" means the node holds that very
 *   transaction, "nonce too low" that one of ours (or another sender's) was
 *   mined with that nonce, "replacement transaction underpriced" raises the
 *   fee again. A receipt of any of the hashes sent for a nonce settles it.
 * - Gas funds: before a nonce is given, the wallet's balance must cover this
 *   transaction's maximum fee plus that of every transaction still in
 *   flight; otherwise `RelayerFundsError` (503, `relayer_low_funds`) and a
 *   `relayer_low_funds` event, before anything is sent.
 */
import { hexToBigInt, hexToNumber, keccak256, type Address, type Hex, type TransactionSerializable } from "viem";
import { RelayerFundsError, SettlementError } from "../errors.js";
import type { RawReceipt } from "./authorization-log.js";

export type Fees = { type: "eip1559"; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint } | { type: "legacy"; gasPrice: bigint };

/** What the relayer's sending did, for logs and metrics (`RelayerSettlerOptions.onEvent`). Must not throw. */
export type RelayerEvent =
  /** A transaction was accepted by the node. */
  | { type: "relayer_sent"; wallet: Address; nonce: number; transaction: Hex }
  /** A transaction stayed unmined for `replaceAfterMs`: sent again with the same nonce and a higher fee. */
  | { type: "relayer_replaced"; wallet: Address; nonce: number; transaction: Hex; replaces: Hex; maxFeePerGas: string }
  /** The lane re-read its next nonce from the node (an unknown send outcome, a refusal or another sender). */
  | { type: "relayer_nonce_resync"; wallet: Address; nonce: number; reason: string }
  /** No relayer wallet could pay one more transaction: the settlement was refused with 503 `relayer_low_funds`. Top it up. */
  | { type: "relayer_low_funds"; wallet: Address; balance: string; needed: string; inFlight: number };

export interface LaneDeps {
  chainId: number;
  rpc: <T>(method: string, params: unknown[]) => Promise<T>;
  /** Broadcast a signed transaction: the receipt when the node gave it (sync send), else undefined; throws what the RPC threw. */
  sendRaw: (serialized: Hex) => Promise<RawReceipt | undefined>;
  fees: () => Promise<Fees>;
  emit: (e: RelayerEvent) => void;
  head: HeadWatcher;
  replaceAfterMs: number;
  receiptTimeoutMs: number;
  /** True when the node certainly refused (JSON-RPC error or HTTP 4xx): nothing entered the mempool. */
  rejectedByNode: (err: unknown) => boolean;
  describe: (err: unknown) => string;
  /** Where the RPC is, for error details. */
  where: string;
}

/** A transaction accepted by the node. */
export interface Sent {
  hash: Hex;
  /** Present when the node answered with it (sync send). */
  receipt?: RawReceipt;
  nonce: number;
  wallet: Address;
}

/** A nonce's transaction(s) not yet seen mined. */
interface Flight {
  nonce: number;
  to: Address;
  data: Hex;
  gas: bigint;
  fee: Fees;
  /** Every hash sent for this nonce, oldest first. */
  hashes: Hex[];
  lastSentAt: number;
  replacements: number;
  /** The node reported this nonce used (by a mined transaction). */
  nonceUsedSince?: number;
  replacing?: Promise<void>;
}

const BALANCE_CACHE_MS = 1000;
const MAX_REPLACEMENTS = 5;
/** Fee factor of a replacement: nodes want ≥ 10 % more (geth), some 12.5 %. */
const BUMP_NUM = 5n;
const BUMP_DEN = 4n;
/** Timed-out transactions remembered for a later `resume`. */
const MAX_REMEMBERED = 10_000;

const maxFee = (f: Fees): bigint => (f.type === "eip1559" ? f.maxFeePerGas : f.gasPrice);
const bigMax = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/** Fees for a replacement: 25 % more than `old` (plus 1 wei), at least `current`. */
export function bumpFees(old: Fees, current: Fees): Fees {
  const up = (x: bigint) => (x * BUMP_NUM) / BUMP_DEN + 1n;
  if (old.type === "eip1559") {
    const curTip = current.type === "eip1559" ? current.maxPriorityFeePerGas : current.gasPrice;
    const tip = bigMax(up(old.maxPriorityFeePerGas), curTip);
    return { type: "eip1559", maxPriorityFeePerGas: tip, maxFeePerGas: bigMax(bigMax(up(old.maxFeePerGas), maxFee(current)), tip) };
  }
  return { type: "legacy", gasPrice: bigMax(up(old.gasPrice), maxFee(current)) };
}

const ALREADY_KNOWN = /already known|already imported|known transaction|transaction already exists|alreadyknown/i;
const NONCE_TOO_LOW = /nonce too low|nonce.*too small|nonce has already been used|oldnonce/i;
const UNDERPRICED = /underpriced|replacement.*(fee|gas).*(low|too)/i;

/**
 * Polls the chain head (eth_blockNumber) while someone waits for a block, and
 * wakes every waiter when it changes: one RPC per poll for any number of
 * pending transactions, instead of one receipt poll each.
 */
export class HeadWatcher {
  private block = -1;
  private waiters = new Set<() => void>();
  private polling = false;
  constructor(
    private readonly rpc: <T>(method: string, params: unknown[]) => Promise<T>,
    private readonly intervalMs: number,
  ) {}

  /** The newest block number seen (-1 before the first poll). */
  get seen(): number {
    return this.block;
  }

  /** Resolves once a block newer than `since` is seen, or after `maxMs`. */
  nextBlock(maxMs: number, since: number): Promise<void> {
    if (this.block > since && since !== -1) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, maxMs));
      this.waiters.add(done);
      if (!this.polling) void this.poll();
    });
  }

  private async poll(): Promise<void> {
    this.polling = true;
    try {
      while (this.waiters.size > 0) {
        try {
          const n = hexToNumber(await this.rpc<Hex>("eth_blockNumber", []));
          if (n !== this.block) {
            const first = this.block === -1;
            this.block = n;
            if (!first) for (const w of [...this.waiters]) w();
          }
        } catch {
          // transient RPC trouble: waiters time out on their own
        }
        if (this.waiters.size > 0) await new Promise((r) => setTimeout(r, this.intervalMs));
      }
    } finally {
      this.polling = false;
    }
  }
}

/** One relayer wallet: its nonce sequence, transactions in flight and gas funds. */
export class WalletLane {
  private nextNonce: number | undefined;
  /** A nonce was read from the node once: later reads are resyncs (reported). */
  private started = false;
  private queue: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private readonly flights = new Map<number, Flight>();
  /** Flights whose wait timed out, by each of their hashes, for `resume`. */
  private readonly remembered = new Map<Hex, Flight>();
  private balance: { at: number; wei: Promise<bigint> } | undefined;
  /** Fees of flights seen mined after the cached balance was read (still in that reading). */
  private spentSinceRead: Array<{ at: number; wei: bigint }> = [];

  constructor(
    readonly address: Address,
    private readonly sign: (tx: TransactionSerializable) => Promise<Hex>,
    private readonly d: LaneDeps,
  ) {}

  /** Transactions queued or in flight: the pool sends through the least loaded lane. */
  get load(): number {
    return this.queued + this.flights.size;
  }

  /** Whether this lane holds a flight or a remembered transaction with this hash. */
  knows(hash: Hex): boolean {
    if (this.remembered.has(hash)) return true;
    for (const f of this.flights.values()) if (f.hashes.includes(hash)) return true;
    return false;
  }

  /** The most a transaction in flight (or mined since the balance was read) may still cost. */
  private reserved(): bigint {
    let sum = 0n;
    for (const f of this.flights.values()) sum += f.gas * maxFee(f.fee);
    for (const s of this.spentSinceRead) sum += s.wei;
    return sum;
  }

  private balanceWei(): Promise<bigint> {
    const now = Date.now();
    if (!this.balance || now - this.balance.at > BALANCE_CACHE_MS) {
      const at = now;
      const wei = this.d.rpc<Hex>("eth_getBalance", [this.address, "latest"]).then((h) => {
        this.spentSinceRead = this.spentSinceRead.filter((s) => s.at >= at); // mined before this read: in the balance now
        return hexToBigInt(h);
      });
      this.balance = { at, wei };
      wei.catch(() => {
        if (this.balance?.wei === wei) this.balance = undefined;
      });
    }
    return this.balance.wei;
  }

  /** What the wallet holds and needs for one more transaction of `gas` at `fee`. */
  async funds(gas: bigint, fee: Fees): Promise<{ ok: boolean; balance: bigint; needed: bigint }> {
    const balance = await this.balanceWei();
    const needed = this.reserved() + gas * maxFee(fee);
    return { ok: balance >= needed, balance, needed };
  }

  /** Forget the cached balance (after a top-up the next check reads it again). */
  refreshBalance(): void {
    this.balance = undefined;
  }

  private failure(reason: string, message: string, err: unknown): SettlementError {
    return new SettlementError(reason, message, { cause: err, detail: `relayer ${this.address} via ${this.d.where}: ${this.d.describe(err)}` });
  }

  private async syncNonce(reason: string): Promise<number> {
    let n: number;
    try {
      n = hexToNumber(await this.d.rpc<Hex>("eth_getTransactionCount", [this.address, "pending"]));
    } catch (err) {
      throw this.failure("unexpected_settle_error", "nonce lookup failed: the chain RPC could not be reached.", err);
    }
    if (reason !== "start") this.d.emit({ type: "relayer_nonce_resync", wallet: this.address, nonce: n, reason });
    return n;
  }

  /**
   * Sign and broadcast a call with the next nonce; resolves once the node
   * accepted it (with the receipt on a sync send). Throws
   * `RelayerFundsError` when the wallet cannot pay it on top of its flights,
   * a non-pending `SettlementError` when the node refused it (nothing sent),
   * a pending one with the hash when the outcome is unknown.
   */
  send(to: Address, data: Hex, gas: bigint, fee: Fees): Promise<Sent> {
    this.queued++;
    const run = async (): Promise<Sent> => {
      let resync: string | undefined = this.nextNonce === undefined ? (this.started ? "unknown send outcome or receipt timeout" : "start") : undefined;
      for (let attempt = 0; ; attempt++) {
        const funds = await this.funds(gas, fee).catch((err: unknown) => Promise.reject(this.failure("unexpected_settle_error", "balance lookup failed: the chain RPC could not be reached.", err)));
        if (!funds.ok) throw new RelayerFundsError(this.address, funds.balance, funds.needed);
        if (resync !== undefined || this.nextNonce === undefined) this.nextNonce = await this.syncNonce(resync ?? "resync");
        resync = undefined;
        this.started = true;
        const nonce = this.nextNonce;
        const serialized = await this.sign({ chainId: this.d.chainId, nonce, to, data, gas, ...fee });
        const hash = keccak256(serialized);
        const flight: Flight = { nonce, to, data, gas, fee, hashes: [hash], lastSentAt: Date.now(), replacements: 0 };
        this.flights.set(nonce, flight); // reserved from now on
        try {
          const receipt = await this.d.sendRaw(serialized);
          this.nextNonce = nonce + 1;
          this.d.emit({ type: "relayer_sent", wallet: this.address, nonce, transaction: hash });
          if (receipt) this.settled(flight, receipt);
          return { hash, receipt, nonce, wallet: this.address };
        } catch (err) {
          const text = this.d.describe(err);
          if (this.d.rejectedByNode(err) && ALREADY_KNOWN.test(text)) {
            // the node holds this very transaction (e.g. a retried request it had accepted): sent
            this.nextNonce = nonce + 1;
            return { hash, nonce, wallet: this.address };
          }
          if (!this.d.rejectedByNode(err)) {
            // unknown outcome: it may be in the mempool. Re-read the nonce before the next send, and keep the
            // transaction for a retry of this settlement (`resume`), which replaces it if it never lands.
            this.flights.delete(nonce);
            this.remember(flight);
            this.nextNonce = undefined;
            throw new SettlementError("settlement_pending", `transaction ${hash} was sent; its outcome is not known yet.`, {
              transaction: hash,
              pending: true,
              cause: err,
              detail: `broadcast of ${hash} via ${this.d.where} has unknown outcome: ${text}`,
            });
          }
          // refused: nothing entered the mempool and no later nonce was given out, so this nonce is reused (no gap)
          this.flights.delete(nonce);
          if (attempt < 2 && (NONCE_TOO_LOW.test(text) || UNDERPRICED.test(text))) {
            resync = NONCE_TOO_LOW.test(text) ? "nonce too low" : "nonce taken in the mempool";
            continue; // another sender used this wallet: re-read and try the next free nonce
          }
          throw this.failure("unexpected_settle_error", "the settlement wallet could not send the transfer; nothing was charged.", err);
        }
      }
    };
    const sent = this.queue.then(run, run);
    this.queue = sent.catch(() => {});
    void this.queue.then(() => this.queued--);
    return sent;
  }

  /** A flight seen mined: no longer reserved beyond the cached balance reading. */
  private settled(flight: Flight, receipt: RawReceipt): void {
    if (this.flights.get(flight.nonce) === flight) this.flights.delete(flight.nonce);
    for (const h of flight.hashes) this.remembered.delete(h);
    const r = receipt as RawReceipt & { gasUsed?: Hex; effectiveGasPrice?: Hex };
    const used = r.gasUsed !== undefined && r.effectiveGasPrice !== undefined ? hexToBigInt(r.gasUsed) * hexToBigInt(r.effectiveGasPrice) : flight.gas * maxFee(flight.fee);
    this.spentSinceRead.push({ at: Date.now(), wei: used });
  }

  private remember(flight: Flight): void {
    for (const h of flight.hashes) {
      this.remembered.delete(h);
      this.remembered.set(h, flight);
    }
    while (this.remembered.size > MAX_REMEMBERED) this.remembered.delete(this.remembered.keys().next().value!);
  }

  /**
   * Wait until the transaction (or a replacement of it) is mined; replaces it
   * when it stays unmined for `replaceAfterMs`. Resolves the mined hash and
   * its receipt; throws a pending `SettlementError` with the newest hash after
   * `receiptTimeoutMs`.
   */
  async mined(sent: Pick<Sent, "hash" | "receipt">): Promise<{ hash: Hex; receipt: RawReceipt }> {
    if (sent.receipt) return { hash: sent.hash, receipt: sent.receipt };
    let flight = [...this.flights.values()].find((f) => f.hashes.includes(sent.hash));
    if (!flight) {
      flight = this.remembered.get(sent.hash);
      if (flight) {
        // a retry of a settlement whose wait timed out: watch it (and replace it) again
        for (const h of flight.hashes) this.remembered.delete(h);
        if (!this.flights.has(flight.nonce)) this.flights.set(flight.nonce, flight);
      } else {
        flight = { nonce: -1, to: "0x", data: "0x", gas: 0n, fee: { type: "legacy", gasPrice: 0n }, hashes: [sent.hash], lastSentAt: Date.now(), replacements: MAX_REPLACEMENTS };
      }
    }
    const f = flight;
    const deadline = Date.now() + this.d.receiptTimeoutMs;
    let lastError: unknown;
    for (;;) {
      const since = this.d.head.seen;
      for (const hash of [...f.hashes].reverse()) {
        try {
          const receipt = await this.d.rpc<RawReceipt | null>("eth_getTransactionReceipt", [hash]);
          if (receipt) {
            this.settled(f, receipt);
            return { hash, receipt };
          }
        } catch (err) {
          lastError = err; // transient RPC trouble: keep waiting until the deadline
        }
      }
      const now = Date.now();
      if (f.nonceUsedSince !== undefined && now - f.nonceUsedSince > 3 * this.d.replaceAfterMs) {
        // the nonce went to a transaction that is none of ours (another sender on this key): this one can never be mined
        return this.timedOut(f, lastError, `nonce ${f.nonce} of ${this.address} was used by another transaction`);
      }
      if (now >= deadline) return this.timedOut(f, lastError);
      if (f.nonce >= 0 && now - f.lastSentAt >= this.d.replaceAfterMs) await this.replace(f);
      const untilReplace = f.lastSentAt + this.d.replaceAfterMs - Date.now();
      await this.d.head.nextBlock(Math.min(deadline - Date.now(), Math.max(untilReplace, 10), 1000), since);
    }
  }

  private timedOut(f: Flight, lastError: unknown, why?: string): never {
    if (this.flights.get(f.nonce) === f) this.flights.delete(f.nonce);
    if (f.nonce >= 0) this.remember(f);
    this.nextNonce = undefined; // if it was dropped, the next send must not leave a nonce gap
    const hash = f.hashes[f.hashes.length - 1]!;
    const extra = lastError ? ` (last RPC error: ${this.d.describe(lastError)})` : "";
    throw new SettlementError("settlement_pending", why ? `${why}; the outcome of ${hash} is not known yet.` : `no receipt for ${hash} within ${this.d.receiptTimeoutMs} ms.`, {
      transaction: hash,
      pending: true,
      cause: lastError,
      detail: `${why ?? `no receipt for ${hash} within ${this.d.receiptTimeoutMs} ms`}${extra}`,
    });
  }

  /** Send the flight's call again with its nonce and higher fees (one replacement at a time). */
  private replace(f: Flight): Promise<void> {
    f.replacing ??= this.replaceOnce(f).finally(() => (f.replacing = undefined));
    return f.replacing;
  }

  private async replaceOnce(f: Flight): Promise<void> {
    const now = Date.now();
    if (f.replacements >= MAX_REPLACEMENTS) {
      f.lastSentAt = now;
      return;
    }
    for (const other of this.flights.values()) {
      if (other.nonce < f.nonce) {
        // an older transaction of this wallet is unmined: this one waits behind it, and is looked at again once it lands
        f.lastSentAt = now;
        return;
      }
    }
    let latest: number;
    try {
      latest = hexToNumber(await this.d.rpc<Hex>("eth_getTransactionCount", [this.address, "latest"]));
    } catch {
      return; // try again at the next turn
    }
    if (latest > f.nonce) {
      // mined with this nonce: one of our hashes (its receipt comes) or another sender's transaction
      f.nonceUsedSince ??= now;
      f.lastSentAt = now;
      return;
    }
    let fee = bumpFees(f.fee, await this.d.fees().catch(() => f.fee));
    for (let i = 0; i < 3; i++) {
      const serialized = await this.sign({ chainId: this.d.chainId, nonce: f.nonce, to: f.to, data: f.data, gas: f.gas, ...fee });
      const hash = keccak256(serialized);
      const previous = f.hashes[f.hashes.length - 1]!;
      try {
        await this.d.rpc<Hex>("eth_sendRawTransaction", [serialized]);
      } catch (err) {
        const text = this.d.describe(err);
        if (!this.d.rejectedByNode(err) || ALREADY_KNOWN.test(text)) {
          // it may be (or is) in the mempool: watch its hash too
          if (!f.hashes.includes(hash)) f.hashes.push(hash);
          f.fee = fee;
        } else if (NONCE_TOO_LOW.test(text)) {
          f.nonceUsedSince ??= now;
        } else if (UNDERPRICED.test(text)) {
          fee = bumpFees(fee, fee);
          continue;
        }
        // any other refusal (e.g. funds for the higher fee): keep waiting for what was sent
        f.replacements++;
        f.lastSentAt = Date.now();
        return;
      }
      f.hashes.push(hash);
      f.fee = fee;
      f.replacements++;
      f.lastSentAt = Date.now();
      this.d.emit({ type: "relayer_replaced", wallet: this.address, nonce: f.nonce, transaction: hash, replaces: previous, maxFeePerGas: maxFee(fee).toString() });
      return;
    }
    f.replacements++;
    f.lastSentAt = Date.now();
  }
}

/**
 * Several relayer wallets sharing the load: each send goes to the least
 * loaded wallet that can pay for it; `RelayerFundsError` only when none can.
 */
export class WalletPool {
  private turn = 0;
  constructor(
    readonly lanes: WalletLane[],
    private readonly emit: (e: RelayerEvent) => void,
  ) {}

  get addresses(): Address[] {
    return this.lanes.map((l) => l.address);
  }

  async send(to: Address, data: Hex, gas: bigint, fee: Fees): Promise<Sent & { lane: WalletLane }> {
    const start = this.turn++ % this.lanes.length;
    const order = this.lanes.map((_, i) => this.lanes[(start + i) % this.lanes.length]!).sort((a, b) => a.load - b.load); // stable: ties rotate
    let short: RelayerFundsError | undefined;
    for (const lane of order) {
      try {
        return { ...(await lane.send(to, data, gas, fee)), lane };
      } catch (err) {
        if (!(err instanceof RelayerFundsError)) throw err;
        if (!short || BigInt(err.balance) - BigInt(err.needed) > BigInt(short.balance) - BigInt(short.needed)) short = err;
      }
    }
    const inFlight = this.lanes.reduce((n, l) => n + l.load, 0);
    this.emit({ type: "relayer_low_funds", wallet: short!.wallet as Address, balance: short!.balance, needed: short!.needed, inFlight });
    for (const lane of this.lanes) lane.refreshBalance(); // a top-up is seen by the next settlement
    throw short!;
  }

  /** The lane that sent `hash` (a retry of a pending settlement), if this process did. */
  laneOf(hash: Hex): WalletLane | undefined {
    return this.lanes.find((l) => l.knows(hash));
  }
}
