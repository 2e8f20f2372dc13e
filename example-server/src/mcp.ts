/**
 * `/mcp`: every service as an MCP tool over the official SDK's Streamable
 * HTTP transport, priced by server402's `registerPaidTool` from the same
 * paywall routes as HTTP.
 *
 * Stateless: each POST gets its own McpServer and transport, answered as
 * plain JSON. Nothing about a call lives in a session (x402 payloads and
 * prepaid tokens travel with each call), so any instance behind a load
 * balancer can answer any request, there is no session memory to bound or
 * expire, and GET/DELETE (session streams) are refused with 405.
 */
import express, { type ErrorRequestHandler, type Request, type Router } from "express";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import type { PaywallMiddleware } from "server402";
import { registerPaidTool } from "server402/mcp";
import { clientMessage, parseFaceInput, runComparison, type CompareDeps, type FaceInput } from "./face/compare.js";
import { FaceError } from "./engine/types.js";
import { formatUsdCents, PATHS, pricingOf, routeOf, type ServiceSpec } from "./discovery/catalog.js";

/** What the MCP endpoint needs. */
export interface McpDeps {
  services: readonly ServiceSpec[];
  paywall: PaywallMiddleware;
  /** Host names /mcp answers besides PUBLIC_URL's and the loopback names (the server's ALLOWED_HOSTS). */
  allowedHosts?: readonly string[];
  compare: CompareDeps;
  /** Largest JSON-RPC body, bytes (tool arguments may carry base64 images). */
  bodyLimitBytes: number;
  /** Unexpected errors (for logs). */
  onError?: (err: unknown) => void;
  /**
   * Longest an MCP POST may take before it is answered with a JSON-RPC
   * timeout error (its tool calls are aborted first, so nothing is charged).
   * Default: the comparison deadline plus 35 s for settlement.
   */
  timeoutMs?: number;
}

type JsonProp = { type?: string; description?: string; maxLength?: number; minimum?: number; maximum?: number };

/** Zod shape of a flat JSON-Schema object (strings, numbers, integers, booleans), every key optional: cross-key rules are the service's own validation. */
export function zodShapeOf(schema: { properties?: Record<string, unknown> }): z.ZodRawShape {
  const shape: Record<string, z.ZodType> = {};
  for (const [key, raw] of Object.entries(schema.properties ?? {})) {
    const p = raw as JsonProp;
    let t: z.ZodType;
    if (p.type === "string") t = p.maxLength !== undefined ? z.string().max(p.maxLength) : z.string();
    else if (p.type === "number" || p.type === "integer") {
      let n = p.type === "integer" ? z.number().int() : z.number();
      if (p.minimum !== undefined) n = n.min(p.minimum);
      if (p.maximum !== undefined) n = n.max(p.maximum);
      t = n;
    } else if (p.type === "boolean") t = z.boolean();
    else throw new Error(`input key ${key}: type ${String(p.type)} is not supported for MCP tools`);
    shape[key] = (p.description ? t.describe(p.description) : t).optional();
  }
  return shape;
}

function faceToolError(err: FaceError): CallToolResult {
  const body = { code: err.code, message: clientMessage(err), ...(err.upstreamRequestId ? { upstreamRequestId: err.upstreamRequestId } : {}) };
  return { isError: true, content: [{ type: "text", text: `${err.code}: ${body.message}` }], structuredContent: body };
}

function buildServer(deps: McpDeps, origin: string): McpServer {
  const server = new McpServer({ name: "server402-example", version: "0.1.0" });
  // The SDK advertises tools.listChanged: true on the first tool; a stateless server can never send that notification.
  const advertise = () => server.server.registerCapabilities({ tools: { listChanged: false } });
  for (const s of deps.services) {
    registerPaidTool(server, deps.paywall, {
      name: s.mcpToolName,
      serviceId: s.id,
      title: s.name,
      description: `${s.description} Price: USD ${formatUsdCents(pricingOf(routeOf(s, deps.paywall)).amountCents)} per call, the same as ${s.method} ${s.endpoint}.`,
      inputSchema: zodShapeOf(s.inputSchema as { properties?: Record<string, unknown> }),
      annotations: { readOnlyHint: true, openWorldHint: true },
      resource: `${origin}${PATHS.mcp}#${s.mcpToolName}`,
      validate: (args) => parseFaceInput(args, deps.compare.imageMaxBytes, deps.compare.imageMaxPixels),
      handler: async (_args, ctx) => {
        try {
          const out = await runComparison(ctx.validated as FaceInput, deps.compare, ctx.signal);
          return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
        } catch (err) {
          if (err instanceof FaceError) return faceToolError(err);
          // A call the client cancelled is not an unexpected error (and its reason is the client's text).
          if (!ctx.signal.aborted) deps.onError?.(err);
          return faceToolError(new FaceError("upstream_error", "the face engine failed unexpectedly.", { cause: err }));
        }
      },
    });
  }
  advertise();
  return server;
}

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]", "::1"];

