import assert from "node:assert/strict";
import { startSilentServer, type SilentServer } from "./support/silent-server.js";
import express from "express";
import pg from "pg";
import request from "supertest";
import { paywall } from "../lib/src/adapters/express/paywall.js";
import { facilitatorSettler } from "../lib/src/chain/facilitator.js";
import { generatePaymentToken } from "../lib/src/state/tokens.js";
import { StoreError } from "../lib/src/errors.js";
import { PostgresStore, POSTGRES_MIGRATIONS, POSTGRES_SCHEMA_VERSION } from "../lib/src/state/postgres.js";
import { startFaultProxy } from "./reliability/fault-proxy.js";
import type { ReserveResult } from "../lib/src/state/store.js";
import { paidPayment, runStoreConformance, samplePayment } from "./store-conformance.js";

const url = process.env.DATABASE_URL;
/** Every schema this run creates starts with this; the `after` hooks drop them. */
const runPrefix = `s402_test_${process.pid}_${Date.now().toString(36)}_`;
let seq = 0;
const freshSchema = () => `${runPrefix}${seq++}`;

/** `url` with a query parameter set (e.g. a unique application_name to find the store's connections). */
function withParam(base: string, key: string, value: string): string {
  const u = new URL(base);
  u.searchParams.set(key, value);
  return u.toString();
}

async function cleanup(): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ nspname: string }>("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", [runPrefix]);
    for (const { nspname } of rows) await client.query(`DROP SCHEMA "${nspname}" CASCADE`);
  } finally {
    await client.end();
  }
}

