/** Replay protection and bad input: every refusal is a 402 with a specific reason, never a 500. */
import assert from "node:assert/strict";
import { generatePrivateKey } from "viem/accounts";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, type PaidApp } from "./support/paid-app.js";
import { signAuthorization, v1Header, v2Header, type PaymentParts } from "./support/sign.js";

describe("x402 replay protection and bad input (real chain)", function () {
  let chain: DevChain;
  let app: PaidApp;
  let base: Omit<PaymentParts, "privateKey">;

  before(async () => {
    chain = await startDevChain();
    app = await startPaidApp(chain);
    base = { asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10000n };
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  const get = (headers: Record<string, string>) => fetch(`${app.url}/weather`, { headers });

  async function expect402(headers: Record<string, string>, reason: string | RegExp) {
    const res = await get(headers);
    const text = await res.text();
    assert.equal(res.status, 402, text);
    const body = JSON.parse(text);
    if (typeof reason === "string") assert.equal(body.error, reason, text);
    else assert.match(body.error, reason, text);
    assert.equal(typeof body.message, "string");
    const v2 = JSON.parse(Buffer.from(res.headers.get("payment-required")!, "base64").toString());
    assert.equal(v2.error, body.error);
    return body;
  }

  it("50 concurrent copies of one payment: exactly 1 handler run and 1 transfer", async () => {
    for (const version of [1, 2] as const) {
      const parts = { ...base, privateKey: chain.accounts.payers[version]!.privateKey };
      const header: Record<string, string> = version === 1 ? { "x-payment": await v1Header(parts) } : { "payment-signature": await v2Header(parts) };
      const runs = app.runs.weather ?? 0;
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const results = await Promise.all(Array.from({ length: 50 }, () => get(header).then(async (r) => ({ status: r.status, body: await r.json() }))));
      const ok = results.filter((r) => r.status === 200);
      assert.equal(ok.length, 1, `v${version}: ${JSON.stringify(results.map((r) => r.status))}`);
      for (const r of results.filter((r) => r.status !== 200)) {
        assert.equal(r.status, 402);
        assert.equal(r.body.error, "duplicate_settlement");
      }
      assert.equal(app.runs.weather, runs + 1);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10000n);
      // and once more, later
      const again = await get(header);
      assert.equal(again.status, 402);
      assert.equal((await again.json()).error, "duplicate_settlement");
    }
  });

  it("an authorization already used on-chain (not through us) is refused before the handler", async () => {
    const parts = { ...base, privateKey: chain.accounts.payers[3]!.privateKey, nonce: `0x${"77".repeat(32)}` as const };
    const other = await startPaidApp(chain);
    try {
      assert.equal((await fetch(`${other.url}/weather`, { headers: { "x-payment": await v1Header(parts) } })).status, 200);
    } finally {
      await other.close();
    }
    const runs = app.runs.weather ?? 0;
    await expect402({ "x-payment": await v1Header(parts) }, "invalid_exact_evm_nonce_already_used");
    assert.equal(app.runs.weather ?? 0, runs);
  });

  const payer = () => chain.accounts.payers[4]!.privateKey;
  const now = () => BigInt(Math.floor(Date.now() / 1000));
  const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64");

  it("malformed headers: bad base64, non-JSON, wrong types, oversized", async () => {
    await expect402({ "x-payment": "%%%not-base64%%%" }, "invalid_payload");
    // issue 16: the v2 HTTP transport answers a malformed PAYMENT-SIGNATURE with 400 (test/x402-conformance.test.ts)
    const v2Bad = await get({ "payment-signature": b64("{not json") });
    assert.equal(v2Bad.status, 400);
    assert.equal((await v2Bad.json()).error, "invalid_payload");
    await expect402({ "x-payment": b64([1, 2]) }, "invalid_payload");
    await expect402({ "x-payment": b64({ x402Version: "1", scheme: "exact", network: "base-sepolia", payload: {} }) }, "invalid_x402_version");
    const good = await signAuthorization({ ...base, privateKey: payer() });
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: { ...good, authorization: { ...good.authorization, value: 10000 } } }) }, "invalid_payload");
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: { ...good, authorization: { ...good.authorization, nonce: "0x12" } } }) }, "invalid_payload");
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: { ...good, signature: 12 } }) }, "invalid_exact_evm_payload_signature");
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: null }) }, "invalid_payload");
    await expect402({ "x-payment": "A".repeat(8200) }, "invalid_payload");
  });

  it("a header too large for Node's parser gets 431, not a crash", async () => {
    const res = await get({ "x-payment": "A".repeat(20_000) });
    assert.equal(res.status, 431);
  });

  it("unknown network or scheme", async () => {
    const auth = await signAuthorization({ ...base, privateKey: payer() });
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "exact", network: "base", payload: auth }) }, "invalid_network");
    await expect402({ "x-payment": b64({ x402Version: 1, scheme: "upto", network: "base-sepolia", payload: auth }) }, "unsupported_scheme");
    await expect402({ "payment-signature": await v2Header({ ...base, privateKey: payer() }, { scheme: "exact", network: "eip155:8453", amount: "10000", asset: base.asset, payTo: base.payTo }) }, "invalid_network");
  });

  it("the client cannot change price, payTo or asset in a v2 payload", async () => {
    const acc = { scheme: "exact", network: "eip155:84532", amount: "10000", asset: base.asset, payTo: base.payTo };
    await expect402({ "payment-signature": await v2Header({ ...base, privateKey: payer(), value: 1n }, { ...acc, amount: "1" }) }, "invalid_payment_requirements");
    await expect402({ "payment-signature": await v2Header({ ...base, privateKey: payer() }, { ...acc, payTo: chain.accounts.payers[0]!.address }) }, "invalid_payment_requirements");
    await expect402({ "payment-signature": await v2Header({ ...base, privateKey: payer() }, { ...acc, asset: chain.accounts.payers[0]!.address }) }, "invalid_payment_requirements");
  });

  it("expired, not yet valid, too close to expiry", async () => {
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), validBefore: now() - 10n }) }, "invalid_exact_evm_payload_authorization_valid_before");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), validBefore: now() + 3n }) }, "invalid_exact_evm_payload_authorization_valid_before");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), validAfter: now() + 120n }) }, "invalid_exact_evm_payload_authorization_valid_after");
  });

  it("wrong payTo, underpayment, another key's signature, another chain's signature, another token's domain", async () => {
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), payTo: chain.accounts.payers[0]!.address }) }, "invalid_exact_evm_payload_recipient_mismatch");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), value: 9999n }) }, "invalid_exact_evm_payload_authorization_value");
    await expect402({ "payment-signature": await v2Header({ ...base, privateKey: payer(), value: 10001n }, { scheme: "exact", network: "eip155:84532", amount: "10000", asset: base.asset, payTo: base.payTo }) }, "invalid_exact_evm_payload_authorization_value_mismatch");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: generatePrivateKey(), from: chain.accounts.payers[4]!.address }) }, "invalid_exact_evm_payload_signature");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), chainId: 8453 }) }, "invalid_exact_evm_payload_signature");
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: payer(), name: "USD Coin" }) }, "invalid_exact_evm_payload_signature");
  });

  it("a payer without funds is refused before the handler runs", async () => {
    const runs = app.runs.weather ?? 0;
    await expect402({ "x-payment": await v1Header({ ...base, privateKey: generatePrivateKey() }) }, "insufficient_funds");
    assert.equal(app.runs.weather ?? 0, runs);
  });

  it("a refused payment leaves no lock: the same authorization works once fixed on the server side", async () => {
    // the handler fails (>= 400) → nothing charged, lock released → the same header pays later
    const failing = await startPaidApp(chain, { handlerStatus: () => 500, store: app.pw.engine.store });
    const header = { "x-payment": await v1Header({ ...base, privateKey: payer() }) };
    try {
      assert.equal((await fetch(`${failing.url}/weather`, { headers: header })).status, 500);
    } finally {
      await failing.close();
    }
    const res = await get(header);
    assert.equal(res.status, 200, await res.text());
  });

  it("token header on a route without serviceId, and malformed tokens, get 402 with a reason", async () => {
    await expect402({ "x-payment-token": "s402_whatever" }, "tokens_not_accepted");
    const res = await fetch(`${app.url}/echo`, { method: "POST", headers: { "x-payment-token": "garbage", "content-type": "application/json" }, body: "{}" });
    assert.equal(res.status, 402);
    assert.equal((await res.json()).error, "unknown_token");
  });

  it("server still serves paid calls after all this", async () => {
    const res = await get({ "payment-signature": await v2Header({ ...base, privateKey: chain.accounts.payers[5]!.privateKey }) });
    assert.equal(res.status, 200);
    assert.ok(JSON.parse(Buffer.from(res.headers.get("payment-response")!, "base64").toString()).success);
  });
});
