/**
 * Reliability item 3: `kill -9` of the example server process while a token
 * call and an x402 call are inside the paid handler, then a restart on the
 * same SQLite file.
 *
 * The calls are made deterministic by the Alibaba emulator, which never
 * answers: the test kills only once the emulator has received both
 * CompareFace requests, i.e. both calls are past payment and inside the
 * handler. Two servers run side by side, one per settlement mode:
 *  - `after` (default): the x402 payment settles after the handler, so the
 *    crash leaves it unsettled → settled 0 times, never later;
 *  - `before`: it settled before the handler ran → settled exactly once.
 * In both, the token's call is held by the dead process's reservation until
 * its lease lapses (refused before, served after), and the operator ledger
 * lists exactly the on-chain transfers.
 *
 * The lease is read from the SQLite file (the example server does not expose
 * the engine's tokenLeaseMs; the lib default is 120 s, so this test waits
 * that long). `TOKEN_LEASE_MS=20000` is passed so a server that honours it
 * makes the test take 20 s instead (the restart must fit in the lease).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { Address, Hex } from "viem";
import { startDevChain, type DevChain } from "server402/devchain";
import { behave, type AlibabaEmulator } from "../support/alibaba-emulator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import {
  authorizationOf,
  authorizationUsed,
  buyToken,
  compare,
  freshPayTo,
  ledgerOf,
  paymentOf,
  PRICE,
  serverEnv,
  startEmulator,
  tempDir,
  transfersTo,
  waitFor,
  x402Headers,
  type Answer,
} from "./support.js";

type Mode = "after" | "before";

interface Crash {
  mode: Mode;
  server: ServerProcess;
  emulator: AlibabaEmulator;
  payTo: Address;
  payer: { address: Address; privateKey: Hex };
  sqlitePath: string;
  token: string;
  paymentId: string;
  x402: Record<string, string>;
  /** Wall-clock time the dead process reserved the token's call (the emulator saw the request just after). */
  killedAt: number;
  /** Lease end of the orphaned reservation, from the SQLite file. */
  leaseUntil: number;
  leaseMs: number;
  /** What the test saw right after the restart. */
  afterRestart: { token: Answer; tokenAt: number; replay: Answer; upstreamCalls: number };
  dir: ReturnType<typeof tempDir>;
}

function reservationsOf(sqlitePath: string, paymentId: string): Array<{ leaseUntil: number }> {
  const db = new Database(sqlitePath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare("SELECT leaseUntil FROM reservations WHERE paymentId = ?").all(paymentId) as Array<{ leaseUntil: number }>;
  } finally {
    db.close();
  }
}

async function crashAndRestart(chain: DevChain, mode: Mode, relayerKey: Hex, payerIndex: number): Promise<Crash> {
  const dir = tempDir(`r3-${mode}`);
  const emulator = await startEmulator();
  emulator.setDefault(behave.hang());
  const payTo = freshPayTo();
  const payer = chain.accounts.payers[payerIndex]!;
  const env = serverEnv({
    chain,
    emulator,
    payTo,
    relayerKey,
    store: "sqlite",
    dataDir: dir.path,
    settlement: mode,
    alibabaTimeoutMs: 120_000,
    extra: { COMPARE_TIMEOUT_MS: "20000", TOKEN_LEASE_MS: "20000" },
  });
  const first = await startServerProcess({ name: `r3-${mode}`, env });
  const { token, paymentId } = await buyToken(first.url);
  const x402 = await x402Headers(chain, payer.privateKey, payTo, 2);

  // Both calls enter the handler and hang there (the emulator never answers).
  const reservedFrom = Date.now();
  const inflight: Array<Promise<unknown>> = [compare(first.url, { "x-payment-token": token }).catch((e: unknown) => e)];
  await waitFor("the token call to reach the face engine", () => emulator.attempts().length === 1);
  inflight.push(compare(first.url, x402).catch((e: unknown) => e));
  await waitFor("the x402 call to reach the face engine", () => emulator.attempts().length === 2, 15_000);

  const killedAt = Date.now();
  await first.kill9();
  const outcomes = await Promise.all(inflight);
  for (const o of outcomes) assert.ok(o instanceof Error, `an in-flight call got an answer from a killed server: ${JSON.stringify(o)}`);

  const sqlitePath = join(dir.path, "server402.sqlite");
  const orphans = reservationsOf(sqlitePath, paymentId);
  assert.equal(orphans.length, 1, "the dead process's reservation is in the file");
  const leaseUntil = orphans[0]!.leaseUntil;
  const leaseMs = leaseUntil - reservedFrom;

  // Restart on the same file; the face engine answers again.
  emulator.setDefault(behave.success());
  const server = await first.restart();
  const upstream = emulator.attempts().length;
  const tokenAt = Date.now();
  const tokenNow = await compare(server.url, { "x-payment-token": token });
  const replay = await compare(server.url, x402);
  return {
    mode,
    server,
    emulator,
    payTo,
    payer,
    sqlitePath,
    token,
    paymentId,
    x402,
    killedAt,
    leaseUntil,
    leaseMs,
    afterRestart: { token: tokenNow, tokenAt, replay, upstreamCalls: emulator.attempts().length - upstream },
    dir,
  };
}

