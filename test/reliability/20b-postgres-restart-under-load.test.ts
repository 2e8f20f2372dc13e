/**
 * Reliability (issue 20): the example server on STORE=postgres while its
 * PostgreSQL is stopped like a crash (`pg_ctl -m immediate`) and started
 * again, under load: x402 payments, prepaid token calls and token purchases
 * from concurrent clients the whole time.
 *
 * The database is a throwaway cluster of the test's own (pg-cluster.ts), so
 * the shared server on 5432 that other suites use is never touched.
 *
 * Checks, for every answer the clients got:
 *  - only 200 or 503 (`store_unavailable`) (x402 may also meet 429
 *    `too_many_in_flight` while requests stall), never a 500, and 503s while
 *    the database is down, each within ~2.5 s;
 *  - an x402 payment answered 200 settled on-chain exactly once and is in the
 *    ledger exactly once; one answered 503 was not charged;
 *  - a token call answered 200 is counted (callsUsed 1) and one answered
 *    503 is not;
 *  - a confirmed purchase has exactly one ledger record;
 *  - the x402 ledger is exactly the on-chain transfers to payTo.
 */
import assert from "node:assert/strict";
import type { Hex } from "viem";
import {
  authorizationOf,
  authorizationUsed,
  buyToken,
  compare,
  freshPayTo,
  ledgerOf,
  paymentOf,
  postgresServersPerSuite,
  sleep,
  transfersTo,
  waitFor,
  x402Headers,
  type Answer,
} from "./support.js";

const WORKERS = 6;
const UP_BEFORE_MS = 4000;
const DOWN_MS = 4000;
const UP_AFTER_MS = 5000;

type Kind = "x402" | "token" | "buy";
interface Outcome {
  kind: Kind;
  status: number;
  error?: string;
  /** Sent and answered, ms epoch. */
  t0: number;
  t1: number;
  from?: string;
  nonce?: Hex;
  paymentId?: string;
}

