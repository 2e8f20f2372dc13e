/**
 * MCP adapter: price a tool of an official MCP SDK `McpServer` in one call,
 * with the same paywall route (price, payTo, network, prepaid tokens) as the
 * HTTP endpoint, so the two can never charge differently.
 *
 *   registerPaidTool(mcpServer, pw, {
 *     name: "face_comparison", serviceId: "face-comparison",
 *     inputSchema: { ImageURLA: z.string().optional(), ... },
 *     handler: async (args, ctx) => ({ content: [...] }),
 *   });
 *
 * Wire behaviour (x402 MCP transport, v1 and v2):
 * - unpaid: a tool error (`isError: true`) whose `structuredContent` and
 *   `_meta["x402/payment-required"]` carry the PaymentRequired object (see
 *   {@link McpPaymentRequired}), with its bazaar discovery data (tool name and
 *   input schema); `content[0].text` is the v2 transport's JSON
 *   `{"x402/error": {code: 402, message, data: <PaymentRequired>}}`;
 * - `paymentToken` argument: one call of a prepaid payment is reserved, then
 *   committed when the tool succeeds or given back when it fails;
 * - `_meta["x402/payment"]` (a PaymentPayload object, version from its
 *   `x402Version`): verified before the tool runs, settled only when the tool
 *   succeeded, receipt in `_meta["x402/payment-response"]`. A failed settlement
 *   withholds the output and answers "Payment settlement failed: …".
 *   `_meta["x402.payment"]` (a dot: Vercel's x402-mcp, a base64 v1 payload)
 *   is taken the same way, and its receipt is also put in
 *   `_meta["x402.payment-response"]`, where that client family looks.
 *
 * Resource URL: the MCP endpoint URL plus `#<tool name>`, e.g.
 * `https://api.example.com/mcp#face_comparison` (origin from the paywall's
 * `publicUrl` when set), or `mcp://tool/<name>` when no HTTP request is known
 * (stdio). Pass `resource` to choose it yourself.
 */
