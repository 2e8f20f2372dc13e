/**
 * Issue 14 (B10/B11), front-running: anyone may submit a payer's signed
 * authorization, e.g. a bot copying our relayer's pending transaction. The
 * copy moves the money from → payTo and our transaction reverts. The payment
 * is then settled by the copy (its AuthorizationUsed + Transfer logs): the
 * paid answer is delivered and the ledger holds the copy's hash, once. A
 * payer's cancelAuthorization moves no money: that stays a failure.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import express from "express";
import type { AddressInfo } from "node:net";
import { encodeFunctionData, hexToNumber, parseAbi, slice, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { encodeHeader, MemoryStore, paywall, relayerSettler, type PaymentEvent, type PaywallMiddleware } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { payerWallet } from "./support/paid-app.js";
import { chainRpc } from "./support/chain-rpc.js";
import { signAuthorization } from "./support/sign.js";

const TOKEN = parseAbi([
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)",
  "function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)",
]);
const PRICE = 10_000n;
const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as { success: boolean; transaction: string };
const vrs = (sig: Hex) => [hexToNumber(slice(sig, 64, 65)), slice(sig, 0, 32), slice(sig, 32, 64)] as const;
/** High fees, so a competing transaction is mined before our relayer's in the same block. */
const FAST = { maxPriorityFeePerGas: 50_000_000_000n, maxFeePerGas: 100_000_000_000n, gas: 200_000n };

