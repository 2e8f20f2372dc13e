/**
 * How many JSON-RPC calls the server makes per paid request on the batched
 * path (issue 20: the server's CPU per paid request limits settled/s, and
 * each RPC round trip is a large share of it). A counting proxy in front of
 * a real anvil with 1 s blocks; N paid requests from N fresh payers at once
 * through a paywall with `relayerSettler({ batch })`. Counts, not timings.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { toHex } from "viem";
import { randomBytes } from "node:crypto";
import { MemoryStore, paywall, relayerSettler } from "server402";
import { createChainReader } from "../lib/src/chain/reader.js";
import { startDevChain, type DevChain } from "server402/devchain";
import { v1Header } from "./support/sign.js";

/** A JSON-RPC proxy that counts HTTP requests and calls per method (a batch counts each call it holds). */
async function countingProxy(target: string, opts: { maxBatch?: number } = {}) {
  const calls = new Map<string, number>();
  let requests = 0;
  const server: Server = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    requests++;
    const parsed = JSON.parse(body) as { method: string } | { method: string }[];
    res.setHeader("content-type", "application/json");
    // an endpoint limiting batch sizes (as hosted RPCs do) refuses a larger batch with a JSON-RPC error
    if (Array.isArray(parsed) && opts.maxBatch !== undefined && parsed.length > opts.maxBatch) {
      return void res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32600, message: `batch of ${parsed.length} is above the limit of ${opts.maxBatch}` } }));
    }
    for (const c of Array.isArray(parsed) ? parsed : [parsed]) calls.set(c.method, (calls.get(c.method) ?? 0) + 1);
    const upstream = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
    res.end(await upstream.text());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    get requests() {
      return requests;
    },
    reset() {
      calls.clear();
      requests = 0;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("RPC calls per paid request, batched settlement (anvil --block-time 1)", function () {
  this.timeout(90_000);
  let dev: DevChain;
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let server: Server;
  let url: string;

  before(async function () {
    dev = await startDevChain({ blockTime: 1 });
    proxy = await countingProxy(dev.rpcUrl);
    const app = express();
    app.use(
      paywall({
        payTo: dev.accounts.payTo.address,
        network: "base-sepolia",
        rpcUrl: proxy.url,
        settler: relayerSettler({ rpcUrl: proxy.url, chainId: dev.chainId, privateKey: dev.accounts.relayer.privateKey, batch: { contract: dev.batchSettlement } }),
        store: new MemoryStore(),
        routes: { "GET /weather": { price: "$0.01", description: "weather" } },
      }),
    );
    app.get("/weather", (_req, res) => res.json({ ok: true }));
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async function () {
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    await proxy?.close();
    await dev?.stop();
  });

  /** `n` paid requests at once, each from its own fresh payer; their statuses. */
  async function payMany(n: number, rounds = 1): Promise<number[]> {
    const payers = Array.from({ length: n }, () => generatePrivateKey());
    await Promise.all(payers.map((key) => dev.mint(privateKeyToAccount(key).address, 1_000_000n)));
    const sign = (privateKey: `0x${string}`) => v1Header({ privateKey, asset: dev.usdc, payTo: dev.accounts.payTo.address, value: 10_000n });
    const queues = await Promise.all(payers.map((key) => Promise.all(Array.from({ length: rounds }, () => sign(key)))));
    proxy.reset();
    const statuses = await Promise.all(
      queues.map(async (queue) => {
        const mine: number[] = [];
        for (const h of queue) mine.push((await fetch(`${url}/weather`, { headers: { "x-payment": h } })).status);
        return mine;
      }),
    );
    return statuses.flat();
  }

  it("40 paid requests at once from new payers: two pre-check reads each, no simulation; prints the calls per method", async function () {
    await payMany(5); // warm-up: chain id, code checks, fees
    const statuses = await payMany(40);
    assert.deepEqual(statuses, Array(40).fill(200));
    assert.equal(proxy.calls.get("eth_call"), 80);
    assert.equal(proxy.calls.get("eth_estimateGas"), undefined);
    console.log(`      ${proxy.requests} HTTP requests:`, Object.fromEntries(proxy.calls));
  });

  it("pre-checks started in one turn of the event loop share one JSON-RPC batch request (25 payments each), each with its own facts", async function () {
    const payers = Array.from({ length: 30 }, () => privateKeyToAccount(generatePrivateKey()).address);
    await Promise.all(payers.map((a, i) => dev.mint(a, BigInt(i + 1))));
    const reader = createChainReader({ rpcUrl: proxy.url, chainId: dev.chainId });
    await reader.paymentState!(dev.usdc, payers[0]!, toHex(randomBytes(32))); // the chain id check, once
    proxy.reset();
    const states = await Promise.all(payers.map((p) => reader.paymentState!(dev.usdc, p, toHex(randomBytes(32)))));
    assert.deepEqual(
      states,
      payers.map((_, i) => ({ used: false, balance: BigInt(i + 1) })),
    );
    // before: 30 HTTP requests of 2 calls each
    assert.equal(proxy.requests, 2);
    assert.equal(proxy.calls.get("eth_call"), 60);
  });

  it("an endpoint refusing a batch of several payments gets one batch of two reads per payment", async function () {
    const small = await countingProxy(dev.rpcUrl, { maxBatch: 2 });
    try {
      const payers = Array.from({ length: 5 }, () => privateKeyToAccount(generatePrivateKey()).address);
      await Promise.all(payers.map((a, i) => dev.mint(a, BigInt(100 + i))));
      const reader = createChainReader({ rpcUrl: small.url, chainId: dev.chainId });
      const states = await Promise.all(payers.map((p) => reader.paymentState!(dev.usdc, p, toHex(randomBytes(32)))));
      assert.deepEqual(
        states,
        payers.map((_, i) => ({ used: false, balance: BigInt(100 + i) })),
      );
      // 1 chain id + 1 refused batch of 10 calls + 5 batches of 2; later checks still batch per payment
      assert.equal(small.requests, 7);
      assert.equal(small.calls.get("eth_call"), 10);
    } finally {
      await small.close();
    }
  });
});
