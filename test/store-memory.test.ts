import assert from "node:assert/strict";
import { MemoryStore } from "../lib/src/state/memory.js";
import { paidPayment, runStoreConformance, samplePayment } from "./store-conformance.js";

runStoreConformance("MemoryStore", async () => new MemoryStore());

describe("MemoryStore housekeeping", function () {
  it("sweep drops expired nonces, long-lapsed reservations and payments past retention", async function () {
    const store = new MemoryStore({ paymentRetentionMs: 1000 });
    try {
      const now = Date.now();
      for (let i = 0; i < 1000; i++) await store.claimNonce(`k${i}`, now + 50);
      const p = await paidPayment(store, { maxCalls: 2 });
      const r = await store.reserveCall(p.tokenHash, "svc", now, 10);
      assert.ok(r.ok);
      await store.createPayment(samplePayment({ expiresAt: now - 2000 }));
      assert.deepEqual(store.stats(), { nonces: 1000, payments: 2, reservations: 1, ledger: 0 });

      store.sweep(now + 100);
      assert.deepEqual(store.stats(), { nonces: 0, payments: 1, reservations: 1, ledger: 0 });
      store.sweep(now + 3600_000 + 20);
      assert.equal(store.stats().reservations, 0);
      assert.equal(await store.commitCall(r.reservationId), false);
    } finally {
      await store.close();
    }
  });

  it("several live reservations on one payment end in any order", async function () {
    const store = new MemoryStore();
    try {
      const now = Date.now();
      const p = await paidPayment(store, { maxCalls: 4 });
      const rs = await Promise.all([0, 1, 2].map(() => store.reserveCall(p.tokenHash, "svc", now, 60_000)));
      assert.ok(rs.every((r) => r.ok));
      const [a, b, c] = rs.map((r) => (r.ok ? r.reservationId : ""));
      assert.equal(store.stats().reservations, 3);
      assert.equal(await store.commitCall(b!), true);
      assert.equal(await store.commitCall(b!), false, "a reservation commits once");
      await store.releaseCall(a!);
      await store.releaseCall(a!);
      assert.equal(store.stats().reservations, 1);
      // 4 calls: 1 used, 1 live (c) → two more can be reserved, then none
      const d = await store.reserveCall(p.tokenHash, "svc", now, 60_000);
      const e = await store.reserveCall(p.tokenHash, "svc", now, 60_000);
      assert.ok(d.ok && e.ok);
      assert.equal((await store.reserveCall(p.tokenHash, "svc", now, 60_000)).ok, false);
      assert.equal(await store.commitCall(c!), true);
      assert.equal(await store.commitCall(d.reservationId), true);
      await store.releaseCall(e.reservationId);
      assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 3);
      assert.equal(store.stats().reservations, 0);
      // the last call, then exhausted; a lapsed lease is dropped when the next reserve looks
      const f = await store.reserveCall(p.tokenHash, "svc", now, 10);
      assert.ok(f.ok);
      const g = await store.reserveCall(p.tokenHash, "svc", now + 20, 60_000);
      assert.ok(g.ok, "the lapsed reservation gave its call back");
      assert.equal(await store.commitCall(f.reservationId), false);
      const h = await store.reserveCall(p.tokenHash, "svc", now + 20, 60_000);
      assert.equal(h.ok ? "ok" : h.reason, "exhausted");
    } finally {
      await store.close();
    }
  });

  it("keeps only the newest maxLedgerEntries ledger records", async function () {
    const store = new MemoryStore({ maxLedgerEntries: 100 });
    let last = 0;
    for (let i = 0; i < 1000; i++) {
      last = await store.appendLedger({ time: i, method: "x402", payer: "0xp", amount: "1", asset: "0xa", network: "n", resource: "GET /" });
    }
    assert.ok(store.stats().ledger <= 100 + 16);
    const tail = await store.listLedger({ afterId: last - 10 });
    assert.deepEqual(tail.map((e) => e.id), Array.from({ length: 10 }, (_, i) => last - 9 + i));
    await store.close();
  });
});
