/**
 * Reliability (issue 20, part 4): three example-server processes sharing one
 * PostgreSQL store, the chain mining a block every 2 s (as on Base), each
 * server settling through its own relayer wallet (nonces pipelined), under
 * ~2 minutes of mixed load from round-robin clients: x402 payments (v1 and
 * v2), prepaid token calls (each token has 1 call and is tried twice, on
 * different servers), bad inputs (garbage payment headers, unknown tokens)
 * and replays of paid x402 headers on another server.
 *
 * Checks, then prints the figures:
 *  - never a 500; bad inputs get 4xx;
 *  - every x402 200 settled on-chain exactly once; the on-chain transfers to
 *    payTo are exactly the x402 ledger (each once), so payTo's balance = sum
 *    of the ledger; a replay never moved money again;
 *  - no token used beyond its calls (one 200 per 1-call token, its second use
 *    refused, the call counted).
 *
 * The database is a throwaway cluster of the test's own (pg-cluster.ts).
 * RELIABILITY_20C_SECONDS (default 120) sets the load duration.
 */
import assert from "node:assert/strict";
import type { Address, Hex } from "viem";
import { authorizationOf, authorizationUsed, buyToken, compare, freshPayTo, ledgerOf, paymentOf, postgresServersPerSuite, PRICE, transfersTo, x402Headers, type Answer } from "./support.js";

const SECONDS = Number(process.env.RELIABILITY_20C_SECONDS ?? 120);
const WORKERS = 9;
const SERVERS = 3;

type Kind = "x402" | "replay" | "token" | "token-again" | "bad-header" | "bad-token";
interface Outcome {
  kind: Kind;
  server: number;
  status: number;
  error?: string;
  ms: number;
  from?: Address;
  nonce?: Hex;
  paymentId?: string;
}