describe("reliability 20b: PostgreSQL restarted under load (STORE=postgres)", function () {
  this.timeout(240_000);
  const payTo = freshPayTo();
  const pg = postgresServersPerSuite({ name: "r20b", payTo });

  it("503 while it is down, then no lost and no doubled record: ledger = chain, every 200 counted once, every 503 uncharged", async function () {
    pg.skipUnlessReady(this, "reliability 20b");
    const { chain, cluster: db } = pg;
    const base = pg.servers[0]!.url;
    const tokens: Array<{ token: string; paymentId: string }> = [];
    for (let i = 0; i < 30; i++) tokens.push(await buyToken(base, `10.8.0.${i}`));

    const outcomes: Outcome[] = [];
    let stopAt = Infinity;
    let attempts = 0;
    const record = (o: Omit<Outcome, "t1" | "status" | "error">, a: Answer | Error) => {
      const t1 = Date.now();
      if (a instanceof Error) outcomes.push({ ...o, t1, status: 0, error: a.message });
      else outcomes.push({ ...o, t1, status: a.status, error: a.json?.error });
    };
    const worker = async (w: number) => {
      for (let i = 0; Date.now() < stopAt; i++) {
        const t0 = Date.now();
        const pick = (w + i) % 3;
        if (pick === 0) {
          const payer = chain.accounts.payers[(w + i) % chain.accounts.payers.length]!;
          const headers = await x402Headers(chain, payer.privateKey, payTo, i % 2 ? 1 : 2);
          const { from, nonce } = authorizationOf(headers);
          record({ kind: "x402", t0, from, nonce }, await compare(base, headers).catch((e: Error) => e));
        } else if (pick === 1 && tokens.length) {
          const t = tokens.shift()!;
          record({ kind: "token", t0, paymentId: t.paymentId }, await compare(base, { "x-payment-token": t.token }).catch((e: Error) => e));
        } else {
          // a purchase: create, then the operator confirms; a confirmed one joins the tokens in use
          try {
            // each attempt from its own client address, so the per-client creation limit does not answer
            const attempt = attempts++;
            const t = await buyToken(base, `10.${9 + (attempt >> 16)}.${(attempt >> 8) & 255}.${attempt & 255}`);
            tokens.push(t);
            record({ kind: "buy", t0, paymentId: t.paymentId }, { status: 200, text: "", json: {}, headers: new Headers() });
          } catch (err) {
            const m = /→ (\d{3}): (.*)$/s.exec((err as Error).message);
            const json = m ? JSON.parse(m[2]!) : undefined;
            record({ kind: "buy", t0 }, m ? { status: Number(m[1]), text: m[2]!, json, headers: new Headers() } : (err as Error));
          }
        }
      }
    };

    const started = Date.now();
    stopAt = started + UP_BEFORE_MS + DOWN_MS + 60_000; // the end is set once the database is back
    const load = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    await sleep(UP_BEFORE_MS);
    await db.stop("immediate");
    const downFrom = Date.now();
    await sleep(DOWN_MS);
    const downUntil = Date.now();
    await db.start();
    const upAgain = Date.now();
    stopAt = upAgain + UP_AFTER_MS;
    await load;

    const by = (k: Kind) => outcomes.filter((o) => o.kind === k);
    const summary = (k: Kind) => {
      const counts: Record<string, number> = {};
      for (const o of by(k)) counts[o.status] = (counts[o.status] ?? 0) + 1;
      return JSON.stringify(counts);
    };
    console.log(
      `      ${outcomes.length} answers in ${((Date.now() - started) / 1000).toFixed(1)} s; database down ${((downUntil - downFrom) / 1000).toFixed(1)} s, ` +
        `back ${((upAgain - downUntil) / 1000).toFixed(1)} s after the start; x402 ${summary("x402")}, token ${summary("token")}, buy ${summary("buy")}`,
    );

    // 1. Only 200, 503 store_unavailable, or (x402) 429 too_many_in_flight: a payer's authorizations held by
    //    requests stalled in the outage count against abuseLimits.maxInFlightPerPayer; refused uncharged (checked in 2).
    for (const o of outcomes) {
      const refusedInFlight = o.kind === "x402" && o.status === 429 && o.error === "too_many_in_flight";
      assert.ok(o.status === 200 || (o.status === 503 && o.error === "store_unavailable") || refusedInFlight, `${o.kind} → ${o.status} ${o.error}`);
    }
    const whileDown = outcomes.filter((o) => o.t0 >= downFrom && o.t1 <= downUntil);
    assert.ok(whileDown.some((o) => o.status === 503), "503s while the database was down");
    for (const o of whileDown.filter((x) => x.status === 503)) assert.ok(o.t1 - o.t0 < 2500, `a 503 took ${o.t1 - o.t0} ms`);
    const after = outcomes.filter((o) => o.t0 >= upAgain + 1000);
    assert.ok(after.length > 0 && after.every((o) => o.status === 200), "all 200 again once the database is back");

    // 2. x402: a 200 is settled once and in the ledger once; a 503 was not charged; ledger = chain.
    const ledger = await ledgerOf(base);
    const onChain = await transfersTo(chain, payTo);
    const x402Rows = ledger.filter((r) => r.method === "x402");
    assert.deepEqual(x402Rows.map((r) => r.transaction).sort(), onChain.map((t) => t.transaction).sort(), "x402 ledger = on-chain transfers to payTo");
    assert.equal(new Set(x402Rows.map((r) => r.transaction)).size, x402Rows.length, "no x402 record twice");
    const paidX402 = by("x402").filter((o) => o.status === 200);
    assert.equal(onChain.length, paidX402.length, "one transfer per x402 200, none for a 503");
    for (const o of by("x402")) {
      assert.equal(await authorizationUsed(chain, o.from as `0x${string}`, o.nonce!), o.status === 200, `authorization ${o.nonce} (answered ${o.status}) used on-chain`);
    }

    // 3. Tokens: a 200 is counted once (its commit may have waited for the database), a 503 is not.
    for (const o of by("token")) {
      const remaining = o.status === 200 ? 0 : 1;
      await waitFor(`token ${o.paymentId} (answered ${o.status}) at ${remaining} calls left`, async () => (await paymentOf(base, o.paymentId!)).callsRemaining === remaining, 5000);
    }

    // 4. Purchases: each confirmed payment has exactly one ledger record.
    const tokenRows = ledger.filter((r) => r.method === "token");
    const confirmed = by("buy").filter((o) => o.status === 200);
    for (const o of confirmed) assert.equal(tokenRows.filter((r) => r.paymentId === o.paymentId).length, 1, `ledger records of ${o.paymentId}`);
    assert.equal(new Set(tokenRows.map((r) => r.paymentId)).size, tokenRows.length, "no purchase recorded twice");
    assert.ok(paidX402.length > 0 && by("token").some((o) => o.status === 200) && confirmed.length > 0, "every kind succeeded at some point");
  });
});