/**
 * DNS-rebinding protection (the Streamable HTTP transport says servers MUST
 * validate Origin): the Host, and the Origin when one is sent, must name
 * PUBLIC_URL's host, an allowed host or a loopback name; else 403.
 */
function hostGuard(deps: McpDeps): express.RequestHandler {
  const names = new Set([...LOOPBACK_NAMES, ...(deps.allowedHosts ?? []).map((h) => h.toLowerCase())]);
  const publicUrl = deps.paywall.options.publicUrl;
  if (publicUrl) names.add(new URL(publicUrl).hostname.toLowerCase());
  const hostOf = (value: string, withScheme: boolean): string | undefined => {
    try {
      return new URL(withScheme ? value : `http://${value}`).hostname.toLowerCase();
    } catch {
      return undefined;
    }
  };
  return (req, res, next) => {
    const host = hostOf(req.headers.host ?? "", false);
    const origin = req.headers.origin;
    const originOk = origin === undefined || names.has(hostOf(origin, true) ?? "");
    if (host !== undefined && names.has(host) && originOk) return next();
    res.status(403).set("Cache-Control", "no-store").json(rpcError(-32000, "Forbidden: this MCP endpoint does not answer for that Host or Origin."));
  };
}

function rpcError(code: number, message: string) {
  return { jsonrpc: "2.0", error: { code, message }, id: null };
}

type RpcId = string | number;
const isRecord = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/**
 * Drop from a batch the requests it also cancels, with their
 * `notifications/cancelled`. The SDK sends no response for a cancelled
 * request (as MCP says), and in JSON-response mode it waits for every
 * request of the POST before answering, so such a batch was never answered.
 * Each POST has its own server here: a cancel can only name a request of
 * its own batch. A request cancelled before it ran is simply not run.
 */
export function withoutSelfCancelled(body: unknown): unknown {
  if (!Array.isArray(body)) return body;
  const requestIds = new Set<RpcId>();
  for (const m of body) if (isRecord(m) && typeof m.method === "string" && (typeof m.id === "string" || typeof m.id === "number")) requestIds.add(m.id);
  const cancelled = new Set<RpcId>();
  for (const m of body) {
    const id = isRecord(m) && m.method === "notifications/cancelled" && isRecord(m.params) ? m.params.requestId : undefined;
    if ((typeof id === "string" || typeof id === "number") && requestIds.has(id)) cancelled.add(id);
  }
  if (cancelled.size === 0) return body;
  return body.filter((m) => {
    if (!isRecord(m)) return true;
    if (m.method === "notifications/cancelled" && isRecord(m.params)) return !cancelled.has(m.params.requestId as RpcId);
    return !(typeof m.method === "string" && cancelled.has(m.id as RpcId));
  });
}

/** The `/mcp` router. Throws at construction when a tool cannot be priced. */
export function mcpRouter(deps: McpDeps): Router {
  void buildServer(deps, "http://localhost").close();
  const router = express.Router();
  const body = express.json({ limit: deps.bodyLimitBytes });

  const timeoutMs = deps.timeoutMs ?? deps.compare.compareTimeoutMs + 35_000;
  router.post(PATHS.mcp, hostGuard(deps), body, async (req: Request, res, next) => {
    const messages = withoutSelfCancelled(req.body);
    // Only a batch emptied by the filter is answered here (202, as for notifications); an empty batch stays the SDK's to refuse.
    if (messages !== req.body && Array.isArray(messages) && messages.length === 0) return void res.status(202).end();
    const server = buildServer(deps, deps.paywall.origin(req));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    // The bound on every POST: closing the server aborts its tool calls (an aborted call is never charged), then the timeout is answered.
    const watchdog = setTimeout(() => {
      void server.close().catch(() => {});
      if (!res.headersSent) res.status(504).json(rpcError(-32001, `Request timed out: no answer within ${timeoutMs} ms; nothing was charged.`));
    }, timeoutMs);
    res.once("close", () => {
      clearTimeout(watchdog);
      void transport.close().catch(() => {});
      void server.close().catch(() => {});
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res, messages);
    } catch (err) {
      if (res.headersSent) return void res.destroy();
      next(err);
    }
  });
  router.all(PATHS.mcp, (_req, res) => {
    res.status(405).set("Allow", "POST").json(rpcError(-32000, "Method not allowed: this MCP endpoint is stateless; POST JSON-RPC messages to it."));
  });
  const parseErrors: ErrorRequestHandler = (err, req, res, next) => {
    if (req.path !== PATHS.mcp) return next(err);
    const type = (err as { type?: string }).type;
    if (type === "entity.parse.failed") return void res.status(400).json(rpcError(-32700, "Parse error: the body is not valid JSON."));
    if (type === "entity.too.large") return void res.status(413).json(rpcError(-32600, `Request too large: at most ${deps.bodyLimitBytes} bytes.`));
    next(err);
  };
  router.use(parseErrors);
  return router;
}
