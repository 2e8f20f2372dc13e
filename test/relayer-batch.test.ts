/**
 * Batched settlement (issue 20, part 3) on a real anvil: many plain EIP-3009
 * payments in one transaction of one relayer wallet through the
 * X402BatchSettlement contract; each payment gets its own outcome.
 */
import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { concat, createPublicClient, decodeFunctionData, encodeFunctionData, http, size, slice, toHex, type Abi, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { MemoryStore, paywall } from "server402";
import { startDevChain, type DevAccount, type DevChain } from "server402/devchain";
import { EIP3009_ABI } from "../lib/src/chain/abi.js";
import { Batcher, encodeBatch, MAX_BATCH_SIZE } from "../lib/src/chain/batcher.js";
import { relayerSettler, type RelayerEvent, type RelayerSettlerOptions } from "../lib/src/chain/relayer.js";
import type { SettleRequest, SettleResult } from "../lib/src/chain/settler.js";
import batchArtifact from "../lib/src/chain/X402BatchSettlement.artifact.json" with { type: "json" };
import { ConfigError, RelayerFundsError, SettlementError } from "../lib/src/errors.js";
import { compileBatchContract } from "../scripts/compile-batch.js";
import { signAuthorization, v2Header } from "./support/sign.js";

const CHAIN_ID = 84532;
const now = (): bigint => BigInt(Math.floor(Date.now() / 1000));

for (const mode of ["block-time 1", "automine"] as const) {
  describe(`batched settlement (anvil ${mode})`, function () {
    this.timeout(90_000);
    let dev: DevChain;
    let client: ReturnType<typeof createPublicClient>;
    const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;

    before(async function () {
      dev = await startDevChain(mode === "automine" ? {} : { blockTime: 1 });
      client = createPublicClient({ transport: http(dev.rpcUrl, { retryCount: 0 }) });
    });
    after(async function () {
      await dev?.stop();
    });

    async function authorize(payer: DevAccount, value = 1000n, to: Address = dev.accounts.payTo.address): Promise<SettleRequest> {
      const { signature, authorization: a } = await signAuthorization({ privateKey: payer.privateKey, asset: dev.usdc, payTo: to, value, validBefore: now() + 3600n });
      const authorization = { from: a.from, to: a.to, value, validAfter: BigInt(a.validAfter), validBefore: BigInt(a.validBefore), nonce: a.nonce };
      return { authorization, signature, asset: dev.usdc, chainId: CHAIN_ID, network: `eip155:${CHAIN_ID}`, v1Network: "base-sepolia", x402Version: 2, payload: {}, requirements: {} };
    }
    const authorizeMany = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => authorize(dev.accounts.payers[i % dev.accounts.payers.length]!)));
    /** A fresh relayer wallet holding `wei` (its own nonce sequence from 0). */
    async function wallet(wei = 10n ** 20n): Promise<{ key: Hex; address: Address }> {
      const key = generatePrivateKey();
      const address = privateKeyToAccount(key).address;
      await rpc("anvil_setBalance", [address, toHex(wei)]);
      return { key, address };
    }
    /** A fresh payer holding `amount` test USDC. */
    async function payer(amount: bigint): Promise<DevAccount> {
      const privateKey = generatePrivateKey();
      const account = { address: privateKeyToAccount(privateKey).address, privateKey };
      await dev.mint(account.address, amount);
      return account;
    }
    function batchSettler(key: Hex, batch: Partial<NonNullable<RelayerSettlerOptions["batch"]>>, extra: Partial<RelayerSettlerOptions> = {}) {
      const events: RelayerEvent[] = [];
      const settler = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: key, onEvent: (e) => events.push(e), batch: { contract: dev.batchSettlement, ...batch }, ...extra });
      return { settler, events };
    }
    const nonceOf = async (a: Address) => Number(BigInt(await rpc<Hex>("eth_getTransactionCount", [a, "latest"])));
    const sum = (reqs: SettleRequest[]) => reqs.reduce((s, r) => s + r.authorization.value, 0n);
    const used = async (req: SettleRequest) =>
      BigInt(await rpc<Hex>("eth_call", [{ to: dev.usdc, data: encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [req.authorization.from, req.authorization.nonce] }) }, "latest"])) !== 0n;
    /** Submit `req`'s signed authorization from another account (a front-runner copying it), mined before returning. */
    async function frontRun(req: SettleRequest, via: "token" | "batch contract" = "token"): Promise<Hex> {
      const thief = await wallet();
      const a = req.authorization;
      const v = Number(BigInt(`0x${req.signature.slice(130, 132)}`));
      const r = `0x${req.signature.slice(2, 66)}` as Hex;
      const s = `0x${req.signature.slice(66, 130)}` as Hex;
      const data =
        via === "token"
          ? encodeFunctionData({ abi: EIP3009_ABI, functionName: "transferWithAuthorization", args: [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v < 27 ? v + 27 : v, r, s] })
          : encodeBatch(dev.usdc, [req]);
      const tx = await privateKeyToAccount(thief.key).signTransaction({
        chainId: CHAIN_ID,
        nonce: 0,
        to: via === "token" ? dev.usdc : dev.batchSettlement,
        data,
        gas: 300_000n,
        maxFeePerGas: 10n ** 10n,
        maxPriorityFeePerGas: 10n ** 9n,
      });
      const hash = await rpc<Hex>("eth_sendRawTransaction", [tx]);
      for (;;) {
        const receipt = await rpc<{ status: Hex } | null>("eth_getTransactionReceipt", [hash]);
        if (receipt) {
          assert.equal(receipt.status, "0x1");
          return hash;
        }
        await new Promise((res) => setTimeout(res, 50));
      }
    }

    it("N parallel payments go out in one transaction: N settled, one nonce, each its own result", async function () {
      const { key, address } = await wallet();
      const { settler, events } = batchSettler(key, { maxSize: 12, maxWaitMs: 10_000 });
      const reqs = await authorizeMany(12);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const results = await Promise.all(reqs.map((r) => settler.settle(r)));
      assert.equal(new Set(results.map((r) => r.transaction)).size, 1, "one transaction");
      assert.deepEqual(
        results.map((r) => r.payer),
        reqs.map((r) => r.authorization.from),
      );
      assert.equal(await nonceOf(address), 1, "one nonce");
      assert.equal(events.filter((e) => e.type === "relayer_sent").length, 1);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));
      for (const r of reqs) assert.ok(await used(r));
      // settling one again is a replay of our own batch: refused, nothing moves
      await assert.rejects(settler.settle(reqs[0]!), (e: unknown) => e instanceof SettlementError && e.reason === "invalid_exact_evm_nonce_already_used");
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));
    });

    it("a payer drained between verify and send: the others settle, that one is refused with its own reason and not charged", async function () {
      const { key } = await wallet();
      const { settler } = batchSettler(key, { maxSize: 4, maxWaitMs: 10_000 });
      const poor = await payer(1000n);
      // both of the poor payer's authorizations passed the pre-check alone; together they exceed the balance
      const [a, b] = [await authorize(poor, 1000n), await authorize(poor, 1000n)];
      const others = await authorizeMany(2);
      const prechecked = (r: SettleRequest) => ({ ...r, prechecked: true, precheckedAt: Date.now() });
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const outcomes = await Promise.allSettled([a!, b!, ...others].map((r) => settler.settle(prechecked(r))));
      const ok = outcomes.filter((o): o is PromiseFulfilledResult<SettleResult> => o.status === "fulfilled");
      const bad = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected");
      assert.equal(ok.length, 3, JSON.stringify(outcomes.map((o) => o.status)));
      assert.equal(bad.length, 1);
      const err = bad[0]!.reason as SettlementError;
      assert.ok(err instanceof SettlementError && !err.pending, String(err));
      assert.equal(err.reason, "invalid_exact_evm_insufficient_balance");
      assert.equal(new Set(ok.map((o) => o.value.transaction)).size, 1);
      assert.equal(err.transaction, ok[0]!.value.transaction, "the failure names the batch");
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + 1000n + sum(others));
      assert.equal(await dev.balanceOf(poor.address), 0n);
      assert.equal((await used(a!)) !== (await used(b!)), true, "exactly one of the two was used");
    });

    it("a front-runner's copy mined first: that payment is settled with the front-runner's transaction, the rest of the batch with ours", async function () {
      const { key } = await wallet();
      const { settler } = batchSettler(key, { maxSize: 3, maxWaitMs: 10_000 });
      const reqs = await authorizeMany(3);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const thiefHash = await frontRun(reqs[1]!);
      // pre-checked before the copy landed: no simulation, the batch meets the used nonce on chain
      const results = await Promise.all(reqs.map((r) => settler.settle({ ...r, prechecked: true, precheckedAt: Date.now() })));
      assert.equal(results[1]!.transaction, thiefHash);
      assert.equal(results[0]!.transaction, results[2]!.transaction);
      assert.notEqual(results[0]!.transaction, thiefHash);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs), "each paid exactly once");
    });

    it("someone else calls the batch contract with a copy of a payment: recognised as settled by that transaction; garbage moves nothing", async function () {
      const { key } = await wallet();
      const { settler } = batchSettler(key, { maxSize: 2, maxWaitMs: 10_000 });
      const reqs = await authorizeMany(2);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const copyHash = await frontRun(reqs[0]!, "batch contract");
      const results = await Promise.all(reqs.map((r) => settler.settle({ ...r, prechecked: true, precheckedAt: Date.now() })));
      assert.equal(results[0]!.transaction, copyHash);
      assert.notEqual(results[1]!.transaction, copyHash);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));

      // an authorization redirected to the caller (signature does not match) and the same one twice: one transfer, two failures reported
      const victim = await authorize(dev.accounts.payers[4]!, 5000n);
      const thief = await wallet();
      const item = (to: Address): SettleRequest => ({ ...victim, authorization: { ...victim.authorization, to } });
      const payerBefore = await dev.balanceOf(victim.authorization.from);
      const thiefBefore = await dev.balanceOf(thief.address);
      const tx = await privateKeyToAccount(thief.key).signTransaction({
        chainId: CHAIN_ID,
        nonce: 0,
        to: dev.batchSettlement,
        data: encodeBatch(dev.usdc, [item(thief.address), item(victim.authorization.to), item(victim.authorization.to)]),
        gas: 1_000_000n,
        maxFeePerGas: 10n ** 10n,
        maxPriorityFeePerGas: 10n ** 9n,
      });
      const hash = await rpc<Hex>("eth_sendRawTransaction", [tx]);
      let receipt: { status: Hex; logs: { address: Address; topics: Hex[] }[] } | null = null;
      while (!(receipt = await rpc("eth_getTransactionReceipt", [hash]))) await new Promise((r) => setTimeout(r, 50));
      assert.equal(receipt.status, "0x1");
      const failed = receipt.logs.filter((l) => l.address.toLowerCase() === dev.batchSettlement.toLowerCase()).map((l) => Number(BigInt(l.topics[1]!)));
      assert.deepEqual(failed, [0, 2], "the redirected one and the repeat failed");
      assert.equal(await dev.balanceOf(thief.address), thiefBefore, "the caller got nothing");
      assert.equal(await dev.balanceOf(victim.authorization.from), payerBefore - 5000n, "the payment moved once, to its payee");
      assert.equal(await dev.balanceOf(dev.batchSettlement), 0n, "the contract holds nothing");
    });

    it("parallel copies of the same authorization in one window: one charge", async function () {
      const { key } = await wallet();
      const { settler } = batchSettler(key, { maxSize: 5, maxWaitMs: 500 });
      const req = await authorize(dev.accounts.payers[5]!);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => settler.settle({ ...req })));
      const ok = outcomes.filter((o) => o.status === "fulfilled");
      assert.equal(ok.length, 1, JSON.stringify(outcomes.map((o) => (o.status === "rejected" ? String(o.reason) : "ok"))));
      for (const o of outcomes) if (o.status === "rejected") assert.equal((o.reason as SettlementError).reason, "invalid_exact_evm_nonce_already_used");
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + req.authorization.value);

      // the batcher itself refuses the same authorization twice in one batch (the contract would take it once)
      const sends: Hex[] = [];
      const batcher = new Batcher(
        { contract: dev.batchSettlement, maxSize: 10, maxWaitMs: 50 },
        { rpc, chainId: CHAIN_ID, slots: 1, revertReason: () => ({ reason: "x", text: "x" }), broadcast: async (_to, data) => (sends.push(data), Promise.reject(new Error("not sent in this test"))) },
      );
      const again = await authorize(dev.accounts.payers[5]!);
      const [first, second] = await Promise.allSettled([batcher.add(again, "k"), batcher.add(again, "k")]);
      assert.equal(first!.status, "rejected");
      assert.match(String((first as PromiseRejectedResult).reason), /not sent in this test/);
      assert.equal((second as PromiseRejectedResult).reason.reason, "invalid_exact_evm_nonce_already_used");
      assert.equal(sends.length, 1);
    });

    it("a wallet pool sends batches from its wallets side by side; every payment settled once, each wallet's nonces consecutive", async function () {
      const [w1, w2] = [await wallet(), await wallet()];
      const settler = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKeys: [w1.key, w2.key], batch: { contract: dev.batchSettlement, maxSize: 5, maxWaitMs: 10_000 } });
      const reqs = await authorizeMany(20);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const results = await Promise.all(reqs.map((r) => settler.settle(r)));
      const txs = await Promise.all([...new Set(results.map((r) => r.transaction))].map((hash) => client.getTransaction({ hash })));
      assert.equal(txs.length, 4, "4 batches of 5");
      const bySender = (a: Address) => txs.filter((t) => t.from.toLowerCase() === a.toLowerCase()).map((t) => t.nonce).sort((x, y) => x - y);
      const [n1, n2] = [bySender(w1.address), bySender(w2.address)];
      assert.ok(n1.length > 0 && n2.length > 0, `both wallets sent: ${n1} / ${n2}`);
      assert.deepEqual(n1, n1.map((_, i) => i));
      assert.deepEqual(n2, n2.map((_, i) => i));
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));
    });

    it("a relayer wallet without gas funds: every payment of the batch gets 503 relayer_low_funds, nothing moves", async function () {
      const { key } = await wallet(0n);
      const { settler, events } = batchSettler(key, { maxSize: 3, maxWaitMs: 10_000 });
      const reqs = await authorizeMany(3);
      const outcomes = await Promise.allSettled(reqs.map((r) => settler.settle(r)));
      for (const o of outcomes) assert.ok(o.status === "rejected" && o.reason instanceof RelayerFundsError, String(o.status === "rejected" ? o.reason : "settled"));
      assert.ok(events.some((e) => e.type === "relayer_low_funds"));
      for (const r of reqs) assert.equal(await used(r), false);
    });

    it("a batch contract address without the contract: refused before anything is sent, nothing charged", async function () {
      const { key, address } = await wallet();
      const { settler } = batchSettler(key, { contract: "0x00000000000000000000000000000000000b0b00", maxWaitMs: 0 });
      const req = await authorize(dev.accounts.payers[6]!);
      await assert.rejects(settler.settle(req), (e: unknown) => e instanceof SettlementError && e.reason === "unexpected_settle_error" && /has no code/.test(e.detail ?? ""));
      assert.equal(await nonceOf(address), 0);
      assert.equal(await used(req), false);
    });

    if (mode === "automine") {
      it("gas: a 100-payment batch costs ≤ 0.63× per payment of a lone transferWithAuthorization measured alongside (was 0.646×; 0.6× is below this token's floor, bench/README scenario 9)", async function () {
        // fresh payers (each one's balance slot cold, as in a real batch) and a payee that already holds some
        const { key } = await wallet();
        let nonce = 0;
        const gasOf = async (to: Address, data: Hex): Promise<bigint> => {
          const tx = await privateKeyToAccount(key).signTransaction({ chainId: CHAIN_ID, nonce: nonce++, to, data, gas: 16_000_000n, maxFeePerGas: 10n ** 10n, maxPriorityFeePerGas: 10n ** 9n });
          const hash = await rpc<Hex>("eth_sendRawTransaction", [tx]);
          let receipt: { status: Hex; gasUsed: Hex } | null = null;
          while (!(receipt = await rpc("eth_getTransactionReceipt", [hash]))) await new Promise((r) => setTimeout(r, 20));
          assert.equal(receipt.status, "0x1");
          return BigInt(receipt.gasUsed);
        };
        const payTo = (await payer(1n)).address;
        const fresh = async () => authorize(await payer(1_000_000n), 10_000n, payTo); // the payer keeps a balance (no refund for clearing it)
        const lone = await fresh();
        const a = lone.authorization;
        const sig = lone.signature;
        const v = Number(BigInt(`0x${sig.slice(130, 132)}`));
        const loneGas = await gasOf(
          dev.usdc,
          encodeFunctionData({ abi: EIP3009_ABI, functionName: "transferWithAuthorization", args: [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v < 27 ? v + 27 : v, `0x${sig.slice(2, 66)}`, `0x${sig.slice(66, 130)}`] }),
        );
        const reqs: SettleRequest[] = [];
        for (let i = 0; i < 100; i++) reqs.push(await fresh());
        const batchGas = await gasOf(dev.batchSettlement, encodeBatch(dev.usdc, reqs));
        for (const r of reqs) assert.ok(await used(r), "every payment of the batch settled");
        const ratio = Number(batchGas) / 100 / Number(loneGas);
        console.log(`      lone ${loneGas} gas; batch of 100 ${batchGas} = ${Number(batchGas) / 100} per payment = ${ratio.toFixed(4)}×`);
        assert.ok(ratio <= 0.63, `${ratio.toFixed(4)}× per payment`);
      });

      it("malformed packed payments (a truncated last record, or a first record without payee and value) revert the whole call: nothing moves", async function () {
        const reqs = await authorizeMany(2);
        const { args } = decodeFunctionData({ abi: batchArtifact.abi as Abi, data: encodeBatch(dev.usdc, reqs) });
        const payments = args?.[1] as Hex;
        const call = (data: Hex) => rpc("eth_call", [{ to: dev.batchSettlement, data: encodeFunctionData({ abi: batchArtifact.abi as Abi, functionName: "settle", args: [dev.usdc, data] }) }, "latest"]);
        await call(payments); // well-formed: runs
        await assert.rejects(call(slice(payments, 0, size(payments) - 1)), /revert/i);
        await assert.rejects(call(concat(["0x00", slice(payments, 1)])), /revert/i);
        for (const r of reqs) assert.equal(await used(r), false);
      });
    }

    if (mode === "block-time 1") {
      it("a batch transaction dropped from the mempool is sent again (same nonce, higher fee): each payment settled once", async function () {
        const { key, address } = await wallet();
        const { settler, events } = batchSettler(
          key,
          { maxSize: 4, maxWaitMs: 10_000 },
          {
            replaceAfterMs: 1500,
            onEvent: (e) => {
              events.push(e);
              if (e.type === "relayer_sent" && e.nonce === 0) void rpc("anvil_dropTransaction", [e.transaction]);
            },
          },
        );
        const reqs = await authorizeMany(4);
        const before = await dev.balanceOf(dev.accounts.payTo.address);
        const results = await Promise.all(reqs.map((r) => settler.settle(r)));
        const replaced = events.filter((e) => e.type === "relayer_replaced");
        assert.equal(replaced.length, 1, JSON.stringify(events));
        assert.ok(results.every((r) => replaced[0]!.type === "relayer_replaced" && r.transaction === replaced[0]!.transaction));
        assert.equal(await nonceOf(address), 1);
        assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs), "each paid exactly once");
      });

      it("a batch left pending: confirm() reads each payment's own outcome from the batch receipt; a failed twin of a settled payment (same from/to/value) is not taken for paid", async function () {
        const { key } = await wallet();
        const { settler } = batchSettler(key, { maxSize: 3, maxWaitMs: 10_000 }, { receiptTimeoutMs: 200 });
        const poor = await payer(1000n);
        const twins = [await authorize(poor, 1000n), await authorize(poor, 1000n)]; // only one can be paid
        const other = (await authorizeMany(1))[0]!;
        const reqs = [...twins, other].map((r) => ({ ...r, prechecked: true, precheckedAt: Date.now() }));
        const before = await dev.balanceOf(dev.accounts.payTo.address);
        const pending = await Promise.allSettled(reqs.map((r) => settler.settle(r)));
        const hashes = pending.map((o) => (o.status === "rejected" && o.reason instanceof SettlementError && o.reason.pending ? o.reason.transaction : undefined));
        assert.ok(hashes.every((h) => h !== undefined && h === hashes[0]), JSON.stringify(pending.map((o) => o.status)));
        let outcomes: PromiseSettledResult<SettleResult | undefined>[];
        for (;;) {
          outcomes = await Promise.allSettled(reqs.map((r) => settler.confirm!(r, hashes[0]!)));
          if (outcomes.every((o) => o.status === "rejected" || o.value !== undefined)) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        const paid = outcomes.filter((o) => o.status === "fulfilled");
        assert.equal(paid.length, 2, JSON.stringify(outcomes.map((o) => (o.status === "rejected" ? String(o.reason) : o.value?.transaction))));
        assert.equal(outcomes[2]!.status, "fulfilled", "the other payer's payment is paid");
        const twinFailed = outcomes.slice(0, 2).filter((o) => o.status === "rejected");
        assert.equal(twinFailed.length, 1, "exactly one twin is refused");
        assert.equal(((twinFailed[0] as PromiseRejectedResult).reason as SettlementError).pending, false);
        assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + 1000n + other.authorization.value);
      });

      it("over HTTP: 24 parallel paid requests, batched; the ledger equals the chain", async function () {
        const { key, address } = await wallet();
        const store = new MemoryStore();
        const payTo = (await payer(0n)).address;
        const pw = paywall({
          payTo,
          settler: relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: key, batch: { contract: dev.batchSettlement, maxWaitMs: 50 } }),
          rpcUrl: dev.rpcUrl,
          store,
          routes: { "GET /paid": { price: "$0.001" } },
        });
        const app = express();
        app.use(pw);
        app.get("/paid", (_req, res) => void res.json({ ok: true }));
        const server: Server = await new Promise((resolve) => {
          const s = app.listen(0, "127.0.0.1", () => resolve(s));
        });
        try {
          const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/paid`;
          const headers = await Promise.all(
            Array.from({ length: 24 }, (_, i) => v2Header({ privateKey: dev.accounts.payers[i % 8]!.privateKey, asset: dev.usdc, payTo, value: 1000n })),
          );
          // one request is sent twice at once: one of the copies is paid, the other refused
          const answers = await Promise.all([...headers, headers[0]!].map((h) => fetch(url, { headers: { "payment-signature": h } }).then(async (r) => ({ status: r.status, body: await r.text() }))));
          const paid = answers.filter((a) => a.status === 200).length;
          assert.equal(paid, 24, JSON.stringify(answers.filter((a) => a.status !== 200)));
          const ledger = await store.listLedger();
          assert.equal(ledger.length, 24);
          assert.equal(await dev.balanceOf(payTo), ledger.reduce((s, e) => s + BigInt(e.amount), 0n), "ledger = chain");
          const txs = new Set(ledger.map((e) => e.transaction));
          assert.equal(await nonceOf(address), txs.size);
          assert.ok(txs.size < 24, `${txs.size} transactions for 24 payments`);
          console.log(`      24 paid requests settled in ${txs.size} batch transaction(s)`);
        } finally {
          await new Promise<void>((resolve) => server.close(() => resolve()));
        }
      });
    }
  });
}

describe("batched settlement: contract artifact and options", function () {
  it("recompiling X402BatchSettlement.sol gives exactly the committed artifact", function () {
    this.timeout(60_000);
    const fresh = compileBatchContract();
    assert.equal(fresh.sourceSha256, batchArtifact.sourceSha256, "X402BatchSettlement.sol changed: run `npx tsx scripts/compile-batch.ts`");
    assert.equal(fresh.deployedBytecode, batchArtifact.deployedBytecode);
    assert.equal(fresh.bytecode, batchArtifact.bytecode);
  });

  it("refuses bad batch options with a message naming the option and the fix", function () {
    const base = { rpcUrl: "http://127.0.0.1:8545", chainId: CHAIN_ID, privateKey: generatePrivateKey() };
    const refuses = (batch: unknown, option: string, text: RegExp) =>
      assert.throws(
        () => relayerSettler({ ...base, batch } as RelayerSettlerOptions),
        (e: unknown) => e instanceof ConfigError && e.option === option && text.test(e.message),
      );
    const contract = "0x0000000000000000000000000000000000402030";
    refuses(true, "batch", /must be an object/);
    refuses({ maxSize: 10 }, "batch.contract", /X402BatchSettlement.*dev\.batchSettlement/);
    refuses({ contract: "0x1234" }, "batch.contract", /0x and 40 hex digits/);
    refuses({ contract, maxSize: 0 }, "batch.maxSize", /from 1 to/);
    refuses({ contract, maxSize: MAX_BATCH_SIZE + 1 }, "batch.maxSize", /2\^24/);
    refuses({ contract, maxSize: 2.5 }, "batch.maxSize", /whole number/);
    refuses({ contract, maxWaitMs: -1 }, "batch.maxWaitMs", /milliseconds/);
    refuses({ contract, maxWait: 5 }, "batch.maxWait", /contract, maxSize and maxWaitMs/);
    assert.ok(relayerSettler({ ...base, batch: { contract, maxSize: MAX_BATCH_SIZE, maxWaitMs: 0 } }));
  });
});
