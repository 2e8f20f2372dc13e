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
