/**
 * MCP: the real MCP SDK Client over Streamable HTTP discovers and pays for
 * `face_comparison` on the example server, running on a real dev chain with
 * the real Alibaba engine against its emulator.
 */
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { PaymentRequirementsSchema } from "x402/types";
import { z } from "zod";
import express from "express";
import { MemoryStore, paywall, SettlementError, type Settler } from "server402";
import { registerPaidTool } from "server402/mcp";
import { startDevChain, type DevChain } from "server402/devchain";
import { signAuthorization, v1Header } from "./support/sign.js";
import { listen } from "./support/listen.js";
import { mountMcp, registerSecretAnswer } from "./support/mcp-endpoint.js";
import { IMAGE_A, IMAGE_B, startExampleApp, type ExampleApp } from "./support/example-app.js";

type ToolResult = {
  isError?: boolean;
  content: Array<{ type: string; text?: string }>;
  structuredContent?: Record<string, any>;
  _meta?: Record<string, any>;
};

const PRICE = 200_000n;
const ARGS = { ImageDataA: IMAGE_A, ImageDataB: IMAGE_B };

describe("MCP: face_comparison over Streamable HTTP (real SDK client, real chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;
  let client: Client;

  const call = async (args: Record<string, unknown>, meta?: Record<string, unknown>) =>
    (await client.callTool({ name: "face_comparison", arguments: args, ...(meta ? { _meta: meta } : {}) })) as ToolResult;

  async function unpaid() {
    const r = await call(ARGS);
    assert.equal(r.isError, true);
    return r.structuredContent!;
  }

  before(async () => {
    chain = await startDevChain();
    app = await startExampleApp(chain);
    client = new Client({ name: "server402-test", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${app.url}/mcp`)));
  });
  after(async () => {
    await client?.close();
    await app?.close();
    await chain?.stop();
  });

  it("lists face_comparison with the service's input keys plus paymentToken, refusing other keys", async () => {
    const { tools } = await client.listTools();
    const tool = tools.find((t) => t.name === "face_comparison");
    assert.ok(tool, "face_comparison is listed");
    const props = tool.inputSchema.properties as Record<string, { type?: string }>;
    assert.deepEqual(Object.keys(props).sort(), ["ImageDataA", "ImageDataB", "ImageURLA", "ImageURLB", "QualityScoreThreshold", "paymentToken"].sort());
    assert.equal(props.QualityScoreThreshold!.type, "number");
    assert.equal(props.paymentToken!.type, "string");
    assert.equal((tool.inputSchema as { additionalProperties?: unknown }).additionalProperties, false);
    assert.match(tool.description ?? "", /0\.20/);
  });

  it("an unpaid call is a payment-required tool error with x402 v2 and v1 requirements and prepaid hints", async () => {
    const before = app.emulator.attempts().length;
    const r = await call(ARGS);
    assert.equal(r.isError, true);
    const pr = r.structuredContent!;
    // issue 16: the v2 MCP transport's error shape in content[0].text (test/x402-mcp-clients.test.ts)
    assert.deepEqual(JSON.parse(r.content[0]!.text!), { "x402/error": { code: 402, message: pr.message, data: pr } }, "content[0].text is the x402/error object");
    assert.deepEqual(r._meta?.["x402/payment-required"], pr);
    assert.equal(pr.x402Version, 2);
    assert.equal(pr.reason, "payment_required");
    assert.equal(pr.resource.url, `${app.url}/mcp#face_comparison`);
    assert.deepEqual(pr.accepts, [
      { scheme: "exact", network: "eip155:84532", amount: "200000", asset: chain.usdc, payTo: chain.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2", assetTransferMethod: "eip3009", primaryType: "TransferWithAuthorization" } },
    ]);
    assert.equal(pr.x402v1.x402Version, 1);
    const v1 = PaymentRequirementsSchema.parse(pr.x402v1.accepts[0]);
    assert.equal(v1.maxAmountRequired, "200000");
    assert.equal(v1.network, "base-sepolia");
    assert.equal(v1.resource, `${app.url}/mcp#face_comparison`);
    assert.equal(pr.prepaid.argument, "paymentToken");
    assert.equal(pr.prepaid.create.url, `${app.url}/api/payments`);
    assert.deepEqual(pr.prepaid.create.body, { serviceId: "face-comparison" });
    assert.equal(app.emulator.attempts().length, before, "the engine did not run");
  });

  it("pays with a prepaid token (created and paid over HTTP), then refuses the exhausted token", async () => {
    const created = await fetch(`${app.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "face-comparison" }) });
    assert.equal(created.status, 201);
    const payment = await created.json();
    assert.equal(payment.amount, "200000");
    const payer = chain.accounts.payers[2]!;
    const header = await v1Header({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE });
    const paid = await fetch(payment.pay.url, { method: "POST", headers: { "X-PAYMENT": header } });
    assert.equal(paid.status, 200, await paid.clone().text());
    assert.equal((await paid.json()).status, "paid");

    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const r = await call({ ...ARGS, paymentToken: payment.token });
    assert.equal(r.isError, undefined, JSON.stringify(r));
    assert.equal(r.structuredContent!.code, "200");
    assert.equal(typeof r.structuredContent!.data.Result.Confidence, "number");
    assert.deepEqual(JSON.parse(r.content[0]!.text!), r.structuredContent);
    assert.equal(r._meta?.["server402/payment"].method, "token");
    assert.equal(r._meta?.["server402/payment"].paymentId, payment.paymentId);
    assert.equal(r._meta?.["server402/payment"].callsRemaining, 0);
    assert.equal(await chain.balanceOf(chain.accounts.payTo.address), before, "a token call moves no money");

    const status = await (await fetch(`${app.url}/api/payments/${payment.paymentId}`)).json();
    assert.equal(status.status, "exhausted");

    const again = await call({ ...ARGS, paymentToken: payment.token });
    assert.equal(again.isError, true);
    assert.equal(again.structuredContent!.reason, "exhausted");
    assert.equal(again.structuredContent!.payment.paymentId, payment.paymentId);
    assert.equal(again.structuredContent!.accepts[0].amount, "200000", "still says how to pay");
  });

  it("a failed paid call gives the token's call back", async () => {
    const created = await (await fetch(`${app.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "face-comparison" }) })).json();
    const payer = chain.accounts.payers[3]!;
    const header = await v1Header({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE });
    assert.equal((await fetch(created.pay.url, { method: "POST", headers: { "X-PAYMENT": header } })).status, 200);
    app.emulator.script({ kind: "error", code: "InvalidImage.NotFoundFace" });
    const failed = await call({ ...ARGS, paymentToken: created.token });
    assert.equal(failed.isError, true);
    assert.equal(failed.structuredContent!.code, "no_face");
    const ok = await call({ ...ARGS, paymentToken: created.token });
    assert.equal(ok.isError, undefined, JSON.stringify(ok));
  });

  it("pays with an x402 v2 PaymentPayload in _meta[\"x402/payment\"]: payTo gets exactly 200000, receipt in _meta", async () => {
    const pr = await unpaid();
    const accepted = pr.accepts[0];
    const payer = chain.accounts.payers[4]!;
    const payload = {
      x402Version: 2,
      resource: pr.resource,
      accepted,
      payload: await signAuthorization({ privateKey: payer.privateKey, asset: accepted.asset, payTo: accepted.payTo, value: BigInt(accepted.amount) }),
    };
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const payerBefore = await chain.balanceOf(payer.address);
    const r = await call(ARGS, { "x402/payment": payload });
    assert.equal(r.isError, undefined, JSON.stringify(r).slice(0, 500));
    assert.equal(r.structuredContent!.code, "200");
    const receipt = r._meta?.["x402/payment-response"];
    assert.equal(receipt.success, true);
    assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(receipt.network, "eip155:84532");
    assert.equal(receipt.payer, payer.address);
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE);
    assert.equal(payerBefore - (await chain.balanceOf(payer.address)), PRICE);

    const replay = await call(ARGS, { "x402/payment": payload });
    assert.equal(replay.isError, true);
    assert.equal(replay.structuredContent!.reason, "duplicate_settlement");
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE, "the replay was not charged");
  });

  it("pays with an x402 v1 PaymentPayload in _meta (version taken from x402Version)", async () => {
    const pr = await unpaid();
    const payer = chain.accounts.payers[5]!;
    const v1 = pr.x402v1.accepts[0];
    const payload = { x402Version: 1, scheme: "exact", network: v1.network, payload: await signAuthorization({ privateKey: payer.privateKey, asset: v1.asset, payTo: v1.payTo, value: BigInt(v1.maxAmountRequired) }) };
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const r = await call(ARGS, { "x402/payment": payload });
    assert.equal(r.isError, undefined, JSON.stringify(r).slice(0, 500));
    assert.equal(r._meta?.["x402/payment-response"].network, "base-sepolia");
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE);
  });

  it("a failing tool is not charged and its x402 authorization stays usable", async () => {
    const pr = await unpaid();
    const payer = chain.accounts.payers[6]!;
    const payload = { x402Version: 2, accepted: pr.accepts[0], payload: await signAuthorization({ privateKey: payer.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE }) };
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    app.emulator.script({ kind: "error", code: "InvalidImage.NotFoundFace" });
    const failed = await call(ARGS, { "x402/payment": payload });
    assert.equal(failed.isError, true);
    assert.equal(failed.structuredContent!.code, "no_face");
    assert.equal(failed._meta?.["x402/payment-response"], undefined);
    assert.equal(await chain.balanceOf(chain.accounts.payTo.address), before);
    const retried = await call(ARGS, { "x402/payment": payload });
    assert.equal(retried.isError, undefined, JSON.stringify(retried).slice(0, 500));
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE);
  });

  it("refuses a payment signed by someone else with its x402 reason, without running the tool", async () => {
    const pr = await unpaid();
    const attempts = app.emulator.attempts().length;
    const payload = {
      x402Version: 2,
      accepted: pr.accepts[0],
      payload: await signAuthorization({ privateKey: chain.accounts.payers[7]!.privateKey, from: chain.accounts.payers[8]!.address, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE }),
    };
    const r = await call(ARGS, { "x402/payment": payload });
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent!.x402Version, 2);
    assert.match(r.structuredContent!.reason, /signature/);
    assert.equal(app.emulator.attempts().length, attempts);
  });

  it("bad arguments are tool errors naming the problem, never a transport crash, and never ask for payment", async () => {
    const misspelled = await call({ ImageDataA: IMAGE_A, ImageDatab: IMAGE_B });
    assert.equal(misspelled.isError, true);
    assert.match(misspelled.content[0]!.text!, /ImageDatab/);
    assert.match(misspelled.content[0]!.text!, /did you mean ImageDataB/);
    assert.equal(misspelled.structuredContent?.x402Version, undefined);

    const wrongType = await call({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B, QualityScoreThreshold: "high" });
    assert.equal(wrongType.isError, true);
    assert.match(wrongType.content[0]!.text!, /QualityScoreThreshold/);

    const missing = await call({ ImageDataA: IMAGE_A });
    assert.equal(missing.isError, true);
    assert.equal(missing.structuredContent!.error, "invalid_input");
    assert.match(missing.structuredContent!.message, /ImageURLB|ImageDataB/);

    const notImage = await call({ ImageDataA: Buffer.from("hello world, not an image").toString("base64"), ImageDataB: IMAGE_B, paymentToken: "s402_whatever" });
    assert.equal(notImage.isError, true);
    assert.equal(notImage.structuredContent!.x402Version, undefined, "validation runs before payment");

    const badPayment = await call(ARGS, { "x402/payment": "not base64 at all!" });
    assert.equal(badPayment.isError, true);
    assert.equal(badPayment.structuredContent!.reason, "invalid_payload");

    // The session still works.
    assert.ok((await client.listTools()).tools.length >= 1);
  });

  it("answers plain HTTP mistakes on /mcp with JSON-RPC errors", async () => {
    const get = await fetch(`${app.url}/mcp`);
    assert.equal(get.status, 405);
    assert.equal((await get.json()).jsonrpc, "2.0");
    const bad = await fetch(`${app.url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: "{nope" });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, -32700);
  });
});

describe("registerPaidTool on a bare McpServer (library use)", () => {
  const PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" as const;
  const USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e" as const;
  const PAYER_KEY = `0x${"22".repeat(32)}` as const;
  const failingSettler: Settler = {
    kind: "test-double-always-fails",
    settle: async () => {
      throw new SettlementError("settle_exact_failed_onchain", "the transfer reverted.");
    },
  };
  const makePaywall = (settler: Settler) =>
    paywall({ payTo: PAY_TO, settler, store: new MemoryStore(), checker: false, routes: { "POST /x": { price: "$0.01", serviceId: "x", description: "x" }, "GET /dyn": { price: () => "$0.01" } } });
  const handler = async () => ({ content: [] });

  it("refuses unknown services, dynamic prices, a paymentToken key and non-zod shapes at registration", () => {
    const pw = makePaywall(failingSettler);
    const server = new McpServer({ name: "t", version: "1" });
    assert.throws(() => registerPaidTool(server, pw, { name: "a", serviceId: "nope", inputSchema: {}, handler }), /no paywall route.*known: x/);
    assert.throws(() => registerPaidTool(server, pw, { name: "b", route: "GET /dyn", inputSchema: {}, handler }), /dynamic price/);
    assert.throws(() => registerPaidTool(server, pw, { name: "c", serviceId: "x", inputSchema: { paymentToken: z.string() }, handler }), /must not define paymentToken/);
    assert.throws(() => registerPaidTool(server, pw, { name: "d", serviceId: "x", inputSchema: { a: "string" as never }, handler }), /zod v4 schema/);
    assert.ok(registerPaidTool(server, pw, { name: "e", route: "POST /x", inputSchema: { a: z.string() }, handler }));
  });

  it("a failed settlement withholds the output and answers \"Payment settlement failed\" with the receipt; the authorization is released", async () => {
    const pw = makePaywall(failingSettler);
    let runs = 0;
    const app = express();
    mountMcp(app, (server) => registerSecretAnswer(server, pw, "x", () => runs++));
    const http = await listen(app);
    const url = `${http.url}/mcp`;
    const client = new Client({ name: "lib-test", version: "1" });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(url)));
      const unpaid = (await client.callTool({ name: "secret_answer", arguments: { question: "life" } })) as ToolResult;
      assert.equal(unpaid.structuredContent!.resource.url, `${url}#secret_answer`, "default resource: endpoint URL + #tool");
      assert.equal(unpaid.structuredContent!.accepts[0].amount, "10000");
      const payload = { x402Version: 2, accepted: unpaid.structuredContent!.accepts[0], payload: await signAuthorization({ privateKey: PAYER_KEY, asset: USDC, payTo: PAY_TO, value: 10_000n }) };
      for (let i = 1; i <= 2; i++) {
        const r = (await client.callTool({ name: "secret_answer", arguments: { question: "life" }, _meta: { "x402/payment": payload } })) as ToolResult;
        assert.equal(r.isError, true);
        assert.equal(runs, i, "the tool ran (settlement comes after success)");
        assert.ok(!JSON.stringify(r).includes("xyzzy"), "the output is withheld");
        assert.equal(r.structuredContent!.error, "Payment settlement failed: the transfer reverted.");
        assert.equal(r.structuredContent!.reason, "settle_exact_failed_onchain");
        assert.equal(r.structuredContent!.accepts[0].amount, "10000");
        assert.equal(r._meta?.["x402/payment-response"].success, false);
        assert.equal(r._meta?.["x402/payment-response"].errorReason, "settle_exact_failed_onchain");
        assert.deepEqual(r.structuredContent!["x402/payment-response"], r._meta?.["x402/payment-response"]);
      }
    } finally {
      await client.close();
      await http.close();
    }
  });
});
