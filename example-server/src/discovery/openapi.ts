/**
 * The OpenAPI 3.1 document, generated from the catalog (services joined with
 * the paywall routes): every priced route including legacy endpoints, with
 * its request and response schemas, its 402, and the payment security
 * schemes; plus the payments API and the discovery and operations endpoints.
 */
import { FACE_ERROR_STATUS } from "../engine/types.js";
import { PATHS, type ServiceDescriptor } from "./catalog.js";

type Json = Record<string, unknown>;

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown, example?: unknown) => ({ "application/json": { schema, ...(example !== undefined ? { example } : {}) } });
const reply = (description: string, schema: unknown, extra: Json = {}) => ({ description, content: json(schema), ...extra });

function pascal(id: string): string {
  return id.replace(/(^|[^A-Za-z0-9])([A-Za-z0-9])/g, (_m, _s, c: string) => c.toUpperCase());
}

/** Face error codes answered with an HTTP status. */
function codesFor(status: number): string[] {
  return Object.entries(FACE_ERROR_STATUS).filter(([, s]) => s === status).map(([c]) => c);
}

const PAYMENT_SECURITY = [{ paymentToken: [] }, { x402PaymentSignature: [] }, { x402Payment: [] }];
const ADMIN_SECURITY = [{ adminKey: [] }];

const SCHEMAS: Json = {
  ApiError: {
    type: "object",
    required: ["error", "message"],
    properties: { error: { type: "string", description: "Stable machine-readable code." }, message: { type: "string" } },
  },
  ServiceError: {
    type: "object",
    description: "A failed call, in the same envelope as a success. Never charged.",
    required: ["code", "message", "requestId"],
    properties: {
      code: { type: "string", enum: Object.keys(FACE_ERROR_STATUS) },
      content: { type: "string" },
      data: { type: "null" },
      message: { type: "string" },
      requestId: { type: "string" },
    },
  },
  PaymentRequirementsV1: {
    type: "object",
    required: ["scheme", "network", "maxAmountRequired", "resource", "description", "mimeType", "payTo", "maxTimeoutSeconds", "asset", "extra"],
    properties: {
      scheme: { const: "exact" },
      network: { type: "string", examples: ["base-sepolia"] },
      maxAmountRequired: { type: "string", pattern: "^[0-9]+$", description: "Atomic units of the asset." },
      resource: { type: "string", format: "uri" },
      description: { type: "string" },
      mimeType: { type: "string" },
      payTo: { type: "string" },
      maxTimeoutSeconds: { type: "integer" },
      asset: { type: "string" },
      outputSchema: { type: "object" },
      extra: { type: "object", properties: { name: { type: "string" }, version: { type: "string" } } },
    },
  },
  PaymentRequired: {
    type: "object",
    description: "x402 v1 402 body. The same offer, as x402 v2, is in the PAYMENT-REQUIRED header (base64 JSON).",
    required: ["x402Version", "error", "accepts"],
    properties: {
      x402Version: { const: 1 },
      error: { type: "string", description: "Why payment is required (an x402 reason on refusals)." },
      message: { type: "string" },
      accepts: { type: "array", items: ref("PaymentRequirementsV1") },
      prepaid: {
        type: "object",
        description: "How to pay with a prepaid token instead.",
        properties: { header: { const: "X-Payment-Token" }, serviceId: { type: "string" }, create: { type: "object" } },
      },
      payment: ref("Payment"),
    },
  },
  Payment: {
    type: "object",
    required: ["paymentId", "serviceId", "status", "amountCents", "amount", "currency", "billingMode", "maxCalls", "callsRemaining", "expiresAt", "payTo"],
    properties: {
      paymentId: { type: "string" },
      serviceId: { type: "string" },
      status: { enum: ["pending", "paid", "exhausted", "expired"] },
      amountCents: { type: "integer" },
      amount: { type: "string", pattern: "^[0-9]+$" },
      currency: { type: "string" },
      billingMode: { const: "per_call" },
      maxCalls: { type: "integer" },
      callsRemaining: { type: "integer" },
      expiresAt: { type: "string", format: "date-time" },
      paidAt: { type: ["string", "null"], format: "date-time" },
      payTo: { type: "string" },
      provider: { type: ["string", "null"] },
      transaction: { type: ["string", "null"] },
      network: { type: ["string", "null"] },
      createdAt: { type: "string", format: "date-time" },
    },
  },
  PaymentCreated: {
    allOf: [
      ref("Payment"),
      {
        type: "object",
        required: ["token", "pay", "use"],
        properties: {
          token: { type: "string", description: "Shown once. Send as X-Payment-Token (HTTP) or the paymentToken argument (MCP) after paying." },
          pay: { type: "object", properties: { method: { const: "POST" }, url: { type: "string", format: "uri" }, x402: { type: "object" } } },
          use: { type: "object" },
        },
      },
    ],
  },
  SettleResponse: {
    type: "object",
    description: "Decoded X-PAYMENT-RESPONSE / PAYMENT-RESPONSE header.",
    required: ["success", "transaction", "network"],
    properties: { success: { type: "boolean" }, transaction: { type: "string" }, network: { type: "string" }, payer: { type: "string" }, errorReason: { type: "string" } },
  },
};

