/**
 * The behaviour every `Store` must have. Each store's test file calls
 * `runStoreConformance` with a factory; every test gets a fresh, empty store.
 */
import assert from "node:assert/strict";
import { RESERVED_PAYMENT_FIELDS, type LedgerEntry, type PayerHold, type Store, type StoredPayment } from "../lib/src/state/store.js";
import { generatePaymentToken, hashToken, newPaymentId } from "../lib/src/state/tokens.js";

/** A pending 1-call payment for service `svc`, expiring in an hour, with `overrides` applied. */
export function samplePayment(overrides: Partial<StoredPayment> = {}): StoredPayment {
  const now = Date.now();
  return {
    paymentId: newPaymentId(),
    serviceId: "svc",
    tokenHash: hashToken(generatePaymentToken()),
    status: "pending",
    amountCents: 5,
    amountAtomic: "50000",
    currency: "USD",
    billingMode: "per_call",
    maxCalls: 1,
    callsUsed: 0,
    expiresAt: now + 3600_000,
    createdAt: now,
    payTo: "0x1111111111111111111111111111111111111111",
    ...overrides,
  };
}

/** Create a paid payment and return it (as stored after markPaid). */
export async function paidPayment(store: Store, overrides: Partial<StoredPayment> = {}): Promise<StoredPayment> {
  const p = samplePayment(overrides);
  await store.createPayment(p);
  const res = await store.markPaid(p.paymentId, { paidAt: Date.now(), transaction: "0xabc" });
  assert.ok(res?.changed);
  return res.payment;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = <T>(xs: T[], f: (x: T) => boolean) => xs.filter(f).length;
let keySeq = 0;
/** A nonce key unique within the run. */
const nonceKey = () => `0xasset:0xfrom:${process.pid}-${Date.now()}-${keySeq++}`;

/**
 * Register a `describe(name)` suite checking `Store` semantics. `makeStore` is
 * called once per test; stores are closed after each test and `cleanup` runs
 * once after the suite.
 */
export function runStoreConformance(name: string, makeStore: () => Promise<Store>, cleanup?: () => Promise<void>): void {
  describe(`${name} (Store conformance)`, function () {
    let store: Store;
    beforeEach(async function () {
      store = await makeStore();
    });
    afterEach(async function () {
      await store?.close();
    });
    if (cleanup) after(cleanup);

    describe("nonces", function () {
      it("claim is exclusive and leaves a locked nonce", async function () {
        const key = nonceKey();
        assert.equal(await store.getNonce(key), undefined);
        assert.equal(await store.claimNonce(key, Date.now() + 60_000), true);
        assert.equal(await store.claimNonce(key, Date.now() + 60_000), false);
        assert.deepEqual(await store.getNonce(key), { state: "locked" });
      });

      it("50 concurrent claims: exactly one wins", async function () {
        const key = nonceKey();
        const results = await Promise.all(Array.from({ length: 50 }, () => store.claimNonce(key, Date.now() + 60_000)));
        assert.equal(count(results, (r) => r), 1);
      });

      it("release frees a locked nonce so it can be claimed again", async function () {
        const key = nonceKey();
        await store.claimNonce(key, Date.now() + 60_000);
        await store.releaseNonce(key);
        assert.equal(await store.getNonce(key), undefined);
        assert.equal(await store.claimNonce(key, Date.now() + 60_000), true);
      });

      it("release leaves settled and pending nonces alone", async function () {
        const settled = nonceKey();
        await store.claimNonce(settled, Date.now() + 60_000);
        await store.setNonceState(settled, "settled", "0xtx1");
        await store.releaseNonce(settled);
        assert.deepEqual(await store.getNonce(settled), { state: "settled", transaction: "0xtx1" });
        assert.equal(await store.claimNonce(settled, Date.now() + 60_000), false);

        const pending = nonceKey();
        await store.claimNonce(pending, Date.now() + 60_000);
        await store.setNonceState(pending, "pending");
        await store.releaseNonce(pending);
        assert.deepEqual(await store.getNonce(pending), { state: "pending" });
        assert.equal(await store.claimNonce(pending, Date.now() + 60_000), false);
      });

      it("release and setNonceState of an unknown nonce do nothing", async function () {
        const key = nonceKey();
        await store.releaseNonce(key);
        await store.setNonceState(key, "settled", "0xtx");
        assert.equal(await store.getNonce(key), undefined);
      });

      it("setNonceState can move pending to settled with a transaction", async function () {
        const key = nonceKey();
        await store.claimNonce(key, Date.now() + 60_000);
        await store.setNonceState(key, "pending", "0xtx2");
        assert.deepEqual(await store.getNonce(key), { state: "pending", transaction: "0xtx2" });
        await store.setNonceState(key, "settled", "0xtx2");
        assert.deepEqual(await store.getNonce(key), { state: "settled", transaction: "0xtx2" });
      });

      it("a lock disappears at expiresAt and can be claimed again", async function () {
        const locked = nonceKey();
        const settled = nonceKey();
        assert.equal(await store.claimNonce(locked, Date.now() + 150), true);
        assert.equal(await store.claimNonce(settled, Date.now() + 150), true);
        await store.setNonceState(settled, "settled", "0xtx");
        assert.equal(await store.claimNonce(locked, Date.now() + 60_000), false);
        await sleep(300);
        assert.equal(await store.getNonce(locked), undefined);
        assert.equal(await store.getNonce(settled), undefined);
        assert.equal(await store.claimNonce(locked, Date.now() + 60_000), true);
        assert.deepEqual(await store.getNonce(locked), { state: "locked" });
      });
    });

    // --- Abuse limits of x402 payments (issue 14, A5/A6): claimPayerNonce, giveBackNonce ---
    describe("payer holds and given-back runs", function () {
      const payerKey = () => `0xasset:0xpayer-${process.pid}-${Date.now()}-${keySeq++}`;
      const hold = (payer: string, over: Partial<PayerHold> = {}): PayerHold => ({ payer, amount: "10000", balance: "10000", maxInFlight: 4, maxRetries: 2, ...over });
      const later = () => Date.now() + 60_000;

      it("A6: 20 parallel claims of one payer holding exactly one price: exactly one succeeds, the others see it held", async function () {
        const payer = payerKey();
        const results = await Promise.all(Array.from({ length: 20 }, () => store.claimPayerNonce(nonceKey(), later(), hold(payer, { maxInFlight: 100 }))));
        assert.equal(results.filter((r) => r.ok).length, 1);
        for (const r of results.filter((r) => !r.ok)) assert.deepEqual(r, { ok: false, reason: "insufficient_funds", held: "10000" });
      });

      it("locked and pending payments are held, settled and released ones are not; amounts beyond 2^53 add exactly", async function () {
        const payer = payerKey();
        const big = "9007199254740993"; // 2^53 + 1
        const [a, b, c] = [nonceKey(), nonceKey(), nonceKey()];
        assert.deepEqual(await store.claimPayerNonce(a, later(), hold(payer, { amount: big, balance: "18014398509481986" })), { ok: true, others: 0 });
        assert.deepEqual(await store.claimPayerNonce(b, later(), hold(payer, { amount: big, balance: "18014398509481986" })), { ok: true, others: 1 });
        assert.deepEqual(await store.claimPayerNonce(c, later(), hold(payer, { amount: "1", balance: "18014398509481986" })), { ok: false, reason: "insufficient_funds", held: "18014398509481986" });
        await store.setNonceState(a, "pending", "0xtx");
        assert.equal((await store.claimPayerNonce(c, later(), hold(payer, { amount: "1", balance: "18014398509481986" }))).ok, false);
        await store.setNonceState(a, "settled", "0xtx");
        await store.releaseNonce(b);
        // a is settled (not held, still counted in `others`), b is gone
        assert.deepEqual(await store.claimPayerNonce(c, later(), hold(payer, { amount: "1", balance: "1" })), { ok: true, others: 1 });
        assert.deepEqual(await store.getNonce(c), { state: "locked" });
        // without a known balance nothing is refused for funds
        assert.equal((await store.claimPayerNonce(nonceKey(), later(), hold(payer, { balance: undefined }))).ok, true);
      });

      it("a live key is refused as in_use (locked) or used (settled); another payer is not affected", async function () {
        const payer = payerKey();
        const key = nonceKey();
        assert.equal((await store.claimPayerNonce(key, later(), hold(payer))).ok, true);
        assert.deepEqual(await store.claimPayerNonce(key, later(), hold(payerKey())), { ok: false, reason: "in_use" });
        assert.equal(await store.claimNonce(key, later()), false);
        await store.setNonceState(key, "settled", "0xtx");
        assert.deepEqual(await store.claimPayerNonce(key, later(), hold(payerKey())), { ok: false, reason: "used" });
        assert.equal((await store.claimPayerNonce(nonceKey(), later(), hold(payerKey()))).ok, true);
      });

      it("A5: at most maxInFlight locked payments per payer", async function () {
        const payer = payerKey();
        const keys = [nonceKey(), nonceKey(), nonceKey()];
        const h = hold(payer, { maxInFlight: 2, balance: "1000000" });
        assert.equal((await store.claimPayerNonce(keys[0]!, later(), h)).ok, true);
        assert.equal((await store.claimPayerNonce(keys[1]!, later(), h)).ok, true);
        assert.deepEqual(await store.claimPayerNonce(keys[2]!, later(), h), { ok: false, reason: "too_many_in_flight" });
        await store.giveBackNonce(keys[0]!);
        assert.equal((await store.claimPayerNonce(keys[2]!, later(), h)).ok, true);
      });

      it("A5: a key given back more than maxRetries times is refused; giving back an unlocked key counts nothing", async function () {
        const payer = payerKey();
        const key = nonceKey();
        for (let run = 1; run <= 3; run++) {
          assert.deepEqual(await store.claimPayerNonce(key, later(), hold(payer)), { ok: true, others: 0 }, `run ${run}`);
          assert.equal(await store.giveBackNonce(key), run);
          assert.equal(await store.getNonce(key), undefined);
        }
        assert.equal(await store.giveBackNonce(key), 3);
        assert.deepEqual(await store.claimPayerNonce(key, later(), hold(payer)), { ok: false, reason: "retries_exhausted" });
        assert.deepEqual(await store.claimPayerNonce(key, later(), hold(payer, { maxRetries: 3 })), { ok: true, others: 0 });
      });

      it("the given-back count ends when the lock would have expired", async function () {
        const key = nonceKey();
        const h = hold(payerKey(), { maxRetries: 0 });
        assert.equal((await store.claimPayerNonce(key, Date.now() + 150, h)).ok, true);
        assert.equal(await store.giveBackNonce(key), 1);
        assert.deepEqual(await store.claimPayerNonce(key, Date.now() + 150, h), { ok: false, reason: "retries_exhausted" });
        await sleep(300);
        assert.equal((await store.claimPayerNonce(key, Date.now() + 60_000, h)).ok, true);
      });
    });

    describe("payments", function () {
      it("create then get returns the same payment", async function () {
        const p = samplePayment({ createdBy: "203.0.113.7", provider: "onchain" });
        await store.createPayment(p);
        assert.deepEqual(await store.getPayment(p.paymentId), p);
        assert.equal(await store.getPayment(newPaymentId()), undefined);
      });

      it("rejects a duplicate paymentId or tokenHash and keeps the original", async function () {
        const p = samplePayment();
        await store.createPayment(p);
        await assert.rejects(store.createPayment(samplePayment({ paymentId: p.paymentId })), { code: "duplicate_payment" });
        await assert.rejects(store.createPayment(samplePayment({ tokenHash: p.tokenHash })), { code: "duplicate_payment" });
        assert.deepEqual(await store.getPayment(p.paymentId), p);
      });

      it("markPaid moves pending to paid once", async function () {
        const p = samplePayment();
        await store.createPayment(p);
        const paidAt = Date.now();
        const first = await store.markPaid(p.paymentId, { paidAt, transaction: "0xt1", provider: "relayer", network: "eip155:84532", payer: "0xpayer" });
        assert.ok(first);
        assert.equal(first.changed, true);
        assert.deepEqual(first.payment, { ...p, status: "paid", paidAt, transaction: "0xt1", provider: "relayer", network: "eip155:84532", payer: "0xpayer" });
        const second = await store.markPaid(p.paymentId, { paidAt: paidAt + 1, transaction: "0xt2" });
        assert.ok(second);
        assert.equal(second.changed, false);
        assert.deepEqual(second.payment, first.payment);
        assert.deepEqual(await store.getPayment(p.paymentId), first.payment);
        assert.equal(await store.markPaid(newPaymentId(), { paidAt }), undefined);
      });

      it("20 concurrent markPaid: exactly one changes it", async function () {
        const p = samplePayment();
        await store.createPayment(p);
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.markPaid(p.paymentId, { paidAt: Date.now(), transaction: `0x${i}` })));
        assert.equal(count(results, (r) => r!.changed), 1);
        const tx = results.find((r) => r!.changed)!.payment.transaction;
        for (const r of results) assert.equal(r!.payment.transaction, tx);
      });

      it("countPending counts pending payments not expired at now", async function () {
        const now = Date.now();
        const a = samplePayment({ expiresAt: now + 10_000 });
        const b = samplePayment({ expiresAt: now + 20_000 });
        await store.createPayment(a);
        await store.createPayment(b);
        await store.createPayment(samplePayment({ expiresAt: now - 1 }));
        await paidPayment(store);
        assert.equal(await store.countPending(now), 2);
        assert.equal(await store.countPending(now + 15_000), 1);
        assert.equal(await store.countPending(now + 20_000), 0);
        await store.markPaid(a.paymentId, { paidAt: now });
        assert.equal(await store.countPending(now), 1);
      });
    });

    describe("reserveCall", function () {
      it("unknown_token", async function () {
        const r = await store.reserveCall(hashToken(generatePaymentToken()), "svc", Date.now(), 30_000);
        assert.deepEqual(r, { ok: false, reason: "unknown_token" });
      });

      it("pending", async function () {
        const p = samplePayment();
        await store.createPayment(p);
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
        assert.deepEqual(r, { ok: false, reason: "pending", payment: p });
      });

      it("expired (paid, or pending, past expiresAt)", async function () {
        const p = await paidPayment(store, { maxCalls: 5 });
        const r = await store.reserveCall(p.tokenHash, "svc", p.expiresAt, 30_000);
        assert.equal(r.ok, false);
        assert.equal(!r.ok && r.reason, "expired");
        assert.deepEqual(!r.ok && r.payment, p);
        const q = samplePayment();
        await store.createPayment(q);
        const s = await store.reserveCall(q.tokenHash, "svc", q.expiresAt + 1, 30_000);
        assert.equal(!s.ok && s.reason, "expired");
      });

      it("wrong_service", async function () {
        const p = await paidPayment(store);
        const r = await store.reserveCall(p.tokenHash, "other", Date.now(), 30_000);
        assert.equal(!r.ok && r.reason, "wrong_service");
      });

      it("ok, then exhausted while the only call is reserved and after it is used", async function () {
        const p = await paidPayment(store, { payer: "0xpayer", network: "eip155:84532" });
        const now = Date.now();
        const r = await store.reserveCall(p.tokenHash, "svc", now, 30_000);
        assert.ok(r.ok);
        assert.equal(typeof r.reservationId, "string");
        // at least the ReservedPayment fields, as stored
        for (const f of RESERVED_PAYMENT_FIELDS) assert.deepEqual(r.payment[f], p[f], f);
        const busy = await store.reserveCall(p.tokenHash, "svc", now, 30_000);
        assert.equal(!busy.ok && busy.reason, "exhausted");
        assert.equal(await store.commitCall(r.reservationId), true);
        const used = await store.reserveCall(p.tokenHash, "svc", now, 30_000);
        assert.equal(!used.ok && used.reason, "exhausted");
        assert.equal(!used.ok && used.payment?.callsUsed, 1);
      });

      it("50 concurrent reserves on a 1-call token: exactly one ok", async function () {
        const p = await paidPayment(store);
        const now = Date.now();
        const results = await Promise.all(Array.from({ length: 50 }, () => store.reserveCall(p.tokenHash, "svc", now, 30_000)));
        assert.equal(count(results, (r) => r.ok), 1);
        assert.equal(count(results, (r) => !r.ok && r.reason === "exhausted"), 49);
      });

      it("50 concurrent reserves on a 3-call token: exactly three ok, all distinct", async function () {
        const p = await paidPayment(store, { maxCalls: 3 });
        const now = Date.now();
        const results = await Promise.all(Array.from({ length: 50 }, () => store.reserveCall(p.tokenHash, "svc", now, 30_000)));
        const ids = results.flatMap((r) => (r.ok ? [r.reservationId] : []));
        assert.equal(ids.length, 3);
        assert.equal(new Set(ids).size, 3);
        const commits = await Promise.all(ids.map((id) => store.commitCall(id)));
        assert.deepEqual(commits, [true, true, true]);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 3);
      });
    });

    describe("commit and release", function () {
      it("commit uses the call exactly once", async function () {
        const p = await paidPayment(store, { maxCalls: 2 });
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
        assert.ok(r.ok);
        const commits = await Promise.all(Array.from({ length: 10 }, () => store.commitCall(r.reservationId)));
        assert.equal(count(commits, (c) => c), 1);
        await store.releaseCall(r.reservationId); // after commit: no effect
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
      });

      it("release gives the call back, is idempotent, and a released reservation cannot commit", async function () {
        const p = await paidPayment(store);
        const now = Date.now();
        const r = await store.reserveCall(p.tokenHash, "svc", now, 30_000);
        assert.ok(r.ok);
        await store.releaseCall(r.reservationId);
        await store.releaseCall(r.reservationId);
        assert.equal(await store.commitCall(r.reservationId), false);
        const again = await store.reserveCall(p.tokenHash, "svc", now, 30_000);
        assert.ok(again.ok);
        assert.equal(await store.commitCall(again.reservationId), true);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
      });

      it("a lapsed lease gives the call back; the reclaimed reservation no longer commits", async function () {
        const p = await paidPayment(store);
        const t = Date.now();
        const first = await store.reserveCall(p.tokenHash, "svc", t, 1000);
        assert.ok(first.ok);
        const during = await store.reserveCall(p.tokenHash, "svc", t + 999, 1000);
        assert.equal(!during.ok && during.reason, "exhausted");
        const after = await store.reserveCall(p.tokenHash, "svc", t + 1000, 1000);
        assert.ok(after.ok);
        assert.notEqual(after.reservationId, first.reservationId);
        assert.equal(await store.commitCall(first.reservationId), false);
        assert.equal(await store.commitCall(after.reservationId), true);
        const done = await store.reserveCall(p.tokenHash, "svc", t + 5000, 1000);
        assert.equal(!done.ok && done.reason, "exhausted");
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
      });

      it("a lapsed reservation nobody reclaimed still commits", async function () {
        const p = await paidPayment(store);
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now() - 10_000, 1000);
        assert.ok(r.ok);
        assert.equal(await store.commitCall(r.reservationId), true);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
        const next = await store.reserveCall(p.tokenHash, "svc", Date.now(), 1000);
        assert.equal(!next.ok && next.reason, "exhausted");
      });

      it("unknown or malformed reservation ids: commit false, release no-op", async function () {
        for (const id of ["", "nope", "rsv_x.", "rsv_abc.pay_missing"]) {
          assert.equal(await store.commitCall(id), false);
          await store.releaseCall(id);
        }
      });
    });

    // --- lease renewal (issue 14 A4) ---
    describe("renewCall", function () {
      it("A4 lease overrun: a renewed reservation outlives its first lease, holds the call, and commits once", async function () {
        const p = await paidPayment(store);
        const t = Date.now();
        const r = await store.reserveCall(p.tokenHash, "svc", t, 1000);
        assert.ok(r.ok);
        assert.equal(await store.renewCall(r.reservationId, t + 800, 1000), true);
        const during = await store.reserveCall(p.tokenHash, "svc", t + 1500, 1000);
        assert.equal(!during.ok && during.reason, "exhausted", "the renewed lease still holds the only call");
        assert.equal(await store.commitCall(r.reservationId), true);
        assert.equal(await store.commitCall(r.reservationId), false);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
      });

      it("A4 lease overrun: the renewed lease lapses in turn; a reclaimed, released, committed or unknown reservation is not renewed", async function () {
        const p = await paidPayment(store, { maxCalls: 3 });
        const t = Date.now();
        const a = await store.reserveCall(p.tokenHash, "svc", t, 1000);
        assert.ok(a.ok);
        assert.equal(await store.renewCall(a.reservationId, t + 500, 1000), true);
        // lapsed at t + 1500 and reclaimed by the reserves below (3 calls: a's is free again)
        const others = await Promise.all([0, 1, 2].map(() => store.reserveCall(p.tokenHash, "svc", t + 1500, 60_000)));
        assert.equal(count(others, (r) => r.ok), 3);
        assert.equal(await store.renewCall(a.reservationId, t + 1600, 1000), false);
        const [b, c] = others.flatMap((r) => (r.ok ? [r.reservationId] : []));
        await store.releaseCall(b!);
        assert.equal(await store.renewCall(b!, t + 1600, 1000), false);
        assert.equal(await store.commitCall(c!), true);
        assert.equal(await store.renewCall(c!, t + 1600, 1000), false);
        for (const id of ["", "nope", "rsv_x.", "rsv_abc.pay_missing"]) assert.equal(await store.renewCall(id, t, 1000), false);
      });
    });
    // --- end lease renewal ---

    describe("ledger", function () {
      const entry = (i: number): LedgerEntry => ({
        time: 1_700_000_000_000 + i,
        method: i % 2 ? "token" : "x402",
        payer: `0xpayer${i}`,
        amount: String(1000 * i),
        asset: "0xasset",
        network: "eip155:84532",
        resource: `GET /r/${i}`,
        ...(i % 2 ? { serviceId: "svc", paymentId: `pay_${i}` } : { transaction: `0xtx${i}` }),
      });

      it("append returns increasing ids; list returns entries oldest first", async function () {
        const ids: number[] = [];
        for (let i = 1; i <= 5; i++) ids.push(await store.appendLedger(entry(i)));
        for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1]);
        const all = await store.listLedger();
        assert.deepEqual(
          all,
          ids.map((id, i) => ({ ...entry(i + 1), id })),
        );
      });

      it("pages with afterId and limit", async function () {
        const ids: number[] = [];
        for (let i = 1; i <= 7; i++) ids.push(await store.appendLedger(entry(i)));
        const page1 = await store.listLedger({ limit: 3 });
        assert.deepEqual(page1.map((e) => e.id), ids.slice(0, 3));
        const page2 = await store.listLedger({ afterId: page1[2].id, limit: 3 });
        assert.deepEqual(page2.map((e) => e.id), ids.slice(3, 6));
        const page3 = await store.listLedger({ afterId: page2[2].id, limit: 3 });
        assert.deepEqual(page3.map((e) => e.id), ids.slice(6));
        assert.deepEqual(await store.listLedger({ afterId: ids[6] }), []);
      });

      it("concurrent appends get distinct ids", async function () {
        const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => store.appendLedger(entry(i))));
        assert.equal(new Set(ids).size, 30);
        assert.equal((await store.listLedger({ limit: 100 })).length, 30);
      });
    });

    it("ping resolves", async function () {
      await store.ping();
    });

    // ---- Settlement records (issue 14 B10/B11): outbox, once-only ledger appends, held answers ----
    describe("settlement records", function () {
      const ledgerEntry = (tx: string): LedgerEntry => ({ time: Date.now(), method: "x402", payer: "0xp", amount: "10", asset: "0xa", network: "eip155:84532", transaction: tx, resource: "GET /r" });

      it("outbox: put replaces by id, list returns each once, delete is idempotent", async function () {
        const a = nonceKey();
        const b = nonceKey();
        await store.putOutbox(a, '{"n":1}');
        await store.putOutbox(b, '{"n":2}');
        await store.putOutbox(a, '{"n":3}');
        const items = await store.listOutbox(10);
        assert.deepEqual(items.map((i) => [i.id, i.record]).sort(), [[a, '{"n":3}'], [b, '{"n":2}']].sort());
        assert.equal((await store.listOutbox(1)).length, 1);
        await store.deleteOutbox(a);
        await store.deleteOutbox(a);
        assert.deepEqual(await store.listOutbox(10), [{ id: b, record: '{"n":2}' }]);
      });

      it("appendLedgerOnce: one entry per key, also under 20 concurrent tries", async function () {
        const key = nonceKey();
        const ids = await Promise.all(Array.from({ length: 20 }, () => store.appendLedgerOnce(key, ledgerEntry("0xt1"))));
        assert.equal(new Set(ids).size, 1);
        const other = await store.appendLedgerOnce(nonceKey(), ledgerEntry("0xt2"));
        assert.notEqual(other, ids[0]);
        assert.equal(await store.appendLedgerOnce(key, ledgerEntry("0xt3")), ids[0]);
        assert.deepEqual((await store.listLedger()).map((e) => e.transaction), ["0xt1", "0xt2"]);
      });

      it("releasePendingNonce deletes only a pending nonce", async function () {
        const [locked, pending, settled] = [nonceKey(), nonceKey(), nonceKey()];
        for (const k of [locked, pending, settled]) await store.claimNonce(k, Date.now() + 60_000);
        await store.setNonceState(pending, "pending", "0xtx");
        await store.setNonceState(settled, "settled", "0xtx");
        for (const k of [locked, pending, settled]) await store.releasePendingNonce(k);
        assert.deepEqual(await store.getNonce(locked), { state: "locked" });
        assert.equal(await store.getNonce(pending), undefined);
        assert.deepEqual(await store.getNonce(settled), { state: "settled", transaction: "0xtx" });
        assert.equal(await store.claimNonce(pending, Date.now() + 60_000), true);
      });

      it("held answers: put replaces, get until expiry, delete", async function () {
        const key = nonceKey();
        assert.equal(await store.getHeldAnswer(key), undefined);
        await store.putHeldAnswer(key, "a1", Date.now() + 60_000);
        await store.putHeldAnswer(key, "a2", Date.now() + 60_000);
        assert.equal(await store.getHeldAnswer(key), "a2");
        await store.deleteHeldAnswer(key);
        assert.equal(await store.getHeldAnswer(key), undefined);
        await store.putHeldAnswer(key, "a3", Date.now() + 50);
        await sleep(80);
        assert.equal(await store.getHeldAnswer(key), undefined, "an expired answer is gone");
      });
    });

    // ---- Payment identifiers (issue 17 part 3): idempotent retries ----
    describe("payment identifiers", function () {
      const pid = () => `0xpayto:pay_${process.pid}_${Date.now()}_${keySeq++}`;
      const MAX = 1000;

      it("claim once: the next claim gets the live record; update and release only by the owner", async function () {
        const key = pid();
        const exp = Date.now() + 60_000;
        assert.deepEqual(await store.claimPaymentId(key, "o1", "r1", exp, MAX), { ok: true });
        assert.deepEqual(await store.claimPaymentId(key, "o2", "r2", exp, MAX), { ok: false, record: "r1" });
        assert.equal(await store.updatePaymentId(key, "o2", "r3", exp), false, "not the owner");
        assert.equal(await store.updatePaymentId(key, "o1", "r4", exp), true);
        assert.deepEqual(await store.claimPaymentId(key, "o2", "r2", exp, MAX), { ok: false, record: "r4" });
        await store.releasePaymentId(key, "o2");
        assert.deepEqual(await store.claimPaymentId(key, "o2", "r2", exp, MAX), { ok: false, record: "r4" }, "another's release does nothing");
        await store.releasePaymentId(key, "o1");
        await store.releasePaymentId(key, "o1");
        assert.equal(await store.updatePaymentId(key, "o1", "r5", exp), false, "a released record is not updated");
        assert.deepEqual(await store.claimPaymentId(key, "o2", "r6", exp, MAX), { ok: true }, "a released identifier may be claimed again");
      });

      it("20 concurrent claims of one identifier: exactly one ok, the others see its record", async function () {
        const key = pid();
        const exp = Date.now() + 60_000;
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.claimPaymentId(key, `o${i}`, `r${i}`, exp, MAX)));
        const won = results.findIndex((r) => r.ok);
        assert.equal(count(results, (r) => r.ok), 1);
        for (const r of results) if (!r.ok) assert.deepEqual(r, { ok: false, record: `r${won}` });
      });

      it("an expired record is gone: claimed anew, and its owner can no longer update it", async function () {
        const key = pid();
        assert.deepEqual(await store.claimPaymentId(key, "o1", "r1", Date.now() + 50, MAX), { ok: true });
        await sleep(80);
        assert.equal(await store.updatePaymentId(key, "o1", "r2", Date.now() + 60_000), false);
        assert.deepEqual(await store.claimPaymentId(key, "o2", "r3", Date.now() + 60_000, MAX), { ok: true });
        assert.deepEqual(await store.claimPaymentId(key, "o3", "r4", Date.now() + 60_000, MAX), { ok: false, record: "r3" });
      });

      it("bounded: at maxEntries live records a new identifier is refused (full) until one expires or is released", async function () {
        const exp = Date.now() + 60_000;
        const keys = [pid(), pid(), pid()];
        assert.deepEqual(await store.claimPaymentId(keys[0]!, "o", "a", exp, 3), { ok: true });
        assert.deepEqual(await store.claimPaymentId(keys[1]!, "o", "b", Date.now() + 50, 3), { ok: true });
        assert.deepEqual(await store.claimPaymentId(keys[2]!, "o", "c", exp, 3), { ok: true });
        const extra = pid();
        assert.deepEqual(await store.claimPaymentId(extra, "o", "d", exp, 3), { ok: false, full: true });
        assert.deepEqual(await store.claimPaymentId(keys[0]!, "o2", "x", exp, 3), { ok: false, record: "a" }, "a live record is still answered when full");
        await sleep(80);
        assert.deepEqual(await store.claimPaymentId(extra, "o", "d", exp, 3), { ok: true }, "the expired record made room");
        assert.deepEqual(await store.claimPaymentId(pid(), "o", "e", exp, 3), { ok: false, full: true });
        await store.releasePaymentId(keys[2]!, "o");
        assert.deepEqual(await store.claimPaymentId(pid(), "o", "e", exp, 3), { ok: true }, "a released record made room");
      });
    });
  });
}
