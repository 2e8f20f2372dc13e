/**
 * Issue 17: smart-wallet payments (ERC-1271 deployed wallets, ERC-6492
 * counterfactual ones) through a facilitator, with the official @x402/evm
 * facilitator on the real anvil dev chain. Without an RPC of its own the
 * server cannot check a wallet's signature: it must not refuse it locally but
 * pass it to the facilitator, whose /verify (before the handler) checks it as
 * the exact EVM scheme says (isValidSignature; ERC-6492 verified deployless
 * and deployed at settlement; it simulates that through Multicall3, planted
 * on the dev chain by test/support/multicall.ts). With an RPC, the server checks it on-chain
 * itself and the facilitator settles.
 */
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import express from "express";
import { serializeErc6492Signature, toFunctionSelector, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { startDevChain, type DevChain } from "server402/devchain";
import { encodeHeader, facilitatorSettler, paywall, TRANSFER_WITH_AUTHORIZATION_TYPES } from "server402";
import { PERMIT2_READ_ABI } from "../lib/src/chain/permit2.js";
import { X402_EXACT_PERMIT2_PROXY } from "../lib/src/protocol/permit2.js";
import { publicClient } from "./support/paid-app.js";
import { startFacilitator, type TestFacilitator } from "./support/facilitator.js";
import { testWallets, type TestWallet } from "./support/test-wallets.js";
import { plantMulticall3 } from "./support/multicall.js";

const PRICE = 10_000n; // $0.01 (USDC, EIP-3009) and 0.01 of the plain token (Permit2)
const BYTES_FORM = toFunctionSelector("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)");

describe("smart-wallet payments through the official x402 facilitator (issue 17: ERC-1271 / ERC-6492, facilitatorSettler)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let fac: TestFacilitator;
  let wallets: Awaited<ReturnType<typeof testWallets>>;
  let token: Address;
  let payTo: Address;
  const apps: { url: string; runs: { n: number }; close(): Promise<void> }[] = [];
  const pub = () => publicClient(chain);

  before(async () => {
    chain = await startDevChain();
    token = chain.permit2.token;
    payTo = chain.accounts.payTo.address;
    wallets = await testWallets(chain, chain.accounts.payers[7]!.privateKey);
    await plantMulticall3(chain); // the official facilitator simulates ERC-6492 payments through Multicall3
    fac = await startFacilitator({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.payers[8]!.privateKey }, { eip6492AllowedFactories: [wallets.factory] });
  });
  after(async () => {
    for (const a of apps) await a.close();
    await fac?.close();
    await chain?.stop();
  });

  /** GET /weather ($0.01 USDC, EIP-3009) and GET /plain (plain token over Permit2), settled by the facilitator; `rpcUrl` or none. */
  async function app(rpcUrl?: string) {
    const runs = { n: 0 };
    const plainPrice = { amount: PRICE.toString(), asset: { address: token, decimals: 6, eip712: { name: "Plain Test Dollar", version: "1" } } };
    const pw = paywall({
      payTo,
      network: "base-sepolia",
      rpcUrl,
      settler: facilitatorSettler({ url: fac.url }),
      routes: { "GET /weather": { price: "$0.01" }, "GET /plain": { price: plainPrice, assetTransferMethod: "permit2" } },
    });
    const ex = express();
    ex.use(pw);
    ex.get(["/weather", "/plain"], (req, res) => {
      runs.n++;
      res.json({ ok: true, payer: req.payment?.payer });
    });
    const server = await new Promise<Server>((resolve) => {
      const s = ex.listen(0, "127.0.0.1", () => resolve(s));
    });
    const a = {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      runs,
      close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
    };
    apps.push(a);
    return a;
  }

  /** The official @x402/fetch client paying as the wallet, signing through its owners (`wrap`: ERC-6492 around it). */
  function walletFetch(w: TestWallet, wrap = false) {
    const sign = async (td: unknown) => (wrap ? serializeErc6492Signature({ address: wallets.factory, data: w.factoryData, signature: await w.sign(td) }) : w.sign(td));
    const signer = { address: w.address, signTypedData: sign };
    const client = x402Client.fromConfig({ schemes: [{ network: "eip155:*", client: new ExactEvmScheme(signer as never) }], spendControls: { allowedAssets: [{ network: "eip155:84532", asset: token }] } });
    return wrapFetchWithPayment(fetch, client);
  }

  const tokenBalance = (owner: Address) => pub().readContract({ address: token, abi: PERMIT2_READ_ABI, functionName: "balanceOf", args: [owner] });

  /** Pay `path` as `w`: 200, paid by the facilitator, exactly the price moved. Returns the settling transaction. */
  async function pays(a: Awaited<ReturnType<typeof app>>, path: "/weather" | "/plain", w: TestWallet, wrap = false) {
    const balance = path === "/weather" ? (x: Address) => chain.balanceOf(x) : tokenBalance;
    const [wb, tb, ran, settles] = [await balance(w.address), await balance(payTo), a.runs.n, fac.calls.settle];
    const res = await walletFetch(w, wrap)(`${a.url}${path}`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).payer, w.address);
    const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    assert.equal(settled.success, true);
    assert.equal(await balance(w.address), wb - PRICE);
    assert.equal(await balance(payTo), tb + PRICE);
    assert.equal(a.runs.n, ran + 1);
    assert.equal(fac.calls.settle, settles + 1, "settled by the facilitator");
    assert.ok(fac.settled.includes(settled.transaction));
    return pub().getTransaction({ hash: settled.transaction as Hex });
  }

  describe("without an RPC: the facilitator verifies", () => {
    it("a deployed 2-owner ERC-1271 wallet pays (EIP-3009): checked by the facilitator's /verify, settled with the bytes-signature form", async () => {
      const a = await app();
      const w = await wallets.newWallet(2, true);
      const verifies = fac.calls.verify;
      const tx = await pays(a, "/weather", w);
      assert.equal(tx.input.slice(0, 10), BYTES_FORM);
      assert.ok(fac.calls.verify > verifies, "the facilitator's /verify was asked");
    });

    it("a deployed 1-owner wallet (65-byte signature of its owner, not of the wallet) pays", async () => {
      await pays(await app(), "/weather", await wallets.newWallet(1, true));
    });

    it("a counterfactual wallet's ERC-6492 signature is passed on: the facilitator deploys the wallet and settles", async () => {
      const a = await app();
      const w = await wallets.newWallet(1, false);
      assert.equal((await pub().getCode({ address: w.address })) ?? "0x", "0x");
      await pays(a, "/weather", w, true);
      assert.notEqual((await pub().getCode({ address: w.address })) ?? "0x", "0x", "deployed at settlement");
    });

    it("a deployed ERC-1271 wallet pays a Permit2 exact route through the facilitator", async () => {
      const w = await wallets.newWallet(2, true, [token]);
      const tx = await pays(await app(), "/plain", w);
      assert.equal(tx.to?.toLowerCase(), X402_EXACT_PERMIT2_PROXY.toLowerCase());
    });

    it("a signature the wallet does not accept is refused by the facilitator's /verify: 402 with its reason, the handler not run, nothing moved", async () => {
      const a = await app();
      const w = await wallets.newWallet(2, true);
      const stranger = [privateKeyToAccount(generatePrivateKey()), privateKeyToAccount(generatePrivateKey())];
      const now = BigInt(Math.floor(Date.now() / 1000));
      const message = { from: w.address, to: payTo, value: PRICE, validAfter: now - 600n, validBefore: now + 300n, nonce: `0x${"ab".repeat(32)}` as Hex };
      const td = { domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc }, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization" as const, message };
      const signature = `0x${(await Promise.all(stranger.map((s) => s.signTypedData(td)))).map((x) => x.slice(2)).join("")}` as Hex;
      const header = encodeHeader({
        x402Version: 2,
        accepted: { scheme: "exact", network: "eip155:84532", amount: PRICE.toString(), asset: chain.usdc, payTo, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } },
        payload: { signature, authorization: { ...message, value: PRICE.toString(), validAfter: message.validAfter.toString(), validBefore: message.validBefore.toString() } },
      });
      const [wb, verifies, settles] = [await chain.balanceOf(w.address), fac.calls.verify, fac.calls.settle];
      const res = await fetch(`${a.url}/weather`, { headers: { "payment-signature": header } });
      const body = (await res.json()) as { error: string; message: string };
      assert.equal(res.status, 402, JSON.stringify(body));
      assert.match(body.message, /the facilitator refused the payment/);
      assert.equal(fac.calls.verify, verifies + 1, "passed to the facilitator");
      assert.equal(fac.calls.settle, settles);
      assert.equal(a.runs.n, 0);
      assert.equal(await chain.balanceOf(w.address), wb);
    });

    it("an over-long signature is still refused locally, never sent to the facilitator", async () => {
      const a = await app();
      const w = await wallets.newWallet(1, true);
      const now = BigInt(Math.floor(Date.now() / 1000));
      const header = encodeHeader({
        x402Version: 2,
        accepted: { scheme: "exact", network: "eip155:84532", amount: PRICE.toString(), asset: chain.usdc, payTo, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } },
        payload: {
          signature: `0x${"ab".repeat(4096)}`,
          authorization: { from: w.address, to: payTo, value: PRICE.toString(), validAfter: String(now - 600n), validBefore: String(now + 300n), nonce: `0x${"cd".repeat(32)}` },
        },
      });
      const verifies = fac.calls.verify;
      const res = await fetch(`${a.url}/weather`, { headers: { "payment-signature": header } });
      assert.ok(res.status === 400 || res.status === 402, `refused as bad input, got ${res.status}`);
      assert.equal(fac.calls.verify, verifies);
    });
  });

  describe("with an RPC: the server checks the wallet on-chain, the facilitator settles", () => {
    it("a deployed ERC-1271 wallet and a counterfactual ERC-6492 wallet pay (EIP-3009)", async () => {
      const a = await app(chain.rpcUrl);
      await pays(a, "/weather", await wallets.newWallet(2, true));
      await pays(a, "/weather", await wallets.newWallet(1, false), true);
    });
  });
});