const PAYMENT_RESPONSE_HEADERS = {
  "PAYMENT-RESPONSE": { description: "x402 v2 settlement receipt (base64 JSON SettleResponse), when paid with PAYMENT-SIGNATURE.", schema: { type: "string" } },
  "X-PAYMENT-RESPONSE": { description: "x402 v1 settlement receipt (base64 JSON SettleResponse), when paid with X-PAYMENT.", schema: { type: "string" } },
};
const PAYMENT_REQUIRED_RESPONSE = {
  description: "Payment required, or the payment was refused (reason in `error`). Nothing was charged.",
  headers: { "PAYMENT-REQUIRED": { description: "x402 v2 PaymentRequired (base64 JSON).", schema: { type: "string" } } },
  content: json(ref("PaymentRequired")),
};

function serviceOperation(s: ServiceDescriptor, path: string, legacy: boolean): Json {
  const base = pascal(s.id);
  const errors = (status: number, what: string) => reply(`${what} (codes: ${codesFor(status).join(", ") || "none"}). Not charged.`, ref("ServiceError"));
  return {
    operationId: legacy ? `${base[0]!.toLowerCase()}${base.slice(1)}Legacy${pascal(path.split("/").pop()!)}` : `${base[0]!.toLowerCase()}${base.slice(1)}`,
    summary: legacy ? `${s.name} (legacy path of ${s.endpoint})` : s.name,
    description: `${s.description}\n\nPrice: ${s.pricing.amountDecimal} USDC (${s.pricing.amount} atomic units) per call, settled ${s.pricing.settlement === "after" ? "only after a successful answer" : "before the work starts"}. Pay with x402 (X-PAYMENT v1 or PAYMENT-SIGNATURE v2) or a prepaid X-Payment-Token. Also available as MCP tool \`${s.mcpToolName}\` at ${PATHS.mcp}.`,
    tags: ["services"],
    ...(legacy ? { deprecated: true } : {}),
    security: PAYMENT_SECURITY,
    requestBody: { required: true, content: json(ref(`${base}Request`), s.exampleRequest) },
    responses: {
      "200": { description: "Success. Charged exactly once.", headers: PAYMENT_RESPONSE_HEADERS, content: json(ref(`${base}Response`), s.exampleResponse) },
      "400": reply(`Invalid input (codes: ${codesFor(400).join(", ")}), or invalid JSON (ApiError). Checked before payment; not charged.`, { oneOf: [ref("ServiceError"), ref("ApiError")] }),
      "402": PAYMENT_REQUIRED_RESPONSE,
      "413": reply("An image or the body is too large. Not charged.", { oneOf: [ref("ServiceError"), ref("ApiError")] }),
      "422": errors(422, "No usable face"),
      "502": errors(502, "The face engine failed"),
      "503": errors(503, "The face engine is busy or unavailable, or the payment store is down"),
      "504": errors(504, "The comparison timed out"),
    },
    "x-payment-info": paymentInfo(s),
    "x-server402": { serviceId: s.id, pricing: s.pricing, acceptedPaymentMethods: s.acceptedPaymentMethods, mcpToolName: s.mcpToolName },
  };
}

/**
 * The price as agent tools read it from OpenAPI (the `x-payment-info`
 * operation extension, e.g. agentcash's discovery): a fixed USD price and the
 * x402 offer. Without it they see only the apiKey-type security schemes and
 * take the route for an API-key one.
 */