describe("issue 14: front-run settlement (a copy of the authorization is mined first; real chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  const rpc = chainRpc(() => chain.rpcUrl);

  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await rpc("evm_setAutomine", [true]).catch(() => {});
    await chain?.stop();
  });

  /** A signed payment of payer `i`: its v2 header and the signed parts. */
  async function payment(i: number) {
    const payer = chain.accounts.payers[i]!;
    const signed = await signAuthorization({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE, nonce: `0x${randomBytes(32).toString("hex")}` as Hex });
    const header = encodeHeader({
      x402Version: 2,
      payload: signed,
      accepted: { scheme: "exact", network: `eip155:${chain.chainId}`, amount: PRICE.toString(), asset: chain.usdc, payTo: chain.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } },
    });
    const lockKey = `${chain.chainId}:${chain.usdc}:${payer.address}:${signed.authorization.nonce}`.toLowerCase();
    return { payer, signed, headers: { "payment-signature": header }, lockKey };
  }

  /** A third party (a bot with its own gas) submits the payer's signed authorization. */
  async function copy(signed: Awaited<ReturnType<typeof signAuthorization>>): Promise<Hex> {
    const a = signed.authorization;
    const data = encodeFunctionData({ abi: TOKEN, functionName: "transferWithAuthorization", args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, ...vrs(signed.signature)] });
    return payerWallet(chain, chain.accounts.payers[0]!.privateKey).sendTransaction({ to: chain.usdc, data, ...FAST });
  }

  /** The payer cancels the authorization (EIP-3009 cancelAuthorization): no money moves. */
  async function cancel(privateKey: Hex, nonce: Hex): Promise<Hex> {
    const account = privateKeyToAccount(privateKey);
    const sig = await account.signTypedData({
      domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc },
      types: { CancelAuthorization: [{ name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
      primaryType: "CancelAuthorization",
      message: { authorizer: account.address, nonce },
    });
    const data = encodeFunctionData({ abi: TOKEN, functionName: "cancelAuthorization", args: [account.address, nonce, ...vrs(sig)] });
    return payerWallet(chain, privateKey).sendTransaction({ to: chain.usdc, data, ...FAST });
  }

  /** `GET /doc` ($0.01) on a real relayer; `during` runs inside the handler (before settlement). */
  async function app(opts: { receiptTimeoutMs?: number; during?: (req: express.Request) => Promise<void> } = {}) {
    const store = new MemoryStore();
    const events: PaymentEvent[] = [];
    let runs = 0;
    const pw: PaywallMiddleware = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      store,
      onEvent: (e) => events.push(e),
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs: opts.receiptTimeoutMs ?? 30_000 }),
      routes: { "GET /doc": { price: "$0.01", description: "doc" } },
    });
    const ex = express();
    ex.use(pw);
    ex.get("/doc", async (req, res, next) => {
      try {
        runs++;
        await opts.during?.(req);
        res.json({ doc: "paid content" });
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

  it("front-run (live request): a third party submits the same authorization first → 200 with the paid content, one ledger entry with the third party's transaction", async () => {
    const p = await payment(1);
    let copied: Hex | undefined;
    const a = await app({ during: async () => void (copied = await copy(p.signed)) });
    try {
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const res = await a.get(p.headers);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.equal(JSON.parse(text).doc, "paid content");
      assert.ok(copied);
      assert.equal(decode(res.headers.get("payment-response")).transaction, copied, "the receipt names the transaction that moved the money");
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE, "moved once");
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      const replay = await a.get(p.headers);
      assert.equal(replay.status, 402, "the used authorization is not served again");
      assert.equal(a.runs(), 1);
    } finally {
      await a.close();
    }
  });

  it("front-run (reconciler): our transfer is pending, a copy is mined before it and ours reverts → the reconciler writes the ledger entry once with the copy's hash; the retry gets the held answer", async () => {
    const p = await payment(2);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const first = await pending(a, p.headers);
      const ours = decode(first.headers.get("payment-response")).transaction;
      const copied = await copy(p.signed);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      const receipt = (await rpc("eth_getTransactionReceipt", [ours])) as { status: Hex } | null;
      assert.equal(receipt?.status, "0x0", "our transaction reverted: the copy came first");
      await a.pw.engine.reconcile();
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal((await a.store.getNonce(p.lockKey))?.state, "settled");
      await a.pw.engine.reconcile();
      assert.equal((await a.store.listLedger()).length, 1, "written once");
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE, "moved once");
      const retry = await a.get(p.headers);
      const text = await retry.text();
      assert.equal(retry.status, 200, text);
      assert.equal(JSON.parse(text).doc, "paid content");
      assert.equal(a.runs(), 1, "the handler ran once");
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });

  it("front-run (live request, found by simulation): the copy is mined while a slow handler runs → 200, one ledger entry with the copy's transaction, nothing broadcast by us", async () => {
    const p = await payment(4);
    let copied: Hex | undefined;
    // a pre-check older than 2 s no longer vouches: the relayer simulates, and the simulation finds the authorization used
    const a = await app({ during: async () => void ((copied = await copy(p.signed)), await new Promise((r) => setTimeout(r, 2100))) });
    try {
      const relayerNonce = (await rpc("eth_getTransactionCount", [chain.accounts.relayer.address, "latest"])) as Hex;
      const res = await a.get(p.headers);
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.equal(decode(res.headers.get("payment-response")).transaction, copied);
      assert.deepEqual((await a.store.listLedger()).map((e) => e.transaction), [copied]);
      assert.equal(await rpc("eth_getTransactionCount", [chain.accounts.relayer.address, "latest"]), relayerNonce, "the relayer sent nothing");
    } finally {
      await a.close();
    }
  });

  it("front-run (reconciler, ours dropped): our pending transfer is dropped and a copy is mined → the reconciler writes the ledger entry with the copy's hash", async () => {
    const p = await payment(5);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const first = await pending(a, p.headers);
      await rpc("anvil_dropTransaction", [decode(first.headers.get("payment-response")).transaction]);
      const copied = await copy(p.signed);
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

  it("front-run by cancel: the payer cancels the authorization before our pending transfer is mined → failed, no ledger entry, lock released", async () => {
    const p = await payment(3);
    const a = await app({ receiptTimeoutMs: 300 });
    try {
      const payerBefore = await chain.balanceOf(p.payer.address);
      await pending(a, p.headers);
      await cancel(p.payer.privateKey, p.signed.authorization.nonce);
      await rpc("evm_mine");
      await rpc("evm_setAutomine", [true]);
      await a.pw.engine.reconcile();
      assert.deepEqual(await a.store.listLedger(), []);
      assert.equal(await chain.balanceOf(p.payer.address), payerBefore, "the payer was not charged");
      assert.ok(a.events.some((e) => e.type === "failed" && e.stage === "settle"), JSON.stringify(a.events.map((e) => e.type)));
      assert.equal((await a.store.listOutbox(10)).length, 0);
      const lock = await a.store.getNonce(p.lockKey);
      assert.ok(lock === undefined || lock === null, `lock released, got ${JSON.stringify(lock)}`);
    } finally {
      await rpc("evm_setAutomine", [true]);
      await a.close();
    }
  });
});
