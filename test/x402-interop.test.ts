/**
 * Real x402 clients (x402-fetch 1.2.0 and @x402/fetch 2.x) pay server402
 * routes on a real anvil chain; x402-express 1.2.0 is the wire reference.
 */
import assert from "node:assert/strict";
import express from "express";
import { Agent, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { wrapFetchWithPayment as wrapV1, decodeXPaymentResponse } from "x402-fetch";
import { wrapFetchWithPayment as wrapV2, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { PaymentRequirementsSchema } from "x402/types";
import { paymentMiddleware as x402ExpressMiddleware } from "x402-express";
import { privateKeyToAccount } from "viem/accounts";
import { startDevChain, type DevChain } from "server402/devchain";
import { facilitatorSettler } from "server402";
import { payerWallet, startPaidApp, type PaidApp } from "./support/paid-app.js";
import { startFacilitator, type TestFacilitator } from "./support/facilitator.js";

function v1Fetch(chain: DevChain, i: number) {
  return wrapV1(fetch, payerWallet(chain, chain.accounts.payers[i]!.privateKey) as never, 1_000_000n);
}
function v2Fetch(chain: DevChain, i: number) {
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[i]!.privateKey)));
  return wrapV2(fetch, client);
}

describe("x402 interop with real clients on a real chain", function () {
  let chain: DevChain;
  let app: PaidApp;

  before(async () => {
    chain = await startDevChain();
    app = await startPaidApp(chain, { mount: "/v1" });
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("answers 402 with a strictly valid v1 body and a v2 PAYMENT-REQUIRED header", async () => {
    const res = await fetch(`${app.url}/weather?city=x`);
    assert.equal(res.status, 402);
    assert.equal(res.headers.get("cache-control"), "no-store");
    const body = await res.json();
    assert.equal(body.x402Version, 1);
    assert.equal(body.accepts.length, 1);
    const req = PaymentRequirementsSchema.parse(body.accepts[0]);
    assert.equal(req.maxAmountRequired, "10000");
    assert.equal(req.resource, `${app.url}/weather`, "absolute resource URL with the mount prefix");
    assert.deepEqual(req.extra, { name: "USDC", version: "2" });
    assert.equal(typeof body.accepts[0].outputSchema, "object");
    const v2 = JSON.parse(Buffer.from(res.headers.get("payment-required")!, "base64").toString());
    assert.equal(v2.x402Version, 2);
    assert.equal(v2.resource.url, `${app.url}/weather`);
    assert.deepEqual(v2.accepts[0], {
      scheme: "exact",
      network: "eip155:84532",
      amount: "10000",
      asset: chain.usdc,
      payTo: chain.accounts.payTo.address,
      maxTimeoutSeconds: 300,
      extra: { name: "USDC", version: "2", assetTransferMethod: "eip3009", primaryType: "TransferWithAuthorization" },
    });
  });

  it("honours trust proxy for the resource URL", async () => {
    app.app.set("trust proxy", true);
    try {
      const res = await fetch(`${app.url}/weather`, { headers: { "x-forwarded-proto": "https", "x-forwarded-host": "api.example.com" } });
      const body = await res.json();
      assert.equal(body.accepts[0].resource, "https://api.example.com/v1/weather");
    } finally {
      app.app.set("trust proxy", false);
    }
  });

  it("on one kept-alive connection, each request's Host, forwarded headers and trust setting make its resource URL", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const resourceFor = (headers: Record<string, string>) =>
      new Promise<string>((resolve, reject) => {
        const req = httpRequest(`${app.url}/weather`, { agent, headers }, (res) => {
          sockets.add(res.socket);
          let text = "";
          res.on("data", (c: Buffer) => (text += c));
          res.on("end", () => resolve((JSON.parse(text) as { accepts: Array<{ resource: string }> }).accepts[0]!.resource));
        });
        req.on("error", reject);
        req.end();
      });
    const forwarded = { "x-forwarded-proto": "https", "x-forwarded-host": "api.example.com" };
    try {
      assert.equal(await resourceFor({ host: "a.test" }), "http://a.test/v1/weather");
      assert.equal(await resourceFor({ host: "b.test" }), "http://b.test/v1/weather");
      assert.equal(await resourceFor({ host: "b.test", ...forwarded }), "http://b.test/v1/weather"); // not trusted
      app.app.set("trust proxy", true);
      assert.equal(await resourceFor({ host: "b.test", ...forwarded }), "https://api.example.com/v1/weather");
      assert.equal(await resourceFor({ host: "b.test", ...forwarded, "x-forwarded-host": "other.example.com" }), "https://other.example.com/v1/weather");
      assert.equal(await resourceFor({ host: "b.test" }), "http://b.test/v1/weather"); // trusted, but nothing forwarded
      assert.equal(await resourceFor({ host: "b.test", "x-forwarded-proto": "https" }), "https://b.test/v1/weather");
      app.app.set("trust proxy", false);
      assert.equal(await resourceFor({ host: "b.test", "x-forwarded-proto": "https" }), "http://b.test/v1/weather");
      assert.equal(await resourceFor({ host: "b.test", ...forwarded }), "http://b.test/v1/weather");
      assert.equal(sockets.size, 1, "all on one connection");
    } finally {
      app.app.set("trust proxy", false);
      agent.destroy();
    }
  });

  const cases: Array<{ route: string; method: string; price: bigint; body?: unknown; key: string }> = [
    { route: "/weather", method: "GET", price: 10000n, key: "weather" },
    { route: "/echo", method: "POST", price: 50000n, body: { hello: "world", n: 1 }, key: "echo" },
    { route: "/single", method: "POST", price: 20000n, body: { x: 1 }, key: "single" },
  ];

  for (const [label, make, header, decode] of [
    ["x402-fetch 1.2.0", v1Fetch, "x-payment-response", (h: string) => decodeXPaymentResponse(h)],
    ["@x402/fetch 2.x", v2Fetch, "payment-response", (h: string) => decodePaymentResponseHeader(h)],
  ] as const) {
    for (const c of cases) {
      it(`${label} pays ${c.method} ${c.route} and the payee gets exactly the price`, async () => {
        const payer = label.startsWith("x402-fetch") ? 0 : 1;
        const pay = make(chain, payer);
        const before = await chain.balanceOf(chain.accounts.payTo.address);
        const payerBefore = await chain.balanceOf(chain.accounts.payers[payer]!.address);
        const runs = app.runs[c.key] ?? 0;
        const res = await pay(`${app.url}${c.route}`, {
          method: c.method,
          headers: c.body ? { "content-type": "application/json" } : undefined,
          body: c.body ? JSON.stringify(c.body) : undefined,
        });
        const text = await res.text();
        assert.equal(res.status, 200, text);
        const json = JSON.parse(text);
        if (c.body && c.key === "echo") assert.deepEqual(json.echo, c.body);
        assert.equal(json.payment.method, "x402");
        assert.equal(json.payment.amount, c.price.toString());
        const settle = decode(res.headers.get(header)!) as { success: boolean; transaction: string; payer: string };
        assert.equal(settle.success, true);
        assert.match(settle.transaction, /^0x[0-9a-f]{64}$/);
        assert.equal(settle.payer, chain.accounts.payers[payer]!.address);
        assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, c.price);
        assert.equal(payerBefore - (await chain.balanceOf(chain.accounts.payers[payer]!.address)), c.price);
        assert.equal(app.runs[c.key], runs + 1);
      });
    }
  }

  it("dynamic prices: the amount offered is the amount charged", async () => {
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const unpaid = await fetch(`${app.url}/dynamic/7`);
    assert.equal((await unpaid.json()).accepts[0].maxAmountRequired, "70000");
    const res = await v2Fetch(chain, 2)(`${app.url}/dynamic/7`);
    assert.equal(res.status, 200, await res.text());
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 70000n);
  });

  it("a handler answering >= 400 is not charged and its answer is passed through", async () => {
    const failing = await startPaidApp(chain, { handlerStatus: () => 503 });
    try {
      const before = await chain.balanceOf(chain.accounts.payers[3]!.address);
      const res = await v2Fetch(chain, 3)(`${failing.url}/weather`);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("payment-response"), null);
      assert.equal(await chain.balanceOf(chain.accounts.payers[3]!.address), before);
    } finally {
      await failing.close();
    }
  });

  it("settlement mode 'before' settles, then runs the handler with the transaction", async () => {
    const early = await startPaidApp(chain, { settlement: "before" });
    try {
      const res = await v1Fetch(chain, 4)(`${early.url}/weather`);
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.match(body.payment.transaction, /^0x[0-9a-f]{64}$/);
    } finally {
      await early.close();
    }
  });

  describe("settling through an HTTP facilitator", () => {
    let fac: TestFacilitator;
    let viaFac: PaidApp;
    before(async () => {
      fac = await startFacilitator(chain);
      const f = facilitatorSettler({ url: fac.url, timeoutMs: 5000 });
      viaFac = await startPaidApp(chain, { settler: f, rpcUrl: undefined, checker: f.checker() });
    });
    after(async () => {
      await viaFac?.close();
      await fac?.close();
    });
    for (const [label, make] of [["v1", v1Fetch], ["v2", v2Fetch]] as const) {
      it(`${label} client pays via facilitator /verify + /settle`, async () => {
        const before = await chain.balanceOf(chain.accounts.payTo.address);
        const calls = { ...fac.calls };
        const res = await make(chain, 5)(`${viaFac.url}/weather`);
        assert.equal(res.status, 200, await res.text());
        assert.equal(fac.calls.verify, calls.verify + 1);
        assert.equal(fac.calls.settle, calls.settle + 1);
        assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10000n);
      });
    }
    it("a failed settlement answers 402 with the reason in the response header and withholds the handler's answer", async () => {
      fac.fault = "refuse-settle";
      try {
        const before = await chain.balanceOf(chain.accounts.payers[6]!.address);
        const res = await v2Fetch(chain, 6)(`${viaFac.url}/weather`);
        assert.equal(res.status, 402);
        const body = await res.json();
        assert.equal(body.error, "insufficient_funds");
        assert.equal(body.weather, undefined, "the paid answer is withheld");
        const receipt = JSON.parse(Buffer.from(res.headers.get("payment-response")!, "base64").toString());
        assert.equal(receipt.success, false);
        assert.equal(receipt.errorReason, "insufficient_funds");
        assert.equal(await chain.balanceOf(chain.accounts.payers[6]!.address), before);
      } finally {
        fac.fault = undefined;
      }
    });
    it("facilitator down → 502 for verification, nothing charged, no handler run", async () => {
      fac.fault = "down";
      try {
        const runs = viaFac.runs.weather ?? 0;
        const before = await chain.balanceOf(chain.accounts.payers[6]!.address);
        const res = await v2Fetch(chain, 6)(`${viaFac.url}/weather`);
        assert.equal(res.status, 502);
        assert.equal((await res.json()).error, "chain_unavailable");
        assert.equal(viaFac.runs.weather ?? 0, runs);
        assert.equal(await chain.balanceOf(chain.accounts.payers[6]!.address), before);
      } finally {
        fac.fault = undefined;
      }
    });
  });

  describe("wire parity with x402-express 1.2.0", () => {
    let fac: TestFacilitator;
    let server: Server;
    let url: string;
    before(async () => {
      fac = await startFacilitator(chain);
      const ref = express();
      ref.use(x402ExpressMiddleware(chain.accounts.payTo.address, { "GET /weather": { price: "$0.01", network: "base-sepolia", config: { description: "weather" } } }, { url: fac.url as `${string}://${string}` }));
      ref.get("/weather", (_req, res) => void res.json({ weather: "sunny" }));
      server = await new Promise((r) => {
        const s = ref.listen(0, "127.0.0.1", () => r(s));
      });
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(async () => {
      server?.closeAllConnections();
      server?.close();
      await fac?.close();
    });
    it("the same v1 client gets the same 402 fields and pays both servers", async () => {
      const [ours, theirs] = await Promise.all([fetch(`${app.url}/weather`).then((r) => r.json()), fetch(`${url}/weather`).then((r) => r.json())]);
      const strip = (a: Record<string, unknown>) => {
        const { resource: _r, outputSchema: _o, mimeType: _m, ...rest } = a;
        return rest;
      };
      assert.deepEqual(strip(ours.accepts[0]), { ...strip(theirs.accepts[0]), maxTimeoutSeconds: 300 });
      assert.deepEqual(Object.keys(ours.accepts[0]).sort(), Object.keys(theirs.accepts[0]).sort());
      const pay = v1Fetch(chain, 7);
      const [a, b] = [await pay(`${app.url}/weather`), await pay(`${url}/weather`)];
      assert.equal(a.status, 200);
      assert.equal(b.status, 200);
      const [ra, rb] = [decodeXPaymentResponse(a.headers.get("x-payment-response")!), decodeXPaymentResponse(b.headers.get("x-payment-response")!)];
      assert.deepEqual(Object.keys(ra).sort(), Object.keys(rb).sort());
      assert.equal(ra.network, rb.network);
    });
  });
});
