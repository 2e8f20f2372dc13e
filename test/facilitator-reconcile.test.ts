/**
 * Issue 14 B10, facilitator path: a settlement whose outcome the facilitator
 * left unknown (no answer in time, a cut connection) or that a third party's
 * copy of the authorization front-ran is read from the chain: the
 * authorization used by the authorized transfer is a settled record with its
 * transaction hash, never lost, never charged twice. A real x402 facilitator
 * (test/support/facilitator.ts) on loopback settles on the dev chain.
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createWalletClient, encodeFunctionData, hexToNumber, http, parseAbi, slice, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { facilitatorSettler, MemoryStore, type PaymentEvent } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, devChainDef, type PaidApp } from "./support/paid-app.js";
import { startFacilitator, type TestFacilitator } from "./support/facilitator.js";
import { v2Header } from "./support/sign.js";

const PRICE = 10_000n;
const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as { success: boolean; transaction: string; errorReason?: string };
const TRANSFER_WITH_AUTHORIZATION_VRS = [
  {
    type: "function",
    name: "transferWithAuthorization",
    stateMutability: "nonpayable",
    inputs: [
      { name: "from", type: "address" },
      { name: "to", type: "address" },
      { name: "value", type: "uint256" },
      { name: "validAfter", type: "uint256" },
      { name: "validBefore", type: "uint256" },
      { name: "nonce", type: "bytes32" },
      { name: "v", type: "uint8" },
      { name: "r", type: "bytes32" },
      { name: "s", type: "bytes32" },
    ],
    outputs: [],
  },
] as const;

describe("issue 14 B10: facilitator settlements reconciled from the chain (real facilitator, real chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let fac: TestFacilitator;
  let app: PaidApp;
  let store: MemoryStore;
  let events: PaymentEvent[];

  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
  });
  beforeEach(async () => {
    fac = await startFacilitator(chain);
    store = new MemoryStore();
    events = [];
    const settler = facilitatorSettler({ url: fac.url, timeoutMs: 600, rpcUrl: chain.rpcUrl });
    app = await startPaidApp(chain, { settler, store, onEvent: (e) => events.push(e) });
  });
  afterEach(async () => {
    app.pw.engine.stopReconciler();
    await app?.close();
    await fac?.close();
    await store?.close();
  });

  const header = async (payer: number) => ({
    "payment-signature": await v2Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE }),
  });
  const get = (h: Record<string, string>) => fetch(`${app.url}/weather`, { headers: h });
  const until = async (what: () => boolean | Promise<boolean>, ms = 10_000) => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (await what()) return;
    assert.fail("timed out waiting");
  };

  it("B10 pending facilitator settlement: /settle answered after the timeout, the transfer mined later: the reconciler finds it on the chain (ledger entry with its hash), the retry gets the held answer, charged once", async () => {
    const h = await header(1);
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    // the facilitator settles only after our timeout, and answers later still
    fac.beforeSettle = () => new Promise((r) => setTimeout(r, 1000));
    fac.fault = "settle-late";
    fac.lateMs = 3000;
    const first = await get(h);
    const body = (await first.json()) as { error: string };
    assert.equal(first.status, 504, JSON.stringify(body));
    assert.equal(body.error, "settlement_pending");
    assert.equal(app.runs.weather, 1);
    await until(() => fac.settled.length === 1);
    fac.fault = undefined;
    fac.beforeSettle = undefined;
    await app.pw.engine.reconcile();
    const ledger = await store.listLedger();
    assert.deepEqual(ledger.map((e) => e.transaction), [fac.settled[0]], "settled record with the facilitator's transaction");
    assert.equal(fac.calls.settle, 1, "never sent to the facilitator again");
    const paid = await get(h);
    const text = await paid.text();
    assert.equal(paid.status, 200, text);
    assert.equal(JSON.parse(text).weather, "sunny");
    assert.equal(decode(paid.headers.get("payment-response")).transaction, fac.settled[0]);
    assert.equal(app.runs.weather, 1, "the handler ran once");
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE, "charged exactly once");
    assert.ok(events.some((e) => e.type === "reconciled" && e.outcome === "settled"));
  });

  it("B10 facilitator connection cut after it settled: the transfer is found on the chain and the paid answer delivered, with a ledger entry (was: lock released, payer charged, no record)", async () => {
    const h = await header(2);
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    fac.fault = "settle-drop";
    const res = await get(h);
    const text = await res.text();
    assert.equal(fac.settled.length, 1, "the facilitator settled");
    assert.equal(res.status, 200, text);
    assert.equal(decode(res.headers.get("payment-response")).transaction, fac.settled[0]);
    assert.deepEqual((await store.listLedger()).map((e) => e.transaction), [fac.settled[0]]);
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE);
    fac.fault = undefined;
    const again = await get(h);
    assert.equal(again.status, 402, "the authorization is used");
    assert.equal(app.runs.weather, 1);
  });

  it("B10 front-run on the facilitator path: a third party's copy of the authorization mined first: the paid answer is delivered, ledger entry with the copy's hash, charged once", async () => {
    const h = await header(3);
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const thief = createWalletClient({ account: privateKeyToAccount(chain.accounts.payers[8]!.privateKey), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
    let copy: Hex | undefined;
    fac.beforeSettle = async (payload) => {
      const { authorization: a, signature } = payload.payload as { authorization: Record<string, string>; signature: Hex };
      const data = encodeFunctionData({
        abi: TRANSFER_WITH_AUTHORIZATION_VRS,
        functionName: "transferWithAuthorization",
        args: [a.from as Hex, a.to as Hex, BigInt(a.value!), BigInt(a.validAfter!), BigInt(a.validBefore!), a.nonce as Hex, hexToNumber(slice(signature, 64, 65)), slice(signature, 0, 32), slice(signature, 32, 64)],
      });
      copy = await thief.sendTransaction({ to: chain.usdc, data });
    };
    const res = await get(h);
    const text = await res.text();
    assert.ok(copy, "the copy was sent");
    assert.equal(fac.settled.length, 0, "the facilitator's own settlement failed");
    assert.equal(res.status, 200, text);
    assert.equal(decode(res.headers.get("payment-response")).transaction, copy);
    assert.deepEqual((await store.listLedger()).map((e) => e.transaction), [copy]);
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, PRICE, "charged once");
  });

  it("B10 pending facilitator settlement, canceled by the payer: the reconciler sees the cancel on the chain: failed, no ledger entry, lock released, nothing charged", async () => {
    const h = await header(6);
    const payer = chain.accounts.payers[6]!;
    const before = await chain.balanceOf(payer.address);
    fac.fault = "hang";
    const first = await get(h);
    assert.equal(first.status, 504, await first.text());
    const nonce = (JSON.parse(Buffer.from(h["payment-signature"], "base64").toString()) as { payload: { authorization: { nonce: Hex } } }).payload.authorization.nonce;
    const account = privateKeyToAccount(payer.privateKey);
    const sig = await account.signTypedData({
      domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc },
      types: { CancelAuthorization: [{ name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
      primaryType: "CancelAuthorization",
      message: { authorizer: account.address, nonce },
    });
    const wallet = createWalletClient({ account, chain: devChainDef(chain), transport: http(chain.rpcUrl) });
    const cancelAbi = parseAbi(["function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)"]);
    await wallet.sendTransaction({ to: chain.usdc, data: encodeFunctionData({ abi: cancelAbi, functionName: "cancelAuthorization", args: [account.address, nonce, hexToNumber(slice(sig, 64, 65)), slice(sig, 0, 32), slice(sig, 32, 64)] }) });
    await app.pw.engine.reconcile();
    assert.ok(events.some((e) => e.type === "failed" && e.stage === "settle" && e.reason === "settlement_canceled"), JSON.stringify(events.filter((e) => e.type === "failed")));
    assert.deepEqual(await store.listOutbox(10), [], "nothing left pending");
    assert.deepEqual(await store.listLedger(), []);
    assert.equal(await chain.balanceOf(payer.address), before, "nothing charged");
    fac.fault = undefined;
  });

  it("B10 facilitator refusal with nothing moved stays a refusal: the payer is not charged and the authorization is released", async () => {
    const h = await header(4);
    const payer = chain.accounts.payers[4]!.address;
    const before = await chain.balanceOf(payer);
    fac.fault = "refuse-settle";
    const res = await get(h);
    assert.equal(res.status, 402, await res.text());
    assert.equal(decode(res.headers.get("payment-response")).errorReason, "insufficient_funds");
    fac.fault = undefined;
    const retry = await get(h);
    assert.equal(retry.status, 200, await retry.text());
    assert.equal(before - (await chain.balanceOf(payer)), PRICE, "charged once in all");
    assert.equal((await store.listLedger()).length, 1);
  });

  it("B10 facilitator replay guard: an authorization its own earlier settlement used (seconds ago) is refused, not taken as paid again", async function () {
    this.timeout(30_000);
    const settler = facilitatorSettler({ url: fac.url, timeoutMs: 2000, rpcUrl: chain.rpcUrl });
    const h = await header(5);
    // settle it once through the paywall, then hand the same settle request to the settler directly
    let request: Parameters<typeof settler.settle>[0] | undefined;
    const spy = { ...settler, kind: "facilitator" as const, settle: async (req: Parameters<typeof settler.settle>[0]) => ((request = req), settler.settle(req)) };
    const paid = await startPaidApp(chain, { settler: spy, store: new MemoryStore() });
    try {
      assert.equal((await fetch(`${paid.url}/weather`, { headers: h })).status, 200);
    } finally {
      paid.pw.engine.stopReconciler();
      await paid.close();
    }
    await new Promise((r) => setTimeout(r, 7000));
    await assert.rejects(settler.settle(request!), (err: Error & { reason?: string }) => err.reason !== undefined && err.reason !== "settlement_pending");
  });

  it("B10 facilitator with rpcUrl: a /settle never processed (HTTP 401 page, connection refused, auth headers failing) stays a plain failure, not pending", async () => {
    const http401 = await new Promise<import("node:http").Server>((resolve) => {
      const srv = createServer((_req, res) => void res.writeHead(401, { "content-type": "text/html" }).end("<h1>Unauthorized</h1>"));
      srv.listen(0, "127.0.0.1", () => resolve(srv));
    });
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const closedUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((r) => closed.close(r));
    const req = { x402Version: 2, payload: {}, requirements: {}, chainId: chain.chainId, network: "eip155:84532", asset: chain.usdc, authorization: { from: chain.accounts.payers[0]!.address, nonce: `0x${"00".repeat(32)}` } } as never;
    try {
      for (const settler of [
        facilitatorSettler({ url: `http://127.0.0.1:${(http401.address() as AddressInfo).port}`, rpcUrl: chain.rpcUrl }),
        facilitatorSettler({ url: closedUrl, rpcUrl: chain.rpcUrl }),
        facilitatorSettler({ url: fac.url, rpcUrl: chain.rpcUrl, createAuthHeaders: () => Promise.reject(new Error("no token")) }),
      ]) {
        await assert.rejects(settler.settle(req), (err: Error & { reason?: string; pending?: boolean }) => err.reason === "unexpected_settle_error" && err.pending === false);
      }
    } finally {
      http401.closeAllConnections();
      await new Promise((r) => http401.close(r));
    }
  });
});
