/**
 * The MCP adapter without Express: `paidRoutes()` gives the engine and route
 * table, `registerPaidTool` prices a tool from them (stdio-like transport).
 */
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";
import { ConfigError, MemoryStore } from "server402";
import { paidRoutes, registerPaidTool } from "server402/mcp";
import { generatePaymentToken, hashToken } from "../lib/src/state/tokens.js";
import { samplePayment } from "./store-conformance.js";

type ToolResult = { isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: Record<string, any>; _meta?: Record<string, any> };

describe("MCP adapter from the engine and a route table (no Express paywall)", () => {
  it("paidRoutes() prices a tool: unpaid → payment required with the route's price; a prepaid token pays one call", async () => {
    const store = new MemoryStore();
    const routes = paidRoutes({
      payTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
      settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) },
      checker: false,
      store,
      routes: { "/tools/echo": { price: "$0.02", serviceId: "echo", description: "echo" } },
    });
    const token = generatePaymentToken();
    const p = samplePayment({ tokenHash: hashToken(token), serviceId: "echo", maxCalls: 1 });
    await store.createPayment(p);
    await store.markPaid(p.paymentId, { paidAt: Date.now() });
    let runs = 0;
    const server = new McpServer({ name: "t", version: "1" });
    registerPaidTool(server, routes, {
      name: "echo",
      serviceId: "echo",
      inputSchema: { text: z.string() },
      handler: async ({ text }) => {
        runs++;
        return { content: [{ type: "text", text }] };
      },
    });
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await server.connect(serverSide);
    const client = new Client({ name: "t", version: "1" });
    await client.connect(clientSide);
    try {
      const unpaid = (await client.callTool({ name: "echo", arguments: { text: "hi" } })) as ToolResult;
      assert.equal(unpaid.isError, true);
      assert.equal(unpaid.structuredContent!.accepts[0].amount, "20000");
      assert.equal(unpaid.structuredContent!.resource.url, "mcp://tool/echo");
      assert.equal(runs, 0);
      const paid = (await client.callTool({ name: "echo", arguments: { text: "hi", paymentToken: token } })) as ToolResult;
      assert.equal(paid.isError, undefined, JSON.stringify(paid));
      assert.equal(paid.content[0]!.text, "hi");
      assert.equal(runs, 1);
      assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
      const again = (await client.callTool({ name: "echo", arguments: { text: "hi", paymentToken: token } })) as ToolResult;
      assert.equal(again.structuredContent!.reason, "exhausted");
    } finally {
      await client.close();
      await store.close();
    }
    assert.throws(() => paidRoutes({ payTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) }, routes: {} }), ConfigError);
  });
});