if (!url) {
  describe("PostgresStore", function () {
    it("needs DATABASE_URL", function () {
      console.log("    PostgresStore tests skipped: set DATABASE_URL (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test) to run them");
      this.skip();
    });
  });
} else {
  runStoreConformance("PostgresStore", async () => PostgresStore.open({ connectionString: url, schema: freshSchema() }), cleanup);

  describe("PostgresStore on a shared database", function () {
    after(cleanup);

    it("two stores on separate pools: 100 concurrent reserves of a 1-call token give exactly one ok", async function () {
      const schema = freshSchema();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.notEqual(a.pool, b.pool);
        const p = await paidPayment(a);
        const now = Date.now();
        const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).reserveCall(p.tokenHash, "svc", now, 30_000)));
        assert.equal(results.filter((r) => r.ok).length, 1);
        const won = results.find((r) => r.ok) as Extract<ReserveResult, { ok: true }>;
        // Commit through both pools at once; only one commit counts.
        const commits = await Promise.all([a.commitCall(won.reservationId), b.commitCall(won.reservationId)]);
        assert.deepEqual(commits.sort(), [false, true]);
        assert.equal((await b.getPayment(p.paymentId))!.callsUsed, 1);

        const q = await paidPayment(b, { maxCalls: 5 });
        const many = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).reserveCall(q.tokenHash, "svc", now, 30_000)));
        assert.equal(many.filter((r) => r.ok).length, 5);
        await b.createPayment(samplePayment({ paymentId: "pay_shared" }));
        await assert.rejects(a.createPayment(samplePayment({ paymentId: "pay_shared" })), { code: "duplicate_payment" });
      } finally {
        await a.close();
        await b.close();
      }
    });

    it("batches from two stores touching the same payments in opposite orders never deadlock", async function () {
      const schema = freshSchema();
      const a = await PostgresStore.open({ connectionString: url, schema });
      const b = await PostgresStore.open({ connectionString: url, schema });
      try {
        const ps = await Promise.all(Array.from({ length: 6 }, () => paidPayment(a, { maxCalls: 1000 })));
        const now = Date.now();
        for (let round = 0; round < 20; round++) {
          // a reserves in one order, b in the reverse, in the same turn: each store sends one batch
          const results = await Promise.all([
            ...ps.map((p) => a.reserveCall(p.tokenHash, "svc", now, 30_000)),
            ...[...ps].reverse().map((p) => b.reserveCall(p.tokenHash, "svc", now, 30_000)),
          ]);
          assert.ok(results.every((r) => r.ok));
          await Promise.all(results.map((r, i) => (i % 2 ? a : b).commitCall((r as Extract<ReserveResult, { ok: true }>).reservationId)));
        }
        for (const p of ps) assert.equal((await a.getPayment(p.paymentId))!.callsUsed, 40);
      } finally {
        await a.close();
        await b.close();
      }
    });

    it("reserves made in one tick (one batch): one that fails inside the database is refused alone, the others are done", async function () {
      const schema = freshSchema();
      const store = await PostgresStore.open({ connectionString: url, schema });
      try {
        const good = await paidPayment(store, { maxCalls: 5 });
        const bad = await paidPayment(store);
        // a trigger makes every reservation on `bad` fail inside the batch
        await store.pool.query(`CREATE FUNCTION "${schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN IF NEW.payment_id = '${bad.paymentId}' THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$`);
        await store.pool.query(`CREATE TRIGGER refuse BEFORE INSERT ON "${schema}".reservations FOR EACH ROW EXECUTE FUNCTION "${schema}".refuse()`);
        const now = Date.now();
        const settled = await Promise.allSettled([
          store.reserveCall(good.tokenHash, "svc", now, 30_000),
          store.reserveCall(bad.tokenHash, "svc", now, 30_000),
          store.reserveCall(good.tokenHash, "svc", now, 30_000),
        ]);
        assert.equal(settled[1]!.status, "rejected");
        const reason = (settled[1] as PromiseRejectedResult).reason;
        assert.ok(reason instanceof StoreError);
        assert.match(reason.message, /reserveCall failed: refused by test/);
        const oks = settled.filter((r) => r.status === "fulfilled" && r.value.ok) as PromiseFulfilledResult<{ ok: true; reservationId: string }>[];
        assert.equal(oks.length, 2);
        const count = async (pid: string) => Number((await store.pool.query(`SELECT count(*) AS n FROM "${schema}".reservations WHERE payment_id = $1`, [pid])).rows[0].n);
        assert.equal(await count(good.paymentId), 2);
        assert.equal(await count(bad.paymentId), 0);
        assert.deepEqual(await Promise.all(oks.map((r) => store.commitCall(r.value.reservationId))), [true, true]);
        assert.equal((await store.getPayment(good.paymentId))!.callsUsed, 2);
      } finally {
        await store.close();
      }
    });

    it("migrations: 5 stores opening a new schema at once all succeed; reopening keeps the data; a newer version is refused", async function () {
      const schema = freshSchema();
      const stores = await Promise.all(Array.from({ length: 5 }, () => PostgresStore.open({ connectionString: url, schema })));
      try {
        const p = await paidPayment(stores[0]!);
        await stores[1]!.appendLedger({ time: 1, method: "token", payer: "0xp", amount: "200000", asset: "0xa", network: "n", resource: "POST /", paymentId: p.paymentId });
        const { rows } = await stores[2]!.pool.query(`SELECT value FROM "${schema}".meta WHERE key = 'schema_version'`);
        assert.deepEqual(rows, [{ value: String(POSTGRES_SCHEMA_VERSION) }]);
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
      const again = await PostgresStore.open({ connectionString: url, schema });
      try {
        assert.equal((await again.listLedger()).length, 1);
        await again.pool.query(`UPDATE "${schema}".meta SET value = '999' WHERE key = 'schema_version'`);
      } finally {
        await again.close();
      }
      await assert.rejects(PostgresStore.open({ connectionString: url, schema }), (e: unknown) => e instanceof StoreError && /version 999, newer/.test(e.message));
    });

    it("migration 1 → 2: a schema written at version 1 keeps its nonces and ledger, and gains payer holds, the outbox and held answers", async function () {
      const schema = freshSchema();
      const s = `"${schema}"`;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const now = Date.now();
      try {
        await client.query(`CREATE SCHEMA ${s}; CREATE TABLE ${s}.meta (key text PRIMARY KEY, value text NOT NULL)`);
        await client.query(POSTGRES_MIGRATIONS[0]!(s));
        await client.query(`INSERT INTO ${s}.meta VALUES ('schema_version', '1')`);
        await client.query(`INSERT INTO ${s}.nonces (key, state, expires_at) VALUES ('k-locked', 'locked', $1), ('k-settled', 'settled', $1)`, [now + 60_000]);
        await client.query(`INSERT INTO ${s}.ledger (time, method, payer, amount, asset, network, resource) VALUES (1, 'x402', '0xp', 10, '0xa', 'n', 'GET /')`);
      } finally {
        await client.end();
      }
      // three instances start on the old schema at once: one migrates, all open
      const stores = await Promise.all([0, 1, 2].map(() => PostgresStore.open({ connectionString: url, schema })));
      try {
        const [a, b] = stores as [PostgresStore, PostgresStore];
        assert.deepEqual((await a.pool.query(`SELECT value FROM ${s}.meta WHERE key = 'schema_version'`)).rows, [{ value: String(POSTGRES_SCHEMA_VERSION) }]);
        assert.deepEqual(await b.getNonce("k-locked"), { state: "locked" });
        assert.deepEqual(await b.claimPayerNonce("k-settled", now + 60_000, { payer: "0xp", amount: "1", maxInFlight: 1, maxRetries: 0 }), { ok: false, reason: "used" });
        assert.deepEqual((await a.listLedger()).map((e) => [e.amount, e.resource]), [["10", "GET /"]]);
        // the v1 nonce holds nothing for a payer; a new claim does
        const hold = { payer: "0xp", amount: "5", balance: "5", maxInFlight: 4, maxRetries: 0 };
        assert.deepEqual(await a.claimPayerNonce("k-new", now + 60_000, hold), { ok: true, others: 0 });
        assert.deepEqual(await b.claimPayerNonce("k-new2", now + 60_000, hold), { ok: false, reason: "insufficient_funds", held: "5" });
        await a.putOutbox("k-new", "{}");
        assert.deepEqual(await b.listOutbox(5), [{ id: "k-new", record: "{}" }]);
        await b.putHeldAnswer("k-new", "answer", now + 60_000);
        assert.equal(await a.getHeldAnswer("k-new"), "answer");
      } finally {
        await Promise.all(stores.map((x) => x.close()));
      }
    });

    it("the pool stays within max: 200 concurrent operations on max 3 connections", async function () {
      const app = `s402-pool-${process.pid}-${seq}`;
      const store = await PostgresStore.open({ connectionString: withParam(url, "application_name", app), schema: freshSchema(), max: 3 });
      const watcher = new pg.Client({ connectionString: url });
      await watcher.connect();
      try {
        const p = await paidPayment(store, { maxCalls: 1000 });
        let peak = 0;
        let done = false;
        const watch = (async () => {
          while (!done) {
            const { rows } = await watcher.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [app]);
            peak = Math.max(peak, rows[0].n);
          }
        })();
        const ops = await Promise.all(
          Array.from({ length: 200 }, (_, i) => (i % 2 ? store.getPayment(p.paymentId) : store.claimNonce(`k${i}`, Date.now() + 60_000))),
        );
        done = true;
        await watch;
        assert.equal(ops.length, 200);
        assert.ok(peak >= 1 && peak <= 3, `peak connections ${peak}`);
      } finally {
        await watcher.end();
        await store.close();
      }
    });

    it("a connection the server drops while idle does not crash the process; the next call gets a new one", async function () {
      const app = `s402-drop-${process.pid}-${seq}`;
      const store = await PostgresStore.open({ connectionString: withParam(url, "application_name", app), schema: freshSchema() });
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        await store.ping();
        const { rows } = await admin.query("SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1", [app]);
        assert.ok(rows[0].n >= 1);
        await new Promise((r) => setTimeout(r, 200));
        await store.ping();
        const p = await paidPayment(store);
        assert.ok((await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000)).ok);
      } finally {
        await admin.end();
        await store.close();
      }
    });

    it("money records written while the database is unreachable are written once it is back; new work fails fast with store_unavailable", async function () {
      const target = new URL(url);
      const proxy = await startFaultProxy(Number(target.port || 5432), target.hostname);
      const viaProxy = new URL(url);
      viaProxy.port = new URL(proxy.url).port;
      const schema = freshSchema();
      const store = await PostgresStore.open({ connectionString: viaProxy.toString(), schema });
      try {
        const p = await paidPayment(store, { maxCalls: 3 });
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
        assert.ok(r.ok);
        await store.claimNonce("n-outage", Date.now() + 60_000);
        proxy.set({ kind: "down" });
        // the call was served and the transfer made: these must land once the database is back
        const writes = Promise.all([
          store.appendLedger({ time: 1, method: "x402", payer: "0xp", amount: "200000", asset: "0xa", network: "n", transaction: "0xt", resource: "POST /" }),
          store.commitCall(r.reservationId),
          store.setNonceState("n-outage", "settled", "0xt"),
        ]);
        // new work is refused at once, so the client gets a 503 and is not charged
        for (const op of [() => store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000), () => store.claimNonce("n-new", Date.now() + 60_000), () => store.getPayment(p.paymentId)]) {
          const t0 = Date.now();
          await assert.rejects(op(), (e: unknown) => e instanceof StoreError && e.code === "store_unavailable");
          assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
        }
        await new Promise((res) => setTimeout(res, 1500));
        proxy.set({ kind: "pass" });
        const [id, committed] = await writes;
        assert.equal(committed, true);
        assert.deepEqual((await store.listLedger()).map((e) => e.id), [id]);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
        assert.deepEqual(await store.getNonce("n-outage"), { state: "settled", transaction: "0xt" });
      } finally {
        await store.close();
        await proxy.close();
      }
    });

    it("a ledger append whose reply is lost (query timeout) and is retried is written once", async function () {
      const schema = freshSchema();
      // migrated first with the default timeout: the migrations alone can take over 300 ms on a loaded machine
      await (await PostgresStore.open({ connectionString: url, schema })).close();
      const store = await PostgresStore.open({ connectionString: url, schema, queryTimeoutMs: 300 });
      const holder = new pg.Client({ connectionString: url });
      await holder.connect();
      try {
        // hold the ledger's lock: every attempt waits in the database, times out here, and is sent again
        await holder.query("SELECT pg_advisory_lock(hashtext($1))", [`server402 ledger "${schema}"`]);
        const append = store.appendLedger({ time: 7, method: "token", payer: "op", amount: "200000", asset: "USD", network: "off-chain", resource: "POST /p", paymentId: "pay_x" });
        await new Promise((res) => setTimeout(res, 1200));
        await holder.query("SELECT pg_advisory_unlock(hashtext($1))", [`server402 ledger "${schema}"`]);
        const id = await append;
        // the abandoned attempts finish in the database too; give them time, then count
        await new Promise((res) => setTimeout(res, 300));
        const { rows } = await holder.query(`SELECT id FROM "${schema}".ledger`);
        assert.deepEqual(rows.map((r) => Number(r.id)), [id]);
      } finally {
        await holder.end();
        await store.close();
      }
    });

    it("sweep deletes expired nonces, given-back counts and held answers, long-lapsed reservations and payments past retention", async function () {
      const schema = freshSchema();
      const store = await PostgresStore.open({ connectionString: url, schema, paymentRetentionMs: 1000 });
      try {
        const now = Date.now();
        await store.claimNonce("old", now + 10);
        await store.claimNonce("live", now + 60_000);
        // a run given back on a lock that expires at once, and a held answer past its time
        await store.claimPayerNonce("back", now + 10, { payer: "0xp", amount: "1", maxInFlight: 1, maxRetries: 1 });
        assert.equal(await store.giveBackNonce("back"), 1);
        await store.putHeldAnswer("held-old", "a", now + 10);
        await store.putHeldAnswer("held-live", "b", now + 60_000);
        const old = await paidPayment(store, { expiresAt: now + 50 });
        const kept = await paidPayment(store, { maxCalls: 2 });
        const r = await store.reserveCall(kept.tokenHash, "svc", now - 2 * 3600_000, 1000);
        assert.ok(r.ok);
        const r2 = await store.reserveCall(old.tokenHash, "svc", now, 30_000);
        assert.ok(r2.ok);
        await store.sweep(now + 5000);
        const n = async (table: string) => Number((await store.pool.query(`SELECT count(*) AS n FROM "${schema}".${table}`)).rows[0].n);
        assert.equal(await n("nonces"), 1);
        assert.equal(await n("given_back"), 0);
        assert.equal(await n("held_answers"), 1);
        assert.equal(await store.getPayment(old.paymentId), undefined);
        assert.ok(await store.getPayment(kept.paymentId));
        assert.equal(await n("reservations"), 0);
        assert.equal(await store.commitCall(r.reservationId), false);
      } finally {
        await store.close();
      }
    });
  });
}