function paymentInfo(s: ServiceDescriptor): Json {
  const { pricing: p } = s;
  const x402 = {
    x402Version: [1, 2],
    scheme: "exact",
    network: p.asset.network,
    ...(p.asset.v1Network ? { v1Network: p.asset.v1Network } : {}),
    asset: p.asset.address,
    amount: p.amount,
    payTo: p.payTo,
    settlement: p.settlement,
  };
  return { price: { mode: "fixed", amount: p.amountDecimal, currency: p.currency }, protocols: [{ x402 }] };
}

function paymentsPaths(serviceIds: string[]): Json {
  const idParam = { name: "paymentId", in: "path", required: true, schema: { type: "string", pattern: "^pay_[A-Za-z0-9_-]{8,64}$" } };
  const err = (d: string) => reply(d, ref("ApiError"));
  return {
    [PATHS.payments]: {
      post: {
        operationId: "createPayment",
        summary: "Create a prepaid payment for a service",
        description: "Returns the payment, its token (shown once) and how to pay it. The token works after the payment is paid.",
        tags: ["payments"],
        requestBody: {
          required: true,
          content: json({ type: "object", additionalProperties: false, required: ["serviceId"], properties: { serviceId: { enum: serviceIds }, providerId: { type: "string", maxLength: 64 } } }, { serviceId: serviceIds[0] }),
        },
        responses: { "201": reply("Created.", ref("PaymentCreated")), "400": err("Invalid body."), "404": err("Unknown service."), "429": err("Rate limited or too many unpaid payments.") },
      },
    },
    [`${PATHS.payments}/{paymentId}`]: {
      get: {
        operationId: "getPayment",
        summary: "Payment status",
        tags: ["payments"],
        parameters: [idParam],
        responses: { "200": reply("The payment.", ref("Payment")), "404": err("Unknown payment.") },
      },
    },
    [`${PATHS.payments}/{paymentId}/pay`]: {
      post: {
        operationId: "payPayment",
        summary: "Pay a prepaid payment with x402",
        tags: ["payments"],
        parameters: [idParam],
        security: [{ x402PaymentSignature: [] }, { x402Payment: [] }],
        responses: {
          "200": { description: "Paid (or already paid; nothing charged twice).", headers: PAYMENT_RESPONSE_HEADERS, content: json(ref("Payment")) },
          "402": PAYMENT_REQUIRED_RESPONSE,
          "404": err("Unknown payment."),
          "409": err("Being paid by another request."),
        },
      },
    },
    [`${PATHS.payments}/{paymentId}/confirm`]: {
      post: {
        operationId: "confirmPayment",
        summary: "Operator: mark a payment paid (off-chain payment received)",
        tags: ["operator"],
        parameters: [idParam],
        security: ADMIN_SECURITY,
        requestBody: { required: false, content: json({ type: "object", properties: { provider: { type: "string", maxLength: 64 }, reference: { type: "string", maxLength: 128 } } }) },
        responses: { "200": reply("Paid.", ref("Payment")), "401": err("No admin key."), "403": err("Wrong admin key."), "404": err("Unknown payment."), "409": err("Expired.") },
      },
    },
    "/api/ledger": {
      get: {
        operationId: "listLedger",
        summary: "Operator: settled payments, oldest first",
        tags: ["operator"],
        security: ADMIN_SECURITY,
        parameters: [
          { name: "afterId", in: "query", schema: { type: "integer", minimum: 0 } },
          { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } },
        ],
        responses: {
          "200": reply("Ledger page.", { type: "object", required: ["entries", "nextAfterId"], properties: { entries: { type: "array", items: { type: "object" } }, nextAfterId: { type: "integer" } } }),
          "400": err("Bad query."),
          "401": err("No admin key."),
          "403": err("Wrong admin key."),
        },
      },
    },
  };
}

function get(operationId: string, summary: string, tag: string, content: Json, extra: { parameters?: unknown[]; errors?: Json } = {}): Json {
  const { errors, ...rest } = extra;
  return { get: { operationId, summary, tags: [tag], ...rest, responses: { "200": { description: "OK.", content }, ...(errors ?? {}) } } };
}