import type { McpServer, RegisteredTool } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { CallToolResult, ServerNotification, ServerRequest, ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import type { z } from "zod/v4";
import { ChainError, ConfigError, PaymentError, SettlementError, StoreError } from "../errors.js";
import { settleResponse, type PaymentInfo, type X402Attempt } from "../core/engine.js";
import type { PaymentOptions, ResolvedRoute, RouteOptions } from "../core/options.js";
import { toPublicPayment } from "../core/payment-object.js";
import { decodeHeader } from "../protocol/encoding.js";
import { formatUnitsExact } from "../protocol/price.js";
import { toPaymentRequiredV2, type Offer } from "../protocol/requirements.js";
import type { PaymentRequiredV2, SettleResponse } from "../protocol/types.js";
import type { StoredPayment } from "../state/store.js";
import { buildPaidRoutes, offerOf, paymentRequiredOf, type PaidRoutes } from "./paid-routes.js";
import { outageAnswer, reportErrorAnswer } from "./error-detail.js";
import { LeaseKeeper } from "../core/leases.js";
import { importOptional } from "../optional.js";
import { holdToolResult, toolAnswer, toolReplay } from "./mcp-held.js";
import { jsonDigest, type PaymentIdHold } from "../core/idempotency.js";
import type { X402PaymentInfo, X402Replay } from "../core/engine.js";

/** zod at run time (the MCP SDK installs it); a missing install is a one-line MissingDependencyError. */
const { z: zod } = await importOptional<typeof import("zod/v4")>("zod/v4", "@modelcontextprotocol/sdk zod", "server402/mcp");

/** `_meta` keys of the x402 MCP transport (plus server402's own payment summary). */
export const MCP_META = {
  /** Client → server: PaymentPayload object. */
  payment: "x402/payment",
  /** Client → server, as x402-mcp (Vercel) sends it: a base64 v1 PaymentPayload. */
  paymentDotted: "x402.payment",
  /** Server → client, where x402-mcp's servers put the receipt. */
  paymentResponseDotted: "x402.payment-response",
  /** Server → client: SettleResponse object. */
  paymentResponse: "x402/payment-response",
  /** Server → client: the PaymentRequired object of a payment-required result. */
  paymentRequired: "x402/payment-required",
  /** Server → client: what paid this call (no secrets). */
  server402Payment: "server402/payment",
} as const;

/** Name of the tool argument that carries a prepaid payment token. */
export const PAYMENT_TOKEN_ARGUMENT = "paymentToken";

/** The MCP request context the SDK passes to tool callbacks. */
export type McpToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** Tool arguments as parsed from a zod raw shape, without `paymentToken`. */
export type PaidToolArgs<Shape extends z.ZodRawShape> = z.output<z.ZodObject<Shape>>;

/** What a paid tool handler receives besides its arguments. */
export interface PaidToolContext<V> {
  /** How this call is paid (x402 payer and amount, or prepaid payment id and calls left). */
  payment: PaymentInfo;
  /** What `validate` returned. */
  validated: V;
  /** Aborted when the client cancels; an aborted call is never charged. */
  signal: AbortSignal;
  /** The SDK's request context. */
  extra: McpToolExtra;
}

/** Options of {@link registerPaidTool}. */
export interface PaidToolOptions<Shape extends z.ZodRawShape, V = undefined> {
  /** Tool name, e.g. "face_comparison". */
  name: string;
  /** The paywall route that prices this tool, by serviceId (preferred) ... */
  serviceId?: string;
  /** ... or by route key, e.g. "POST /api/tools/face-comparison". */
  route?: string;
  title?: string;
  /** Default: the route's description. */
  description?: string;
  /** Zod (v4) raw shape of the arguments. `paymentToken` is added; unknown keys are refused by name. */
  inputSchema: Shape;
  annotations?: ToolAnnotations;
  /** Absolute resource URL for the offer, or a function of the request context. Default: see the module comment. */
  resource?: string | ((extra: McpToolExtra) => string);
  /**
   * Runs before any payment step; throw to refuse the call with a tool error
   * (the caller is never asked to pay for bad input). An error's `code`
   * property, when a string, becomes the result's `error`.
   */
  validate?: (args: PaidToolArgs<Shape>) => V | Promise<V>;
  /**
   * The paid work. Return `isError: true`, or throw, and nothing is charged;
   * a thrown error becomes a tool error showing its message (and its `code`
   * when a string), so throw nothing you would not show the caller.
   */
  handler: (args: PaidToolArgs<Shape>, ctx: PaidToolContext<V>) => CallToolResult | Promise<CallToolResult>;
}

/**
 * The PaymentRequired object of an MCP payment-required result: the x402 v2
 * PaymentRequired (what MCP x402 clients read), plus the v1 requirements
 * under `x402v1`, how to pay with a prepaid token under `prepaid`, a
 * machine-readable `reason`, and a human `message`.
 */
export interface McpPaymentRequired extends PaymentRequiredV2 {
  error: string;
  reason: string;
  message: string;
  x402v1: { x402Version: 1; error: string; accepts: unknown[] };
  prepaid?: Record<string, unknown>;
  payment?: unknown;
  "x402/payment-response"?: SettleResponse;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function findRoute(pw: PaidRoutes<never>, o: { name: string; serviceId?: string; route?: string }): ResolvedRoute<never> {
  const at = `registerPaidTool(${JSON.stringify(o.name)})`;
  if (!o.serviceId === !o.route) throw new ConfigError(at, "give exactly one of serviceId or route.");
  const route = o.serviceId ? pw.routes.find((r) => r.options.serviceId === o.serviceId) : pw.routes.find((r) => r.key === o.route);
  if (!route) {
    const known = o.serviceId ? pw.routes.map((r) => r.options.serviceId).filter(Boolean) : pw.routes.map((r) => r.key);
    throw new ConfigError(`${at}.${o.serviceId ? "serviceId" : "route"}`, `no paywall route has ${JSON.stringify(o.serviceId ?? o.route)}; known: ${[...new Set(known)].join(", ") || "none"}.`);
  }
  if (!route.staticPrice) throw new ConfigError(at, `route ${JSON.stringify(route.key)} has a dynamic price; MCP tools need a static price.`);
  if (route.permit2?.scheme === "upto") throw new ConfigError(at, `route ${JSON.stringify(route.key)} is usage-based (upto); MCP tools cannot report a charge yet, so they need a fixed price.`);
  return route;
}

function strictArgs<Shape extends z.ZodRawShape>(name: string, shape: Shape) {
  if (!isObject(shape)) throw new ConfigError(`registerPaidTool(${JSON.stringify(name)}).inputSchema`, "must be a zod raw shape, e.g. { text: z.string() }.");
  for (const [k, v] of Object.entries(shape)) {
    if (!isObject(v) || !("_zod" in v)) throw new ConfigError(`registerPaidTool(${JSON.stringify(name)}).inputSchema.${k}`, "must be a zod v4 schema (import { z } from \"zod\" with zod 4, or from \"zod/v4\").");
  }
  if (PAYMENT_TOKEN_ARGUMENT in shape) throw new ConfigError(`registerPaidTool(${JSON.stringify(name)}).inputSchema`, `must not define ${PAYMENT_TOKEN_ARGUMENT}; it is added for you.`);
  const expected = [...Object.keys(shape), PAYMENT_TOKEN_ARGUMENT];
  return zod.strictObject(
    { ...shape, [PAYMENT_TOKEN_ARGUMENT]: zod.string().max(256).optional().describe("Prepaid payment token (from POST /api/payments, once paid). Omit to pay with x402 in _meta[\"x402/payment\"].") },
    {
      error: (iss) => {
        if (iss.code !== "unrecognized_keys") return undefined;
        const hints = iss.keys.map((k) => {
          const near = expected.find((e) => e.toLowerCase() === k.toLowerCase());
          return near ? `${k} (did you mean ${near}?)` : k;
        });
        return `unknown argument(s) ${hints.join(", ")}; expected ${expected.join(", ")}`;
      },
    },
  );
}

/** A plain tool error result with a machine-readable code. */
function toolError(code: string, message: string): CallToolResult {
  return { isError: true, content: [{ type: "text", text: `${code}: ${message}` }], structuredContent: { error: code, message } };
}

function errorCode(err: unknown, fallback: string): string {
  const c = (err as { code?: unknown } | undefined)?.code;
  return typeof c === "string" && /^[a-z0-9_.-]{1,64}$/i.test(c) ? c : fallback;
}

function withMeta(result: CallToolResult, meta: Record<string, unknown>): CallToolResult {
  return { ...result, _meta: { ...(result._meta ?? {}), ...meta } };
}

/** A paid call's receipt, where the client's family looks for it (the dotted key's clients read the dotted one), and what paid it. */
function receiptMeta(key: string, receipt: SettleResponse, info: X402PaymentInfo): Record<string, unknown> {
  return {
    [MCP_META.paymentResponse]: receipt,
    ...(key === MCP_META.paymentDotted ? { [MCP_META.paymentResponseDotted]: receipt } : {}),
    [MCP_META.server402Payment]: { method: "x402", payer: info.payer, amount: info.amount, network: info.network, transaction: info.transaction },
  };
}

/**
 * The engine and priced routes for MCP tools served without an Express
 * paywall: `registerPaidTool(server, paidRoutes({ routes, payTo, settler }), …)`.
 * Beside an Express app, pass its paywall instead so both share one engine.
 */
export function paidRoutes(options: PaymentOptions & { routes: Record<string, RouteOptions<unknown>> }): PaidRoutes {
  if (!options || typeof options.routes !== "object" || options.routes === null || Object.keys(options.routes).length === 0) {
    throw new ConfigError("routes", 'give at least one priced route, e.g. { "/tools/face": { price: "$0.01", serviceId: "face" } }.');
  }
  const { engine, routes } = buildPaidRoutes(options, options.routes);
  return { engine, routes, options };
}

/**
 * Register `opts.name` on `server` as a tool priced by the route of
 * `opts.serviceId` (or `opts.route`) in `pw`: a paywall middleware, or
 * `paidRoutes(...)`. Throws ConfigError at startup when the route is unknown
 * or dynamically priced.
 */
export function registerPaidTool<Shape extends z.ZodRawShape, V = undefined>(server: McpServer, pw: PaidRoutes<never>, opts: PaidToolOptions<Shape, V>): RegisteredTool {
  if (!pw || !pw.engine) throw new ConfigError("registerPaidTool", "pass the middleware returned by paywall({...}) or paidRoutes({...}).");
  if (!opts || typeof opts.name !== "string" || !opts.name) throw new ConfigError("registerPaidTool.name", "is required.");
  if (typeof opts.handler !== "function") throw new ConfigError(`registerPaidTool(${JSON.stringify(opts.name)}).handler`, "must be a function.");
  const route = findRoute(pw, opts);
  const schema = strictArgs(opts.name, opts.inputSchema);
  const engine = pw.engine;
  const serviceId = route.options.serviceId;
  const mcpRoute: ResolvedRoute<never> = { ...route, options: { ...route.options, resource: undefined } };
  const leases = new LeaseKeeper(engine.store, pw.options.tokenLeaseMs ?? 120_000);
  const bazaar = route.options.discoverable === false ? undefined : mcpBazaar(opts.name, opts.description ?? route.description, opts.inputSchema);

  function resourceFor(extra: McpToolExtra): string {
    if (typeof opts.resource === "string") return opts.resource;
    if (typeof opts.resource === "function") return opts.resource(extra);
    const url = extra.requestInfo?.url;
    if (!url) return `mcp://tool/${encodeURIComponent(opts.name)}`;
    return `${pw.options.publicUrl ?? url.origin}${url.pathname}#${encodeURIComponent(opts.name)}`;
  }

  async function offerFor(resource: string): Promise<Offer> {
    const offer = offerOf(mcpRoute, route.staticPrice!, resource);
    // The tool's schemas are in tools/list; the v1 outputSchema only says how to call it.
    return { ...offer, outputSchema: { input: { type: "mcp", tool: opts.name, discoverable: route.options.discoverable ?? true } } };
  }

  function paymentRequired(offer: Offer, error: string, reason: string, message: string, extra: Partial<McpPaymentRequired> = {}): CallToolResult {
    let base = pw.options.publicUrl ?? "";
    if (!base && /^https?:/.test(offer.resource)) base = new URL(offer.resource).origin;
    const { body } = paymentRequiredOf(offer, mcpRoute, error, base, pw.options, engine.paymentIds !== undefined);
    const v2 = toPaymentRequiredV2(offer, error, engine.paymentIds !== undefined);
    const pr: McpPaymentRequired = {
      ...v2,
      ...(bazaar ? { extensions: { ...v2.extensions, bazaar } } : {}),
      error,
      reason,
      message,
      x402v1: { x402Version: 1, error, accepts: body.accepts as unknown[] },
      ...(isObject(body.prepaid) ? { prepaid: { ...body.prepaid, argument: PAYMENT_TOKEN_ARGUMENT } } : {}),
      ...extra,
    };
    engine.paymentRequired(offer.resource);
    const meta: Record<string, unknown> = { [MCP_META.paymentRequired]: pr };
    if (extra["x402/payment-response"]) meta[MCP_META.paymentResponse] = extra["x402/payment-response"];
    const text = JSON.stringify({ "x402/error": { code: 402, message, data: pr } });
    return { isError: true, content: [{ type: "text", text }], structuredContent: pr as unknown as Record<string, unknown>, _meta: meta };
  }

  /** Answer a refused or failed payment step. */
  function refusal(offer: Offer, err: unknown, attempt?: X402Attempt): CallToolResult {
    if (err instanceof SettlementError) {
      const receipt = attempt ? settleResponse(attempt, err) : undefined;
      const error = `Payment settlement failed: ${err.message}`;
      reportErrorAnswer(pw.options.onEvent, err.status, err.reason, err, offer.resource);
      return paymentRequired(offer, error, err.reason, `${error} The tool output is withheld.`, receipt ? { "x402/payment-response": receipt } : {});
    }
    if (err instanceof PaymentError) {
      const payment = (err as PaymentError & { payment?: StoredPayment }).payment;
      return paymentRequired(offer, err.reason, err.reason, err.message, payment ? { payment: toPublicPayment(payment, Date.now()) } : {});
    }
    if (err instanceof StoreError || err instanceof ChainError) {
      // issue 14 C16: the client gets the code and a plain message; the error's own text (a host, an RPC address) goes to the logs
      const { status, message } = outageAnswer(err);
      reportErrorAnswer(pw.options.onEvent, status, err.code, err, offer.resource);
      return toolError(err.code, `${message} Nothing was charged.`);
    }
    return toolError("payment_processing_failed", "payment processing failed unexpectedly; nothing was charged.");
  }

  async function runHandler(args: PaidToolArgs<Shape>, ctx: PaidToolContext<V>): Promise<CallToolResult> {
    try {
      return await opts.handler(args, ctx);
    } catch (err) {
      return toolError(errorCode(err, "tool_failed"), err instanceof Error ? err.message : "the tool failed.");
    }
  }

  async function payWithToken(token: string, args: PaidToolArgs<Shape>, validated: V, offer: Offer, extra: McpToolExtra): Promise<CallToolResult> {
    if (!serviceId || pw.options.acceptTokens === false) {
      return paymentRequired(offer, "tokens_not_accepted", "tokens_not_accepted", `this tool does not accept ${PAYMENT_TOKEN_ARGUMENT}; pay with x402.`);
    }
    let attempt;
    const reservedAt = Date.now();
    try {
      attempt = await engine.reserveToken(token, serviceId, offer.resource);
    } catch (err) {
      return refusal(offer, err);
    }
    let lost = false; // issue 14 A4: the reservation may lapse (renewals could not reach the store)
    leases.track(attempt, reservedAt, () => (lost = true));
    const result = await runHandler(args, { payment: attempt.info, validated, signal: extra.signal, extra }).finally(() => leases.untrack(attempt));
    if (lost) {
      await engine.releaseToken(attempt);
      reportErrorAnswer(pw.options.onEvent, 503, "store_unavailable", new StoreError("server402: the token call's lease could not be renewed before it would lapse; the result was withheld"), offer.resource);
      return toolError("store_unavailable", "the payment store could not keep this call reserved, so its result is withheld; nothing was charged. Retry shortly.");
    }
    if (result.isError || extra.signal.aborted) {
      await engine.releaseToken(attempt);
      return result;
    }
    await engine.commitToken(attempt, offer.resource);
    const { paymentId, callsRemaining, amount } = attempt.info;
    return withMeta(result, { [MCP_META.server402Payment]: { method: "token", paymentId, amount, callsRemaining } });
  }

  async function payWithX402(raw: unknown, key: string, args: PaidToolArgs<Shape>, validated: V, offer: Offer, extra: McpToolExtra): Promise<CallToolResult> {
    let attempt: X402Attempt;
    let idHold: PaymentIdHold | undefined;
    try {
      const payload = typeof raw === "string" ? decodeHeader(raw, `_meta["${key}"]`) : raw;
      if (!isObject(payload)) throw new PaymentError("invalid_payload", `_meta["${key}"] must be an x402 PaymentPayload object.`);
      const version = payload.x402Version;
      if (version !== 1 && version !== 2) throw new PaymentError("invalid_x402_version", `_meta["${key}"].x402Version must be 1 or 2, got ${JSON.stringify(version)}.`);
      if (version === 2 && engine.paymentIds) {
        // issue 17.3 payment-identifier: a retry of the same paid call (tool and arguments) gets its result again; anything else with its id is refused
        const d = await engine.paymentIds.begin<X402Replay>(payload, offer, { parts: ["mcp", opts.name, jsonDigest(args)] });
        if (d.kind === "replay") return replayById(d.replay, key, args, validated, extra, offer);
        if (d.kind === "refused") return d.error.status === 402 ? refusal(offer, d.error) : toolError(d.error.reason, d.error.message);
        if (d.kind === "claimed") idHold = d.hold;
      }
      attempt = await engine.verifyX402(version, payload, offer, serviceId);
      attempt.paymentId = idHold;
    } catch (err) {
      await idHold?.release();
      // issue 14 B10: a retry of a tool call whose answer was held while its settlement was pending
      const held = await engine.replayX402(err, offer);
      const replay = held && (await toolReplay(held, (payment) => runHandler(args, { payment, validated, signal: extra.signal, extra })));
      if (replay?.kind === "paid") return withMeta(replay.result, receiptMeta(key, replay.response, replay.info));
      return refusal(offer, replay?.error ?? err);
    }
    const ctx: PaidToolContext<V> = { payment: attempt.info, validated, signal: extra.signal, extra };

    if (route.settlement === "before") {
      let receipt: SettleResponse;
      try {
        receipt = settleResponse(attempt, await engine.settleX402(attempt));
      } catch (err) {
        if (err instanceof SettlementError && err.pending) await holdToolResult(engine, attempt, "run"); // issue 14 B10
        return refusal(offer, err, attempt);
      }
      const result = await runHandler(args, ctx);
      return withMeta(result, receiptMeta(key, receipt, attempt.info));
    }

    const result = await runHandler(args, ctx);
    if (result.isError || extra.signal.aborted) {
      await engine.releaseX402(attempt);
      return result;
    }
    try {
      if (attempt.paymentId) attempt.paymentId.answer = toolAnswer(result, attempt.info); // issue 17.3: kept for a retry with the same id
      const receipt = settleResponse(attempt, await engine.settleX402(attempt));
      // issue 14 B10: the client went away while the transfer was settled: keep its paid result for a retry with the same payment
      if (extra.signal.aborted) await holdToolResult(engine, attempt, result);
      return withMeta(result, receiptMeta(key, receipt, attempt.info));
    } catch (err) {
      if (err instanceof SettlementError && err.pending) await holdToolResult(engine, attempt, result); // issue 14 B10
      return refusal(offer, err, attempt);
    }
  }

  /** Issue 17.3: answer a payment-identifier retry with the held result (or "pending" again; settlement before: run once). */
  async function replayById(held: X402Replay, key: string, args: PaidToolArgs<Shape>, validated: V, extra: McpToolExtra, offer: Offer): Promise<CallToolResult> {
    const replay = await toolReplay(held, (payment) => runHandler(args, { payment, validated, signal: extra.signal, extra }));
    if (!replay) return toolError("payment_identifier_answer_unavailable", "the call with this payment identifier was paid, but its result was not kept; you were not charged again.");
    if (replay.kind === "pending") return refusal(offer, replay.error);
    return withMeta(replay.result, receiptMeta(key, replay.response, replay.info));
  }

  const callback = async (input: Record<string, unknown>, extra: McpToolExtra): Promise<CallToolResult> => {
    const { [PAYMENT_TOKEN_ARGUMENT]: token, ...rest } = input;
    const args = rest as PaidToolArgs<Shape>;
    let validated = undefined as V;
    if (opts.validate) {
      try {
        validated = await opts.validate(args);
      } catch (err) {
        return toolError(errorCode(err, "invalid_arguments"), err instanceof Error ? err.message : "invalid arguments.");
      }
    }
    let offer: Offer;
    try {
      offer = await offerFor(resourceFor(extra));
    } catch (err) {
      return toolError("payment_processing_failed", `could not price this call: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (typeof token === "string") return payWithToken(token, args, validated, offer, extra);
    for (const key of [MCP_META.payment, MCP_META.paymentDotted]) {
      const raw = extra._meta?.[key];
      if (raw !== undefined && raw !== null) return payWithX402(raw, key, args, validated, offer, extra);
    }
    const price = `${formatUnitsExact(offer.amount, offer.asset.decimals)} ${offer.asset.eip712Name} (${offer.amount} atomic units of ${offer.asset.address} on ${offer.network.caip2})`;
    return paymentRequired(
      offer,
      "payment_required",
      "payment_required",
      `${opts.name} costs ${price} per call. Pay with an x402 PaymentPayload in _meta["${MCP_META.payment}"], or pass a paid prepaid token as the ${PAYMENT_TOKEN_ARGUMENT} argument.`,
    );
  };

  return server.registerTool(
    opts.name,
    { title: opts.title, description: opts.description ?? route.description, inputSchema: schema, annotations: opts.annotations },
    callback as never,
  );
}


/**
 * The v2 `bazaar` discovery extension of a paid tool (as @x402/extensions
 * declares MCP tools): tool name, description and the JSON schema of its
 * arguments, with the `schema` that validates it.
 */
function mcpBazaar(toolName: string, description: string, shape: z.ZodRawShape) {
  let args: Record<string, unknown>;
  try {
    args = zod.toJSONSchema(zod.object(shape)) as Record<string, unknown>;
    delete args.$schema;
  } catch {
    return undefined; // arguments JSON Schema cannot express (e.g. transforms): not listed
  }
  return {
    info: { input: { type: "mcp", toolName, ...(description ? { description } : {}), inputSchema: args } },
    schema: {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      properties: {
        input: {
          type: "object",
          properties: {
            type: { type: "string", const: "mcp" },
            toolName: { type: "string" },
            ...(description ? { description: { type: "string" } } : {}),
            inputSchema: { type: "object" },
          },
          required: ["type", "toolName", "inputSchema"],
          additionalProperties: false,
        },
      },
      required: ["input"],
    },
  };
}