describe("PostgresStore with the database down", function () {
  let silent: SilentServer;
  before(async () => (silent = await startSilentServer()));
  after(() => silent.close());
  for (const [what, targetOf] of [
    ["refused connection", () => "postgres://postgres@127.0.0.1:1/test"],
    ["a server that accepts and never answers", () => `postgres://postgres@127.0.0.1:${silent.port}/test`],
  ] as const) {
    it(`${what}: open() and operations fail with StoreError (store_unavailable) within ~2 s`, async function () {
      const target = targetOf();
      let t0 = Date.now();
      await assert.rejects(PostgresStore.open({ connectionString: target }), (e: unknown) => e instanceof StoreError && e.code === "store_unavailable");
      assert.ok(Date.now() - t0 < 2500, `open took ${Date.now() - t0} ms`);
      const store = new PostgresStore({ connectionString: target });
      try {
        for (const op of [() => store.ping(), () => store.reserveCall("ab", "svc", Date.now(), 1000), () => store.claimNonce("k", Date.now() + 1000)]) {
          t0 = Date.now();
          await assert.rejects(op(), (e: unknown) => e instanceof StoreError && e.code === "store_unavailable");
          const ms = Date.now() - t0;
          assert.ok(ms < 2500, `took ${ms} ms`);
        }
      } finally {
        await store.close();
      }
    });
  }
});

