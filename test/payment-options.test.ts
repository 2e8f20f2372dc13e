/**
 * Issue 16 (2): several payment options per route. A route offers USDC on
 * two dev chains (Base Sepolia's id, and a second anvil with chain id 31338
 * and its own test USDC at another address), another two payees on one
 * network. Real clients pay the option they pick; a payment is verified,
 * locked and settled against exactly the option it names, on that option's
 * chain; mixes of two options and payments matching none are refused with
 * nothing moved.
 */
import assert from "node:assert/strict";
import express from "express";
import { wrapFetchWithPayment as wrapV2, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment as wrapV1 } from "x402-fetch";
import { privateKeyToAccount } from "viem/accounts";
import { encodeFunctionData, getAddress, parseAbi, type Address } from "viem";
import { DEV_MINTER } from "server402/devchain";
import { chainRpc } from "./support/chain-rpc.js";
import { ConfigError, decodeHeader, paywall, relayerSettler, settlerByNetwork, type PaywallMiddleware } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { payerWallet } from "./support/paid-app.js";
import { signAuthorization, v1Header, v2Header } from "./support/sign.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { registerPaidTool } from "server402/mcp";
import { listen, type Listening } from "./support/listen.js";
import { mountMcp } from "./support/mcp-endpoint.js";

const CHAIN_B = 31338;
/** A second test USDC on chain A (a copy of the planted token's code: same EIP-712 name and version, another address). */
const USDC_A2 = getAddress("0x0000000000000000000000000000000000a2a2a2");
const USDC_B = getAddress("0x00000000000000000000000000000000000b0b0b");