describe("reliability 20c: three servers on one PostgreSQL, 2 s blocks, mixed load", function () {
  this.timeout(SECONDS * 1000 + 300_000);
  const payTo = freshPayTo();
  // three servers, one relayer wallet each, on a chain mining a block every 2 s (as on Base)
  const pg = postgresServersPerSuite({ name: "r20c", payTo, count: SERVERS, blockTime: 2 });

  it("every 200 settled exactly once, ledger = chain = payTo's balance, no token beyond its calls, never a 500", async function () {
    pg.skipUnlessReady(this, "reliability 20c");
    const { chain } = pg;
    const bases = pg.servers.map((s) => s.url);
    const outcomes: Outcome[] = [];
    const paidHeaders: Array<{ headers: Record<string, string>; server: number }> = [];
    const spare: Array<{ token: string; paymentId: string; server: number }> = [];
    let buys = 0;
    let turn = 0;
    const next = () => turn++ % SERVERS; // round-robin over the servers
    const record = async (kind: Kind, server: number, p: Promise<Answer>, extra: Partial<Outcome> = {}): Promise<Answer | undefined> => {
      const t0 = performance.now();
      try {
        const a = await p;
        outcomes.push({ kind, server, status: a.status, error: (a.json as { error?: string } | undefined)?.error, ms: performance.now() - t0, ...extra });
        return a;
      } catch (err) {
        outcomes.push({ kind, server, status: 0, error: (err as Error).message, ms: performance.now() - t0, ...extra });
        return undefined;
      }
    };

    const worker = async (w: number, stopAt: number) => {
      for (let i = 0; Date.now() < stopAt; i++) {
        const pick = (w + i) % 10;
        const s = next();
        if (pick < 4) {
          // an x402 payment (v1 or v2) from one of the payers
          const payer = chain.accounts.payers[(w * 7 + i) % chain.accounts.payers.length]!;
          const headers = await x402Headers(chain, payer.privateKey, payTo, i % 2 ? 1 : 2);
          const { from, nonce } = authorizationOf(headers);
          const a = await record("x402", s, compare(bases[s]!, headers), { from, nonce });
          if (a?.status === 200) paidHeaders.push({ headers, server: s });
        } else if (pick < 6) {
          // a prepaid token: bought on one server, used on another; its second use on a third must be refused
          const t = await buyToken(bases[s]!, `10.20.${(buys >> 8) & 255}.${buys++ & 255}`).catch(() => undefined);
          if (!t) continue;
          const u = (s + 1) % SERVERS;
          await record("token", u, compare(bases[u]!, { "x-payment-token": t.token }), { paymentId: t.paymentId });
          spare.push({ ...t, server: (s + 2) % SERVERS });
        } else if (pick === 6 && spare.length) {
          const t = spare.shift()!;
          await record("token-again", t.server, compare(bases[t.server]!, { "x-payment-token": t.token }), { paymentId: t.paymentId });
        } else if (pick === 7 && paidHeaders.length) {
          // a replay of a paid header on another server
          const p = paidHeaders[(w + i) % paidHeaders.length]!;
          const r = (p.server + 1 + (i % 2)) % SERVERS;
          const { from, nonce } = authorizationOf(p.headers);
          await record("replay", r, compare(bases[r]!, p.headers), { from, nonce });
        } else if (pick === 8) {
          const garbage: Record<string, string> = ([{ "x-payment": "not-base64-json!" }, { "payment-signature": Buffer.from('{"x402Version":2,"payload":{}}').toString("base64") }, { "x-payment": Buffer.from("[]").toString("base64") }] as Record<string, string>[])[i % 3]!;
          await record("bad-header", s, compare(bases[s]!, garbage));
        } else {
          await record("bad-token", s, compare(bases[s]!, { "x-payment-token": `s402_${"A".repeat(43)}` }));
        }
      }
    };

    const started = Date.now();
    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w, started + SECONDS * 1000)));
    const loadSeconds = (Date.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, 5000)); // the last blocks and any reconciler work

    // ---- figures
    const by = (k: Kind) => outcomes.filter((o) => o.kind === k);
    const counts = (k: Kind) => {
      const c: Record<string, number> = {};
      for (const o of by(k)) c[o.status] = (c[o.status] ?? 0) + 1;
      return JSON.stringify(c);
    };
    const paid = by("x402").filter((o) => o.status === 200);
    const lat = paid.map((o) => o.ms).sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? NaN;
    console.log(`      ${outcomes.length} answers in ${loadSeconds.toFixed(0)} s over ${SERVERS} servers (${outcomes.filter((o) => o.server === 0).length} / ${outcomes.filter((o) => o.server === 1).length} / ${outcomes.filter((o) => o.server === 2).length})`);
    for (const k of ["x402", "replay", "token", "token-again", "bad-header", "bad-token"] as Kind[]) console.log(`      ${k}: ${counts(k)}`);
    console.log(`      x402 paid: ${paid.length} (${(paid.length / loadSeconds).toFixed(1)}/s), request → paid answer p50 ${q(50).toFixed(0)} ms, p99 ${q(99).toFixed(0)} ms`);

    // 1. never a 500 (nor a dropped connection); bad inputs are 4xx
    for (const o of outcomes) assert.ok(o.status > 0 && o.status < 500, `${o.kind} on server ${o.server} → ${o.status} ${o.error ?? ""}`);
    for (const o of [...by("bad-header"), ...by("bad-token")]) assert.ok(o.status >= 400 && o.status < 500, `${o.kind} → ${o.status}`);

    // 2. every x402 200 settled exactly once; a replay never moved money again; ledger = chain = balance
    const ledger = (await ledgerOf(bases[0]!)).filter((r) => r.method === "x402");
    const onChain = await transfersTo(chain, payTo);
    assert.equal(new Set(ledger.map((r) => r.transaction)).size, ledger.length, "no x402 ledger record twice");
    assert.deepEqual(ledger.map((r) => r.transaction).sort(), onChain.map((t) => t.transaction).sort(), "x402 ledger = on-chain transfers to payTo");
    const paidAuthorizations = new Set(paid.map((o) => `${o.from}:${o.nonce}`));
    for (const o of by("replay").filter((x) => x.status === 200)) paidAuthorizations.add(`${o.from}:${o.nonce}`); // a replay answered 200 gets the held answer of the same payment
    assert.equal(onChain.length, paidAuthorizations.size, "one transfer per paid authorization, replays included");
    for (const o of by("x402")) assert.equal(await authorizationUsed(chain, o.from!, o.nonce!), o.status === 200, `authorization ${o.nonce} answered ${o.status}`);
    const balance = await chain.balanceOf(payTo);
    const ledgerSum = ledger.reduce((s, r) => s + BigInt(r.amount), 0n);
    assert.equal(balance, ledgerSum, "payTo's balance = sum of the x402 ledger");
    assert.equal(balance, PRICE * BigInt(onChain.length));

    // 3. no token used beyond its calls
    const tokenAnswers = new Map<string, number>();
    for (const o of [...by("token"), ...by("token-again")]) if (o.status === 200) tokenAnswers.set(o.paymentId!, (tokenAnswers.get(o.paymentId!) ?? 0) + 1);
    for (const [id, n] of tokenAnswers) assert.equal(n, 1, `token ${id} answered 200 ${n} times`);
    for (const o of by("token-again")) assert.notEqual(o.status, 200, "a 1-call token's second use is refused");
    const sample = [...tokenAnswers.keys()].slice(0, 40);
    for (const id of sample) assert.equal((await paymentOf(bases[0]!, id)).callsRemaining, 0, `token ${id}: its one call is counted`);
    console.log(`      ledger: ${ledger.length} x402 records = ${onChain.length} on-chain transfers; payTo balance ${balance} = ledger sum ${ledgerSum}; ${tokenAnswers.size} tokens used once each`);
    assert.ok(paid.length > 0 && tokenAnswers.size > 0, "payments and token calls succeeded");
  });
});
