/**
 * Issue 17: lifecycle hooks around an `upto` payment that charges 0. As in
 * @x402/core 2.x's resource server (whose `upto` facilitator answers a zero
 * settlement with success, `transaction: ""`, `amount: "0"`), a zero charge
 * is a settlement like any other for the hooks: `onBeforeSettle` runs first
 * and may refuse (nothing was charged either way; the answer is withheld and
 * the authorization's lock given back), then `onAfterSettle` observes it with
 * `transaction: ""` and `payment.amount` "0". Real dev chain, real relayer.
 */
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import express from "express";
import type { Address } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { paywall, relayerSettler, type PaymentHooks } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { approvePermit2, permit2Payment } from "./support/permit2-pay.js";

const MAX = 500_000n;

describe("upto hooks: a zero charge is a settlement for onBeforeSettle / onAfterSettle (issue 17)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let server: Server;
  let url: string;
  let abortZero = false;
  let runs = 0;
  const calls: { hook: string; transaction?: string; amount?: string }[] = [];

  before(async () => {
    chain = await startDevChain();
    await approvePermit2(chain, chain.accounts.payers[1]!.privateKey, chain.usdc);
    const hooks: PaymentHooks = {
      onBeforeSettle: (ctx) => {
        calls.push({ hook: "onBeforeSettle", amount: ctx.payment.amount });
        if (abortZero && ctx.payment.amount === "0") return { abort: true, reason: "zero_refused", message: "no free calls today" };
      },
      onAfterSettle: (ctx) => void calls.push({ hook: "onAfterSettle", transaction: ctx.transaction, amount: ctx.payment.amount }),
      onSettleFailure: (ctx) => void calls.push({ hook: "onSettleFailure", amount: ctx.payment.amount }),
    };
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      hooks,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
      routes: { "GET /usage": { upto: "$0.50", description: "metered" } },
    });
    const app = express();
    app.use(pw);
    app.get("/usage", (req, res) => {
      runs++;
      const charge = (req.query as Record<string, string>).charge;
      if (charge) req.payment?.charge?.(charge);
      res.json({ used: charge ?? null });
    });
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    await chain?.stop();
  });

  async function header(): Promise<string> {
    const account = privateKeyToAccount(chain.accounts.payers[1]!.privateKey);
    const relayer = chain.accounts.relayer.address as Address;
    return (await permit2Payment(chain, { scheme: "upto", owner: account.address, sign: (td) => account.signTypedData(td), token: chain.usdc, amount: MAX, payTo: chain.accounts.payTo.address, facilitator: relayer })).header;
  }
  const get = (path: string, h: string) => fetch(`${url}${path}`, { headers: { "payment-signature": h } });

  it("no charge: onBeforeSettle, then onAfterSettle with transaction \"\" and amount 0; 200", async () => {
    calls.length = 0;
    const res = await get("/usage", await header());
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual(calls, [
      { hook: "onBeforeSettle", amount: "0" },
      { hook: "onAfterSettle", transaction: "", amount: "0" },
    ]);
  });

  it("a charge: the same two hooks, onAfterSettle with the transaction and the charged amount", async () => {
    calls.length = 0;
    const res = await get("/usage?charge=1234", await header());
    assert.equal(res.status, 200, await res.text());
    assert.equal(calls.length, 2, JSON.stringify(calls));
    assert.deepEqual(calls[0], { hook: "onBeforeSettle", amount: "1234" });
    assert.equal(calls[1]!.hook, "onAfterSettle");
    assert.match(calls[1]!.transaction!, /^0x[0-9a-f]{64}$/);
    assert.equal(calls[1]!.amount, "1234");
  });

  it("onBeforeSettle refusing a zero charge: 402 with its reason, the answer withheld, onAfterSettle not called; the lock is given back (the same payment pays later)", async () => {
    calls.length = 0;
    abortZero = true;
    const h = await header();
    const ran = runs;
    try {
      const res = await get("/usage", h);
      const text = await res.text();
      assert.equal(res.status, 402, text);
      assert.equal(JSON.parse(text).error, "zero_refused");
      assert.doesNotMatch(text, /"used"/, "the handler's answer is withheld");
      assert.equal(runs, ran + 1);
      assert.deepEqual(calls.map((c) => c.hook), ["onBeforeSettle", "onSettleFailure"]);
    } finally {
      abortZero = false;
    }
    const again = await get("/usage?charge=10", h);
    assert.equal(again.status, 200, await again.text());
  });
});
