/**
 * Issue 16, spec points that real clients depend on: the transfer-method
 * hints in the v2 offer, the `error` text per version, 400 for a malformed v2
 * `PAYMENT-SIGNATURE` (402 kept for v1's `X-PAYMENT`), and the price in
 * `/openapi.json` as agentcash's own OpenAPI reader sees it.
 */
import assert from "node:assert/strict";
import { getOpenAPI, isOpenApiParseFailure, type OpenApiRoute } from "@agentcash/discovery";
import { PaymentRequirementsSchema } from "x402/types";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, type PaidApp } from "./support/paid-app.js";
import { startExampleApp, type ExampleApp } from "./support/example-app.js";

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v), "utf8").toString("base64");
const decode = (h: string | null) => JSON.parse(Buffer.from(h!, "base64").toString("utf8"));

describe("issue 16: x402 spec points real clients read", function () {
  let chain: DevChain;
  let app: PaidApp;

  before(async () => {
    chain = await startDevChain();
    app = await startPaidApp(chain);
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("16.1 the v2 offer names its transfer method (assetTransferMethod eip3009, primaryType TransferWithAuthorization); the v1 entry stays x402-express's", async () => {
    const res = await fetch(`${app.url}/weather`);
    assert.equal(res.status, 402);
    const v2 = decode(res.headers.get("payment-required"));
    assert.deepEqual(v2.accepts[0].extra, { name: "USDC", version: "2", assetTransferMethod: "eip3009", primaryType: "TransferWithAuthorization" });
    const body = await res.json();
    assert.deepEqual(PaymentRequirementsSchema.parse(body.accepts[0]).extra, { name: "USDC", version: "2" });
  });

  it("16.2 an unpaid request's error names the header of each version: X-PAYMENT in the v1 body, PAYMENT-SIGNATURE in the v2 header", async () => {
    for (const path of ["/weather", "/dynamic/3"]) {
      const res = await fetch(`${app.url}${path}`);
      assert.equal(res.status, 402);
      assert.equal(decode(res.headers.get("payment-required")).error, "PAYMENT-SIGNATURE header is required", path);
      assert.equal((await res.json()).error, "X-PAYMENT header is required", path);
    }
    // the cached answer of a static price says the same the second time
    const again = await fetch(`${app.url}/weather`);
    assert.equal(decode(again.headers.get("payment-required")).error, "PAYMENT-SIGNATURE header is required");
  });

  /** The v2 requirements the server offers for /weather. */
  const offered = async () => decode((await fetch(`${app.url}/weather`)).headers.get("payment-required")).accepts[0];
  const malformed: Array<[string, () => Promise<string>]> = [
    ["not base64", async () => "%%%not-base64%%%"],
    ["base64 of text that is not JSON", async () => b64("hello")],
    ["base64 of a JSON array", async () => b64([1, 2])],
    ["a v2 payload without accepted", async () => b64({ x402Version: 2, payload: {} })],
    ["the offer accepted, but an authorization that is not an object", async () => b64({ x402Version: 2, accepted: await offered(), payload: { signature: `0x${"11".repeat(65)}`, authorization: 7 } })],
  ];

  for (const [label, value] of malformed) {
    it(`16.3 a malformed PAYMENT-SIGNATURE (${label}) is answered 400 with the offer, no handler run, nothing charged`, async () => {
      const runs = app.runs.weather ?? 0;
      const res = await fetch(`${app.url}/weather`, { headers: { "PAYMENT-SIGNATURE": await value() } });
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error, "invalid_payload");
      assert.equal(typeof body.message, "string");
      assert.equal(decode(res.headers.get("payment-required")).accepts[0].amount, "10000", "the client can still read what to pay");
      assert.equal(app.runs.weather ?? 0, runs);
    });
  }

  it("16.3 a malformed X-PAYMENT (v1) still gets 402 invalid_payload, as x402-express 1.2.0 answers", async () => {
    for (const [, value] of malformed.slice(0, 3)) {
      const res = await fetch(`${app.url}/weather`, { headers: { "X-PAYMENT": await value() } });
      assert.equal(res.status, 402);
      assert.equal((await res.json()).error, "invalid_payload");
    }
  });

  it("16.3 a well-formed PAYMENT-SIGNATURE for another price is still a 402 refusal, not a 400", async () => {
    const accepted = { ...(await offered()), amount: "1" };
    const payload = { signature: `0x${"11".repeat(65)}`, authorization: { from: chain.accounts.payers[0]!.address, to: accepted.payTo, value: "1", validAfter: "0", validBefore: "99999999999", nonce: `0x${"22".repeat(32)}` } };
    const res = await fetch(`${app.url}/weather`, { headers: { "PAYMENT-SIGNATURE": b64({ x402Version: 2, accepted, payload }) } });
    assert.equal(res.status, 402);
    assert.equal((await res.json()).error, "invalid_payment_requirements");
  });

  describe("/openapi.json as agent tools read it", () => {
    let example: ExampleApp;
    before(async () => {
      example = await startExampleApp(chain);
    });
    after(async () => {
      await example?.close();
    });

    it("16.4 agentcash's OpenAPI reader (@agentcash/discovery) sees each priced route as paid, with its fixed USD price and x402", async () => {
      const { services } = (await (await fetch(`${example.url}/api/services`)).json()) as { services: Array<{ endpoint: string; legacyEndpoints: string[]; method: string; pricing: { amountDecimal: string } }> };
      const result = await getOpenAPI(example.url);
      assert.ok(result.isOk(), "fetched");
      const spec = result.value;
      assert.ok(spec && !isOpenApiParseFailure(spec), "parsed");
      for (const s of services) {
        for (const path of [s.endpoint, ...s.legacyEndpoints]) {
          const route: OpenApiRoute | undefined = spec.routes.find((r) => r.path === path && r.method === s.method);
          assert.ok(route, `${s.method} ${path} listed`);
          assert.match(String(route.authMode), /paid$/, `${path}: ${route.authMode}`);
          assert.deepEqual(route.protocols, ["x402"]);
          assert.deepEqual(route.pricing, { pricingMode: "fixed", price: s.pricing.amountDecimal, currency: "USD" });
        }
      }
      // free routes stay free
      const free: OpenApiRoute | undefined = spec.routes.find((r) => r.path === "/api/services" && r.method === "GET");
      assert.ok(free);
      assert.equal(free.pricing, undefined);
    });
  });
});
