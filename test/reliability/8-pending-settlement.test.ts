/**
 * Issue 14 B10 under a slow chain and a restart: paid requests whose
 * settlement is still pending when the server goes away lose nothing. A new
 * server on the same SQLite file (a fresh relayer that remembers nothing)
 * confirms the transfers in the background and writes their ledger entries
 * without any client coming back; a retry gets the held paid answer; a
 * dropped transfer leaves its payer uncharged and the authorization usable.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Hex } from "viem";
import { relayerSettler } from "server402";
import { SqliteStore } from "server402/sqlite";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, type PaidApp } from "../support/paid-app.js";
import { v2Header } from "../support/sign.js";
import { tempDir } from "./support.js";

const PRICE = 10_000n;
const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as { success: boolean; transaction: string };

describe("reliability 8: pending settlements across a restart (issue 14 B10)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  const dir = tempDir("pending");
  const rpc = async (method: string, params: unknown[] = []) => {
    const r = await fetch(chain.rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
    const j = (await r.json()) as { result?: unknown; error?: { message: string } };
    if (j.error) throw new Error(j.error.message);
    return j.result;
  };
  const start = (store: SqliteStore) =>
    // one public URL for both servers, as after a real restart: resources (and held answers) match
    startPaidApp(chain, { store, publicUrl: "http://shop.test", settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs: 300 }) });

  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
    dir.remove();
  });

  it("B10 pending settlement: after a restart the reconciler records every mined transfer with no client coming back, retries get the held answers, a dropped one is not charged", async () => {
    const file = join(dir.path, "db.sqlite");
    const payers = [1, 2, 3, 4, 5, 6].map((i) => chain.accounts.payers[i]!);
    const headers = await Promise.all(payers.map(async (p) => ({ "payment-signature": await v2Header({ privateKey: p.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE }) })));
    const payToBefore = await chain.balanceOf(chain.accounts.payTo.address);
    const balancesBefore = new Map(await Promise.all(payers.map(async (p) => [p.address, await chain.balanceOf(p.address)] as const)));

    // server A: the chain stops mining; six paid requests end 504 settlement_pending, answers held
    const storeA = new SqliteStore({ path: file });
    const a: PaidApp = await start(storeA);
    const txs: Hex[] = [];
    await rpc("evm_setAutomine", [false]);
    try {
      const answers = await Promise.all(headers.map((h) => fetch(`${a.url}/weather`, { headers: h })));
      for (const res of answers) {
        const body = (await res.json()) as { error: string };
        assert.equal(res.status, 504, JSON.stringify(body));
        assert.equal(body.error, "settlement_pending");
        txs.push(decode(res.headers.get("payment-response")).transaction as Hex);
      }
      assert.equal(a.runs.weather, 6);
      // the server goes away; the last transfer is dropped by the node (the highest relayer nonce: no gap)
      a.pw.engine.stopReconciler();
      await a.close();
      await storeA.close();
      const nonces = await Promise.all(txs.map(async (tx) => BigInt(((await rpc("eth_getTransactionByHash", [tx])) as { nonce: Hex }).nonce)));
      const last = nonces.indexOf(nonces.reduce((m, n) => (n > m ? n : m)));
      [txs[5], txs[last]] = [txs[last]!, txs[5]!];
      [headers[5], headers[last]] = [headers[last]!, headers[5]!];
      [payers[5], payers[last]] = [payers[last]!, payers[5]!];
      await rpc("anvil_dropTransaction", [txs[5]]);
    } finally {
      await rpc("evm_setAutomine", [true]);
    }
    await rpc("evm_mine");

    // server B on the same file: its background reconciler (every 5 s) records the five mined transfers by itself
    const storeB = new SqliteStore({ path: file });
    const b = await start(storeB);
    try {
      const deadline = Date.now() + 30_000;
      let ledger = await storeB.listLedger();
      while ((ledger.length < 5 || (await storeB.listOutbox(10)).length > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        ledger = await storeB.listLedger();
      }
      assert.deepEqual(ledger.map((e) => e.transaction).sort(), txs.slice(0, 5).sort());
      assert.ok(ledger.every((e) => e.amount === PRICE.toString()));
      assert.deepEqual(await storeB.listOutbox(10), [], "nothing left in the outbox");

      // the clients come back: the held paid answers, the handler not run again
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${b.url}/weather`, { headers: headers[i] });
        const text = await res.text();
        assert.equal(res.status, 200, text);
        assert.equal(JSON.parse(text).weather, "sunny");
        assert.equal(decode(res.headers.get("payment-response")).transaction, txs[i]);
      }
      assert.equal(b.runs.weather ?? 0, 0);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - payToBefore, 5n * PRICE, "five transfers, each charged once");

      // the dropped one: nothing charged, its authorization is served afresh
      const droppedPayer = payers[5]!.address;
      const before = await chain.balanceOf(droppedPayer);
      assert.equal(before, balancesBefore.get(droppedPayer), "the dropped transfer charged nothing");
      const retry = await fetch(`${b.url}/weather`, { headers: headers[5] });
      assert.equal(retry.status, 200, await retry.clone().text());
      assert.equal(b.runs.weather, 1);
      assert.equal(before - (await chain.balanceOf(droppedPayer)), PRICE);
      assert.equal((await storeB.listLedger()).length, 6);
    } finally {
      b.pw.engine.stopReconciler();
      await b.close();
      await storeB.close();
    }
  });
});
