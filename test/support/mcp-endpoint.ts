/** A paid MCP endpoint over Streamable HTTP, as the example server runs one, for tests. */
import express, { type Express } from "express";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { registerPaidTool } from "server402/mcp";

/**
 * Serve MCP at POST `path` of `app`, stateless: each request gets a new McpServer with the tools
 * `register` adds, answering JSON. A client gone closes its server, which aborts its tool calls.
 */
export function mountMcp(app: Express, register: (server: McpServer) => void, path = "/mcp"): void {
  app.post(path, express.json(), async (req, res) => {
    const server = new McpServer({ name: "server402-test", version: "1" });
    register(server);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.once("close", () => {
      void transport.close().catch(() => {});
      void server.close().catch(() => {});
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  });
}

/**
 * The paid tool `secret_answer` (argument `question`) priced by the route `serviceId` of `pw`. Its
 * answer holds "forty-two-xyzzy", so a withheld output that leaks shows; `onRun` is called per run.
 */
export function registerSecretAnswer(server: McpServer, pw: Parameters<typeof registerPaidTool>[1], serviceId: string, onRun: () => void): void {
  registerPaidTool(server, pw, {
    name: "secret_answer",
    serviceId,
    inputSchema: { question: z.string() },
    handler: async ({ question }) => {
      onRun();
      return { content: [{ type: "text", text: `the answer to ${question} is forty-two-xyzzy` }] };
    },
  });
}
