/**
 * The relayer at real block times (issue 20, part 2): anvil mines a block
 * every second (interval mining, like Base's 2 s), so transactions wait in the
 * mempool. Nonce pipelining from one wallet, replacement of a dropped
 * transaction, no nonce gap after a failed send, gas funds checked before
 * sending (503 `relayer_low_funds` + event), a pool of wallets.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import express from "express";
import request from "supertest";
import { createPublicClient, encodeFunctionData, http, keccak256, toHex, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { MemoryStore, paywall, TRANSFER_WITH_AUTHORIZATION_TYPES } from "server402";
import { startDevChain, type DevAccount, type DevChain } from "server402/devchain";
import { EIP3009_ABI } from "../lib/src/chain/abi.js";
import { relayerSettler, type RelayerEvent, type RelayerSettler, type RelayerSettlerOptions } from "../lib/src/chain/relayer.js";
import type { SettleRequest, SettleResult } from "../lib/src/chain/settler.js";
import { ConfigError, RelayerFundsError, SettlementError } from "../lib/src/errors.js";
import { v2Header } from "./support/sign.js";

const CHAIN_ID = 84532;
const EOA_TRANSFER_GAS = 150_000n; // the relayer's fixed limit for a pre-checked EOA transfer
const now = (): bigint => BigInt(Math.floor(Date.now() / 1000));

/** A JSON-RPC proxy in front of anvil whose eth_sendRawTransaction answers can be bent, one call at a time. */
async function sendProxy(target: string): Promise<{ url: string; sends: number; onSend?: (n: number) => "pass" | "refuse" | "lose" | "swallow"; close(): Promise<void> }> {
  const state: { sends: number; onSend?: (n: number) => "pass" | "refuse" | "lose" | "swallow" } = { sends: 0 };
  const server: Server = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const call = JSON.parse(body) as { id: number; method: string };
    res.setHeader("content-type", "application/json");
    if (call.method === "eth_sendRawTransaction") {
      const what = state.onSend?.(++state.sends) ?? "pass";
      // refused by the node: a JSON-RPC error, nothing entered the mempool
      if (what === "refuse") return void res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, error: { code: -32000, message: "transaction rejected: node busy" } }));
      // lost on the way: a gateway error, the node never saw it (outcome unknown to the sender)
      if (what === "lose") return void res.writeHead(502).end("bad gateway");
      // accepted, then dropped from the mempool (a node restart, an eviction): the node answers the hash and forgets it
      if (what === "swallow") return void res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, result: keccak256((call as unknown as { params: [Hex] }).params[0]) }));
    }
    const upstream = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
    res.end(await upstream.text());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const handle = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get sends() {
      return state.sends;
    },
    set onSend(f: ((n: number) => "pass" | "refuse" | "lose" | "swallow") | undefined) {
      state.onSend = f;
    },
    get onSend() {
      return state.onSend;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  return handle;
}

