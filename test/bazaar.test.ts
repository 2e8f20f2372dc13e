/**
 * Issue 16, bazaar discovery: the v2 `PAYMENT-REQUIRED` header carries the
 * `bazaar` extension (HTTP method, input and output schemas), checked with
 * @x402/extensions' own validator and extractor and @x402/core's schemas, on
 * the header, the v1 body, and the payload a real v2 client (@x402/fetch)
 * echoes when it pays.
 */
import assert from "node:assert/strict";
import express from "express";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { extractDiscoveryInfo, extractDiscoveryInfoV1, validateDiscoveryExtension, validateDiscoveryExtensionSpec, type DiscoveryExtension } from "@x402/extensions/bazaar";
import { PaymentPayloadV2Schema, PaymentRequiredV1Schema, PaymentRequiredV2Schema } from "@x402/core/schemas";
import type { PaymentPayload, PaymentRequirements } from "@x402/core/types";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { paywall, relayerSettler } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { faceInputSchema, faceOutputSchema } from "../example-server/src/service.js";
import { IMAGE_A, IMAGE_B, startExampleApp, type ExampleApp } from "./support/example-app.js";

const methodOf = (ext: DiscoveryExtension) => (ext.info.input as { method?: string }).method;
const decode = (h: string | null) => JSON.parse(Buffer.from(h!, "base64").toString("utf8"));

/** The bazaar extension of a 402, after checking the header against @x402/core's schema. */
function bazaarOf(res: Response): DiscoveryExtension {
  const required = PaymentRequiredV2Schema.parse(decode(res.headers.get("payment-required")));
  const ext = required.extensions?.bazaar as DiscoveryExtension | undefined;
  assert.ok(ext, "extensions.bazaar is present");
  assert.deepEqual(validateDiscoveryExtension(ext), { valid: true });
  assert.deepEqual(validateDiscoveryExtensionSpec(ext as unknown as Record<string, unknown>), { valid: true });
  return ext;
}

describe("issue 16: bazaar discovery in the v2 PAYMENT-REQUIRED header", function () {
  let chain: DevChain;
  let example: ExampleApp;
  let server: Server;
  let url: string;

  before(async () => {
    chain = await startDevChain();
    example = await startExampleApp(chain);
    const app = express();
    app.use(
      paywall({
        payTo: chain.accounts.payTo.address,
        rpcUrl: chain.rpcUrl,
        settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
        routes: {
          "GET /quote": {
            price: "$0.01",
            description: "a quote",
            inputSchema: { properties: { symbol: { type: "string" } }, required: ["symbol"], examples: [{ symbol: "ETH" }] },
            outputSchema: { type: "object", properties: { price: { type: "number" } } },
          },
          "POST /hidden": { price: "$0.01", discoverable: false },
          "/any": { price: "$0.01" },
        },
      }),
    );
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    server?.close();
    await example?.close();
    await chain?.stop();
  });

  it("16.5 a POST route's header names the method, the JSON body schema and the response schema", async () => {
    const res = await fetch(`${example.url}/api/tools/face-comparison`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }) });
    assert.equal(res.status, 402);
    const ext = bazaarOf(res);
    assert.equal(methodOf(ext), "POST");
    assert.equal((ext.info.input as { bodyType?: string }).bodyType, "json");
    const props = (ext.schema.properties as Record<string, { properties: Record<string, unknown> }>);
    assert.deepEqual(props.input!.properties.body, faceInputSchema);
    assert.deepEqual(props.output!.properties.example, { ...faceOutputSchema });
    // the v1 body stays discoverable as before, and valid for @x402/core's v1 schema
    const body = PaymentRequiredV1Schema.parse(await res.json());
    const v1 = extractDiscoveryInfoV1(body.accepts[0] as never);
    assert.equal((v1?.input as { method?: string } | undefined)?.method, "POST");
  });

  it("16.5 a GET route's header carries its query schema with the schema's example, and a non-discoverable route carries none", async () => {
    const ext = bazaarOf(await fetch(`${url}/quote`));
    assert.equal(methodOf(ext), "GET");
    assert.deepEqual((ext.info.input as { queryParams?: unknown }).queryParams, { symbol: "ETH" });
    const hidden = PaymentRequiredV2Schema.parse(decode((await fetch(`${url}/hidden`, { method: "POST" })).headers.get("payment-required")));
    assert.equal(hidden.extensions?.bazaar, undefined);
  });

  it("16.5 a route keyed without a verb names the request's method", async () => {
    assert.equal(methodOf(bazaarOf(await fetch(`${url}/any`))), "GET");
    assert.equal(methodOf(bazaarOf(await fetch(`${url}/any`, { method: "DELETE" }))), "DELETE");
    assert.equal(methodOf(bazaarOf(await fetch(`${url}/any`, { method: "PUT" }))), "PUT");
  });

  it("16.5 @x402/fetch pays and echoes the extension; @x402/extensions' extractor finds the route in that payload, as a bazaar facilitator would", async () => {
    const sent: string[] = [];
    const spy: typeof fetch = async (input, init) => {
      const h = new Headers(input instanceof Request ? input.headers : init?.headers);
      const sig = h.get("payment-signature");
      if (sig) sent.push(sig);
      return fetch(input, init);
    };
    const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[0]!.privateKey)));
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const res = await wrapFetchWithPayment(spy, client)(`${example.url}/api/tools/face-comparison`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }),
    });
    assert.equal(res.status, 200, await res.text());
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 200000n);
    assert.equal(sent.length, 1);
    const payload = PaymentPayloadV2Schema.parse(decode(sent[0]!)) as unknown as PaymentPayload;
    const found = extractDiscoveryInfo(payload, payload.accepted as PaymentRequirements);
    assert.ok(found, "discoverable from the v2 payload");
    assert.equal(found.resourceUrl, `${example.url}/api/tools/face-comparison`);
    assert.equal((found as { method?: string }).method, "POST");
    assert.equal(found.x402Version, 2);
  });
});
