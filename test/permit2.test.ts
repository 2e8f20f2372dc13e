/**
 * Issue 17 part 2: payments over Permit2 on the real anvil dev chain, through
 * the Express paywall and the relayer settler:
 * - x402 `exact` with assetTransferMethod `permit2` on a plain ERC-20 (no EIP-3009);
 * - x402 `upto` (usage-based): the payer authorizes a maximum, the handler
 *   charges what it used with `req.payment.charge(...)`, only that is settled.
 * Paying clients: the official @x402/fetch 2.x with @x402/evm's ExactEvmScheme
 * (which signs Permit2 when `extra.assetTransferMethod` is "permit2") and
 * UptoEvmScheme; hostile and replayed payments are made by a client written
 * here to the specification (permit2TypedData).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import express from "express";
import { createWalletClient, hashTypedData, http, maxUint256, toFunctionSelector, type Abi, type AbiFunction, type Address, type Hex } from "viem";
import { privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { PERMIT2_ADDRESS as OFFICIAL_PERMIT2, x402ExactPermit2ProxyABI, x402ExactPermit2ProxyAddress, x402UptoPermit2ProxyABI, x402UptoPermit2ProxyAddress } from "@x402/evm";
import { startDevChain, type DevChain } from "server402/devchain";
import { ConfigError, encodeHeader, facilitatorSettler, paywall, relayerSettler } from "server402";
import { decodeHeader } from "../lib/src/protocol/encoding.js";
import {
  decodePermit2,
  PERMIT2_ADDRESS,
  permit2Digest,
  permit2DomainSeparator,
  permit2TypedData,
  X402_EXACT_PERMIT2_PROXY,
  X402_UPTO_PERMIT2_PROXY,
  type Permit2Payment,
} from "../lib/src/protocol/permit2.js";
import { PERMIT2_READ_ABI, X402_PERMIT2_PROXY_ABI } from "../lib/src/chain/permit2.js";
import { compilePermit2Contracts, permit2FromPackage, PERMIT2_ARTIFACT_PATH, sha256Hex, type Permit2Artifact } from "../scripts/compile-permit2.js";
import { devChainDef, publicClient } from "./support/paid-app.js";
import { startFacilitator } from "./support/facilitator.js";

const PRICE = 10_000n; // GET /plain: 0.01 of the plain token
const MAX = 500_000n; // GET /usage: upto $0.50 (USDC)

describe("Permit2 payments (issue 17.2: exact on a plain ERC-20, usage-based upto)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let server: Server;
  let url: string;
  let token: Address;
  let payTo: Address;
  const runs = { plain: 0, usage: 0 };
  const pub = () => publicClient(chain);

  before(async () => {
    chain = await startDevChain();
    token = chain.permit2.token;
    payTo = chain.accounts.payTo.address;
    const settler = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
    const plainPrice = { amount: PRICE.toString(), asset: { address: token, decimals: 6, eip712: { name: "Plain Test Dollar", version: "1" } } };
    const pw = paywall({
      payTo,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      settler,
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
      const q = req.query as Record<string, string>;
      if (q.charge) req.payment?.charge?.(q.charge);
      if (q.fail) return void res.status(500).json({ error: "handler failed after charging" });
      res.json({ used: q.charge ?? null, payment: req.payment });
    });
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: err.message });
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
  const usdcBalance = (owner: Address) => chain.balanceOf(owner);

  /** The payer approves Permit2 on `asset` (the one-time step the specification leaves to the payer). */
  async function approvePermit2(key: Hex, asset: Address, amount = maxUint256): Promise<void> {
    const wallet = createWalletClient({ account: privateKeyToAccount(key), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
    const hash = await wallet.writeContract({ address: asset, abi: PERMIT2_READ_ABI, functionName: "approve", args: [PERMIT2_ADDRESS, amount], account: wallet.account, chain: wallet.chain });
    assert.equal((await pub().waitForTransactionReceipt({ hash })).status, "success");
  }

  /** The official v2 client (@x402/fetch + @x402/evm exact and upto schemes); `sent` collects the payment headers it sent. */
  function officialFetch(account: PrivateKeyAccount, sent: string[] = []) {
    // the plain token is no default asset: the client's spend controls must list it
    const client = x402Client.fromConfig({
      schemes: [
        { network: "eip155:*", client: new ExactEvmScheme(account) },
        { network: "eip155:*", client: new UptoEvmScheme(account) },
      ],
      spendControls: { allowedAssets: [{ network: "eip155:84532", asset: token }] },
    });
    const recording: typeof fetch = (input, init) => {
      const h = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
      const sig = h.get("payment-signature");
      if (sig) sent.push(sig);
      return fetch(input, init);
    };
    return wrapFetchWithPayment(recording, client);
  }

  /** A client written to the specification: a signed v2 Permit2 payment header for /plain or /usage. */
  async function specPayment(account: PrivateKeyAccount, scheme: "exact" | "upto", over: Partial<Permit2Payment> = {}, tamper?: (payload: Record<string, unknown>) => void): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const p: Permit2Payment = {
      scheme,
      proxy: scheme === "upto" ? X402_UPTO_PERMIT2_PROXY : X402_EXACT_PERMIT2_PROXY,
      owner: account.address,
      token: scheme === "upto" ? chain.usdc : token,
      permitted: (scheme === "upto" ? MAX : PRICE).toString(),
      nonce: BigInt(`0x${randomBytes(32).toString("hex")}`).toString(),
      deadline: String(now + 300),
      to: payTo,
      validAfter: "0",
      ...(scheme === "upto" ? { facilitator: chain.accounts.relayer.address } : {}),
      ...over,
    };
    const signature = await account.signTypedData(permit2TypedData(p, chain.chainId));
    const witness = scheme === "upto" ? { to: p.to, facilitator: p.facilitator, validAfter: p.validAfter } : { to: p.to, validAfter: p.validAfter };
    const payload: Record<string, unknown> = {
      x402Version: 2,
      accepted: {
        scheme,
        network: "eip155:84532",
        amount: scheme === "upto" ? MAX.toString() : PRICE.toString(),
        asset: scheme === "upto" ? chain.usdc : token,
        payTo,
        maxTimeoutSeconds: 300,
        extra: {},
      },
      payload: { signature, permit2Authorization: { from: p.owner, permitted: { token: p.token, amount: p.permitted }, spender: p.proxy, nonce: p.nonce, deadline: p.deadline, witness } },
    };
    tamper?.(payload);
    return encodeHeader(payload);
  }

  const get = (path: string, header?: string) => fetch(`${url}${path}`, header ? { headers: { "PAYMENT-SIGNATURE": header } } : undefined);
  const reasonOf = (res: Response) => (decodeHeader(res.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { error?: string }).error;

  describe("dev chain", () => {
    it("plants Permit2 at its canonical address and the x402 proxies where the official client signs for them", async () => {
      assert.equal(PERMIT2_ADDRESS, OFFICIAL_PERMIT2);
      assert.equal(X402_EXACT_PERMIT2_PROXY, x402ExactPermit2ProxyAddress);
      assert.equal(X402_UPTO_PERMIT2_PROXY, x402UptoPermit2ProxyAddress);
      for (const a of [PERMIT2_ADDRESS, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY, token]) assert.ok(((await pub().getCode({ address: a })) ?? "0x").length > 2, `code at ${a}`);
      // Permit2's own domain separator (recomputed for this chain id) is the one we verify against
      const sep = await pub().readContract({ address: PERMIT2_ADDRESS, abi: [{ type: "function", name: "DOMAIN_SEPARATOR", inputs: [], outputs: [{ type: "bytes32" }], stateMutability: "view" }], functionName: "DOMAIN_SEPARATOR" });
      assert.equal(sep, permit2DomainSeparator(chain.chainId));
    });

    it("our proxies' settle functions have the official ABI's selectors, and the official witness type strings", async () => {
      const selectors = (abi: Abi) => abi.filter((x): x is AbiFunction => x.type === "function" && x.name === "settle").map((f) => toFunctionSelector(f)).sort();
      const ours = selectors(X402_PERMIT2_PROXY_ABI as Abi);
      const official = [...selectors(x402ExactPermit2ProxyABI as Abi), ...selectors(x402UptoPermit2ProxyABI as Abi)].sort();
      assert.deepEqual(ours, official);
      const artifact = JSON.parse(readFileSync(PERMIT2_ARTIFACT_PATH, "utf8")) as Permit2Artifact;
      for (const [proxy, abi, officialAbi] of [
        [X402_EXACT_PERMIT2_PROXY, artifact.exactProxy.abi, x402ExactPermit2ProxyABI],
        [X402_UPTO_PERMIT2_PROXY, artifact.uptoProxy.abi, x402UptoPermit2ProxyABI],
      ] as const) {
        // the compiled contract's settle is the official one (settleWithPermit, the EIP-2612 extension, is not implemented)
        assert.deepEqual(selectors(abi as Abi), selectors(officialAbi as Abi));
        const permit2 = await pub().readContract({ address: proxy, abi: abi as Abi, functionName: "PERMIT2" });
        assert.equal(permit2, PERMIT2_ADDRESS);
      }
      const uptoType = await pub().readContract({ address: X402_UPTO_PERMIT2_PROXY, abi: artifact.uptoProxy.abi as Abi, functionName: "WITNESS_TYPE_STRING" });
      assert.equal(uptoType, "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)");
    });

    it("the plain token has no EIP-3009 (transferWithAuthorization reverts)", async () => {
      await assert.rejects(
        pub().call({ to: token, data: "0xe3ee160e" + "00".repeat(32 * 9) as Hex }),
        /revert/i,
      );
    });

    it("the committed artifact is current (Solidity sources recompiled; Permit2 code as the npm package ships it)", () => {
      const committed = JSON.parse(readFileSync(PERMIT2_ARTIFACT_PATH, "utf8")) as Permit2Artifact;
      const fresh = compilePermit2Contracts();
      assert.deepEqual(committed.sourcesSha256, fresh.sourcesSha256);
      assert.equal(committed.exactProxy.runtime, fresh.exactProxy.runtime);
      assert.equal(committed.uptoProxy.runtime, fresh.uptoProxy.runtime);
      assert.equal(committed.token.runtime, fresh.token.runtime);
      assert.equal(sha256Hex(committed.permit2.runtime), committed.permit2.sha256);
      const fromPackage = permit2FromPackage();
      if (fromPackage) assert.equal(fromPackage, committed.permit2.runtime);
      assert.equal(createHash("sha256").update(readFileSync(PERMIT2_ARTIFACT_PATH)).digest("hex").length, 64);
    });
  });

  describe("protocol", () => {
    it("our digest is viem's EIP-712 hash of the typed data (exact and upto)", () => {
      for (const scheme of ["exact", "upto"] as const) {
        const p: Permit2Payment = {
          scheme,
          proxy: scheme === "upto" ? X402_UPTO_PERMIT2_PROXY : X402_EXACT_PERMIT2_PROXY,
          owner: chain.accounts.payers[0]!.address,
          token,
          permitted: "123456",
          nonce: "98765432109876543210",
          deadline: "1900000000",
          to: payTo,
          validAfter: "7",
          ...(scheme === "upto" ? { facilitator: chain.accounts.relayer.address } : {}),
        };
        assert.equal(permit2Digest(p, chain.chainId), hashTypedData(permit2TypedData(p, chain.chainId)));
      }
    });

    it("the 402 offers exact over Permit2 (v2 only) and upto with the facilitator address", async () => {
      const plain = await get("/plain");
      assert.equal(plain.status, 402);
      const req = decodeHeader(plain.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { accepts: Record<string, unknown>[] };
      assert.deepEqual(req.accepts[0], {
        scheme: "exact",
        network: "eip155:84532",
        amount: PRICE.toString(),
        asset: token,
        payTo,
        maxTimeoutSeconds: 300,
        extra: { name: "Plain Test Dollar", version: "1", assetTransferMethod: "permit2" },
      });
      assert.deepEqual(((await plain.json()) as { accepts: unknown[] }).accepts, [], "x402 v1 has no Permit2 form");
      const usage = await get("/usage");
      const up = decodeHeader(usage.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { accepts: Record<string, unknown>[] };
      assert.equal(up.accepts[0]!.scheme, "upto");
      assert.equal(up.accepts[0]!.amount, MAX.toString());
      assert.deepEqual(up.accepts[0]!.extra, { name: "USDC", version: "2", assetTransferMethod: "permit2", facilitatorAddress: chain.accounts.relayer.address });
      // the browser page's script signs EIP-3009 only: browsers get the plain 402 (with PAYMENT-REQUIRED) on Permit2 routes
      for (const path of ["/plain", "/usage"]) {
        const page = await fetch(`${url}${path}`, { headers: { accept: "text/html", "user-agent": "Mozilla/5.0" } });
        assert.equal(page.status, 402);
        assert.match(page.headers.get("content-type")!, /application\/json/);
        assert.ok(page.headers.get("payment-required"));
      }
    });
  });

  describe("exact over Permit2 on the plain ERC-20", () => {
    it("without an allowance to Permit2: 412 permit2_allowance_required, nothing charged, the handler not run", async () => {
      const payer = privateKeyToAccount(chain.accounts.payers[0]!.privateKey);
      await chain.mintToken(payer.address, 1_000_000n);
      const before = runs.plain;
      const res = await get("/plain", await specPayment(payer, "exact"));
      assert.equal(res.status, 412);
      assert.equal(reasonOf(res), "permit2_allowance_required");
      assert.equal(runs.plain, before);
      assert.equal(await tokenBalance(payer.address), 1_000_000n);
    });

    it("the official @x402/fetch + ExactEvmScheme client pays; balances move by exactly the price through the exact proxy", async () => {
      const payer = privateKeyToAccount(chain.accounts.payers[0]!.privateKey);
      await approvePermit2(chain.accounts.payers[0]!.privateKey, token);
      const [pb, tb] = await Promise.all([tokenBalance(payer.address), tokenBalance(payTo)]);
      const sent: string[] = [];
      const res = await officialFetch(payer, sent)(`${url}/plain`);
      const body = await res.text();
      assert.equal(res.status, 200, body);
      const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
      assert.equal(settled.success, true);
      assert.equal(settled.payer, payer.address);
      assert.equal(await tokenBalance(payer.address), pb - PRICE);
      assert.equal(await tokenBalance(payTo), tb + PRICE);
      const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
      assert.equal(tx.to?.toLowerCase(), X402_EXACT_PERMIT2_PROXY.toLowerCase());
      assert.equal(tx.from.toLowerCase(), chain.accounts.relayer.address.toLowerCase());
      // the official client's payload is a Permit2 one
      const p = decodeHeader(sent[0]!, "PAYMENT-SIGNATURE") as { payload: Record<string, unknown> };
      assert.ok("permit2Authorization" in p.payload);
      // the same payment again: refused, no second charge
      const again = await get("/plain", sent[0]);
      assert.equal(again.status, 402);
      assert.equal(reasonOf(again), "duplicate_settlement");
      assert.equal(await tokenBalance(payer.address), pb - PRICE);
    });

    it("eight parallel copies of one Permit2 payment: one 200, one charge", async () => {
      const payer = privateKeyToAccount(chain.accounts.payers[0]!.privateKey);
      const header = await specPayment(payer, "exact");
      const [pb, tb, ran] = [await tokenBalance(payer.address), await tokenBalance(payTo), runs.plain];
      const answers = await Promise.all(Array.from({ length: 8 }, () => get("/plain", header)));
      const statuses = answers.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 402, 402, 402, 402, 402, 402, 402]);
      assert.equal(runs.plain, ran + 1);
      assert.equal(await tokenBalance(payer.address), pb - PRICE);
      assert.equal(await tokenBalance(payTo), tb + PRICE);
    });

    it("refuses hostile payloads before the chain: wrong spender, wrong recipient, tampered amount, unknown field, v1", async () => {
      const payer = privateKeyToAccount(chain.accounts.payers[0]!.privateKey);
      const pb = await tokenBalance(payer.address);
      const cases: [string, Promise<string>, number, string][] = [
        ["spender", specPayment(payer, "exact", { proxy: X402_UPTO_PERMIT2_PROXY }), 402, "invalid_permit2_spender"],
        ["recipient", specPayment(payer, "exact", { to: chain.accounts.payers[3]!.address }), 402, "invalid_permit2_recipient_mismatch"],
        ["amount", specPayment(payer, "exact", {}, (x) => (((x.payload as Record<string, Record<string, Record<string, string>>>).permit2Authorization!.permitted!).amount = "1")), 402, "permit2_amount_mismatch"],
        [
          "signature",
          specPayment(payer, "exact", {}, (x) => (((x.payload as Record<string, Record<string, Record<string, string>>>).permit2Authorization!.witness!).validAfter = "1")),
          402,
          "invalid_permit2_signature",
        ],
        ["unknown field", specPayment(payer, "exact", {}, (x) => (((x.payload as Record<string, Record<string, Record<string, unknown>>>).permit2Authorization!.witness!).extra = {})), 400, "invalid_payload"],
        ["expired", specPayment(payer, "exact", { deadline: String(Math.floor(Date.now() / 1000) - 1) }), 402, "permit2_deadline_expired"],
        ["scheme", specPayment(payer, "exact", {}, (x) => ((x.accepted as Record<string, string>).scheme = "upto")), 402, "unsupported_scheme"],
      ];
      for (const [what, header, status, reason] of cases) {
        const res = await get("/plain", await header);
        assert.equal(res.status, status, what);
        assert.equal(reasonOf(res), reason, what);
      }
      const v1 = await fetch(`${url}/plain`, { headers: { "X-PAYMENT": encodeHeader({ x402Version: 1, scheme: "exact", network: "base-sepolia", payload: {} }) } });
      assert.equal(v1.status, 402);
      assert.equal(((await v1.json()) as { error: string }).error, "unsupported_scheme");
      assert.equal(await tokenBalance(payer.address), pb);
    });
  });

  describe("through the official x402 facilitator (@x402/evm 2.x ExactEvmScheme facilitator)", () => {
    it("a Permit2 exact payment verified and settled by the official facilitator, through our exact proxy", async () => {
      const facilitator = await startFacilitator({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.payers[8]!.privateKey });
      const plainPrice = { amount: PRICE.toString(), asset: { address: token, decimals: 6, eip712: { name: "Plain Test Dollar", version: "1" } } };
      const pw = paywall({ payTo, network: "base-sepolia", settler: facilitatorSettler({ url: facilitator.url }), routes: { "GET /viaf": { price: plainPrice, assetTransferMethod: "permit2" } } });
      const app = express();
      app.use(pw);
      app.get("/viaf", (_req, res) => void res.json({ ok: true }));
      const srv = await new Promise<Server>((resolve) => {
        const s = app.listen(0, "127.0.0.1", () => resolve(s));
      });
      try {
        const payer = privateKeyToAccount(chain.accounts.payers[2]!.privateKey);
        await chain.mintToken(payer.address, 1_000_000n);
        await approvePermit2(chain.accounts.payers[2]!.privateKey, token);
        const [pb, tb] = await Promise.all([tokenBalance(payer.address), tokenBalance(payTo)]);
        const res = await officialFetch(payer)(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/viaf`);
        assert.equal(res.status, 200, await res.clone().text());
        const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
        assert.equal(settled.success, true);
        assert.equal(await tokenBalance(payer.address), pb - PRICE);
        assert.equal(await tokenBalance(payTo), tb + PRICE);
        const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
        assert.equal(tx.to?.toLowerCase(), X402_EXACT_PERMIT2_PROXY.toLowerCase());
        assert.ok(facilitator.calls.verify >= 1 && facilitator.calls.settle === 1);
      } finally {
        srv.closeAllConnections();
        await new Promise<void>((r) => srv.close(() => r()));
        await facilitator.close();
      }
    });
  });

  describe("relayer confirmation of a pending Permit2 settlement (the reconciler's path)", () => {
    it("confirm() finds a mined Permit2 transfer, and calls a dropped one with the nonce unused dropped", async () => {
      const relayer = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
      const payer = privateKeyToAccount(chain.accounts.payers[3]!.privateKey);
      await chain.mintToken(payer.address, 1_000_000n);
      await approvePermit2(chain.accounts.payers[3]!.privateKey, token);
      const offer = {
        network: { chainId: chain.chainId, caip2: "eip155:84532" },
        asset: { address: token, decimals: 6, eip712Name: "Plain Test Dollar", eip712Version: "1" },
        amount: PRICE,
        payTo,
        permit2: { scheme: "exact" as const },
      };
      const request = async () => {
        const raw = decodeHeader(await specPayment(payer, "exact"), "PAYMENT-SIGNATURE");
        const d = decodePermit2(2, raw, offer as never);
        return {
          authorization: d.authorization,
          signature: d.signature,
          asset: token,
          chainId: chain.chainId,
          network: "eip155:84532",
          x402Version: 2 as const,
          payload: raw,
          requirements: {},
          permit2: d.permit2,
        };
      };
      const settled = await request();
      const pb = await tokenBalance(payer.address);
      const result = await relayer.settle(settled);
      assert.equal(await tokenBalance(payer.address), pb - PRICE);
      assert.deepEqual(await relayer.confirm!(settled, result.transaction), result);
      const unknownHash = `0x${randomBytes(32).toString("hex")}` as Hex;
      await assert.rejects(relayer.confirm!(await request(), unknownHash), (err: { reason?: string }) => err.reason === "settlement_dropped");
      // replaying the settled request is refused on-chain (Permit2's nonce), nothing moves
      await assert.rejects(relayer.settle(settled), (err: { reason?: string }) => err.reason === "invalid_exact_evm_nonce_already_used");
      assert.equal(await tokenBalance(payer.address), pb - PRICE);
    });
  });

  describe("route options", () => {
    it("refuses upto routes that cannot work, at startup, naming the option", () => {
      const relayer = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey });
      const make = (route: Record<string, unknown>, settler: unknown = relayer) =>
        paywall({ payTo, settler: settler as never, routes: { "GET /x": route as never } });
      const cases: [Record<string, unknown>, string, unknown?][] = [
        [{ upto: "$0.50", price: "$0.10" }, 'routes["GET /x"].upto'],
        [{ upto: "$0.50", settlement: "before" }, 'routes["GET /x"].settlement'],
        [{ upto: "$0.50", serviceId: "svc" }, 'routes["GET /x"].serviceId'],
        [{ upto: "$0.50", assetTransferMethod: "eip3009" }, 'routes["GET /x"].assetTransferMethod'],
        [{ price: "$0.50", assetTransferMethod: "permit3" }, 'routes["GET /x"].assetTransferMethod'],
        [{ upto: "$0.50" }, 'routes["GET /x"].upto', facilitatorSettler({ url: "http://127.0.0.1:9/facilitator" })],
      ];
      for (const [route, option, settler] of cases) {
        assert.throws(() => make(route, settler), (err: unknown) => err instanceof ConfigError && err.message.includes(option), JSON.stringify(route));
      }
      assert.doesNotThrow(() => make({ upto: "$0.50" }));
      assert.doesNotThrow(() => make({ price: "$0.10", assetTransferMethod: "permit2" }, facilitatorSettler({ url: "http://127.0.0.1:9/facilitator" })));
    });
  });

  describe("upto (usage-based)", () => {
    let payer: PrivateKeyAccount;
    before(async () => {
      payer = privateKeyToAccount(chain.accounts.payers[1]!.privateKey);
      await approvePermit2(chain.accounts.payers[1]!.privateKey, chain.usdc);
    });

    it("the official UptoEvmScheme client pays; the handler charges $0.07 of $0.50 and only that moves", async () => {
      const [pb, tb] = await Promise.all([usdcBalance(payer.address), usdcBalance(payTo)]);
      const res = await officialFetch(payer)(`${url}/usage?charge=%240.07`);
      const body = (await res.json()) as { payment: { amount: string; maximum: string; scheme: string } };
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.payment.scheme, "upto");
      assert.equal(body.payment.maximum, MAX.toString());
      const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!) as { success: boolean; transaction: string; amount?: string };
      assert.equal(settled.success, true);
      assert.equal(settled.amount, "70000");
      assert.equal(await usdcBalance(payer.address), pb - 70_000n);
      assert.equal(await usdcBalance(payTo), tb + 70_000n);
      const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
      assert.equal(tx.to?.toLowerCase(), X402_UPTO_PERMIT2_PROXY.toLowerCase());
    });

    it("charges in atomic units too", async () => {
      const pb = await usdcBalance(payer.address);
      const res = await get("/usage?charge=1234", await specPayment(payer, "upto"));
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal(await usdcBalance(payer.address), pb - 1234n);
    });

    it("a charge above the authorized maximum is refused (the handler's charge throws) and nothing is settled", async () => {
      const [pb, tb] = await Promise.all([usdcBalance(payer.address), usdcBalance(payTo)]);
      const res = await get("/usage?charge=%240.51", await specPayment(payer, "upto"));
      assert.equal(res.status, 500);
      assert.match(((await res.json()) as { error: string }).error, /exceeds the authorized maximum/);
      assert.equal(res.headers.get("payment-response"), null);
      assert.equal(await usdcBalance(payer.address), pb);
      assert.equal(await usdcBalance(payTo), tb);
    });

    it("a failing handler settles nothing, even after charging", async () => {
      const pb = await usdcBalance(payer.address);
      const res = await get("/usage?charge=%240.20&fail=1", await specPayment(payer, "upto"));
      assert.equal(res.status, 500);
      assert.equal(await usdcBalance(payer.address), pb);
    });

    it("no charge: 200 with nothing settled (no transaction), and the authorization cannot pay again", async () => {
      const pb = await usdcBalance(payer.address);
      const nonceBefore = await pub().getTransactionCount({ address: chain.accounts.relayer.address });
      const header = await specPayment(payer, "upto");
      const res = await get("/usage", header);
      assert.equal(res.status, 200);
      const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!) as { success: boolean; transaction: string; amount?: string };
      assert.deepEqual([settled.success, settled.transaction, settled.amount], [true, "", "0"]);
      assert.equal(await usdcBalance(payer.address), pb);
      assert.equal(await pub().getTransactionCount({ address: chain.accounts.relayer.address }), nonceBefore);
      const again = await get("/usage?charge=%240.10", header);
      assert.equal(again.status, 402);
      assert.equal(reasonOf(again), "duplicate_settlement");
      assert.equal(await usdcBalance(payer.address), pb);
    });

    it("no charge with a payment identifier: a retry with the same id gets the same answer (not stuck in progress), still nothing settled", async () => {
      const pb = await usdcBalance(payer.address);
      const id = `pay_${randomBytes(12).toString("hex")}`;
      const header = await specPayment(payer, "upto", {}, (payload) => {
        payload.extensions = { "payment-identifier": { info: { id } } };
      });
      const first = await get("/usage", header);
      const firstBody = await first.text();
      assert.equal(first.status, 200, firstBody);
      const retry = await get("/usage", header);
      assert.equal(retry.status, 200, await retry.clone().text());
      assert.equal(await retry.text(), firstBody);
      const settled = decodePaymentResponseHeader(retry.headers.get("payment-response")!) as { success: boolean; transaction: string };
      assert.deepEqual([settled.success, settled.transaction], [true, ""]);
      assert.equal(await usdcBalance(payer.address), pb);
    });

    it("six parallel copies of one upto payment: one handler run, one charge", async () => {
      const header = await specPayment(payer, "upto");
      const [pb, ran] = [await usdcBalance(payer.address), runs.usage];
      const answers = await Promise.all(Array.from({ length: 6 }, () => get("/usage?charge=%240.03", header)));
      assert.deepEqual(answers.map((r) => r.status).sort(), [200, 402, 402, 402, 402, 402]);
      assert.equal(runs.usage, ran + 1);
      assert.equal(await usdcBalance(payer.address), pb - 30_000n);
    });

    it("refuses a witness naming another facilitator, and a signed maximum other than the route's", async () => {
      const other = await get("/usage?charge=1", await specPayment(payer, "upto", { facilitator: chain.accounts.payers[4]!.address }));
      assert.equal(reasonOf(other), "upto_facilitator_mismatch");
      const less = await get("/usage?charge=1", await specPayment(payer, "upto", { permitted: "1000" }));
      assert.equal(reasonOf(less), "permit2_amount_mismatch");
    });
  });
});
