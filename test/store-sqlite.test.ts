import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { StoreError } from "../lib/src/errors.js";
import { SqliteStore, SQLITE_SCHEMA_VERSION } from "../lib/src/state/sqlite.js";
import { paidPayment, runStoreConformance, samplePayment } from "./store-conformance.js";

const conformanceDir = mkdtempSync(join(tmpdir(), "server402-sqlite-"));
let conformanceSeq = 0;
runStoreConformance(
  "SqliteStore",
  async () => new SqliteStore({ path: join(conformanceDir, `db${conformanceSeq++}`, "state.db") }),
  async () => rmSync(conformanceDir, { recursive: true, force: true }),
);

const dir = mkdtempSync(join(tmpdir(), "server402-sqlite-"));
let seq = 0;
const freshPath = () => join(dir, `db${seq++}`, "state.db");

describe("SqliteStore file", function () {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("creates missing directories, uses WAL and records the schema version", async function () {
    const path = join(dir, "a", "b", "c", "state.db");
    const store = new SqliteStore({ path });
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get(), String(SQLITE_SCHEMA_VERSION));
    } finally {
      db.close();
    }
    const s2 = new SqliteStore({ path, synchronous: "normal" });
    await s2.close();
  });

  it("keeps state across close and reopen", async function () {
    const path = freshPath();
    const a = new SqliteStore({ path });
    const p = await paidPayment(a, { maxCalls: 2 });
    const r = await a.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
    assert.ok(r.ok);
    await a.commitCall(r.reservationId);
    await a.appendLedger({ time: 1, method: "token", payer: "0xp", amount: "50000", asset: "0xa", network: "n", resource: "GET /", paymentId: p.paymentId });
    await a.close();
    const b = new SqliteStore({ path });
    assert.deepEqual(await b.getPayment(p.paymentId), { ...p, callsUsed: 1 });
    assert.equal((await b.listLedger()).length, 1);
    await b.close();
  });

  it("refuses a database written by a newer schema version", async function () {
    const path = freshPath();
    await new SqliteStore({ path }).close();
    const db = new Database(path);
    db.prepare("UPDATE meta SET value = '999' WHERE key = 'schema_version'").run();
    db.close();
    assert.throws(() => new SqliteStore({ path }), (e: unknown) => e instanceof StoreError && /newer/.test(e.message));
  });

  it("wraps failures in StoreError", async function () {
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "x");
    assert.throws(() => new SqliteStore({ path: join(file, "state.db") }), StoreError);
    const garbage = join(dir, "garbage.db");
    writeFileSync(garbage, "this is not a database".repeat(100));
    assert.throws(() => new SqliteStore({ path: garbage }), StoreError);
    const store = new SqliteStore({ path: freshPath() });
    await store.close();
    await assert.rejects(store.getPayment("pay_x"), { code: "store_unavailable" });
    await assert.rejects(store.ping(), StoreError);
  });

  it("two stores on one file share reservations", async function () {
    const path = freshPath();
    const a = new SqliteStore({ path });
    const b = new SqliteStore({ path });
    try {
      const p = await paidPayment(a);
      const now = Date.now();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).reserveCall(p.tokenHash, "svc", now, 30_000)));
      assert.equal(results.filter((r) => r.ok).length, 1);
      const won = results.find((r) => r.ok)!;
      assert.ok(won.ok);
      assert.equal(await b.commitCall(won.reservationId), true);
      assert.equal((await a.getPayment(p.paymentId))!.callsUsed, 1);
      await b.createPayment(samplePayment({ paymentId: "pay_shared" }));
      await assert.rejects(a.createPayment(samplePayment({ paymentId: "pay_shared" })), { code: "duplicate_payment" });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("reserves made in one tick (one batch): one that fails inside the database is refused alone, the others are done", async function () {
    const path = freshPath();
    const store = new SqliteStore({ path });
    const spy = new Database(path);
    try {
      const good = await paidPayment(store, { maxCalls: 5 });
      const bad = await paidPayment(store);
      // a trigger makes every reservation on `bad` fail inside the batch
      spy.exec(`CREATE TRIGGER refuse BEFORE INSERT ON reservations WHEN NEW.paymentId = '${bad.paymentId}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END`);
      const now = Date.now();
      const settled = await Promise.allSettled([
        store.reserveCall(good.tokenHash, "svc", now, 30_000),
        store.reserveCall(bad.tokenHash, "svc", now, 30_000),
        store.reserveCall(good.tokenHash, "svc", now, 30_000),
      ]);
      assert.equal(settled[1]!.status, "rejected");
      assert.ok((settled[1] as PromiseRejectedResult).reason instanceof StoreError);
      assert.match((settled[1] as PromiseRejectedResult).reason.message, /reserveCall failed: refused by test/);
      const oks = settled.filter((r) => r.status === "fulfilled" && r.value.ok) as PromiseFulfilledResult<{ ok: true; reservationId: string }>[];
      assert.equal(oks.length, 2);
      // both reservations on `good` are in the file, the failed one left nothing behind
      assert.equal(spy.prepare("SELECT count(*) FROM reservations WHERE paymentId = ?").pluck().get(good.paymentId), 2);
      assert.equal(spy.prepare("SELECT count(*) FROM reservations WHERE paymentId = ?").pluck().get(bad.paymentId), 0);
      assert.deepEqual(await Promise.all(oks.map((r) => store.commitCall(r.value.reservationId))), [true, true]);
      assert.equal((await store.getPayment(good.paymentId))!.callsUsed, 2);
    } finally {
      spy.close();
      await store.close();
    }
  });

  it("a paid token and its reservation survive kill -9; the call comes back once the lease lapses", async function () {
    const path = freshPath();
    const child = spawn(
      process.execPath,
      ["--conditions=server402-source", "--import", "tsx", fileURLToPath(new URL("./support/sqlite-crash-child.ts", import.meta.url)), path],
      { cwd: fileURLToPath(new URL("..", import.meta.url)), stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    const ready = await new Promise<{ paymentId: string; tokenHash: string; leaseUntil: number; reservationId: string }>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        const m = /READY (.*)\n/.exec(out);
        if (m) resolve(JSON.parse(m[1]));
      });
      child.on("exit", (code) => reject(new Error(`child exited early (${code}): ${out}`)));
    });
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL");

    const store = new SqliteStore({ path });
    try {
      const p = await store.getPayment(ready.paymentId);
      assert.ok(p);
      assert.equal(p.status, "paid");
      assert.equal(p.transaction, "0xpaid");
      assert.equal(p.callsUsed, 0);
      // The dead process's lease still holds the only call...
      const held = await store.reserveCall(ready.tokenHash, "svc", ready.leaseUntil - 1, 30_000);
      assert.equal(!held.ok && held.reason, "exhausted");
      // ...until it lapses; then exactly one new reservation gets it.
      const after = ready.leaseUntil;
      const results = await Promise.all(Array.from({ length: 10 }, () => store.reserveCall(ready.tokenHash, "svc", after, 30_000)));
      const won = results.filter((r) => r.ok);
      assert.equal(won.length, 1);
      assert.ok(won[0].ok);
      assert.equal(await store.commitCall(won[0].reservationId), true);
      assert.equal(await store.commitCall(won[0].reservationId), false);
      assert.equal(await store.commitCall(ready.reservationId), false);
      assert.equal((await store.getPayment(ready.paymentId))!.callsUsed, 1);
      const done = await store.reserveCall(ready.tokenHash, "svc", after + 60_000, 30_000);
      assert.equal(!done.ok && done.reason, "exhausted");
    } finally {
      await store.close();
    }
  });
});
