/**
 * Reliability item 1: 100 concurrent copies of one x402 payment against the
 * real example server process (SQLite store, relayer on a real anvil chain,
 * Alibaba emulator as face engine) → exactly 1 handler run (one CompareFace
 * call reaches the emulator) and exactly 1 on-chain transfer.
 */
import assert from "node:assert/strict";
import { startDevChain, type DevChain } from "server402/devchain";
import type { AlibabaEmulator } from "../support/alibaba-emulator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { authorizationOf, authorizationUsed, compare, freshPayTo, ledgerOf, PRICE, serverEnv, startEmulator, tempDir, transfersTo, x402Headers } from "./support.js";

const COPIES = 100;

describe("reliability 1: concurrent copies of one x402 payment (example server process, anvil)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let emulator: AlibabaEmulator;
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  const payTo = freshPayTo();

  before(async () => {
    dir = tempDir("r1");
    chain = await startDevChain();
    emulator = await startEmulator();
    server = await startServerProcess({ name: "r1", env: serverEnv({ chain, emulator, payTo, store: "sqlite", dataDir: dir.path }) });
  });
  after(async () => {
    await server?.stop();
    await emulator?.close();
    await chain?.stop();
    dir?.remove();
  });

  for (const version of [1, 2] as const) {
    it(`${COPIES} concurrent copies of one x402 v${version} payment → exactly 1 handler run and 1 on-chain transfer`, async () => {
      const payer = chain.accounts.payers[version]!;
      const headers = await x402Headers(chain, payer.privateKey, payTo, version);
      const { from, nonce } = authorizationOf(headers);
      const handlerRunsBefore = emulator.attempts().length;
      const transfersBefore = (await transfersTo(chain, payTo)).length;
      const payerBefore = await chain.balanceOf(payer.address);

      const answers = await Promise.all(Array.from({ length: COPIES }, () => compare(server.url, headers)));

      const statuses = answers.map((a) => a.status);
      assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${JSON.stringify(statuses)}`);
      for (const a of answers.filter((x) => x.status !== 200)) {
        assert.equal(a.status, 402, a.text);
        assert.equal(a.json.error, "duplicate_settlement", a.text);
      }
      assert.equal(emulator.attempts().length - handlerRunsBefore, 1, "handler runs (CompareFace calls)");
      const transfers = (await transfersTo(chain, payTo)).slice(transfersBefore);
      assert.equal(transfers.length, 1, "on-chain transfers");
      assert.equal(transfers[0]!.value, PRICE);
      assert.equal(transfers[0]!.from, from);
      assert.equal(payerBefore - (await chain.balanceOf(payer.address)), PRICE, "payer charged exactly once");
      assert.equal(await authorizationUsed(chain, from, nonce), true);

      // The one success carries the settlement; the ledger records it once.
      const ok = answers.find((a) => a.status === 200)!;
      const settled = JSON.parse(Buffer.from(ok.headers.get(version === 1 ? "x-payment-response" : "payment-response")!, "base64").toString());
      assert.equal(settled.transaction, transfers[0]!.transaction);
      const rows = (await ledgerOf(server.url)).filter((r) => r.transaction === transfers[0]!.transaction);
      assert.equal(rows.length, 1, "ledger rows for the transfer");

      // A late copy is refused too, without running the handler.
      const late = await compare(server.url, headers);
      assert.equal(late.status, 402);
      assert.equal(late.json.error, "duplicate_settlement");
      assert.equal(emulator.attempts().length - handlerRunsBefore, 1);
    });
  }
});
