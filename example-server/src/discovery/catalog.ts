/**
 * The service catalog as agents read it: each service definition joined with
 * the paywall's resolved route, so the published price, asset, payTo and
 * settlement mode are exactly what the paywall enforces.
 */
import type { Request } from "express";
import { formatUnitsExact, type PaywallMiddleware, type ResolvedRoute } from "server402";

/** Whole USD cents of a USD-stablecoin amount (rounded up), for display. */
function usdCents(amount: bigint, decimals: number): number {
  const unit = 10n ** BigInt(Math.max(decimals - 2, 0));
  return Number((amount + unit - 1n) / unit);
}
import type { ServiceDefinition } from "../service.js";

type Widen<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends readonly (infer U)[]
        ? readonly Widen<U>[]
        : T extends object
          ? { readonly [K in keyof T]: Widen<T[K]> }
          : T;

/** A service definition with the literal types of service.ts widened, so tests and embedders can pass modified copies (e.g. another price). */
export type ServiceSpec = Widen<ServiceDefinition>;

/** Where the server publishes things, relative to its origin. */
export const PATHS = {
  services: "/api/services",
  search: "/api/catalog/search",
  openapi: "/openapi.json",
  wellKnown: "/.well-known/server402.json",
  llms: "/llms.txt",
  mcp: "/mcp",
  payments: "/api/payments",
  healthz: "/healthz",
  readyz: "/readyz",
  metrics: "/metrics",
} as const;

/** Pricing of one call, from the paywall route. */
export interface Pricing {
  /** Per call, whole US cents (rounded up). */
  amountCents: number;
  /** Per call, atomic units of the asset (integer string). */
  amount: string;
  /** Per call, decimal, e.g. "0.200000". */
  amountDecimal: string;
  currency: "USD";
  asset: { name: string; address: string; decimals: number; network: string; v1Network?: string };
  payTo: string;
  billingMode: "per_call";
  /** Calls one prepaid payment buys. */
  maxCalls: number;
  /** Price of one prepaid payment (amount × maxCalls), atomic units. */
  prepaidAmount: string;
  /** Seconds a prepaid payment stays valid. */
  prepaidTtlSeconds: number;
  /** "after": charged only when the call succeeds; "before": charged before the work starts. */
  settlement: "after" | "before";
}

/** One service as published by /api/services/:id. */
export interface ServiceDescriptor {
  id: string;
  name: string;
  description: string;
  keywords: readonly string[];
  method: string;
  endpoint: string;
  url: string;
  legacyEndpoints: readonly string[];
  /** Other names agents may know the service by: MCP tool name and legacy endpoint slugs. */
  aliases: string[];
  mcpToolName: string;
  mcp: { endpoint: string; transport: "streamable-http"; tool: string };
  inputSchema: Record<string, unknown>;
  outputSchema: Record<string, unknown>;
  exampleRequest: unknown;
  exampleResponse: unknown;
  pricing: Pricing;
  acceptedPaymentMethods: Array<Record<string, unknown>>;
  links: Record<string, string>;
}

/** The paywall route that enforces a service's main endpoint. Throws if the route table and services disagree. */
export function routeOf(service: ServiceSpec, pw: PaywallMiddleware): ResolvedRoute<Request> {
  const key = `${service.method} ${service.endpoint}`;
  const route = pw.routes.find((r) => r.key === key) ?? pw.routes.find((r) => r.options.serviceId === service.id);
  if (!route?.staticPrice) throw new Error(`service ${service.id} has no statically priced paywall route ${key}`);
  return route;
}

/** Whole cents as dollars for display, integer math: 20 → "0.20". */
export function formatUsdCents(cents: number): string {
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`;
}

/** Pricing of a service as the paywall enforces it. */
export function pricingOf(route: ResolvedRoute<Request>): Pricing {
  const { amount, asset } = route.staticPrice!;
  return {
    amountCents: usdCents(amount, asset.decimals),
    amount: amount.toString(),
    amountDecimal: formatUnitsExact(amount, asset.decimals),
    currency: "USD",
    asset: { name: asset.eip712Name, address: asset.address, decimals: asset.decimals, network: route.network.caip2, ...(route.network.v1Name ? { v1Network: route.network.v1Name } : {}) },
    payTo: route.payTo,
    billingMode: "per_call",
    maxCalls: route.maxCalls,
    prepaidAmount: (amount * BigInt(route.maxCalls)).toString(),
    prepaidTtlSeconds: route.tokenTtl,
    settlement: route.settlement,
  };
}

/** Describe every service for clients at `origin` (e.g. "https://api.example.com"). */
export function describeServices(services: readonly ServiceSpec[], pw: PaywallMiddleware, origin: string): ServiceDescriptor[] {
  return services.map((s) => {
    const route = routeOf(s, pw);
    const pricing = pricingOf(route);
    const slugs = s.legacyEndpoints.map((p) => p.split("/").pop()!).filter((x) => x && x !== s.id);
    return {
      id: s.id,
      name: s.name,
      description: s.description,
      keywords: s.keywords,
      method: s.method,
      endpoint: s.endpoint,
      url: origin + s.endpoint,
      legacyEndpoints: s.legacyEndpoints,
      aliases: [...new Set([s.mcpToolName, ...slugs])],
      mcpToolName: s.mcpToolName,
      mcp: { endpoint: origin + PATHS.mcp, transport: "streamable-http", tool: s.mcpToolName },
      inputSchema: s.inputSchema as Record<string, unknown>,
      outputSchema: s.outputSchema as Record<string, unknown>,
      exampleRequest: s.exampleRequest,
      exampleResponse: s.exampleResponse,
      pricing,
      acceptedPaymentMethods: [
        {
          type: "x402",
          scheme: "exact",
          x402Versions: [1, 2],
          network: pricing.asset.network,
          ...(pricing.asset.v1Network ? { v1Network: pricing.asset.v1Network } : {}),
          asset: pricing.asset.address,
          amount: pricing.amount,
          payTo: pricing.payTo,
          requestHeaders: { v1: "X-PAYMENT", v2: "PAYMENT-SIGNATURE" },
          responseHeaders: { v1: "X-PAYMENT-RESPONSE", v2: "PAYMENT-RESPONSE", required: "PAYMENT-REQUIRED" },
          mcpMeta: "x402/payment",
        },
        {
          type: "prepaid_token",
          header: "X-Payment-Token",
          mcpArgument: "paymentToken",
          callsPerPayment: pricing.maxCalls,
          create: { method: "POST", url: origin + PATHS.payments, body: { serviceId: s.id } },
          pay: { method: "POST", url: `${origin}${PATHS.payments}/{paymentId}/pay`, with: "an x402 payment (X-PAYMENT or PAYMENT-SIGNATURE) of prepaidAmount" },
        },
      ],
      links: {
        self: `${origin}${PATHS.services}/${s.id}`,
        openapi: origin + PATHS.openapi,
        llms: origin + PATHS.llms,
      },
    };
  });
}
