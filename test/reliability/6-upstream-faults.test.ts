/**
 * Reliability item 6: upstream faults against the real example server
 * process — the Alibaba emulator slow / hanging / 5xx / garbage / dropping,
 * the chain RPC down or slow (a TCP fault proxy sits between the server and
 * anvil), the x402 facilitator down — each answered 502/504 with a clear
 * code, nothing charged (payer balance and authorization state unchanged
 * on-chain; a token keeps its call), the same signed payment accepted once
 * the fault clears, and the server healthy after.
 */
import assert from "node:assert/strict";
import type { Address, Hex } from "viem";
import { startDevChain, type DevChain } from "server402/devchain";
import { behave, type AlibabaEmulator, type EmulatorBehaviour } from "../support/alibaba-emulator.js";
import { startFacilitator, type TestFacilitator } from "../support/facilitator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import {
  authorizationOf,
  authorizationUsed,
  buyToken,
  call,
  compare,
  freshPayTo,
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

const ALIBABA_TIMEOUT_MS = 1500;

describe("reliability 6: upstream faults (example server process, emulator, anvil behind a fault proxy, facilitator)", function () {
  this.timeout(180_000);
  let chain: DevChain;
  let emulator: AlibabaEmulator;
  let proxy: FaultProxy;
  let relayed: ServerProcess;
  let viaFacilitator: ServerProcess;
  let facilitator: TestFacilitator;
  let facEmulator: AlibabaEmulator;
  let dir: ReturnType<typeof tempDir>;
  const payTo = freshPayTo();
  let payerIndex = 0;
  const table: string[] = [];

  before(async () => {
    dir = tempDir("r6");
    chain = await startDevChain();
    emulator = await startEmulator();
    facEmulator = await startEmulator();
    proxy = await startFaultProxy(Number(new URL(chain.rpcUrl).port));
    facilitator = await startFacilitator(chain);
    const proxied = { ...chain, rpcUrl: proxy.url };
    [relayed, viaFacilitator] = await Promise.all([
      startServerProcess({
        name: "r6-relayer",
        env: serverEnv({ chain: proxied, emulator, payTo, relayerKey: chain.accounts.payers[8]!.privateKey, store: "sqlite", dataDir: `${dir.path}/relayer`, alibabaTimeoutMs: ALIBABA_TIMEOUT_MS }),
      }),
      startServerProcess({
        name: "r6-facilitator",
        env: {
          ...serverEnv({ chain, emulator: facEmulator, payTo, store: "sqlite", dataDir: `${dir.path}/facilitator`, alibabaTimeoutMs: ALIBABA_TIMEOUT_MS }),
          RPC_URL: undefined,
          RELAYER_PRIVATE_KEY: undefined,
          SETTLER: "facilitator",
          FACILITATOR_URL: facilitator.url,
        },
      }),
    ]);
  });
  after(async () => {
    if (table.length) console.log(table.map((l) => `      ${l}`).join("\n"));
    await relayed?.stop();
    await viaFacilitator?.stop();
    await facilitator?.close();
    await proxy?.close();
    await emulator?.close();
    await facEmulator?.close();
    await chain?.stop();
    dir?.remove();
  });

  /** A fresh payer key for each x402 attempt, round robin over payers 0..7. */
  function nextPayer(): { address: Address; privateKey: Hex } {
    return chain.accounts.payers[payerIndex++ % 8]!;
  }

  function codeOf(a: Answer): string {
    return String(a.json?.error ?? a.json?.code);
  }

  async function assertNotCharged(payer: Address, before: bigint, header: Record<string, string>, transfersBefore: number) {
    assert.equal(await chain.balanceOf(payer), before, "payer balance unchanged");
    const { from, nonce } = authorizationOf(header);
    assert.equal(await authorizationUsed(chain, from, nonce), false, "authorization unused on-chain");
    assert.equal((await transfersTo(chain, payTo)).length, transfersBefore, "no transfer to payTo");
  }

  /** The same signed payment, once the fault is gone: accepted and charged exactly once. */
  async function assertRetryWorks(server: ServerProcess, payer: Address, before: bigint, header: Record<string, string>) {
    const again = await compare(server.url, header);
    assert.equal(again.status, 200, `retry after the fault: ${again.text}`);
    assert.equal(before - (await chain.balanceOf(payer)), PRICE, "charged exactly once on the retry");
  }

  const emulatorFaults: Array<{ name: string; behaviour: EmulatorBehaviour; status: number; code: string }> = [
    { name: "hanging", behaviour: behave.hang(), status: 504, code: "upstream_timeout" },
    { name: `slow (${ALIBABA_TIMEOUT_MS + 1500} ms, over the ${ALIBABA_TIMEOUT_MS} ms budget)`, behaviour: behave.slow(ALIBABA_TIMEOUT_MS + 1500), status: 504, code: "upstream_timeout" },
    { name: "HTTP 500 InternalError", behaviour: behave.serverError(500, "InternalError"), status: 502, code: "upstream_error" },
    { name: "HTTP 503 ServiceUnavailable", behaviour: behave.serverError(503, "ServiceUnavailable"), status: 502, code: "upstream_error" },
    { name: "garbage (HTML with 200)", behaviour: behave.garbage(200), status: 502, code: "upstream_error" },
    { name: "garbage (HTML with 502)", behaviour: behave.garbage(502), status: 502, code: "upstream_error" },
    { name: "dropped connection", behaviour: behave.drop(), status: 502, code: "upstream_error" },
    { name: "half an answer, then stalled", behaviour: behave.stall(), status: 504, code: "upstream_timeout" },
  ];

  for (const f of emulatorFaults) {
    it(`Alibaba emulator ${f.name} → ${f.status} ${f.code}, x402 payer not charged (balance unchanged), token keeps its call, same payment accepted after`, async () => {
      emulator.setDefault(f.behaviour);
      try {
        const payer = nextPayer();
        const before = await chain.balanceOf(payer.address);
        const transfersBefore = (await transfersTo(chain, payTo)).length;
        const header = await x402Headers(chain, payer.privateKey, payTo, 2);
        const started = Date.now();
        const paid = await compare(relayed.url, header);
        const ms = Date.now() - started;
        assert.equal(paid.status, f.status, paid.text);
        assert.equal(codeOf(paid), f.code, paid.text);
        assert.equal(paid.headers.get("payment-response"), null, "no settlement header");
        await assertNotCharged(payer.address, before, header, transfersBefore);

        const { token, paymentId } = await buyToken(relayed.url, `10.6.${payerIndex}.1`);
        const byToken = await compare(relayed.url, { "x-payment-token": token });
        assert.equal(byToken.status, f.status, byToken.text);
        assert.equal(codeOf(byToken), f.code, byToken.text);
        await waitFor("the token call to be given back", async () => (await paymentOf(relayed.url, paymentId)).callsRemaining === 1, 5000);
        table.push(`emulator ${f.name}: x402 → ${paid.status} ${codeOf(paid)} in ${ms} ms; token → ${byToken.status} ${codeOf(byToken)}`);

        emulator.setDefault(behave.success());
        await assertRetryWorks(relayed, payer.address, before, header);
        const tokenAgain = await compare(relayed.url, { "x-payment-token": token });
        assert.equal(tokenAgain.status, 200, tokenAgain.text);
      } finally {
        emulator.setDefault(behave.success());
      }
    });
  }

  const chainFaults: Array<{ name: string; mode: Parameters<FaultProxy["set"]>[0] }> = [
    { name: "down (connections refused)", mode: { kind: "down" } },
    { name: "hanging (accepts, never answers)", mode: { kind: "hang" } },
    { name: "slow (every answer 6 s late)", mode: { kind: "slow", delayMs: 6000 } },
  ];
  for (const f of chainFaults) {
    it(`chain RPC ${f.name} → 502 chain_unavailable before the handler runs, payer not charged, tokens still served, same payment accepted after`, async () => {
      proxy.set(f.mode);
      try {
        const payer = nextPayer();
        const before = await chain.balanceOf(payer.address);
        const transfersBefore = (await transfersTo(chain, payTo)).length;
        const upstream = emulator.attempts().length;
        const header = await x402Headers(chain, payer.privateKey, payTo, 1);
        const started = Date.now();
        const paid = await compare(relayed.url, header);
        const ms = Date.now() - started;
        assert.equal(paid.status, 502, paid.text);
        assert.equal(codeOf(paid), "chain_unavailable", paid.text);
        assert.equal(emulator.attempts().length, upstream, "the paid handler did not run");
        // Prepaid tokens do not need the chain.
        const { token } = await buyToken(relayed.url, `10.6.${payerIndex}.2`);
        const byToken = await compare(relayed.url, { "x-payment-token": token });
        assert.equal(byToken.status, 200, byToken.text);
        proxy.set({ kind: "pass" });
        await assertNotCharged(payer.address, before, header, transfersBefore);
        table.push(`chain RPC ${f.name}: x402 → ${paid.status} ${codeOf(paid)} in ${ms} ms; token → ${byToken.status}`);
        await assertRetryWorks(relayed, payer.address, before, header);
      } finally {
        proxy.set({ kind: "pass" });
      }
    });
  }

  it("x402 facilitator down at settlement → 502/504 with a clear code, payer not charged, same payment accepted after", async () => {
    const payer = nextPayer();
    const before = await chain.balanceOf(payer.address);
    const transfersBefore = (await transfersTo(chain, payTo)).length;
    const upstream = facEmulator.attempts().length;
    const header = await x402Headers(chain, payer.privateKey, payTo, 2);
    facilitator.fault = "down";
    let paid: Answer;
    try {
      paid = await compare(viaFacilitator.url, header);
    } finally {
      facilitator.fault = undefined;
    }
    const handlerRuns = facEmulator.attempts().length - upstream;
    table.push(`facilitator down: x402 → ${paid.status} ${codeOf(paid)} (paid handler ran ${handlerRuns}×)`);
    await assertNotCharged(payer.address, before, header, transfersBefore);
    await assertRetryWorks(viaFacilitator, payer.address, before, header);
    assert.ok(paid.status === 502 || paid.status === 504, `expected 502/504 for an unreachable facilitator, got ${paid.status} ${codeOf(paid)}: ${String(paid.json?.message)}`);
    assert.match(codeOf(paid), /^[a-z_]+$/, paid.text);
  });

  it("both servers healthy after every fault: alive, catalog answers, paid calls work", async () => {
    for (const s of [relayed, viaFacilitator]) {
      assert.ok(s.alive(), `${s.url} died:\n${s.output().slice(-2000)}`);
      const catalog = await call(`${s.url}/api/services`);
      assert.ok(catalog.status === 200 || catalog.status === 404, catalog.text);
      const payer = nextPayer();
      const paid = await compare(s.url, await x402Headers(chain, payer.privateKey, payTo, 2));
      assert.equal(paid.status, 200, paid.text);
      const unexpected = s.output().split("\n").filter((l) => /unexpected error/.test(l));
      assert.deepEqual(unexpected, [], "the server logged unexpected errors");
    }
  });
});
