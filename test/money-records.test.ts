/**
 * Issue 14, B10 and B11: no charge without delivery, no settled payment
 * without a record. A real dev chain with automine switched off makes
 * settlements pending; a store that fails on exactly the writes made after
 * money moved shows that nothing is lost and nothing is paid twice.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import express from "express";
import request from "supertest";
import type { Hex } from "viem";
import { MemoryStore, paywall, relayerSettler, StoreError, type PaymentEvent, type Settler, type Store } from "server402";
import { PaymentEngine } from "server402/internal";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, type PaidApp } from "./support/paid-app.js";
import { chainRpc } from "./support/chain-rpc.js";
import { v1Header, v2Header } from "./support/sign.js";

/** A store whose methods named in `failing` throw a StoreError (as a store outage would) while the set holds them. */
export function failingStore(inner: Store, failing: Set<string>): Store {
  return new Proxy(inner, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof v !== "function") return v;
      if (typeof key === "string" && failing.has(key)) return async () => Promise.reject(new StoreError(`server402: test store ${key} failed`));
      return v.bind(target);
    },
  });
}

const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as { success: boolean; transaction: string; errorReason?: string };

describe("issue 14 B10/B11: settlement records (real chain)", function () {
  let chain: DevChain;
  const rpc = chainRpc(() => chain.rpcUrl);
  /** A PAYMENT-SIGNATURE (v2) of a fresh authorization of payer `payer` paying `value` to payTo. */
  const signature = (payer: number, value = 10_000n) => v2Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value });
  const header = async (payer: number, value = 10_000n) => ({ "payment-signature": await signature(payer, value) });

  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await rpc("evm_setAutomine", [true]).catch(() => {});
    await chain?.stop();
  });

  /** The prepaid payments API on `store`, one payment of service "echo" created, and `pay()` sending a fresh authorization of payer `payer`. */
  async function prepaid(store: Store, payer: number, opts: { settler?: ReturnType<typeof relayerSettler>; onEvent?: (e: PaymentEvent) => void } = {}) {
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      settler: opts.settler ?? relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey }),
      rpcUrl: chain.rpcUrl,
      store,
      onEvent: opts.onEvent,
      routes: { "POST /echo": { price: "$0.05", serviceId: "echo" } },
      payments: {},
    });
    const app = express();
    app.use(pw);
    app.post("/echo", (_req, res) => void res.json({ ok: true }));
    const created = await request(app).post("/api/payments").send({ serviceId: "echo" });
    assert.equal(created.status, 201, created.text);
    const p = created.body as { paymentId: string; token: string; amount: string };
    const pay = async () => request(app).post(`/api/payments/${p.paymentId}/pay`).set(await header(payer, BigInt(p.amount)));
    return { pw, app, p, pay, payer: chain.accounts.payers[payer]! };
  }

  describe("B10 pending settlement", function () {
    let app: PaidApp;
    let store: MemoryStore;
    let events: PaymentEvent[];

    beforeEach(async () => {
      store = new MemoryStore();
      events = [];
      const settler = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs: 300 });
      app = await startPaidApp(chain, { settler, store, onEvent: (e) => events.push(e) });
    });
    afterEach(async () => {
      await rpc("evm_setAutomine", [true]);
      await app?.close();
      await store?.close();
    });

    const get = (h: Record<string, string>) => fetch(`${app.url}/weather`, { headers: h });

    /** One paid request while the chain does not mine: 504 settlement_pending with the transaction. */
    async function pendingRequest(h: Record<string, string>): Promise<Hex> {
      await rpc("evm_setAutomine", [false]);
      const res = await get(h);
      const body = (await res.json()) as { error: string };
      assert.equal(res.status, 504, JSON.stringify(body));
      assert.equal(body.error, "settlement_pending");
      const tx = decode(res.headers.get("payment-response")).transaction as Hex;
      assert.match(tx, /^0x[0-9a-f]{64}$/);
      return tx;
    }

    it("B10 pending settlement: a retry with the same authorization gets the held paid answer once mined (pending again before), never a second charge", async () => {
      const h = await header(1);
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const tx = await pendingRequest(h);
      assert.equal(app.runs.weather, 1);

      const again = await get(h);
      const againBody = (await again.json()) as { error: string };
      assert.equal(again.status, 504, JSON.stringify(againBody));
      assert.equal(againBody.error, "settlement_pending");
      assert.ok(again.headers.get("retry-after"), "a pending answer says when to come back");

      await rpc("evm_setAutomine", [true]);
      await rpc("evm_mine");
      const paid = await get(h);
      const text = await paid.text();
      assert.equal(paid.status, 200, text);
      const body = JSON.parse(text) as { weather: string; payment: { transaction?: string } };
      assert.equal(body.weather, "sunny");
      const receipt = decode(paid.headers.get("payment-response"));
      assert.equal(receipt.success, true);
      assert.equal(receipt.transaction, tx);
      assert.match(paid.headers.get("cache-control") ?? "", /private/);

      const once = await get(h);
      assert.equal(once.status, 200, "the held answer is served again to the same payment");
      assert.equal(app.runs.weather, 1, "the handler ran once");
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n, "charged exactly once");
      const ledger = await store.listLedger();
      assert.deepEqual(ledger.map((e) => e.transaction), [tx]);
      assert.ok(events.some((e) => e.type === "settled" && e.method === "x402"));
    });

    it("B10 pending settlement: the reconciler confirms the transfer and writes the ledger entry when the client never comes back", async () => {
      const h = await header(2);
      const tx = await pendingRequest(h);
      assert.deepEqual(await store.listLedger(), []);
      await rpc("evm_setAutomine", [true]);
      await rpc("evm_mine");
      await app.pw.engine.reconcile();
      const ledger = await store.listLedger();
      assert.equal(ledger.length, 1);
      assert.equal(ledger[0]!.transaction, tx);
      assert.equal(ledger[0]!.amount, "10000");
      assert.equal((await store.listOutbox(10)).length, 0, "nothing left to do");
      await app.pw.engine.reconcile();
      assert.equal((await store.listLedger()).length, 1, "reconciling again adds nothing");
    });

    it("B10 pending settlement: a transfer that finally fails leaves the payer uncharged and the lock released", async () => {
      const h = await header(3);
      const payer = chain.accounts.payers[3]!.address;
      const before = await chain.balanceOf(payer);
      const tx = await pendingRequest(h);
      await rpc("anvil_dropTransaction", [tx]);
      await rpc("evm_setAutomine", [true]);
      await app.pw.engine.reconcile();
      assert.equal(await chain.balanceOf(payer), before, "the payer was not charged");
      assert.deepEqual(await store.listLedger(), []);
      assert.ok(events.some((e) => e.type === "failed" && e.stage === "settle" && e.reason === "settlement_dropped"));
      // the lock is released: the same authorization is served (and charged) afresh
      const retry = await get(h);
      assert.equal(retry.status, 200, await retry.clone().text());
      assert.equal(app.runs.weather, 2);
      assert.equal(before - (await chain.balanceOf(payer)), 10_000n, "charged once in all");
      assert.equal((await store.listLedger()).length, 1);
    });
  });

  describe("B10 pending settlement, other paths", function () {
    afterEach(async () => {
      await rpc("evm_setAutomine", [true]);
    });
    const slowSettler = () => relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs: 300 });

    it("B10 pending settlement (settlement before the handler): once confirmed, a retry with the same payment runs the handler once, never a second charge", async () => {
      const store = new MemoryStore();
      const app = await startPaidApp(chain, { settler: slowSettler(), store, settlement: "before" });
      try {
        const h = await header(6);
        const before = await chain.balanceOf(chain.accounts.payTo.address);
        await rpc("evm_setAutomine", [false]);
        const first = await fetch(`${app.url}/weather`, { headers: h });
        assert.equal(first.status, 504, await first.clone().text());
        assert.equal(app.runs.weather ?? 0, 0, "settlement before the handler: not run yet");
        const tx = decode(first.headers.get("payment-response")).transaction;
        await rpc("evm_setAutomine", [true]);
        await rpc("evm_mine");
        const paid = await fetch(`${app.url}/weather`, { headers: h });
        const text = await paid.text();
        assert.equal(paid.status, 200, text);
        assert.equal(JSON.parse(text).payment.transaction, tx);
        assert.equal(decode(paid.headers.get("payment-response")).transaction, tx);
        assert.equal(app.runs.weather, 1);
        const again = await fetch(`${app.url}/weather`, { headers: h });
        assert.equal(again.status, 402, "the paid run is given once");
        assert.equal(app.runs.weather, 1);
        assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n);
        assert.deepEqual((await store.listLedger()).map((e) => e.transaction), [tx]);
      } finally {
        await app.close();
        await store.close();
      }
    });

    it("B10 pending settlement: a retry confirms only its own pending transfer (was a full reconcile pass over every pending record)", async () => {
      const store = new MemoryStore();
      const relayer = slowSettler();
      const confirmed: string[] = [];
      const settler: Settler = { ...relayer, confirm: async (req, tx) => (confirmed.push(tx), relayer.confirm!(req, tx)) };
      const pw = paywall({ payTo: chain.accounts.payTo.address, network: "base-sepolia", settler, store, checker: false, routes: { "GET /r": { price: "$0.01" } } });
      const engine = new PaymentEngine({ store, settler, reconcileIntervalMs: 0 });
      try {
        const offer = await pw.offerFor(pw.routes[0]!, "http://127.0.0.1/r");
        const raw = async (payer: number) => JSON.parse(Buffer.from(await signature(payer), "base64").toString()) as Record<string, unknown>;
        /** One settlement left pending (the chain does not mine), its answer held for a retry: its transaction. */
        const pending = async (payload: Record<string, unknown>) => {
          const attempt = await engine.verifyX402(2, payload, offer);
          const err = await engine.settleX402(attempt).then(() => assert.fail("settled while the chain does not mine"), (e: unknown) => e as { reason: string; transaction: string });
          assert.equal(err.reason, "settlement_pending");
          await engine.holdAnswer(attempt, { status: 200, headers: {}, body: Buffer.from("paid") });
          return err.transaction;
        };
        const [a, b] = [await raw(1), await raw(2)];
        await rpc("evm_setAutomine", [false]);
        const txA = await pending(a);
        const txB = await pending(b);
        await rpc("evm_setAutomine", [true]);
        await rpc("evm_mine");
        confirmed.length = 0;
        // the retry of A: refused as a used authorization, then replayed
        const refusal = await engine.verifyX402(2, a, offer).then(() => assert.fail("a pending authorization verified again"), (e: unknown) => e);
        const replay = await engine.replayX402(refusal, offer);
        assert.equal(replay?.kind, "paid", JSON.stringify(replay));
        assert.equal(replay.kind === "paid" && replay.response.transaction, txA);
        assert.deepEqual(confirmed, [txA], "the retry looked up its own transfer only");
        assert.deepEqual((await store.listLedger()).map((e) => e.transaction), [txA]);
        assert.deepEqual((await store.listOutbox(10)).length, 1, "B's record is left to the reconciler's pass");
        await engine.reconcile();
        assert.deepEqual((await store.listLedger()).map((e) => e.transaction).sort(), [txA, txB].sort());
      } finally {
        engine.stopReconciler();
        pw.engine.stopReconciler();
        await store.close();
      }
    });

    it("B10 pending settlement (payments API): a pending pay keeps the payment locked, never payable twice; the reconciler marks it paid", async () => {
      const store = new MemoryStore();
      const { pw, app, p, pay, payer } = await prepaid(store, 7, { settler: slowSettler() });
      try {
        const before = await chain.balanceOf(payer.address);
        await rpc("evm_setAutomine", [false]);
        const first = await pay();
        assert.equal(first.status, 504, first.text);
        const second = await pay();
        assert.equal(second.status, 409, second.text);
        await rpc("evm_setAutomine", [true]);
        await rpc("evm_mine");
        await pw.engine.reconcile();
        assert.equal((await store.getPayment(p.paymentId))!.status, "paid");
        const third = await pay();
        assert.equal(third.status, 200);
        assert.match(third.body.message, /already paid/);
        assert.equal(before - (await chain.balanceOf(payer.address)), 50_000n, "charged once");
        assert.equal((await store.listLedger()).filter((e) => e.paymentId === p.paymentId).length, 1);
        assert.equal((await request(app).post("/echo").set("X-Payment-Token", p.token).send({})).status, 200);
      } finally {
        pw.engine.stopReconciler();
        await store.close();
      }
    });
  });

  describe("B11 failures after money moved", function () {
    const RECORD_WRITES = ["appendLedger", "appendLedgerOnce", "setNonceState", "putOutbox", "deleteOutbox"];
    /** A real relayer after whose transfer the store refuses `methods` (they are added to `failing`). */
    const failAfterSettle = (failing: Set<string>, methods: string[]): Settler => {
      const relayer = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey });
      return {
        kind: "relayer",
        settle: async (req) => {
          const r = await relayer.settle(req);
          for (const m of methods) failing.add(m);
          return r;
        },
        confirm: relayer.confirm,
        lookup: relayer.lookup,
      };
    };

    it("B11 outbox durable across a crash: the store refuses every record after the transfer and the process dies; a new process on the same store finds the settlement and writes its ledger entry from the chain", async () => {
      const inner = new MemoryStore();
      const failing = new Set<string>();
      const app = await startPaidApp(chain, { store: failingStore(inner, failing), settler: failAfterSettle(failing, RECORD_WRITES) });
      let tx: string;
      try {
        const h = await header(8);
        const res = await fetch(`${app.url}/weather`, { headers: h });
        assert.equal(res.status, 200, await res.clone().text());
        tx = decode(res.headers.get("payment-response")).transaction;
      } finally {
        // the process dies: what it kept in memory is gone
        app.pw.engine.stopReconciler();
        await app.close();
      }
      failing.clear();
      assert.deepEqual(await inner.listLedger(), []);
      const restarted = new PaymentEngine({
        store: inner,
        settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey }),
        reconcileIntervalMs: 0,
        settlementIntentAgeMs: 0,
      });
      await restarted.reconcile();
      assert.deepEqual((await inner.listLedger()).map((e) => e.transaction), [tx], "the settled payment is on record after the crash");
      assert.deepEqual(await inner.listOutbox(10), [], "nothing left to do");
      await restarted.reconcile();
      assert.equal((await inner.listLedger()).length, 1, "stored once");
      await inner.close();
    });

    /**
     * Payer 0 pays an app whose store refuses `methods` (until `failing` is cleared): refused 503
     * store_unavailable with nothing moved. `h` is the payment, `charged()` what payer 0 paid since.
     */
    async function refusedWhileStoreFails(methods: string[]) {
      const inner = new MemoryStore();
      const failing = new Set(methods);
      const app = await startPaidApp(chain, { store: failingStore(inner, failing) });
      const close = async () => {
        await app.close();
        await inner.close();
      };
      try {
        const payer = chain.accounts.payers[0]!.address;
        const before = await chain.balanceOf(payer);
        const h = await header(0);
        const res = await fetch(`${app.url}/weather`, { headers: h });
        const body = (await res.json()) as { error: string };
        assert.equal(res.status, 503, JSON.stringify(body));
        assert.equal(body.error, "store_unavailable");
        assert.ok(res.headers.get("retry-after"));
        assert.equal(await chain.balanceOf(payer), before, "no money moved");
        return { inner, failing, app, h, charged: async () => before - (await chain.balanceOf(payer)), close };
      } catch (err) {
        await close();
        throw err;
      }
    }

    it("B11 store refusing the settlement's intent: the paid answer is refused with 503 before any money moves, and the authorization is released", async () => {
      const t = await refusedWhileStoreFails(["putOutbox"]);
      try {
        t.failing.clear();
        const retry = await fetch(`${t.app.url}/weather`, { headers: t.h });
        assert.equal(retry.status, 200, await retry.clone().text());
        assert.equal(await t.charged(), 10_000n, "charged once in all");
        assert.equal((await t.inner.listLedger()).length, 1);
      } finally {
        await t.close();
      }
    });

    it("B11 store refusing the intent and the lock's release: once the store is back the reconciler releases the lock, so the same authorization pays (was locked until it expired)", async function () {
      this.timeout(20_000);
      const t = await refusedWhileStoreFails(["putOutbox", "releaseNonce", "giveBackNonce"]);
      try {
        t.failing.clear();
        // the reconciler runs every 5 s by default; the lock must be gone by its next pass
        let retry: Response | undefined;
        for (const t0 = Date.now(); Date.now() - t0 < 12_000; await new Promise((r) => setTimeout(r, 500))) {
          retry = await fetch(`${t.app.url}/weather`, { headers: t.h });
          if (retry.status === 200) break;
        }
        assert.equal(retry!.status, 200, await retry!.clone().text());
        assert.equal(await t.charged(), 10_000n, "charged once in all");
      } finally {
        await t.close();
      }
    });

    it("B11 one deadline for a settlement's records: with every record write hanging in a store outage, the paid request is answered within recordWaitMs (was one wait per write), and the reconciler stores the records once the store is back", async function () {
      this.timeout(30_000);
      const inner = new MemoryStore();
      const slow = new Set<string>();
      const HANG_MS = 1500;
      // a store that, once the transfer is made, takes HANG_MS to fail each record write (as a store retrying through an outage does)
      const store = new Proxy(inner, {
        get(target, key, receiver) {
          const v = Reflect.get(target, key, receiver);
          if (typeof v !== "function") return v;
          if (typeof key === "string" && slow.has(key)) return () => new Promise((_r, reject) => setTimeout(() => reject(new StoreError(`server402: test store ${key} timed out`)), HANG_MS));
          return v.bind(target);
        },
      }) as Store;
      const pw = paywall({ payTo: chain.accounts.payTo.address, network: "base-sepolia", settler: failAfterSettle(new Set(), []), store: inner, checker: false, routes: { "GET /r": { price: "$0.01" } } });
      const relayer = failAfterSettle(slow, RECORD_WRITES);
      const engine = new PaymentEngine({ store, settler: relayer, reconcileIntervalMs: 0, recordWaitMs: 1000 });
      try {
        const offer = await pw.offerFor(pw.routes[0]!, "http://127.0.0.1/r");
        const attempt = await engine.verifyX402(2, JSON.parse(Buffer.from(await signature(8), "base64").toString()), offer);
        const started = performance.now();
        const settled = await engine.settleX402(attempt);
        const waited = performance.now() - started;
        assert.ok(waited < 1000 + HANG_MS, `answered after ${Math.round(waited)} ms (records would take ${3 * HANG_MS} ms one after another)`);
        assert.equal(settled.recorded, false);
        await new Promise((r) => setTimeout(r, HANG_MS * 3));
        slow.clear();
        await engine.reconcile();
        assert.deepEqual((await inner.listLedger()).map((e) => e.transaction), [settled.transaction]);
        assert.deepEqual(await inner.listOutbox(10), []);
      } finally {
        engine.stopReconciler();
        pw.engine.stopReconciler();
        await inner.close();
      }
    });

    it("B11 failures after money moved: ledger and nonce writes failing after the transfer go to an outbox, are surfaced as events, and are stored by the reconciler", async () => {
      const inner = new MemoryStore();
      const failing = new Set<string>();
      const events: PaymentEvent[] = [];
      // the store starts failing once the transfer is made (its intent was stored before: issue 14 B11)
      const app = await startPaidApp(chain, { store: failingStore(inner, failing), settler: failAfterSettle(failing, RECORD_WRITES), onEvent: (e) => events.push(e) });
      try {
        const nonce = `0x${randomBytes(32).toString("hex")}` as Hex;
        const payer = chain.accounts.payers[4]!;
        const lockKey = `${chain.chainId}:${chain.usdc}:${payer.address}:${nonce}`.toLowerCase();
        const h = { "x-payment": await v1Header({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10_000n, nonce }) };
        const res = await fetch(`${app.url}/weather`, { headers: h });
        assert.equal(res.status, 200, await res.clone().text());
        const tx = decode(res.headers.get("x-payment-response")).transaction;
        const failures = events.filter((e) => e.type === "record_failed");
        assert.deepEqual(failures.map((e) => e.type === "record_failed" && e.what).sort(), ["ledger", "nonce", "outbox"]);
        assert.ok(failures.every((e) => e.type === "record_failed" && e.transaction === tx));
        assert.deepEqual(await inner.listLedger(), []);
        // the same authorization is never served again for free
        const replay = await fetch(`${app.url}/weather`, { headers: h });
        assert.equal(replay.status, 402);
        assert.equal(app.runs.weather, 1);
        // still failing: the reconciler keeps it
        await app.pw.engine.reconcile();
        assert.deepEqual(await inner.listLedger(), []);
        failing.clear();
        await app.pw.engine.reconcile();
        const ledger = await inner.listLedger();
        assert.deepEqual(ledger.map((e) => e.transaction), [tx]);
        assert.equal((await inner.getNonce(lockKey))?.state, "settled");
        await app.pw.engine.reconcile();
        assert.equal((await inner.listLedger()).length, 1, "stored once");
      } finally {
        await app.close();
        await inner.close();
      }
    });

    it("B11 failures after money moved: when markPaid fails after pay settled, the payment is never payable twice and the reconciler marks it paid", async () => {
      const inner = new MemoryStore();
      const failing = new Set<string>();
      const events: PaymentEvent[] = [];
      const { pw, app, p, pay, payer } = await prepaid(failingStore(inner, failing), 5, { onEvent: (e) => events.push(e) });
      try {
        const before = await chain.balanceOf(payer.address);
        failing.add("markPaid");
        const first = await pay();
        assert.equal(first.status, 200, first.text);
        assert.equal(first.body.status, "paid", "the customer paid: the answer says so");
        assert.ok(events.some((e) => e.type === "record_failed" && e.what === "payment"));
        const second = await pay();
        assert.notEqual(second.status, 200, second.text);
        assert.equal(second.status, 409);
        assert.equal(before - (await chain.balanceOf(payer.address)), 50_000n, "charged once");
        failing.clear();
        await pw.engine.reconcile();
        assert.equal((await inner.getPayment(p.paymentId))!.status, "paid");
        assert.equal((await inner.listLedger()).filter((e) => e.paymentId === p.paymentId).length, 1);
        const third = await pay();
        assert.equal(third.status, 200);
        assert.match(third.body.message, /already paid/);
        assert.equal(before - (await chain.balanceOf(payer.address)), 50_000n, "still charged once");
        const used = await request(app).post("/echo").set("X-Payment-Token", p.token).send({});
        assert.equal(used.status, 200, used.text);
      } finally {
        await inner.close();
      }
    });
  });
});
