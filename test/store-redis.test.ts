import assert from "node:assert/strict";
import { startSilentServer, type SilentServer } from "./support/silent-server.js";
import { Redis } from "ioredis";
import { StoreError } from "../lib/src/errors.js";
import { RedisStore } from "../lib/src/state/redis.js";
import type { ReserveResult } from "../lib/src/state/store.js";
import { paidPayment, runStoreConformance, samplePayment } from "./store-conformance.js";

const url = process.env.REDIS_URL;
/** Every key this run creates starts with this; the `after` hooks delete them. */
const runPrefix = `server402-test:${process.pid}-${Date.now()}:`;
let seq = 0;
const freshPrefix = () => `${runPrefix}${seq++}:`;

async function deleteKeys(client: Redis, pattern: string): Promise<number> {
  let deleted = 0;
  let cursor = "0";
  do {
    const [next, keys] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    if (keys.length) deleted += await client.del(...keys);
  } while (cursor !== "0");
  return deleted;
}

async function cleanup(): Promise<void> {
  const client = new Redis(url!);
  try {
    await deleteKeys(client, `${runPrefix}*`);
    await deleteKeys(client, `cp:${runPrefix}*`);
    assert.deepEqual(await client.keys(`*${runPrefix}*`), []);
  } finally {
    client.disconnect();
  }
}

if (!url) {
  describe("RedisStore", function () {
    it("needs REDIS_URL", function () {
      console.log("    RedisStore tests skipped: set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379) to run them");
      this.skip();
    });
  });
} else {
  runStoreConformance("RedisStore", async () => new RedisStore({ url, keyPrefix: freshPrefix() }), cleanup);

  describe("RedisStore on a shared Redis", function () {
    after(cleanup);

    it("two stores on separate connections: 100 concurrent reserves of a 1-call token give exactly one ok", async function () {
      const keyPrefix = freshPrefix();
      const a = new RedisStore({ url, keyPrefix });
      const b = new RedisStore({ url, keyPrefix });
      try {
        assert.notEqual(a.client, b.client);
        const p = await paidPayment(a);
        const now = Date.now();
        const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).reserveCall(p.tokenHash, "svc", now, 30_000)));
        assert.equal(results.filter((r) => r.ok).length, 1);
        const won = results.find((r) => r.ok) as Extract<ReserveResult, { ok: true }>;
        // Commit through the other connection; only one commit counts.
        const commits = await Promise.all([a.commitCall(won.reservationId), b.commitCall(won.reservationId)]);
        assert.deepEqual(commits.sort(), [false, true]);
        assert.equal((await b.getPayment(p.paymentId))!.callsUsed, 1);

        const q = await paidPayment(b, { maxCalls: 5 });
        const many = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).reserveCall(q.tokenHash, "svc", now, 30_000)));
        assert.equal(many.filter((r) => r.ok).length, 5);
      } finally {
        await a.close();
        await b.close();
      }
    });

    it("stores keys under keyPrefix with expiries: nonce at expiresAt, payment at expiresAt + retention", async function () {
      const keyPrefix = freshPrefix();
      const store = new RedisStore({ url, keyPrefix, paymentRetentionMs: 60_000 });
      try {
        const nonceExpiry = Date.now() + 120_000;
        await store.claimNonce("n1", nonceExpiry);
        await store.setNonceState("n1", "settled", "0xtx");
        assert.equal(await store.client.pexpiretime(`${keyPrefix}nonce:n1`), nonceExpiry);
        const p = samplePayment();
        await store.createPayment(p);
        assert.equal(await store.client.pexpiretime(`${keyPrefix}pay:${p.paymentId}`), p.expiresAt + 60_000);
        assert.equal(await store.client.pexpiretime(`${keyPrefix}tok:${p.tokenHash}`), p.expiresAt + 60_000);
      } finally {
        await store.close();
      }
    });

    it("works on a caller's client (with its own keyPrefix) and leaves it open", async function () {
      const client = new Redis(url, { keyPrefix: "cp:" });
      const keyPrefix = freshPrefix();
      const store = new RedisStore({ client, keyPrefix });
      try {
        const p = await paidPayment(store, { maxCalls: 2 });
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
        assert.ok(r.ok);
        assert.equal(await store.commitCall(r.reservationId), true);
        assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
        assert.equal(await client.zcard(`${keyPrefix}rsv:${p.paymentId}`), 0);
        assert.equal(await client.exists(`${keyPrefix}pay:${p.paymentId}`), 1);
        await store.close();
        assert.equal(await client.ping(), "PONG");
      } finally {
        client.disconnect();
      }
    });

    it("calls made in one tick go in one batch script: one that fails in Redis is refused alone, the others are done", async function () {
      const keyPrefix = freshPrefix();
      const store = new RedisStore({ url, keyPrefix });
      try {
        const good = await paidPayment(store, { maxCalls: 5 });
        const bad = await paidPayment(store, { maxCalls: 5 });
        // the reservations key of `bad` has the wrong type: its reserve fails inside the script
        await store.client.set(`${keyPrefix}rsv:${bad.paymentId}`, "not a sorted set");
        const monitor = await store.client.duplicate().monitor();
        const commands: string[] = [];
        monitor.on("monitor", (_time: string, args: string[]) => commands.push(String(args[0]).toLowerCase()));
        const now = Date.now();
        const settled = await Promise.allSettled([
          store.reserveCall(good.tokenHash, "svc", now, 30_000),
          store.reserveCall(bad.tokenHash, "svc", now, 30_000),
          store.reserveCall(good.tokenHash, "svc", now, 30_000),
        ]);
        await new Promise((r) => setTimeout(r, 50));
        monitor.disconnect();
        assert.equal(commands.filter((c) => c === "evalsha" || c === "eval").length, 1, `one script run for three calls, got ${commands.join(" ")}`);
        assert.equal(settled[1]!.status, "rejected");
        const reason = (settled[1] as PromiseRejectedResult).reason;
        assert.ok(reason instanceof StoreError);
        assert.match(reason.message, /reserveCall failed: .*WRONGTYPE/);
        assert.deepEqual(
          settled.map((r) => r.status === "fulfilled" && r.value.ok),
          [true, false, true],
        );
        assert.equal(await store.client.zcard(`${keyPrefix}rsv:${good.paymentId}`), 2);
      } finally {
        await store.close();
      }
    });

    it("re-loads its scripts after SCRIPT FLUSH", async function () {
      const store = new RedisStore({ url, keyPrefix: freshPrefix() });
      try {
        const p = await paidPayment(store);
        await store.client.script("FLUSH");
        const r = await store.reserveCall(p.tokenHash, "svc", Date.now(), 30_000);
        assert.ok(r.ok);
      } finally {
        await store.close();
      }
    });
  });
}

describe("RedisStore with Redis down", function () {
  let silent: SilentServer;
  before(async () => (silent = await startSilentServer()));
  after(() => silent.close());
  for (const [what, target] of [
    ["refused connection", () => "redis://127.0.0.1:1"],
    ["a server that accepts and never answers", () => `redis://127.0.0.1:${silent.port}`],
  ] as const) {
    it(`${what}: operations fail with StoreError within ~2 s`, async function () {
      const store = new RedisStore({ url: target() });
      try {
        for (const op of [() => store.ping(), () => store.reserveCall("ab", "svc", Date.now(), 1000), () => store.claimNonce("k", Date.now() + 1000)]) {
          const t0 = Date.now();
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
