/**
 * Issue 14 C16 over MCP: a tool call refused because the store or the chain
 * failed gives the client a code and a plain message, never the error's own
 * text (a store host, an RPC address); that detail goes to the `error_answer`
 * event, as on the Express path (test/error-detail.test.ts).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { createPublicClient, erc20Abi, http, type Address } from "viem";
import { generatePrivateKey } from "viem/accounts";
import { z } from "zod";
import { chainChecker, MemoryStore, StoreError, type PaymentEvent, type Store } from "server402";
import { paidRoutes, registerPaidTool } from "server402/mcp";
import { generatePaymentToken } from "../lib/src/state/tokens.js";
import { signAuthorization } from "./support/sign.js";

type ToolResult = { isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: Record<string, any>; _meta?: Record<string, any> };
type ErrorAnswer = Extract<PaymentEvent, { type: "error_answer" }>;

const PAY_TO: Address = "0x2222222222222222222222222222222222222222";
const none = { kind: "none" as const, settle: () => Promise.reject(new Error("unused")) };

/** An MCP client connected to one paid tool `echo`; `runs` counts handler runs. */
async function paidEcho(options: Parameters<typeof paidRoutes>[0]) {
  const routes = paidRoutes(options);
  const state = { runs: 0 };
  const server = new McpServer({ name: "t", version: "1" });
  registerPaidTool(server, routes, {
    name: "echo",
    serviceId: "echo",
    inputSchema: { text: z.string() },
    handler: async ({ text }) => {
      state.runs++;
      return { content: [{ type: "text", text }] };
    },
  });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "t", version: "1" });
  await client.connect(clientSide);
  const call = async (args: Record<string, unknown>, meta?: Record<string, unknown>) =>
    (await client.callTool({ name: "echo", arguments: { text: "hi", ...args }, ...(meta ? { _meta: meta } : {}) })) as ToolResult;
  /** A v2 payment for the tool's own offer, signed by a fresh key. */
  const x402 = async () => {
    const accepted = (await call({})).structuredContent!.accepts[0];
    const payload = await signAuthorization({ privateKey: generatePrivateKey(), asset: accepted.asset, payTo: accepted.payTo, value: BigInt(accepted.amount) });
    return { "x402/payment": { x402Version: 2, accepted, payload } };
  };
  return { call, x402, state, close: () => client.close() };
}

describe("issue 14 C16 over MCP: refusals keep a store's or chain's detail for the logs", function () {
  it("C16 MCP store outage: a tool call paid by token or x402 is refused with store_unavailable and a plain message; the store's host is only in the error_answer event", async function () {
    const secret = "redis-internal.corp.example:6379";
    const store: Store = new MemoryStore();
    const fail = () => Promise.reject(new StoreError(`server402: RedisStore failed: connect ECONNREFUSED ${secret}`));
    for (const m of ["claimNonce", "claimPayerNonce", "getNonce", "reserveCall"] as const) (store as unknown as Record<string, unknown>)[m] = fail;
    const events: PaymentEvent[] = [];
    const t = await paidEcho({ payTo: PAY_TO, settler: none, checker: false, store, onEvent: (e) => events.push(e), routes: { "/tools/echo": { price: "$0.01", serviceId: "echo" } } });
    try {
      for (const [args, meta] of [[{ paymentToken: generatePaymentToken() }, undefined], [{}, await t.x402()]] as const) {
        const r = await t.call(args, meta);
        const text = JSON.stringify(r);
        assert.equal(r.isError, true, text);
        assert.equal(r.structuredContent!.error, "store_unavailable", text);
        assert.ok(!text.includes("redis-internal"), `the MCP client saw the store's host: ${text}`);
      }
      assert.equal(t.state.runs, 0);
      const logged = events.filter((e): e is ErrorAnswer => e.type === "error_answer");
      assert.equal(logged.length, 2, JSON.stringify(events));
      for (const e of logged) {
        assert.equal(e.status, 503);
        assert.equal(e.code, "store_unavailable");
        assert.ok(e.detail.includes(secret), e.detail);
      }
    } finally {
      await t.close();
      await store.close();
    }
  });

  it("C16 MCP dead RPC: a pre-check whose RPC is down refuses the x402 call without the RPC address; the address is in the error_answer event", async function () {
    // an RPC that accepts connections and drops them
    const dead: Server = createServer((req) => req.socket.destroy()).listen(0, "127.0.0.1");
    await once(dead, "listening");
    const rpcUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`;
    const viem = createPublicClient({ transport: http(rpcUrl, { retryCount: 0, timeout: 2000 }) });
    // a reader of the documented ChainReader shape, reading with viem from that RPC
    const reader = {
      authorizationUsed: async () => false,
      balanceOf: (asset: Address, owner: Address) => viem.readContract({ address: asset, abi: erc20Abi, functionName: "balanceOf", args: [owner] }),
    };
    const events: PaymentEvent[] = [];
    const t = await paidEcho({
      payTo: PAY_TO,
      settler: none,
      checker: chainChecker(reader as never),
      onEvent: (e) => events.push(e),
      routes: { "/tools/echo": { price: "$0.01", serviceId: "echo" } },
    });
    try {
      const r = await t.call({}, await t.x402());
      const text = JSON.stringify(r);
      assert.equal(r.isError, true, text);
      assert.equal(t.state.runs, 0);
      assert.ok(!text.includes(rpcUrl.slice(7)), `the MCP client saw the RPC address: ${text}`);
      const logged = events.find((e): e is ErrorAnswer => e.type === "error_answer");
      assert.ok(logged, JSON.stringify(events));
      assert.equal(logged.status, 502);
      assert.ok(logged.detail.includes(rpcUrl.slice(7)), logged.detail);
    } finally {
      await t.close();
      dead.closeAllConnections();
      await new Promise((r) => dead.close(r));
    }
  });
});
