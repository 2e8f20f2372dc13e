/**
 * Issue 14 C16, disclosure: the paywall's own error answers give the client a
 * code and a plain message; the detail (store hosts, RPC endpoints, relayer
 * addresses, upstream text) goes to the server's logs through `onEvent`.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import express, { type Express } from "express";
import type { Address, Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { paywall, relayerSettler, StoreError, type PaymentEvent } from "server402";
import { MemoryStore } from "../lib/src/state/memory.js";
import { generatePaymentToken } from "../lib/src/state/tokens.js";
import { v1Header } from "./support/sign.js";

const PAY_TO: Address = "0x2222222222222222222222222222222222222222";
const USDC: Address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const x402Header = (privateKey: Hex = generatePrivateKey()) => v1Header({ privateKey, asset: USDC, payTo: PAY_TO, value: 10_000n });

async function listen(app: Express): Promise<{ url: string; close(): Promise<void> }> {
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

describe("issue 14 C16: error answers keep their detail for the logs", function () {
  it("C16 disclosure: a store outage answers 503 with a code and a plain message; the store's host is only in the error_answer event", async function () {
    const secret = "redis-internal.corp.example:6379";
    const store = new MemoryStore();
    const fail = () => Promise.reject(new StoreError(`server402: RedisStore claimNonce failed: connect ECONNREFUSED ${secret}`));
    for (const m of ["claimNonce", "claimPayerNonce", "getNonce", "reserveCall"] as const) (store as unknown as Record<string, unknown>)[m] = fail;
    const events: PaymentEvent[] = [];
    const a = express();
    a.use(paywall({ payTo: PAY_TO, settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) }, checker: false, store, onEvent: (e) => events.push(e), routes: { "GET /x": { price: "$0.01", serviceId: "svc" } } }));
    a.get("/x", (_req, res) => void res.json({ paid: true }));
    const srv = await listen(a);
    try {
      const headerSets: Record<string, string>[] = [{ "x-payment": await x402Header() }, { "x-payment-token": generatePaymentToken() }];
      for (const headers of headerSets) {
        const res = await fetch(`${srv.url}/x`, { headers });
        const text = await res.text();
        assert.equal(res.status, 503, text);
        assert.equal(JSON.parse(text).error, "store_unavailable");
        assert.ok(!text.includes("redis-internal"), `the client saw the store's host: ${text}`);
      }
      const logged = events.filter((e): e is Extract<PaymentEvent, { type: "error_answer" }> => e.type === "error_answer");
      assert.equal(logged.length, 2);
      for (const e of logged) {
        assert.equal(e.status, 503);
        assert.equal(e.code, "store_unavailable");
        assert.match(e.resource, /\/x$/);
      }
      assert.ok(logged.some((e) => e.detail.includes(secret)), JSON.stringify(logged));
    } finally {
      await srv.close();
      await store.close();
    }
  });

  it("C16 disclosure: a relayer whose RPC is down answers 502 without the RPC address or the relayer's; both are in the event", async function () {
    const dead = await listen(express().use((req) => req.socket.destroy()));
    const relayerKey = generatePrivateKey();
    const relayer = privateKeyToAccount(relayerKey).address;
    const events: PaymentEvent[] = [];
    const a = express();
    a.use(
      paywall({
        payTo: PAY_TO,
        checker: false,
        settler: relayerSettler({ rpcUrl: dead.url, chainId: 84532, privateKey: relayerKey, requestTimeoutMs: 1000 }),
        onEvent: (e) => events.push(e),
        routes: { "GET /x": { price: "$0.01" } },
      }),
    );
    a.get("/x", (_req, res) => void res.json({ paid: true }));
    const srv = await listen(a);
    try {
      const res = await fetch(`${srv.url}/x`, { headers: { "x-payment": await x402Header() } });
      const text = await res.text();
      assert.equal(res.status, 502, text);
      assert.equal(JSON.parse(text).error, "unexpected_settle_error");
      const port = new URL(dead.url).port;
      assert.ok(!text.includes(port) && !text.toLowerCase().includes(relayer.toLowerCase()), `the client saw the RPC or relayer: ${text}`);
      const header = res.headers.get("x-payment-response") ?? "";
      assert.ok(!Buffer.from(header, "base64").toString().includes(port), "the settlement response header names the RPC");
      const logged = events.find((e): e is Extract<PaymentEvent, { type: "error_answer" }> => e.type === "error_answer");
      assert.ok(logged, JSON.stringify(events));
      assert.equal(logged.status, 502);
      assert.ok(logged.detail.includes(port), logged.detail);
    } finally {
      await srv.close();
      await dead.close();
    }
  });
});
