/**
 * Issue 17: front-running a Permit2 `exact` payment. Anyone may submit the
 * payer's signed permit to the x402 exact proxy (the witness fixes the
 * recipient, so a copy still pays payTo). Permit2 logs nothing per nonce and
 * the proxy's `Settled()` event has no arguments, so the copy is found from
 * chain facts: Permit2's nonce bitmap says the nonce is used, the token's
 * Transfer(payer → payTo, amount) log is in the window, and the transaction
 * carries this permit (its nonce and signature). A payer spending the nonce
 * another way (Permit2's invalidateUnorderedNonces) moves no money: failed,
 * uncharged.
 */
import assert from "node:assert/strict";
import express from "express";
import type { AddressInfo } from "node:net";
import { concat, encodeFunctionData, pad, parseAbi, type Address, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { facilitatorSettler, MemoryStore, paywall, relayerSettler, type PaymentEvent, type PaywallMiddleware, type Settler } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { PERMIT2_ADDRESS, type Permit2Payment } from "../lib/src/protocol/permit2.js";
import { nonceSlot, PERMIT2_READ_ABI, permit2SettleCall } from "../lib/src/chain/permit2.js";
import { payerWallet, publicClient } from "./support/paid-app.js";
import { chainRpc } from "./support/chain-rpc.js";
import { approvePermit2, permit2Payment } from "./support/permit2-pay.js";
import { startFacilitator } from "./support/facilitator.js";

const PRICE = 10_000n;
const INVALIDATE = parseAbi(["function invalidateUnorderedNonces(uint256 wordPos, uint256 mask)"]);
const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as { success: boolean; transaction: string };
/**
 * A forwarder a front-running bot might use: it calls the address in the first calldata word with the rest of
 * the calldata (runtime: CALLDATACOPY(0, 32, size - 32); CALL(gas, word0, 0, 0, size - 32, 0, 0); revert on failure).
 */
const FORWARDER_INIT = "0x602480600b6000396000f3" + "36602090038060206000376000600082600060006000355af115601e57005b60006000fd";
/** High fees, so a competing transaction is mined before our relayer's in the same block. */
const FAST = { maxPriorityFeePerGas: 50_000_000_000n, maxFeePerGas: 100_000_000_000n, gas: 300_000n };

describe("issue 17: front-run Permit2 exact settlement (a copy of the permit is mined first; real chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let token: Address;
  const rpc = chainRpc(() => chain.rpcUrl);
  const tokenBalance = (owner: Address) => publicClient(chain).readContract({ address: token, abi: PERMIT2_READ_ABI, functionName: "balanceOf", args: [owner] });

  before(async () => {
    chain = await startDevChain();
    token = chain.permit2.token;
    for (const i of [1, 2, 3, 4, 5]) {
      await chain.mintToken(chain.accounts.payers[i]!.address, 1_000_000n);
      await approvePermit2(chain, chain.accounts.payers[i]!.privateKey, token);
    }
  });
  after(async () => {
    await rpc("evm_setAutomine", [true]).catch(() => {});
    await chain?.stop();
  });

  /** A signed Permit2 `exact` payment of payer `i` for GET /doc. */
  async function payment(i: number) {
    const payer = chain.accounts.payers[i]!;
    const account = privateKeyToAccount(payer.privateKey);
    const signed = await permit2Payment(chain, { scheme: "exact", owner: account.address, sign: (td) => account.signTypedData(td), token, amount: PRICE, payTo: chain.accounts.payTo.address });
    return { payer, ...signed, headers: { "payment-signature": signed.header } };
  }

  /** A third party (a bot with its own gas) submits the payer's signed permit to the exact proxy. */
  const copy = (p: Permit2Payment, signature: Hex): Promise<Hex> =>
    payerWallet(chain, chain.accounts.payers[0]!.privateKey).sendTransaction({ to: p.proxy, data: permit2SettleCall(p, signature), ...FAST });

  /** The same copy sent through a contract (the proxy call nested in the forwarder's calldata). */
  async function copyThrough(forwarder: Address, p: Permit2Payment, signature: Hex): Promise<Hex> {
    const data = concat([pad(p.proxy), permit2SettleCall(p, signature)]);
    return payerWallet(chain, chain.accounts.payers[0]!.privateKey).sendTransaction({ to: forwarder, data, ...FAST });
  }

  /** The payer spends the nonce itself (Permit2 invalidateUnorderedNonces): no money moves. */
  async function invalidate(privateKey: Hex, nonce: string): Promise<Hex> {
    const { wordPos, bit } = nonceSlot(nonce);
    return payerWallet(chain, privateKey).sendTransaction({ to: PERMIT2_ADDRESS, data: encodeFunctionData({ abi: INVALIDATE, functionName: "invalidateUnorderedNonces", args: [wordPos, bit] }), ...FAST });
  }

  /** `GET /doc` (0.01 of the plain token over Permit2) on a real relayer; `during` runs inside the handler (before settlement). */
  async function app(opts: { receiptTimeoutMs?: number; during?: () => Promise<void>; settler?: Settler } = {}) {
    const store = new MemoryStore();
    const events: PaymentEvent[] = [];
    let runs = 0;
    const price = { amount: PRICE.toString(), asset: { address: token, decimals: 6, eip712: { name: "Plain Test Dollar", version: "1" } } };
    const pw: PaywallMiddleware = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      store,
      onEvent: (e) => events.push(e),
      settler: opts.settler ?? relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs: opts.receiptTimeoutMs ?? 30_000 }),
      routes: { "GET /doc": { price, assetTransferMethod: "permit2", description: "doc" } },
    });
    const ex = express();
    ex.use(pw);
    ex.get("/doc", async (_req, res, next) => {
      try {
        runs++;
        await opts.during?.();
        res.json({ doc: "paid content", run: runs });
      } catch (err) {
        next(err);
      }
    });
    const server = ex.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return {
      store,
      events,
      pw,
      runs: () => runs,
      get: (headers: Record<string, string>) => fetch(`${url}/doc`, { headers }),
      close: async () => {
        pw.engine.stopReconciler();
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
        await store.close();
      },
    };
  }

  /** One paid request while the chain does not mine (automine stays off): 504 settlement_pending. */
  async function pending(a: Awaited<ReturnType<typeof app>>, headers: Record<string, string>): Promise<Response> {
    await rpc("evm_setAutomine", [false]);
    const first = await a.get(headers);
    assert.equal(first.status, 504, await first.clone().text());
    return first;
  }

  it("reconciler: our Permit2 transfer is pending, a copy is mined before it and ours reverts → one ledger entry with the copy's hash; the retry gets the held answer; charged once", async () => {
    const p = await payment(1);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const [payerBefore, payToBefore] = [await tokenBalance(p.payer.address), await tokenBalance(chain.accounts.payTo.address)];
      const first = await pending(a, p.headers);
      const firstBody = await first.text();
      const ours = decode(first.headers.get("payment-response")).transaction;
      const copied = await copy(p.p, p.signature);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      const receipt = (await rpc("eth_getTransactionReceipt", [ours])) as { status: Hex } | null;
      assert.equal(receipt?.status, "0x0", "our transaction reverted: the copy came first");
      await a.pw.engine.reconcile();
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      await a.pw.engine.reconcile();
      assert.equal((await a.store.listLedger()).length, 1, "written once");
      assert.equal((await a.store.listOutbox(10)).length, 0);
      assert.equal(await tokenBalance(p.payer.address), payerBefore - PRICE, "charged once");
      assert.equal(await tokenBalance(chain.accounts.payTo.address), payToBefore + PRICE, "paid once");
      const retry = await a.get(p.headers);
      const text = await retry.text();
      assert.equal(retry.status, 200, text);
      assert.deepEqual(JSON.parse(text), { doc: "paid content", run: 1 }, `held answer replayed (the 504 said ${firstBody})`);
      assert.equal(decode(retry.headers.get("payment-response")).transaction, copied);
      assert.equal(a.runs(), 1, "the handler ran once");
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("reconciler, ours dropped: our pending Permit2 transfer is dropped and a copy is mined → the ledger entry has the copy's hash", async () => {
    const p = await payment(2);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const first = await pending(a, p.headers);
      await rpc("anvil_dropTransaction", [decode(first.headers.get("payment-response")).transaction]);
      const copied = await copy(p.p, p.signature);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      await a.pw.engine.reconcile();
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal((await a.store.listOutbox(10)).length, 0);
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("live request: a copy is mined while the handler runs → 200 with the paid content, the receipt names the copy, one ledger entry, nothing broadcast by us", async () => {
    const p = await payment(3);
    let copied: Hex | undefined;
    const a = await app({ during: async () => void (copied = await copy(p.p, p.signature)) });
    try {
      const relayerNonce = await rpc("eth_getTransactionCount", [chain.accounts.relayer.address, "latest"]);
      const payerBefore = await tokenBalance(p.payer.address);
      const res = await a.get(p.headers);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.equal(JSON.parse(text).doc, "paid content");
      assert.ok(copied);
      assert.equal(decode(res.headers.get("payment-response")).transaction, copied);
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal(await tokenBalance(p.payer.address), payerBefore - PRICE);
      assert.equal(await rpc("eth_getTransactionCount", [chain.accounts.relayer.address, "latest"]), relayerNonce, "the relayer sent nothing");
      const replay = await a.get(p.headers);
      assert.equal(replay.status, 402, "the used permit is not served again");
    } finally {
      await a.close();
    }
  });

  it("reconciler: the copy is sent through another contract (a forwarder) → found from its calldata, one ledger entry with the copy's hash", async () => {
    const deploy = await payerWallet(chain, chain.accounts.payers[0]!.privateKey).sendTransaction({ data: FORWARDER_INIT as Hex });
    const forwarder = (await publicClient(chain).waitForTransactionReceipt({ hash: deploy })).contractAddress!;
    const p = await payment(3);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const payerBefore = await tokenBalance(p.payer.address);
      await pending(a, p.headers);
      const copied = await copyThrough(forwarder, p.p, p.signature);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      assert.equal(((await rpc("eth_getTransactionReceipt", [copied])) as { status: Hex }).status, "0x1", "the forwarded copy paid");
      await a.pw.engine.reconcile();
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal(await tokenBalance(p.payer.address), payerBefore - PRICE, "charged once");
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("the payer invalidates the nonce (invalidateUnorderedNonces) before our pending transfer is mined → failed, no ledger entry, uncharged, lock released", async () => {
    const p = await payment(4);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const [payerBefore, payToBefore] = [await tokenBalance(p.payer.address), await tokenBalance(chain.accounts.payTo.address)];
      await pending(a, p.headers);
      await invalidate(p.payer.privateKey, p.p.nonce);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      await a.pw.engine.reconcile();
      assert.deepEqual(await a.store.listLedger(), []);
      assert.equal(await tokenBalance(p.payer.address), payerBefore, "the payer was not charged");
      assert.equal(await tokenBalance(chain.accounts.payTo.address), payToBefore);
      assert.ok(a.events.some((e) => e.type === "failed" && e.stage === "settle"), JSON.stringify(a.events.map((e) => e.type)));
      assert.equal((await a.store.listOutbox(10)).length, 0);
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("ours dropped, then the payer invalidates the nonce → failed at the next reconciler pass (not left pending until the deadline), uncharged", async () => {
    const p = await payment(5);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const payerBefore = await tokenBalance(p.payer.address);
      const first = await pending(a, p.headers);
      await rpc("anvil_dropTransaction", [decode(first.headers.get("payment-response")).transaction]);
      await invalidate(p.payer.privateKey, p.p.nonce);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      await a.pw.engine.reconcile();
      assert.deepEqual(await a.store.listLedger(), []);
      assert.equal((await a.store.listOutbox(10)).length, 0, "settled as failed, not kept pending");
      assert.ok(a.events.some((e) => e.type === "failed" && e.stage === "settle"), JSON.stringify(a.events.map((e) => e.type)));
      assert.equal(await tokenBalance(p.payer.address), payerBefore, "uncharged");
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("a transfer of the same amount to payTo by another permit of the same payer in the same block is not taken for this one (its nonce invalidated) → failed", async () => {
    // the payer's other payment (a different nonce) moves the same amount to payTo; this permit's nonce is spent by invalidation
    const p = await payment(5);
    const other = await payment(5);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      await pending(a, p.headers);
      await copy(other.p, other.signature);
      await invalidate(p.payer.privateKey, p.p.nonce);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      await a.pw.engine.reconcile();
      assert.deepEqual(await a.store.listLedger(), [], "no entry: the transfer found carries another permit");
      assert.ok(a.events.some((e) => e.type === "failed" && e.stage === "settle"), JSON.stringify(a.events.map((e) => e.type)));
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("facilitator path (the official @x402/evm facilitator): a copy is mined just before the facilitator settles → 200 with the copy's transaction, one ledger entry, charged once", async () => {
    const fac = await startFacilitator({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.payers[8]!.privateKey });
    const p = await payment(2);
    let copied: Hex | undefined;
    fac.beforeSettle = async () => {
      copied = await copy(p.p, p.signature);
      await publicClient(chain).waitForTransactionReceipt({ hash: copied });
    };
    const a = await app({ settler: facilitatorSettler({ url: fac.url, rpcUrl: chain.rpcUrl }) });
    try {
      const payerBefore = await tokenBalance(p.payer.address);
      const res = await a.get(p.headers);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.ok(copied);
      assert.equal(fac.settled.length, 0, "the facilitator's own settlement failed");
      assert.equal(decode(res.headers.get("payment-response")).transaction, copied);
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal(await tokenBalance(p.payer.address), payerBefore - PRICE, "charged once");
    } finally {
      await a.close();
      await fac.close();
    }
  });

  it("facilitator path: the payer invalidated the nonce just before the facilitator settles → refused, no ledger entry, uncharged", async () => {
    const fac = await startFacilitator({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.payers[8]!.privateKey });
    const p = await payment(4);
    fac.beforeSettle = async () => void (await publicClient(chain).waitForTransactionReceipt({ hash: await invalidate(p.payer.privateKey, p.p.nonce) }));
    const a = await app({ settler: facilitatorSettler({ url: fac.url, rpcUrl: chain.rpcUrl }) });
    try {
      const payerBefore = await tokenBalance(p.payer.address);
      const res = await a.get(p.headers);
      assert.notEqual(res.status, 200, await res.clone().text());
      assert.ok(res.status < 500 || res.status === 502, `a clear refusal, got ${res.status}`);
      assert.deepEqual(await a.store.listLedger(), []);
      assert.equal(await tokenBalance(p.payer.address), payerBefore, "uncharged");
    } finally {
      await a.close();
      await fac.close();
    }
  });
});