describe("relayer at real block times (anvil --block-time 1)", function () {
  this.timeout(60_000);
  let dev: DevChain;
  let client: ReturnType<typeof createPublicClient>;
  const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;

  before(async function () {
    dev = await startDevChain({ blockTime: 1 });
    client = createPublicClient({ transport: http(dev.rpcUrl, { retryCount: 0 }) });
  });
  after(async function () {
    await dev?.stop();
  });

  async function authorize(payer: DevAccount, value = 1000n): Promise<SettleRequest> {
    const authorization = { from: payer.address, to: dev.accounts.payTo.address, value, validAfter: 0n, validBefore: now() + 3600n, nonce: toHex(randomBytes(32)) };
    const signature = await privateKeyToAccount(payer.privateKey).signTypedData({
      domain: { name: "USDC", version: "2", chainId: CHAIN_ID, verifyingContract: dev.usdc },
      types: TRANSFER_WITH_AUTHORIZATION_TYPES,
      primaryType: "TransferWithAuthorization",
      message: authorization,
    });
    return { authorization, signature, asset: dev.usdc, chainId: CHAIN_ID, network: `eip155:${CHAIN_ID}`, v1Network: "base-sepolia", x402Version: 2, payload: {}, requirements: {} };
  }
  const authorizeMany = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => authorize(dev.accounts.payers[i % dev.accounts.payers.length]!)));

  /** A fresh relayer wallet holding `wei` (its own nonce sequence from 0). */
  async function wallet(wei = 10n ** 20n): Promise<{ key: Hex; address: Address }> {
    const key = generatePrivateKey();
    const address = privateKeyToAccount(key).address;
    await rpc("anvil_setBalance", [address, toHex(wei)]);
    return { key, address };
  }
  function settlerFor(keys: Hex | Hex[], extra: Partial<RelayerSettlerOptions> = {}): { settler: RelayerSettler; events: RelayerEvent[] } {
    const events: RelayerEvent[] = [];
    const keyOpts = Array.isArray(keys) ? { privateKeys: keys } : { privateKey: keys };
    const settler = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, ...keyOpts, onEvent: (e) => events.push(e), ...extra });
    return { settler, events };
  }
  const nonceOf = async (a: Address, tag: "latest" | "pending" = "latest") => Number(BigInt(await rpc<Hex>("eth_getTransactionCount", [a, tag])));
  const authorizationUsed = async (req: SettleRequest) =>
    BigInt(await rpc<Hex>("eth_call", [{ to: dev.usdc, data: encodeFunctionData({ abi: EIP3009_ABI, functionName: "authorizationState", args: [req.authorization.from, req.authorization.nonce] }) }, "latest"])) !== 0n;
  const sum = (reqs: SettleRequest[]) => reqs.reduce((s, r) => s + r.authorization.value, 0n);
  /** Nonces of the mined transactions, and the blocks they are in. */
  async function minedNonces(results: SettleResult[]): Promise<{ nonces: number[]; blocks: Set<bigint> }> {
    const txs = await Promise.all(results.map((r) => client.getTransaction({ hash: r.transaction })));
    return { nonces: txs.map((t) => t.nonce).sort((a, b) => a - b), blocks: new Set(txs.map((t) => t.blockNumber!)) };
  }
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);

  it("the dev chain mines by interval: a transaction waits for the next block", async function () {
    assert.equal(await rpc("anvil_getAutomine"), false);
    const blockNumber = async () => Number(BigInt(await rpc<Hex>("eth_blockNumber")));
    const a = await blockNumber();
    await new Promise((r) => setTimeout(r, 2200));
    assert.ok((await blockNumber()) >= a + 1, "no block mined in 2.2 s");
    await assert.rejects(startDevChain({ blockTime: 0 }), (e: unknown) => e instanceof ConfigError && e.option === "blockTime");
    await assert.rejects(startDevChain({ blockTime: Number.NaN }), ConfigError);
  });

  it("the devchain CLI takes --block-time and refuses a bad one", async function () {
    const cli = new URL("../lib/src/devchain/cli.ts", import.meta.url).pathname;
    const err = await promisify(execFile)(process.execPath, ["--conditions=server402-source", "--import", "tsx", cli, "--port", "0", "--block-time", "soon"]).then(
      () => assert.fail("should exit 2"),
      (e: { code?: number; stderr?: string }) => e,
    );
    assert.equal(err.code, 2);
    assert.match(err.stderr ?? "", /--block-time must be seconds/);
  });

  it("50 parallel settlements from one wallet land within a few blocks, with consecutive nonces", async function () {
    const { key, address } = await wallet();
    const { settler, events } = settlerFor(key);
    const reqs = await authorizeMany(50);
    const before = await dev.balanceOf(dev.accounts.payTo.address);
    const b0 = BigInt(await rpc<Hex>("eth_blockNumber"));
    const t0 = performance.now();
    const results = await Promise.all(reqs.map((r) => settler.settle(r)));
    const ms = performance.now() - t0;
    const { nonces, blocks } = await minedNonces(results);
    console.log(`      50 settlements from one wallet: ${ms.toFixed(0)} ms, ${blocks.size} block(s), ${Number(BigInt(await rpc<Hex>("eth_blockNumber")) - b0)} block(s) passed`);
    assert.deepEqual(nonces, range(50), "nonces 0..49, no gap, none twice");
    assert.ok(blocks.size <= 3, `mined in ${blocks.size} blocks`);
    assert.ok(ms < 5000, `${ms} ms: settlements waited for each other's receipts`);
    assert.equal(await nonceOf(address), 50);
    assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));
    assert.equal(events.filter((e) => e.type === "relayer_sent").length, 50);
    assert.ok(!events.some((e) => e.type === "relayer_replaced"), "nothing replaced");
  });

  it("a dropped transaction is replaced (same nonce, higher fee) and the payment settles once; the one behind it lands too", async function () {
    const { key, address } = await wallet();
    const proxy = await sendProxy(dev.rpcUrl);
    try {
      proxy.onSend = (n) => (n === 1 ? "swallow" : "pass"); // the node accepts the first transaction, then forgets it
      const { settler, events } = settlerFor(key, { rpcUrl: proxy.url, replaceAfterMs: 1500 } as Partial<RelayerSettlerOptions>);
      const [first, second] = await authorizeMany(2);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const p1 = settler.settle(first!);
      await new Promise((r) => setTimeout(r, 50));
      const p2 = settler.settle(second!); // nonce 1: stuck behind the gap until nonce 0 is sent again
      const [r1, r2] = await Promise.all([p1, p2]);
      const sent = events.filter((e) => e.type === "relayer_sent");
      const dropped = sent.find((e) => e.type === "relayer_sent" && e.nonce === 0)!.transaction;
      assert.equal(await rpc("eth_getTransactionByHash", [dropped]), null);
      const replaced = events.filter((e) => e.type === "relayer_replaced");
      assert.equal(replaced.length, 1, JSON.stringify(events));
      assert.equal(replaced[0]!.type === "relayer_replaced" && replaced[0]!.replaces, dropped);
      assert.equal(r1.transaction, replaced[0]!.transaction);
      const { nonces } = await minedNonces([r1, r2]);
      assert.deepEqual(nonces, [0, 1]);
      assert.equal(await nonceOf(address), 2);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum([first!, second!]), "each paid exactly once");
      // settling the first again is a replay: refused, nothing more moves
      await assert.rejects(settler.settle(first!), (e: unknown) => e instanceof SettlementError && e.reason === "invalid_exact_evm_nonce_already_used");
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum([first!, second!]));
    } finally {
      await proxy.close();
    }
  });

  it("a transaction anvil drops from its mempool (anvil_dropTransaction) is sent again and settles once", async function () {
    const { key, address } = await wallet();
    let dropped: Promise<Hex | null> | undefined;
    const { settler, events } = settlerFor(key, {
      replaceAfterMs: 1500,
      onEvent: (e) => {
        events.push(e);
        if (e.type === "relayer_sent" && e.nonce === 0) dropped = rpc<Hex | null>("anvil_dropTransaction", [e.transaction]);
      },
    });
    const req = await authorize(dev.accounts.payers[2]!);
    const before = await dev.balanceOf(dev.accounts.payTo.address);
    const result = await settler.settle(req);
    if ((await dropped) === null) this.skip(); // a block took it before the drop (rare): nothing to replace
    assert.equal(events.filter((e) => e.type === "relayer_replaced").length, 1, JSON.stringify(events));
    assert.equal(await nonceOf(address), 1);
    assert.equal((await client.getTransaction({ hash: result.transaction })).nonce, 0);
    assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + req.authorization.value);
  });

  it("a send the node refuses leaves no nonce gap: the next settlement takes its nonce", async function () {
    const { key, address } = await wallet();
    const proxy = await sendProxy(dev.rpcUrl);
    try {
      proxy.onSend = (n) => (n === 3 ? "refuse" : "pass");
      const settler = relayerSettler({ rpcUrl: proxy.url, chainId: CHAIN_ID, privateKey: key, replaceAfterMs: 30_000 });
      const reqs = await authorizeMany(10);
      const outcomes = await Promise.allSettled(reqs.map((r) => settler.settle(r)));
      const ok = outcomes.filter((o): o is PromiseFulfilledResult<SettleResult> => o.status === "fulfilled").map((o) => o.value);
      const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected").map((o) => o.reason as SettlementError);
      assert.equal(failed.length, 1);
      assert.equal(failed[0]!.reason, "unexpected_settle_error");
      assert.equal(failed[0]!.pending, false);
      assert.equal(failed[0]!.status, 502);
      const { nonces } = await minedNonces(ok);
      assert.deepEqual(nonces, range(9), "the refused nonce was given to the next send");
      assert.equal(await nonceOf(address), 9);
      assert.equal(await nonceOf(address, "pending"), 9, "nothing stuck in the mempool");
      const refused = reqs[outcomes.findIndex((o) => o.status === "rejected")]!;
      assert.equal(await authorizationUsed(refused), false, "the refused payment moved nothing");
    } finally {
      await proxy.close();
    }
  });

  it("a send lost on the way (unknown outcome) is pending; the wallet re-reads its nonce, so later settlements do not wait behind a gap", async function () {
    const { key, address } = await wallet();
    const proxy = await sendProxy(dev.rpcUrl);
    try {
      proxy.onSend = (n) => (n === 2 ? "lose" : "pass");
      const { settler, events } = settlerFor(key, { rpcUrl: proxy.url, replaceAfterMs: 30_000 } as Partial<RelayerSettlerOptions>);
      const reqs = await authorizeMany(6);
      const outcomes = await Promise.allSettled(reqs.map((r) => settler.settle(r)));
      const lost = outcomes.findIndex((o) => o.status === "rejected");
      const err = (outcomes[lost] as PromiseRejectedResult).reason as SettlementError;
      assert.equal(err.pending, true);
      assert.equal(err.status, 504);
      const ok = outcomes.filter((o): o is PromiseFulfilledResult<SettleResult> => o.status === "fulfilled").map((o) => o.value);
      assert.equal(ok.length, 5);
      assert.deepEqual((await minedNonces(ok)).nonces, range(5));
      assert.ok(events.some((e) => e.type === "relayer_nonce_resync"), "a resync event");
      // the retry finds the lost transaction unknown to the node and settles afresh, with the next nonce
      const retried = await settler.settle(reqs[lost]!);
      assert.equal((await client.getTransaction({ hash: retried.transaction })).nonce, 5);
      assert.equal(await nonceOf(address), 6);
    } finally {
      await proxy.close();
    }
  });

  describe("gas funds", function () {
    it("a wallet without gas funds: 503 relayer_low_funds and an event before anything is sent; no money moved", async function () {
      const { key, address } = await wallet(0n);
      const { settler, events } = settlerFor(key);
      const req = await authorize(dev.accounts.payers[0]!);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const err = await settler.settle(req).then(
        () => assert.fail("should be refused"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof RelayerFundsError, String(err));
      assert.ok(err instanceof SettlementError, "a SettlementError");
      assert.equal(err.code, "relayer_low_funds");
      assert.equal(err.reason, "relayer_low_funds");
      assert.equal(err.status, 503);
      assert.equal(err.pending, false);
      assert.equal(err.wallet, address);
      assert.equal(err.balance, "0");
      const low = events.find((e) => e.type === "relayer_low_funds");
      assert.ok(low && low.type === "relayer_low_funds" && low.wallet === address && BigInt(low.needed) > 0n, JSON.stringify(events));
      assert.equal(await nonceOf(address, "pending"), 0, "nothing sent");
      assert.equal(await authorizationUsed(req), false);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before);
    });

    it("the balance must cover the fees of the transactions in flight too: of 3 at once with funds for 1.5, one goes out", async function () {
      const block = await rpc<{ baseFeePerGas: Hex }>("eth_getBlockByNumber", ["latest", false]);
      const tip = BigInt(await rpc<Hex>("eth_maxPriorityFeePerGas"));
      const oneTx = EOA_TRANSFER_GAS * (2n * BigInt(block.baseFeePerGas) + tip);
      const { key, address } = await wallet((oneTx * 3n) / 2n);
      const { settler, events } = settlerFor(key);
      const reqs = (await authorizeMany(3)).map((r) => ({ ...r, prechecked: true, precheckedAt: Date.now() }));
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const outcomes = await Promise.allSettled(reqs.map((r) => settler.settle(r)));
      const ok = outcomes.filter((o) => o.status === "fulfilled");
      const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected").map((o) => o.reason as unknown);
      assert.equal(ok.length, 1, JSON.stringify(outcomes.map((o) => o.status)));
      assert.equal(refused.length, 2);
      for (const e of refused) assert.ok(e instanceof RelayerFundsError && e.status === 503, String(e));
      assert.equal(events.filter((e) => e.type === "relayer_low_funds").length, 2);
      assert.equal(await nonceOf(address), 1);
      const paid = reqs[outcomes.findIndex((o) => o.status === "fulfilled")]!;
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + paid.authorization.value);
    });

    it("over HTTP: the paid request gets 503 with code relayer_low_funds and Retry-After; the payer keeps the money", async function () {
      const { key } = await wallet(0n);
      const relayerEvents: RelayerEvent[] = [];
      const paymentEvents: Array<{ type: string; reason?: string }> = [];
      const pw = paywall({
        payTo: dev.accounts.payTo.address,
        settler: relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: key, onEvent: (e) => relayerEvents.push(e) }),
        rpcUrl: dev.rpcUrl,
        store: new MemoryStore(),
        routes: { "GET /paid": { price: "$0.001" } },
        onEvent: (e) => paymentEvents.push(e as { type: string; reason?: string }),
      });
      const app = express();
      app.use(pw);
      app.get("/paid", (_req, res) => void res.json({ ok: true }));
      const payer = dev.accounts.payers[3]!;
      const before = await dev.balanceOf(payer.address);
      const header = await v2Header({ privateKey: payer.privateKey, asset: dev.usdc, payTo: dev.accounts.payTo.address, value: 1000n });
      const res = await request(app).get("/paid").set("payment-signature", header);
      assert.equal(res.status, 503, res.text);
      assert.equal(res.body.error, "relayer_low_funds");
      assert.ok(res.headers["retry-after"], "Retry-After");
      assert.ok(relayerEvents.some((e) => e.type === "relayer_low_funds"), "relayer_low_funds event");
      assert.ok(paymentEvents.some((e) => e.type === "failed" && e.reason === "relayer_low_funds"), JSON.stringify(paymentEvents));
      await new Promise((r) => setTimeout(r, 1200)); // a block later: still nothing moved
      assert.equal(await dev.balanceOf(payer.address), before);
    });
  });

  describe("a pool of relayer wallets", function () {
    it("spreads parallel settlements over its wallets, one consecutive nonce sequence each", async function () {
      const wallets = await Promise.all([wallet(), wallet(), wallet()]);
      const { settler } = settlerFor(wallets.map((w) => w.key));
      assert.deepEqual(settler.addresses, wallets.map((w) => w.address));
      const reqs = await authorizeMany(30);
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const results = await Promise.all(reqs.map((r) => settler.settle(r)));
      const txs = await Promise.all(results.map((r) => client.getTransaction({ hash: r.transaction })));
      const counts = wallets.map((w) => txs.filter((t) => t.from.toLowerCase() === w.address.toLowerCase()));
      console.log(`      30 settlements over 3 wallets: ${counts.map((c) => c.length).join(" / ")}`);
      for (const [i, c] of counts.entries()) {
        assert.ok(c.length >= 5, `wallet ${i} sent ${c.length}`);
        assert.deepEqual(c.map((t) => t.nonce).sort((a, b) => a - b), range(c.length));
        assert.equal(await nonceOf(wallets[i]!.address), c.length);
      }
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + sum(reqs));
    });

    it("a wallet of the pool without gas funds is skipped; only when none can pay is it a 503", async function () {
      const [empty, funded] = await Promise.all([wallet(0n), wallet()]);
      const { settler, events } = settlerFor([empty.key, funded.key]);
      const results = await Promise.all((await authorizeMany(6)).map((r) => settler.settle(r)));
      const txs = await Promise.all(results.map((r) => client.getTransaction({ hash: r.transaction })));
      assert.ok(txs.every((t) => t.from.toLowerCase() === funded.address.toLowerCase()), "all from the funded wallet");
      assert.ok(!events.some((e) => e.type === "relayer_low_funds"), "no low-funds event");
      await rpc("anvil_setBalance", [funded.address, "0x0"]);
      await new Promise((r) => setTimeout(r, 1100)); // the cached balance expires
      await assert.rejects(settler.settle(await authorize(dev.accounts.payers[1]!)), (e: unknown) => e instanceof RelayerFundsError && e.status === 503);
      assert.equal(events.filter((e) => e.type === "relayer_low_funds").length, 1);
    });

    it("refuses a pool with a repeated key, or both privateKey and privateKeys", function () {
      const k = generatePrivateKey();
      assert.throws(() => relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKeys: [k, k] }), (e: unknown) => e instanceof ConfigError && e.option === "privateKeys[1]");
      assert.throws(() => relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: k, privateKeys: [k] }), ConfigError);
      assert.throws(() => relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKeys: [] }), ConfigError);
    });
  });
});