function infoPaths(): Json {
  const anyJson = json({ type: "object" });
  const err = (d: string) => reply(d, ref("ApiError"));
  const paths: Json = {
    [PATHS.services]: get("listServices", "Every service with pricing and schemas", "discovery", json({ type: "object", properties: { services: { type: "array", items: { type: "object" } } } })),
    [`${PATHS.services}/{id}`]: get("getService", "One service", "discovery", anyJson, { parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }], errors: { "404": err("Unknown service.") } }),
    [PATHS.search]: get("searchServices", "Ranked text search over names, descriptions and keywords", "discovery", anyJson, {
      parameters: [{ name: "q", in: "query", required: true, schema: { type: "string", minLength: 1, maxLength: 200 } }],
      errors: { "400": err("Missing, empty or too long query.") },
    }),
    [PATHS.openapi]: get("getOpenApi", "This document", "discovery", anyJson),
    [PATHS.wellKnown]: get("getWellKnown", "Where everything is, and the payment flows", "discovery", anyJson),
    [PATHS.llms]: get("getLlmsTxt", "llms.txt: the same, for language models", "discovery", { "text/plain": { schema: { type: "string" } } }),
    [PATHS.healthz]: get("healthz", "The process is up", "operations", anyJson),
    [PATHS.readyz]: get("readyz", "Store, chain RPC and face engine are ready", "operations", anyJson, { errors: { "503": { description: "Not ready; per-check detail.", content: anyJson } } }),
    [PATHS.metrics]: get("metrics", "Prometheus metrics", "operations", { "text/plain": { schema: { type: "string" } } }),
    [PATHS.mcp]: {
      post: {
        operationId: "mcp",
        summary: "MCP over Streamable HTTP (stateless): JSON-RPC tools/list and tools/call",
        description: "Paid tools answer an unpaid call with a tool error carrying the x402 PaymentRequired (structuredContent and _meta[\"x402/payment-required\"]). Pay with _meta[\"x402/payment\"] (PaymentPayload object) or the paymentToken argument.",
        tags: ["mcp"],
        requestBody: { required: true, content: json({ type: "object", required: ["jsonrpc", "method"], properties: { jsonrpc: { const: "2.0" }, method: { type: "string" }, id: {}, params: { type: "object" } } }) },
        responses: { "200": { description: "JSON-RPC response.", content: anyJson }, "400": { description: "Invalid JSON-RPC.", content: anyJson } },
      },
    },
  };
  return paths;
}

/** The OpenAPI 3.1 document for clients at `origin`. */
export function buildOpenApi(services: readonly ServiceDescriptor[], origin: string): Json {
  const paths: Json = {};
  const schemas: Json = { ...SCHEMAS };
  for (const s of services) {
    const base = pascal(s.id);
    schemas[`${base}Request`] = s.inputSchema;
    schemas[`${base}Response`] = s.outputSchema;
    paths[s.endpoint] = { [s.method.toLowerCase()]: serviceOperation(s, s.endpoint, false) };
    for (const legacy of s.legacyEndpoints) paths[legacy] = { [s.method.toLowerCase()]: serviceOperation(s, legacy, true) };
  }
  Object.assign(paths, paymentsPaths(services.map((s) => s.id)), infoPaths());
  return {
    openapi: "3.1.0",
    info: {
      title: "server402 example: pay-per-call face comparison",
      version: "0.1.0",
      description: `Paid APIs for agents. Every priced route answers 402 with x402 v1 (body) and v2 (PAYMENT-REQUIRED header) requirements. See ${PATHS.llms} for the payment flows in short.`,
    },
    servers: [{ url: origin }],
    tags: [
      { name: "services", description: "Paid services." },
      { name: "payments", description: "Prepaid payments: create, pay with x402, use the token." },
      { name: "discovery" },
      { name: "mcp" },
      { name: "operations" },
      { name: "operator", description: "Needs the admin key." },
    ],
    paths,
    components: {
      schemas,
      securitySchemes: {
        paymentToken: { type: "apiKey", in: "header", name: "X-Payment-Token", description: "Token of a paid prepaid payment (POST /api/payments, then POST /api/payments/{paymentId}/pay)." },
        x402PaymentSignature: { type: "apiKey", in: "header", name: "PAYMENT-SIGNATURE", description: "x402 v2 PaymentPayload, base64 JSON, signed for the requirements in the 402's PAYMENT-REQUIRED header." },
        x402Payment: { type: "apiKey", in: "header", name: "X-PAYMENT", description: "x402 v1 PaymentPayload, base64 JSON, signed for the 402 body's accepts[0]." },
        adminKey: { type: "http", scheme: "bearer", description: "Operator admin key (ADMIN_KEY)." },
      },
    },
  };
}
