/**
 * Issue 16 (5): custom 402 bodies. A route's `paymentRequiredBody` adds
 * fields to its 402 JSON bodies (unpaid and refused) while the x402 fields
 * and the PAYMENT-REQUIRED header stay as they were; real x402 clients
 * (x402-fetch 1.2.0 reads the body, @x402/fetch the header) still pay.
 */
import assert from "node:assert/strict";
import express from "express";
import { wrapFetchWithPayment as wrapV2, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment as wrapV1 } from "x402-fetch";
import { privateKeyToAccount } from "viem/accounts";
import { ConfigError, paywall, relayerSettler, type PaymentRequiredBodyContext, type PaywallMiddleware } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { payerWallet } from "./support/paid-app.js";
import { v2Header } from "./support/sign.js";
import { listen, type Listening } from "./support/listen.js";

describe("issue 16: custom 402 bodies", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let server: Listening;
  let url: string;
  let pw: PaywallMiddleware;
  const seen: PaymentRequiredBodyContext[] = [];

  before(async () => {
    chain = await startDevChain();
    pw = paywall({
      payTo: chain.accounts.payTo.address,
      rpcUrl: chain.rpcUrl,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
      paymentRequiredBody: { docs: "https://example.com/pricing" },
      routes: {
        "GET /plain": { price: "$0.01" },
        "GET /custom": {
          price: "$0.01",
          description: "custom",
          paymentRequiredBody: (ctx) => {
            seen.push(ctx);
            return ctx.unpaid ? { hint: `pay ${ctx.amount} on ${ctx.network}`, plans: ["single"], x402Version: 99, error: "mine" } : { hint: `refused: ${ctx.reason}` };
          },
        },
        "GET /broken": { price: "$0.01", paymentRequiredBody: () => { throw new Error("oops"); } },
      },
    });
    const app = express();
    app.use(pw);
    for (const k of ["plain", "custom", "broken"]) app.get(`/${k}`, (_req, res) => res.json({ ok: k }));
    server = await listen(app);
    url = server.url;
  });
  after(async () => {
    await server?.close();
    pw?.engine.stopReconciler();
    await chain?.stop();
  });

  it("16.5 the paywall's fields and a route's function's fields are added; x402Version, error and accepts stay the server's; the header is the same as without them", async () => {
    const plain = await fetch(`${url}/plain`);
    const pb = (await plain.json()) as Record<string, unknown>;
    assert.equal(pb.docs, "https://example.com/pricing");
    assert.equal(pb.x402Version, 1);
    const res = await fetch(`${url}/custom`);
    assert.equal(res.status, 402);
    const body = (await res.json()) as Record<string, any>;
    assert.deepEqual([body.x402Version, body.error, body.hint, body.plans], [1, "X-PAYMENT header is required", `pay 10000 on eip155:84532`, ["single"]]);
    assert.equal(body.docs, undefined, "the route's option replaces the paywall's");
    assert.equal(body.accepts[0].maxAmountRequired, "10000");
    assert.deepEqual(Object.keys(body).slice(0, 3), ["x402Version", "error", "accepts"]);
    const header = (r: Response) => JSON.parse(Buffer.from(r.headers.get("payment-required")!, "base64").toString("utf8"));
    const h = header(res);
    const p = header(plain);
    assert.deepEqual(h.accepts, p.accepts);
    assert.equal(h.error, "PAYMENT-SIGNATURE header is required");
    assert.equal(seen.at(-1)!.unpaid, true);
  });

  it("16.5 a refused payment's 402 is shaped too, told the reason", async () => {
    const payer = chain.accounts.payers[0]!;
    const res = await fetch(`${url}/custom`, { headers: { "PAYMENT-SIGNATURE": await v2Header({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 9_999n }) } });
    assert.equal(res.status, 402);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.error, "invalid_payment_requirements");
    assert.equal(body.hint, "refused: invalid_payment_requirements");
    assert.equal(typeof body.message, "string");
  });

  it("16.5 a function that throws adds nothing (the standard 402, never a 500)", async () => {
    const res = await fetch(`${url}/broken`);
    assert.equal(res.status, 402);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body).sort(), ["accepts", "error", "x402Version"]);
  });

  it("16.5 x402-fetch 1.2.0 (reads the body) and @x402/fetch 2.x (reads the header) still pay the shaped route", async () => {
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const v1 = await wrapV1(fetch, payerWallet(chain, chain.accounts.payers[1]!.privateKey) as never, 1_000_000n)(`${url}/custom`);
    assert.equal(v1.status, 200, await v1.clone().text());
    const v2 = await wrapV2(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[2]!.privateKey))))(`${url}/custom`);
    assert.equal(v2.status, 200, await v2.clone().text());
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 20_000n);
  });

  it("16.5 a static object that sets an x402 field, or is no object, is a startup error", () => {
    const base = { payTo: chain.accounts.payTo.address, settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey }) };
    assert.throws(() => paywall({ ...base, routes: { "/x": { price: "$0.01", paymentRequiredBody: { accepts: [] } } } }), (e: unknown) => e instanceof ConfigError && /accepts/.test(e.message));
    assert.throws(() => paywall({ ...base, paymentRequiredBody: "hi" as never, routes: { "/x": { price: "$0.01" } } }), (e: unknown) => e instanceof ConfigError && /paymentRequiredBody/.test(e.message));
  });
});
