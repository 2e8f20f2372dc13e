/**
 * Discovery: catalog, search, OpenAPI (validated by a real OpenAPI
 * validator), well-known document and llms.txt, all generated from the
 * services and the paywall's route table; a changed price shows everywhere.
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { startDevChain, type DevChain } from "server402/devchain";
import { faceInputSchema, faceOutputSchema, faceService } from "../example-server/src/service.js";
import { searchServices, queryProblem } from "../example-server/src/discovery/search.js";
import type { ServiceDescriptor } from "../example-server/src/discovery/catalog.js";
import { IMAGE_A, IMAGE_B, servicesWithPrice, startExampleApp, type ExampleApp } from "./support/example-app.js";

const getJson = async (url: string) => {
  const res = await fetch(url);
  return { status: res.status, headers: res.headers, body: await res.json() };
};

async function validOpenApi(doc: Record<string, unknown>) {
  const validator = new Validator();
  const res = await validator.validate(doc);
  assert.equal(res.valid, true, JSON.stringify(res.errors, null, 1)?.slice(0, 3000));
  assert.equal(validator.version, "3.1");
}

describe("discovery (generated from the route table)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;

  before(async () => {
    chain = await startDevChain();
    app = await startExampleApp(chain);
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("GET /api/services lists every service with schemas, examples, pricing and payment methods", async () => {
    const { status, body } = await getJson(`${app.url}/api/services`);
    assert.equal(status, 200);
    assert.equal(body.services.length, 1);
    const s = body.services[0];
    assert.equal(s.id, "face-comparison");
    assert.equal(s.name, faceService.name);
    assert.equal(s.description, faceService.description);
    assert.equal(s.method, "POST");
    assert.equal(s.endpoint, "/api/tools/face-comparison");
    assert.equal(s.url, `${app.url}/api/tools/face-comparison`);
    assert.deepEqual(s.legacyEndpoints, ["/api/tools/aliyun-facebody-compare-face"]);
    assert.ok(s.aliases.includes("face_comparison") && s.aliases.includes("aliyun-facebody-compare-face"));
    assert.equal(s.mcpToolName, "face_comparison");
    assert.deepEqual(s.mcp, { endpoint: `${app.url}/mcp`, transport: "streamable-http", tool: "face_comparison" });
    assert.deepEqual(s.inputSchema, JSON.parse(JSON.stringify(faceInputSchema)));
    assert.deepEqual(s.outputSchema, JSON.parse(JSON.stringify(faceOutputSchema)));
    assert.deepEqual(s.exampleRequest, faceService.exampleRequest);
    assert.equal(s.exampleResponse.code, "200");
    assert.deepEqual(
      { amountCents: s.pricing.amountCents, amount: s.pricing.amount, currency: s.pricing.currency, billingMode: s.pricing.billingMode, maxCalls: s.pricing.maxCalls, settlement: s.pricing.settlement },
      { amountCents: 20, amount: "200000", currency: "USD", billingMode: "per_call", maxCalls: 1, settlement: "after" },
    );
    assert.equal(s.pricing.asset.address, chain.usdc);
    assert.equal(s.pricing.payTo, chain.accounts.payTo.address);
    const x402 = s.acceptedPaymentMethods.find((m: { type: string }) => m.type === "x402");
    assert.deepEqual(x402.x402Versions, [1, 2]);
    assert.deepEqual(x402.requestHeaders, { v1: "X-PAYMENT", v2: "PAYMENT-SIGNATURE" });
    const prepaid = s.acceptedPaymentMethods.find((m: { type: string }) => m.type === "prepaid_token");
    assert.equal(prepaid.header, "X-Payment-Token");
    assert.equal(prepaid.mcpArgument, "paymentToken");
    assert.equal(prepaid.create.url, `${app.url}/api/payments`);
  });

  it("the catalog price is the price the paywall charges (402 body, header, payments API)", async () => {
    const { body } = await getJson(`${app.url}/api/services/face-comparison`);
    const res = await fetch(`${app.url}/api/tools/face-comparison`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }) });
    assert.equal(res.status, 402);
    assert.equal((await res.json()).accepts[0].maxAmountRequired, body.pricing.amount);
    const v2 = JSON.parse(Buffer.from(res.headers.get("payment-required")!, "base64").toString());
    assert.equal(v2.accepts[0].amount, body.pricing.amount);
    const created = await fetch(`${app.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: body.id }) });
    const p = await created.json();
    assert.equal(p.amount, body.pricing.prepaidAmount);
    assert.equal(p.amountCents, body.pricing.amountCents * body.pricing.maxCalls);
  });

  it("GET /api/services/:id by id or alias; unknown ids are a JSON 404", async () => {
    const byId = await getJson(`${app.url}/api/services/face-comparison`);
    assert.equal(byId.status, 200);
    assert.equal(byId.body.id, "face-comparison");
    const byAlias = await getJson(`${app.url}/api/services/face_comparison`);
    assert.deepEqual(byAlias.body, byId.body);
    const unknown = await getJson(`${app.url}/api/services/${"x".repeat(300)}`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error, "unknown_service");
    assert.deepEqual(unknown.body.serviceIds, ["face-comparison"]);
  });

  it("GET /api/catalog/search ranks text matches; empty, missing, repeated or oversized q is a 400", async () => {
    const hit = await getJson(`${app.url}/api/catalog/search?q=${encodeURIComponent("compare two faces")}`);
    assert.equal(hit.status, 200);
    assert.equal(hit.body.total, 1);
    assert.equal(hit.body.results[0].id, "face-comparison");
    assert.ok(hit.body.results[0].score > 0);
    assert.equal(hit.body.results[0].pricing.amount, "200000");
    assert.ok(hit.body.results[0].matched.includes("name"));
    const kyc = await getJson(`${app.url}/api/catalog/search?q=KYC`);
    assert.equal(kyc.body.results[0]?.id, "face-comparison", "keywords are searched");
    const none = await getJson(`${app.url}/api/catalog/search?q=weather`);
    assert.equal(none.status, 200);
    assert.deepEqual(none.body.results, []);
    for (const q of ["", "q=", "q=%20%20", `q=${"a".repeat(201)}`, "q=a&q=b", "q=%21%21%21"]) {
      const r = await getJson(`${app.url}/api/catalog/search?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.body.error, "invalid_query");
    }
  });

  it("search ranks a name match above a description match", () => {
    const svc = (id: string, name: string, description: string, keywords: string[]) => ({ id, name, description, keywords, aliases: [] }) as unknown as ServiceDescriptor;
    const hits = searchServices(
      [svc("ocr", "Text recognition", "Reads text; works on faces of documents", ["ocr"]), svc("face-comparison", "Face comparison", "Compare faces", ["face"]), svc("weather", "Weather", "Forecast", [])],
      "face",
    );
    assert.deepEqual(hits.map((h) => h.service.id), ["face-comparison", "ocr"]);
    assert.ok(hits[0]!.score > hits[1]!.score);
    assert.equal(queryProblem(undefined)?.length! > 0, true);
  });

  it("GET /openapi.json is valid OpenAPI 3.1 and matches the paywall's route table", async () => {
    const { status, body: doc } = await getJson(`${app.url}/openapi.json`);
    assert.equal(status, 200);
    await validOpenApi(doc);
    assert.equal(doc.openapi, "3.1.0");
    assert.deepEqual(doc.servers, [{ url: app.url }]);
    const routes = app.running.paywall.routes;
    assert.equal(routes.length, 2, "main and legacy endpoint");
    for (const route of routes) {
      const [method, path] = route.key.split(" ") as [string, string];
      const op = doc.paths[path]?.[method.toLowerCase()];
      assert.ok(op, `OpenAPI has ${route.key}`);
      assert.equal(op["x-server402"].pricing.amount, route.staticPrice!.amount.toString());
      assert.equal(op["x-server402"].pricing.payTo, route.payTo);
      for (const code of ["200", "400", "402", "413", "502", "504"]) assert.ok(op.responses[code]?.content?.["application/json"]?.schema, `${route.key} documents ${code} with a schema`);
      assert.ok(op.responses["402"].headers["PAYMENT-REQUIRED"]);
      assert.ok(op.responses["200"].headers["PAYMENT-RESPONSE"] && op.responses["200"].headers["X-PAYMENT-RESPONSE"]);
      assert.deepEqual(op.security, [{ paymentToken: [] }, { x402PaymentSignature: [] }, { x402Payment: [] }]);
      assert.equal(op.deprecated === true, path !== faceService.endpoint, "legacy endpoints are deprecated");
    }
    const main = doc.paths[faceService.endpoint].post;
    assert.deepEqual(main.requestBody.content["application/json"].schema, { $ref: "#/components/schemas/FaceComparisonRequest" });
    assert.deepEqual(doc.components.schemas.FaceComparisonRequest, JSON.parse(JSON.stringify(faceInputSchema)));
    assert.deepEqual(doc.components.schemas.FaceComparisonResponse, JSON.parse(JSON.stringify(faceOutputSchema)));
    const schemes = doc.components.securitySchemes;
    assert.deepEqual(schemes.paymentToken, { ...schemes.paymentToken, type: "apiKey", in: "header", name: "X-Payment-Token" });
    assert.deepEqual(schemes.x402PaymentSignature, { ...schemes.x402PaymentSignature, type: "apiKey", in: "header", name: "PAYMENT-SIGNATURE" });
    assert.deepEqual(schemes.x402Payment, { ...schemes.x402Payment, type: "apiKey", in: "header", name: "X-PAYMENT" });
    for (const p of ["/api/payments", "/api/payments/{paymentId}", "/api/payments/{paymentId}/pay", "/mcp", "/api/services", "/api/catalog/search", "/llms.txt", "/healthz", "/readyz", "/metrics"]) {
      assert.ok(doc.paths[p], `documents ${p}`);
    }
    assert.deepEqual(doc.paths["/api/payments"].post.requestBody.content["application/json"].schema.properties.serviceId.enum, ["face-comparison"]);
  });

  it("GET /.well-known/server402.json says where everything is and how to pay", async () => {
    const { status, body } = await getJson(`${app.url}/.well-known/server402.json`);
    assert.equal(status, 200);
    assert.equal(body.discovery.catalog, `${app.url}/api/services`);
    assert.equal(body.discovery.openapi, `${app.url}/openapi.json`);
    assert.equal(body.discovery.llms, `${app.url}/llms.txt`);
    assert.equal(body.mcp.endpoint, `${app.url}/mcp`);
    assert.deepEqual(body.mcp.tools, ["face_comparison"]);
    assert.equal(body.services[0].price.amount, "200000");
    assert.equal(body.payments.x402.payTo, chain.accounts.payTo.address);
    assert.equal(body.payments.prepaid.create, `${app.url}/api/payments`);
    assert.ok(body.flows.x402.length && body.flows.prepaid.length && body.flows.mcp.length);
  });

  it("GET /llms.txt is plain text with the services, prices, endpoints and flows", async () => {
    const res = await fetch(`${app.url}/llms.txt`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /^text\/plain/);
    const text = await res.text();
    assert.match(text, /^# server402 example\n\n> /);
    for (const needle of ["USD 0.20 per call", "200000 atomic units", `${app.url}/api/tools/face-comparison`, `${app.url}/api/tools/aliyun-facebody-compare-face`, "`face_comparison`", `${app.url}/mcp`, `${app.url}/openapi.json`, "X-Payment-Token", "PAYMENT-SIGNATURE", "x402/payment"]) {
      assert.ok(text.includes(needle), `llms.txt mentions ${needle}`);
    }
  });

  describe("a changed price shows everywhere", () => {
    let priced: ExampleApp;
    before(async () => {
      priced = await startExampleApp(chain, { services: servicesWithPrice("$0.35") });
    });
    after(async () => priced?.close());

    it("402 body and header, /api/services, /openapi.json, llms.txt, well-known and the MCP payment-required all say 350000", async () => {
      for (const path of [faceService.endpoint, ...faceService.legacyEndpoints]) {
        const res = await fetch(`${priced.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }) });
        assert.equal(res.status, 402);
        assert.equal((await res.json()).accepts[0].maxAmountRequired, "350000", path);
        assert.equal(JSON.parse(Buffer.from(res.headers.get("payment-required")!, "base64").toString()).accepts[0].amount, "350000");
      }
      const svc = (await getJson(`${priced.url}/api/services`)).body.services[0];
      assert.equal(svc.pricing.amount, "350000");
      assert.equal(svc.pricing.amountCents, 35);

      const doc = (await getJson(`${priced.url}/openapi.json`)).body;
      await validOpenApi(doc);
      for (const path of [faceService.endpoint, ...faceService.legacyEndpoints]) {
        assert.equal(doc.paths[path].post["x-server402"].pricing.amount, "350000");
        assert.match(doc.paths[path].post.description, /0\.350000 USDC \(350000 atomic units\)/);
      }
      const llms = await (await fetch(`${priced.url}/llms.txt`)).text();
      assert.ok(llms.includes("Price: USD 0.35 per call (350000 atomic units"), llms);
      assert.equal((await getJson(`${priced.url}/.well-known/server402.json`)).body.services[0].price.amount, "350000");
      const created = await (await fetch(`${priced.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "face-comparison" }) })).json();
      assert.equal(created.amount, "350000");

      const client = new Client({ name: "price-test", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${priced.url}/mcp`)));
      try {
        const r = (await client.callTool({ name: "face_comparison", arguments: { ImageDataA: IMAGE_A, ImageDataB: IMAGE_B } })) as { isError?: boolean; structuredContent?: any };
        assert.equal(r.isError, true);
        assert.equal(r.structuredContent.accepts[0].amount, "350000");
        assert.equal(r.structuredContent.x402v1.accepts[0].maxAmountRequired, "350000");
      } finally {
        await client.close();
      }
      // The original app is untouched.
      assert.equal((await getJson(`${app.url}/api/services`)).body.services[0].pricing.amount, "200000");
    });
  });
});