describe("issue 16: several payment options per route", function () {
  this.timeout(60_000);
  let a: DevChain;
  let b: DevChain;
  let server: Listening;
  let url: string;
  let pw: PaywallMiddleware;
  let other: Address;
  const runs: Record<string, number> = {};
  const assetB = () => ({ address: USDC_B, decimals: 6, eip712: { name: "USDC", version: "2" } });

  before(async () => {
    [a, b] = await Promise.all([startDevChain(), startDevChain({ chainId: CHAIN_B, usdcAddress: USDC_B })]);
    other = a.accounts.payers[8]!.address;
    // plant a second token on chain A and fund payer 7 with it (the dev chain already impersonates its minter)
    const rpc = chainRpc(() => a.rpcUrl);
    await rpc("anvil_setCode", [USDC_A2, await rpc("eth_getCode", [a.usdc, "latest"])]);
    const mint = encodeFunctionData({ abi: parseAbi(["function mint(address to, uint256 amount)"]), functionName: "mint", args: [a.accounts.payers[7]!.address, 1_000_000n] });
    const hash = await rpc("eth_sendTransaction", [{ from: DEV_MINTER, to: USDC_A2, data: mint, gas: "0x30000" }]);
    for (let i = 0; i < 100 && !(await rpc("eth_getTransactionReceipt", [hash])); i++) await new Promise((r) => setTimeout(r, 20));
    const relayer = (c: DevChain) => relayerSettler({ rpcUrl: c.rpcUrl, chainId: c.chainId, privateKey: c.accounts.relayer.privateKey, pollingIntervalMs: 5 });
    pw = paywall({
      payTo: a.accounts.payTo.address,
      network: "base-sepolia",
      settler: settlerByNetwork({ "base-sepolia": { settler: relayer(a), rpcUrl: a.rpcUrl }, [`eip155:${CHAIN_B}`]: { settler: relayer(b), rpcUrl: b.rpcUrl } }),
      payments: {},
      routes: {
        "GET /two-chains": {
          description: "USDC on either chain",
          accepts: [{ price: "$0.01" }, { network: `eip155:${CHAIN_B}`, price: { amount: "20000", asset: assetB() } }],
        },
        "GET /two-payees": { price: "$0.01", accepts: [{}, { payTo: other, price: "$0.03" }] },
        "GET /single": { price: "$0.02" },
        "GET /prepaid": { serviceId: "multi", maxCalls: 3, accepts: [{ price: "$0.01" }, { network: `eip155:${CHAIN_B}`, price: { amount: "20000", asset: assetB() } }] },
        "GET /two-assets": { accepts: [{ price: "$0.01" }, { price: { amount: "10000", asset: { address: USDC_A2, decimals: 6, eip712: { name: "USDC", version: "2" } } } }] },
      },
    });
    const app = express();
    mountMcp(app, (mcp) =>
      registerPaidTool(mcp, pw, {
        name: "two_chains",
        route: "GET /two-chains",
        inputSchema: {},
        handler: async (_args, { payment }) => {
          runs.mcp = (runs.mcp ?? 0) + 1;
          return { content: [{ type: "text", text: `paid on ${payment.network}` }] };
        },
      }),
    );
    app.use(pw);
    for (const k of ["two-chains", "two-payees", "single", "two-assets", "prepaid"]) {
      app.get(`/${k}`, (req, res) => {
        runs[k] = (runs[k] ?? 0) + 1;
        res.json({ ok: k, payment: req.payment });
      });
    }
    server = await listen(app);
    url = server.url;
  });
  after(async () => {
    await server?.close();
    pw?.engine.stopReconciler();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  async function balances(): Promise<bigint[]> {
    return Promise.all([a.balanceOf(a.accounts.payTo.address), b.balanceOf(b.accounts.payTo.address), a.balanceOf(other)]);
  }

  it("16.2 the v2 header lists every option and the v1 body every option on a v1 network; a single-price route still offers one", async () => {
    const res = await fetch(`${url}/two-chains`);
    assert.equal(res.status, 402);
    const v2 = decodeHeader(res.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { accepts: Array<Record<string, unknown>> };
    assert.deepEqual(
      v2.accepts.map((r) => [r.network, r.asset, r.amount, r.payTo]),
      [
        ["eip155:84532", a.usdc, "10000", a.accounts.payTo.address],
        [`eip155:${CHAIN_B}`, USDC_B, "20000", a.accounts.payTo.address],
      ],
    );
    const body = (await res.json()) as { accepts: Array<Record<string, unknown>> };
    assert.deepEqual(body.accepts.map((r) => r.network), ["base-sepolia"], "chain 31338 has no v1 name");
    const payees = (await (await fetch(`${url}/two-payees`)).json()) as { accepts: Array<Record<string, unknown>> };
    assert.deepEqual(payees.accepts.map((r) => [r.payTo, r.maxAmountRequired]), [[a.accounts.payTo.address, "10000"], [other, "30000"]]);
    const single = decodeHeader((await fetch(`${url}/single`)).headers.get("payment-required")!, "PAYMENT-REQUIRED") as { accepts: unknown[] };
    assert.equal(single.accepts.length, 1);
  });

  it("16.2 @x402/fetch registered for chain 31338 only picks the second option: settled there, by that chain's settler, for its price", async () => {
    const before = await balances();
    // its own test USDC is no default asset: the client's spend controls must be told to allow it
    const client = x402Client.fromConfig({
      schemes: [{ network: `eip155:${CHAIN_B}`, client: new ExactEvmScheme(privateKeyToAccount(b.accounts.payers[0]!.privateKey)) }],
      spendControls: { allowedAssets: [{ network: `eip155:${CHAIN_B}`, asset: USDC_B, maxAmountPerPayment: "20000" }] },
    });
    const res = await wrapV2(fetch, client)(`${url}/two-chains`);
    assert.equal(res.status, 200, await res.clone().text());
    const json = (await res.json()) as { payment: { network: string; asset: string; amount: string } };
    assert.deepEqual([json.payment.network, json.payment.asset, json.payment.amount], [`eip155:${CHAIN_B}`, USDC_B, "20000"]);
    const receipt = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    assert.equal(receipt.network, `eip155:${CHAIN_B}`);
    const after = await balances();
    assert.deepEqual([after[0]! - before[0]!, after[1]! - before[1]!], [0n, 20_000n]);
  });

  it("16.2 @x402/fetch for any eip155 chain takes the first option (chain 84532)", async () => {
    const before = await balances();
    const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(a.accounts.payers[1]!.privateKey)));
    const res = await wrapV2(fetch, client)(`${url}/two-chains`);
    assert.equal(res.status, 200, await res.clone().text());
    const after = await balances();
    assert.deepEqual([after[0]! - before[0]!, after[1]! - before[1]!], [10_000n, 0n]);
  });

  it("16.2 x402-fetch 1.2.0 (v1) pays the first of two payees on one network", async () => {
    const before = await balances();
    const res = await wrapV1(fetch, payerWallet(a, a.accounts.payers[2]!.privateKey) as never, 1_000_000n)(`${url}/two-payees`);
    assert.equal(res.status, 200, await res.clone().text());
    const after = await balances();
    assert.deepEqual([after[0]! - before[0]!, after[2]! - before[2]!], [10_000n, 0n]);
  });

  it("16.2 v1 to the second payee for its price is matched to that option; for the first option's price it is refused", async () => {
    const payer = a.accounts.payers[3]!;
    const before = await balances();
    const ok = await fetch(`${url}/two-payees`, { headers: { "X-PAYMENT": await v1Header({ privateKey: payer.privateKey, asset: a.usdc, payTo: other, value: 30_000n }) } });
    assert.equal(ok.status, 200, await ok.clone().text());
    const cheap = await fetch(`${url}/two-payees`, { headers: { "X-PAYMENT": await v1Header({ privateKey: payer.privateKey, asset: a.usdc, payTo: other, value: 10_000n }) } });
    assert.equal(cheap.status, 402);
    const after = await balances();
    assert.deepEqual([after[0]! - before[0]!, after[2]! - before[2]!], [0n, 30_000n]);
  });

  it("16.2 MCP: the tool's offer lists both options; a payment of the second settles on chain 31338, a mix of the two is refused with nothing moved", async () => {
    const client = new Client({ name: "options-test", version: "1" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
    try {
      type R = { isError?: boolean; structuredContent?: Record<string, any>; content: Array<{ text?: string }> };
      const unpaid = (await client.callTool({ name: "two_chains", arguments: {} })) as R;
      assert.equal(unpaid.isError, true);
      const accepts = unpaid.structuredContent!.accepts as Array<Record<string, string>>;
      assert.deepEqual(accepts.map((r) => r.network), ["eip155:84532", `eip155:${CHAIN_B}`]);
      const payer = b.accounts.payers[6]!;
      const before = await balances();
      const mixed = { x402Version: 2, accepted: { ...accepts[1], amount: accepts[0]!.amount }, payload: await signAuthorization({ privateKey: payer.privateKey, chainId: CHAIN_B, asset: USDC_B, payTo: a.accounts.payTo.address, value: 10_000n }) };
      const refused = (await client.callTool({ name: "two_chains", arguments: {}, _meta: { "x402/payment": mixed } })) as R;
      assert.equal(refused.isError, true);
      assert.equal(refused.structuredContent!.reason, "invalid_payment_requirements");
      assert.deepEqual(await balances(), before);
      const good = { x402Version: 2, accepted: accepts[1], payload: await signAuthorization({ privateKey: payer.privateKey, chainId: CHAIN_B, asset: USDC_B, payTo: a.accounts.payTo.address, value: 20_000n }) };
      const paid = (await client.callTool({ name: "two_chains", arguments: {}, _meta: { "x402/payment": good } })) as R;
      assert.equal(paid.isError, undefined, JSON.stringify(paid));
      assert.equal(paid.content[0]!.text, `paid on eip155:${CHAIN_B}`);
      const after = await balances();
      assert.deepEqual([after[0]! - before[0]!, after[1]! - before[1]!], [0n, 20_000n]);
    } finally {
      await client.close();
    }
  });

  it("16.2 v1 with two assets on one network, same payee and price: the signature's EIP-712 domain tells which asset is paid, and that one is settled", async () => {
    const payer = a.accounts.payers[7]!;
    const balanceIn = async (token: Address, who: Address) =>
      BigInt((await chainRpc(() => a.rpcUrl)("eth_call", [{ to: token, data: encodeFunctionData({ abi: parseAbi(["function balanceOf(address) view returns (uint256)"]), functionName: "balanceOf", args: [who] }) }, "latest"])) as string);
    const [usdcBefore, a2Before] = [await a.balanceOf(a.accounts.payTo.address), await balanceIn(USDC_A2, a.accounts.payTo.address)];
    const body = (await (await fetch(`${url}/two-assets`)).json()) as { accepts: Array<{ asset: string }> };
    assert.deepEqual(body.accepts.map((r) => r.asset), [a.usdc, USDC_A2]);
    const res = await fetch(`${url}/two-assets`, { headers: { "X-PAYMENT": await v1Header({ privateKey: payer.privateKey, asset: USDC_A2, payTo: a.accounts.payTo.address, value: 10_000n }) } });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(((await res.json()) as { payment: { asset: string } }).payment.asset, USDC_A2);
    assert.equal((await balanceIn(USDC_A2, a.accounts.payTo.address)) - a2Before, 10_000n);
    assert.equal(await a.balanceOf(a.accounts.payTo.address), usdcBefore);
  });

  it("16.2 a prepaid payment for 3 calls of a several-option route is offered at 3 × the first option only: a per-call price of another option cannot buy it", async () => {
    const created = await fetch(`${url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "multi" }) });
    assert.equal(created.status, 201, await created.clone().text());
    const p = (await created.json()) as { pay: { url: string; x402: { accepts: Array<Record<string, string>> } } };
    assert.deepEqual(p.pay.x402.accepts.map((r) => [r.network, r.maxAmountRequired]), [["base-sepolia", "30000"]]);
    const unpaid = await fetch(p.pay.url, { method: "POST" });
    assert.equal(unpaid.status, 402);
    const offered = decodeHeader(unpaid.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { accepts: unknown[] };
    assert.equal(offered.accepts.length, 1);
    const payer = b.accounts.payers[4]!;
    const before = await balances();
    const cheap = await v2Header({ privateKey: payer.privateKey, chainId: CHAIN_B, asset: USDC_B, payTo: a.accounts.payTo.address, value: 20_000n }, { scheme: "exact", network: `eip155:${CHAIN_B}`, amount: "20000", asset: USDC_B, payTo: a.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } });
    const res = await fetch(p.pay.url, { method: "POST", headers: { "PAYMENT-SIGNATURE": cheap } });
    assert.equal(res.status, 402, await res.clone().text());
    assert.deepEqual(await balances(), before);
    const full = await v2Header({ privateKey: a.accounts.payers[4]!.privateKey, asset: a.usdc, payTo: a.accounts.payTo.address, value: 30_000n });
    const paid = await fetch(p.pay.url, { method: "POST", headers: { "PAYMENT-SIGNATURE": full } });
    assert.equal(paid.status, 200, await paid.clone().text());
    const after = await balances();
    assert.deepEqual([after[0]! - before[0]!, after[1]! - before[1]!], [30_000n, 0n]);
  });

  describe("hostile mixes of two options are refused and move nothing", () => {
    const payer = () => b.accounts.payers[5]!;
    const optA = () => ({ scheme: "exact", network: "eip155:84532", amount: "10000", asset: a.usdc, payTo: a.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } });
    const optB = () => ({ scheme: "exact", network: `eip155:${CHAIN_B}`, amount: "20000", asset: USDC_B, payTo: a.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } });
    const cases: Array<[string, () => Promise<string>, string]> = [
      ["option B's asset and network with option A's amount (signed for that)", async () => v2Header({ privateKey: payer().privateKey, chainId: CHAIN_B, asset: USDC_B, payTo: a.accounts.payTo.address, value: 10_000n }, { ...optB(), amount: "10000" }), "invalid_payment_requirements"],
      ["option A's asset with option B's network", async () => v2Header({ privateKey: payer().privateKey, chainId: CHAIN_B, asset: a.usdc, payTo: a.accounts.payTo.address, value: 10_000n }, { ...optA(), network: `eip155:${CHAIN_B}` }), "invalid_payment_requirements"],
      ["a payee in neither option", async () => v2Header({ privateKey: payer().privateKey, chainId: CHAIN_B, asset: USDC_B, payTo: other, value: 20_000n }, { ...optB(), payTo: other }), "invalid_payment_requirements"],
      ["option B named, signed for option A's chain and amount", async () => v2Header({ privateKey: payer().privateKey, chainId: 84532, asset: a.usdc, payTo: a.accounts.payTo.address, value: 10_000n }, optB()), "invalid_exact_evm_payload_authorization_value_mismatch"],
      ["option B named, signed for its amount under chain A's domain", async () => v2Header({ privateKey: payer().privateKey, chainId: 84532, asset: a.usdc, payTo: a.accounts.payTo.address, value: 20_000n }, optB()), "invalid_exact_evm_payload_signature"],
      ["option A named, signed for option B's amount", async () => v2Header({ privateKey: payer().privateKey, chainId: 84532, asset: a.usdc, payTo: a.accounts.payTo.address, value: 20_000n }, optA()), "invalid_exact_evm_payload_authorization_value_mismatch"],
      ["v1 on a network neither option has", async () => v1Header({ privateKey: payer().privateKey, asset: a.usdc, payTo: a.accounts.payTo.address, value: 10_000n }, "base"), "invalid_network"],
    ];
    for (const [label, header, reason] of cases) {
      it(`16.2 ${label} → 402 ${reason}`, async () => {
        const before = await Promise.all([a.balanceOf(payer().address), b.balanceOf(payer().address), ...(await balances())]);
        const runsBefore = runs["two-chains"] ?? 0;
        const h = await header();
        const res = await fetch(`${url}/two-chains`, { headers: reason === "invalid_network" ? { "X-PAYMENT": h } : { "PAYMENT-SIGNATURE": h } });
        const text = await res.text();
        assert.equal(res.status, 402, text);
        const pr = decodeHeader(res.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { error: string };
        const got = (JSON.parse(text) as { error: string }).error;
        assert.ok(got === reason || pr.error === reason, `${got} / ${pr.error}`);
        assert.equal(runs["two-chains"] ?? 0, runsBefore, "no work for free");
        assert.deepEqual(await Promise.all([a.balanceOf(payer().address), b.balanceOf(payer().address), ...(await balances())]), before);
      });
    }
  });

  it("16.2 configuration: duplicate options, several networks with a one-network settler, and a function price in a list are startup errors", () => {
    const base = { payTo: a.accounts.payTo.address, settler: relayerSettler({ rpcUrl: a.rpcUrl, chainId: a.chainId, privateKey: a.accounts.relayer.privateKey }) };
    assert.throws(() => paywall({ ...base, routes: { "/x": { accepts: [{ price: "$0.01" }, { price: "$0.01" }] } } }), (e: unknown) => e instanceof ConfigError && /repeats/.test(e.message));
    assert.throws(() => paywall({ ...base, routes: { "/x": { accepts: [{ price: "$0.01" }, { network: "base", price: "$0.01" }] } } }), (e: unknown) => e instanceof ConfigError && /settlerByNetwork/.test(e.message));
    assert.throws(() => paywall({ ...base, routes: { "/x": { accepts: [{ price: (() => "$0.01") as never }] } } }), (e: unknown) => e instanceof ConfigError && /static/.test(e.message));
    assert.throws(() => paywall({ ...base, routes: { "/x": { accepts: [] } } }), (e: unknown) => e instanceof ConfigError && /accepts/.test(e.message));
    assert.throws(() => paywall({ ...base, routes: { "/x": { accepts: [{}] } } }), (e: unknown) => e instanceof ConfigError && /price/.test(e.message));
  });
});
