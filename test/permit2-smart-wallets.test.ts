/**
 * Issue 17: smart wallets paying over Permit2 on the real anvil dev chain.
 * Permit2 takes a contract owner's signature through ERC-1271
 * (`isValidSignature` on the owner), so a deployed smart wallet pays Permit2
 * `exact` and `upto` routes: verified on-chain (the EOA fast path stays
 * local), settled through the x402 proxies by our relayer. A counterfactual
 * wallet (ERC-6492) is refused with a clear 402: Permit2 checks the owner's
 * code at settlement, and an undeployed wallet cannot have approved Permit2.
 * The wallets are the test wallets of test/smart-wallets.test.ts
 * (lib/contracts/test/TestWallets.sol); the paying client is the official
 * @x402/fetch with a signer that signs through the wallet's owners.
 */
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import express from "express";
import { serializeErc6492Signature, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { startDevChain, type DevChain } from "server402/devchain";
import { paywall, relayerSettler } from "server402";
import { verifyPermit2, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY } from "../lib/src/protocol/permit2.js";
import { PERMIT2_READ_ABI } from "../lib/src/chain/permit2.js";
import { smartWalletVerifier, type SmartWalletVerifier } from "../lib/src/chain/smart-wallet.js";
import { publicClient } from "./support/paid-app.js";
import { testWallets } from "./support/test-wallets.js";
import { permit2Payment, type TypedData } from "./support/permit2-pay.js";

const PRICE = 10_000n; // GET /plain: 0.01 of the plain token
const MAX = 500_000n; // GET /usage: upto $0.50 (USDC)

describe("Permit2 payments from smart wallets (issue 17: ERC-1271 over Permit2; ERC-6492 refused)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let server: Server;
  let url: string;
  let token: Address;
  let payTo: Address;
  let wallets: Awaited<ReturnType<typeof testWallets>>;
  const runs = { plain: 0, usage: 0 };
  const pub = () => publicClient(chain);

  before(async () => {
    chain = await startDevChain();
    token = chain.permit2.token;
    payTo = chain.accounts.payTo.address;
    wallets = await testWallets(chain, chain.accounts.payers[8]!.privateKey);
    const plainPrice = { amount: PRICE.toString(), asset: { address: token, decimals: 6, eip712: { name: "Plain Test Dollar", version: "1" } } };
    const pw = paywall({
      payTo,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
      routes: {
        "GET /plain": { price: plainPrice, assetTransferMethod: "permit2", description: "plain ERC-20 over Permit2" },
        "GET /usage": { upto: "$0.50", description: "metered" },
      },
    });
    const app = express();
    app.use(pw);
    app.get("/plain", (req, res) => {
      runs.plain++;
      res.json({ ok: true, payment: req.payment });
    });
    app.get("/usage", (req, res) => {
      runs.usage++;
      const charge = (req.query as Record<string, string>).charge;
      if (charge) req.payment?.charge?.(charge);
      res.json({ used: charge ?? null, payment: req.payment });
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

  const tokenBalance = (owner: Address) => pub().readContract({ address: token, abi: PERMIT2_READ_ABI, functionName: "balanceOf", args: [owner] });
  const code = async (a: Address) => (await pub().getCode({ address: a })) ?? "0x";
  const relayerNonce = () => pub().getTransactionCount({ address: chain.accounts.relayer.address });

  const newWallet = (ownerCount: number, deployed: boolean) => wallets.newWallet(ownerCount, deployed, deployed ? [token, chain.usdc] : []);

  /** The official @x402/fetch client with the exact and upto schemes, paying as `address`, signing through the wallet's owners. */
  function walletFetch(address: Address, sign: (td: TypedData) => Promise<Hex>) {
    const signer = { address, signTypedData: (td: Record<string, unknown>) => sign(td as unknown as TypedData) };
    const client = x402Client.fromConfig({
      schemes: [
        { network: "eip155:*", client: new ExactEvmScheme(signer as never) },
        { network: "eip155:*", client: new UptoEvmScheme(signer as never) },
      ],
      spendControls: { allowedAssets: [{ network: "eip155:84532", asset: token }] },
    });
    return wrapFetchWithPayment(fetch, client);
  }

  async function paysPlain(w: Awaited<ReturnType<typeof newWallet>>) {
    const [wb, tb, ran] = [await tokenBalance(w.address), await tokenBalance(payTo), runs.plain];
    const res = await walletFetch(w.address, w.sign)(`${url}/plain`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    assert.equal(settled.success, true);
    assert.equal(settled.payer, w.address);
    assert.equal(JSON.parse(text).payment.payer, w.address);
    assert.equal(await tokenBalance(w.address), wb - PRICE);
    assert.equal(await tokenBalance(payTo), tb + PRICE);
    assert.equal(runs.plain, ran + 1);
    const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
    assert.equal(tx.to?.toLowerCase(), X402_EXACT_PERMIT2_PROXY.toLowerCase());
  }

  it("a deployed 2-owner ERC-1271 wallet (130-byte signature) pays a Permit2 exact route with the official client, twice", async () => {
    const w = await newWallet(2, true);
    await paysPlain(w);
    await paysPlain(w);
  });

  it("a deployed 1-owner wallet (a 65-byte signature that recovers to the owner, not the wallet) pays a Permit2 exact route", async () => {
    await paysPlain(await newWallet(1, true));
  });

  it("a deployed ERC-1271 wallet pays an upto route: $0.07 of $0.50 charged, only that moves", async () => {
    const w = await newWallet(2, true);
    const [wb, tb] = [await chain.balanceOf(w.address), await chain.balanceOf(payTo)];
    const res = await walletFetch(w.address, w.sign)(`${url}/usage?charge=%240.07`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!) as { success: boolean; transaction: string; amount?: string; payer?: string };
    assert.deepEqual([settled.success, settled.amount, settled.payer], [true, "70000", w.address]);
    assert.equal(await chain.balanceOf(w.address), wb - 70_000n);
    assert.equal(await chain.balanceOf(payTo), tb + 70_000n);
    const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
    assert.equal(tx.to?.toLowerCase(), X402_UPTO_PERMIT2_PROXY.toLowerCase());
    assert.ok(MAX > 70_000n);
  });

  it("verification takes the on-chain path for a wallet's signature (erc1271) and stays local for an EOA's", async () => {
    const w = await newWallet(2, true);
    const calls: Address[] = [];
    const real = smartWalletVerifier({ rpcUrl: chain.rpcUrl });
    const spy: SmartWalletVerifier = { verify: (from, digest, sig) => (calls.push(from), real.verify(from, digest, sig)) };
    const now = BigInt(Math.floor(Date.now() / 1000));
    const signed = await permit2Payment(chain, { scheme: "exact", owner: w.address, sign: w.sign, token, amount: PRICE, payTo });
    assert.deepEqual(await verifyPermit2(signed.p, signed.signature, chain.chainId, now, spy), { payer: w.address, kind: "erc1271" });
    assert.deepEqual(calls, [w.address]);
    const eoa = privateKeyToAccount(generatePrivateKey());
    const eoaSigned = await permit2Payment(chain, { scheme: "exact", owner: eoa.address, sign: (td) => eoa.signTypedData(td as never), token, amount: PRICE, payTo });
    assert.deepEqual(await verifyPermit2(eoaSigned.p, eoaSigned.signature, chain.chainId, now, spy), { payer: eoa.address, kind: "eoa" });
    assert.deepEqual(calls, [w.address], "the EOA signature never reached the smart-wallet path");
  });

  it("hostile: signatures the deployed wallet does not accept (a stranger's, one owner of two) → 402 invalid_permit2_signature, nothing moves", async () => {
    const w = await newWallet(2, true);
    const stranger = privateKeyToAccount(generatePrivateKey());
    const [wb, nonce, ran] = [await tokenBalance(w.address), await relayerNonce(), runs.plain];
    for (const sign of [(td: TypedData) => stranger.signTypedData(td as never), (td: TypedData) => w.owners[0]!.signTypedData(td as never)]) {
      const { header } = await permit2Payment(chain, { scheme: "exact", owner: w.address, sign, token, amount: PRICE, payTo });
      const res = await fetch(`${url}/plain`, { headers: { "payment-signature": header } });
      const body = (await res.json()) as { error: string; message: string };
      assert.equal(res.status, 402, JSON.stringify(body));
      assert.equal(body.error, "invalid_permit2_signature");
      assert.match(body.message, /ERC-1271/);
    }
    assert.equal(await tokenBalance(w.address), wb);
    assert.equal(await relayerNonce(), nonce, "the relayer sent nothing");
    assert.equal(runs.plain, ran);
  });

  it("a counterfactual wallet's ERC-6492 signature over Permit2 (exact and upto) → 402 with a clear reason; nothing deployed, nothing sent", async () => {
    const w = await newWallet(1, false);
    const wrap = async (td: TypedData) => serializeErc6492Signature({ address: wallets.factory, data: w.factoryData, signature: await w.sign(td) });
    const nonce = await relayerNonce();
    for (const [path, scheme, asset, amount] of [["/plain", "exact", token, PRICE], ["/usage", "upto", chain.usdc, MAX]] as const) {
      const { header } = await permit2Payment(chain, { scheme, owner: w.address, sign: wrap, token: asset, amount, payTo, facilitator: chain.accounts.relayer.address });
      const res = await fetch(`${url}${path}`, { headers: { "payment-signature": header } });
      const body = (await res.json()) as { error: string; message: string };
      assert.equal(res.status, 402, JSON.stringify(body));
      assert.equal(body.error, "invalid_permit2_signature");
      assert.match(body.message, /ERC-6492/);
      assert.match(body.message, /deploy the wallet and approve Permit2/, "says what to do");
    }
    assert.equal(await code(w.address), "0x");
    assert.equal(await relayerNonce(), nonce);
  });
});