describe("reliability 3: kill -9 with a token call and an x402 call in flight, restart on the same SQLite file", function () {
  this.timeout(300_000);
  let chain: DevChain;
  const runs: Partial<Record<Mode, Crash>> = {};

  before(async () => {
    chain = await startDevChain();
    const [after, before] = await Promise.all([
      crashAndRestart(chain, "after", chain.accounts.relayer.privateKey, 0),
      crashAndRestart(chain, "before", chain.accounts.payers[8]!.privateKey, 1),
    ]);
    runs.after = after;
    runs.before = before;
  });
  after(async () => {
    for (const r of Object.values(runs)) {
      await r.server.stop();
      await r.emulator.close();
      r.dir.remove();
    }
    await chain?.stop();
  });

  async function assertLedgerMatchesChain(r: Crash, expectedTransfers: number) {
    const onChain = await transfersTo(chain, r.payTo);
    assert.equal(onChain.length, expectedTransfers, "on-chain transfers to payTo");
    const ledger = (await ledgerOf(r.server.url)).filter((row) => row.method === "x402");
    assert.deepEqual(ledger.map((row) => row.transaction).sort(), onChain.map((t) => t.transaction).sort(), "ledger x402 rows = on-chain transfers");
    for (const row of ledger) {
      const t = onChain.find((x) => x.transaction === row.transaction)!;
      assert.equal(row.amount, t.value.toString());
      assert.equal(row.payer.toLowerCase(), t.from.toLowerCase());
    }
  }

  async function assertX402(r: Crash, settledTimes: 0 | 1) {
    const { from, nonce } = authorizationOf(r.x402);
    assert.equal(await authorizationUsed(chain, from, nonce), settledTimes === 1, "authorizationState on-chain");
    // The same authorization sent again after the restart: refused, handler not run, nothing moves.
    assert.equal(r.afterRestart.replay.status, 402, r.afterRestart.replay.text);
    assert.equal(r.afterRestart.replay.json.error, "duplicate_settlement", r.afterRestart.replay.text);
    assert.equal(r.afterRestart.upstreamCalls, 0, "no handler ran for the refused token call and replay");
    await assertLedgerMatchesChain(r, settledTimes);
    // The server still takes new payments from the same payer.
    const before = await chain.balanceOf(r.payer.address);
    const fresh = await compare(r.server.url, await x402Headers(chain, r.payer.privateKey, r.payTo, 1));
    assert.equal(fresh.status, 200, fresh.text);
    assert.equal(before - (await chain.balanceOf(r.payer.address)), PRICE);
    await assertLedgerMatchesChain(r, settledTimes + 1);
  }

  it("settlement 'after': the in-flight x402 authorization settled 0 times (and is never replayable), ledger = chain", async () => {
    await assertX402(runs.after!, 0);
  });

  it("settlement 'before': the in-flight x402 authorization settled exactly once, ledger = chain", async () => {
    await assertX402(runs.before!, 1);
  });

  it("the in-flight token call is held until its lease lapses, then given back: 1 more successful call, not 2", async () => {
    for (const r of Object.values(runs)) {
      // Right after the restart the orphaned reservation still holds the only call: no double spend.
      assert.ok(r.afterRestart.tokenAt < r.leaseUntil, `the restart took longer than the lease (${r.leaseMs} ms); raise TOKEN_LEASE_MS`);
      assert.equal(r.afterRestart.token.status, 402, r.afterRestart.token.text);
      assert.equal(r.afterRestart.token.json.error, "exhausted", r.afterRestart.token.text);
      assert.ok(r.leaseMs > 0 && r.leaseMs <= 125_000, `lease ${r.leaseMs} ms`);
    }
    for (const r of Object.values(runs)) {
      const wait = r.leaseUntil - Date.now() + 100;
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const back = await compare(r.server.url, { "x-payment-token": r.token });
      assert.equal(back.status, 200, `${r.mode}: the call did not come back after the lease (${r.leaseMs} ms): ${back.text}`);
      await waitFor("the call to be committed", async () => (await paymentOf(r.server.url, r.paymentId)).status === "exhausted", 5000);
      const again = await compare(r.server.url, { "x-payment-token": r.token });
      assert.equal(again.status, 402);
      assert.equal(again.json.error, "exhausted");
      assert.equal(reservationsOf(r.sqlitePath, r.paymentId).length, 0, "no reservation left behind");
      console.log(`      ${r.mode}: token lease ${(r.leaseMs / 1000).toFixed(1)} s; call given back ${((Date.now() - r.killedAt) / 1000).toFixed(1)} s after the kill`);
    }
  });
});
