/**
 * `/.well-known/server402.json`: where everything is, and the payment flows
 * in short, as one JSON document generated from the catalog.
 */
import { PATHS, type ServiceDescriptor } from "./catalog.js";

/** The payment flows, step by step (shared with llms.txt). */
export const FLOWS = {
  x402: [
    "Call the endpoint without payment: 402 with x402 v1 requirements in the JSON body and v2 in the PAYMENT-REQUIRED header.",
    "Sign an EIP-3009 transferWithAuthorization for exactly the amount, to payTo, on the asset's EIP-712 domain (extra.name / extra.version).",
    "Repeat the call with X-PAYMENT (v1) or PAYMENT-SIGNATURE (v2): base64 JSON PaymentPayload.",
    "Settled only when the call succeeds; the receipt comes in X-PAYMENT-RESPONSE / PAYMENT-RESPONSE.",
  ],
  prepaid: [
    `POST ${PATHS.payments} {"serviceId": "..."}: a payment, its token (shown once) and how to pay it.`,
    `POST ${PATHS.payments}/{paymentId}/pay with an x402 payment (X-PAYMENT or PAYMENT-SIGNATURE) of the payment's amount.`,
    "Send the token as X-Payment-Token (HTTP) or the paymentToken argument (MCP); a failed call gives the call back.",
  ],
  mcp: [
    `POST ${PATHS.mcp} (MCP Streamable HTTP, stateless). tools/list shows each paid tool with its arguments plus paymentToken.`,
    "An unpaid tools/call answers a tool error (isError) whose structuredContent and _meta[\"x402/payment-required\"] hold the x402 PaymentRequired (v2, with v1 under x402v1 and prepaid hints).",
    "Retry with params._meta[\"x402/payment\"] = PaymentPayload object (v1 or v2), or with the paymentToken argument. The receipt comes in result._meta[\"x402/payment-response\"].",
  ],
} as const;

/** The well-known document for clients at `origin`. */
export function wellKnown(services: readonly ServiceDescriptor[], origin: string): Record<string, unknown> {
  const first = services[0]?.pricing;
  return {
    name: "server402 example",
    description: "Pay-per-call APIs for agents, over HTTP and MCP, paid with x402 (v1 and v2) or prepaid tokens.",
    origin,
    services: services.map((s) => ({
      id: s.id,
      name: s.name,
      description: s.description,
      method: s.method,
      url: s.url,
      legacyUrls: s.legacyEndpoints.map((p) => origin + p),
      mcpToolName: s.mcpToolName,
      price: { amountCents: s.pricing.amountCents, amount: s.pricing.amount, currency: s.pricing.currency, billingMode: s.pricing.billingMode },
      details: s.links.self,
    })),
    discovery: {
      catalog: origin + PATHS.services,
      search: `${origin}${PATHS.search}?q={query}`,
      openapi: origin + PATHS.openapi,
      llms: origin + PATHS.llms,
    },
    mcp: { endpoint: origin + PATHS.mcp, transport: "streamable-http", sessions: "stateless", tools: services.map((s) => s.mcpToolName) },
    payments: {
      x402: first
        ? { versions: [1, 2], scheme: "exact", network: first.asset.network, v1Network: first.asset.v1Network, asset: first.asset.address, payTo: first.payTo, requestHeaders: ["X-PAYMENT", "PAYMENT-SIGNATURE"], responseHeaders: ["X-PAYMENT-RESPONSE", "PAYMENT-RESPONSE"], mcpMeta: "x402/payment" }
        : undefined,
      prepaid: { create: origin + PATHS.payments, status: `${origin}${PATHS.payments}/{paymentId}`, pay: `${origin}${PATHS.payments}/{paymentId}/pay`, header: "X-Payment-Token", mcpArgument: "paymentToken" },
    },
    flows: FLOWS,
    operations: { healthz: origin + PATHS.healthz, readyz: origin + PATHS.readyz, metrics: origin + PATHS.metrics },
  };
}