describe("PostgresStore down behind the Express adapter", function () {
  it("the paywall and the payments API answer 503 store_unavailable with Retry-After, never 500 (issue 14 B12)", async function () {
    const store = new PostgresStore({ connectionString: "postgres://postgres@127.0.0.1:1/test" });
    const app = express();
    app.use(
      paywall({
        payTo: "0x1111111111111111111111111111111111111111",
        network: "base-sepolia",
        settler: facilitatorSettler({ url: "http://127.0.0.1:9" }),
        checker: false,
        store,
        payments: { adminKey: "admin-key-0123456789abcdef" },
        routes: { "GET /weather": { price: "$0.01", serviceId: "svc" } },
      }),
    );
    app.get("/weather", (_req, res) => void res.json({ ok: true }));
    // the default Express error handler would answer 500 to anything passed on
    app.use(((_err, _req, res, _next) => void res.status(500).json({ error: "internal_error" })) as express.ErrorRequestHandler);
    try {
      const admin = "Bearer admin-key-0123456789abcdef";
      const calls: Array<[string, () => Promise<request.Response>]> = [
        ["create", () => request(app).post("/api/payments").send({ serviceId: "svc" })],
        ["show", () => request(app).get("/api/payments/pay_AAAAAAAAAAAAAAAAAAAAAA")],
        ["confirm", () => request(app).post("/api/payments/pay_AAAAAAAAAAAAAAAAAAAAAA/confirm").set("authorization", admin).send({})],
        ["ledger", () => request(app).get("/api/ledger").set("authorization", admin)],
        ["token call", () => request(app).get("/weather").set("x-payment-token", generatePaymentToken())],
      ];
      for (const [what, call] of calls) {
        const a = await call();
        assert.equal(a.status, 503, `${what} → ${a.status} ${a.text}`);
        assert.equal(a.body.error, "store_unavailable", `${what}: ${a.text}`);
        assert.ok(Number(a.headers["retry-after"]) > 0, `${what}: Retry-After ${a.headers["retry-after"]}`);
      }
    } finally {
      await store.close();
    }
  });
});
