/**
 * `/llms.txt` (llmstxt.org format): the services with their prices, where
 * everything is, and the payment flows in short, generated from the catalog.
 */
import { formatUsdCents, PATHS, type ServiceDescriptor } from "./catalog.js";
import { FLOWS } from "./well-known.js";

/** The llms.txt text for clients at `origin`. */
export function llmsTxt(services: readonly ServiceDescriptor[], origin: string): string {
  const lines: string[] = [
    "# server402 example",
    "",
    "> Pay-per-call APIs for AI agents over HTTP and MCP. Pay each call with x402 (v1 X-PAYMENT or v2 PAYMENT-SIGNATURE, USDC via EIP-3009) or with a prepaid token. A failed call is never charged.",
    "",
    "## Services",
    "",
  ];
  for (const s of services) {
    const p = s.pricing;
    lines.push(
      `- [${s.name}](${s.links.self}): ${s.description}`,
      `  - HTTP: ${s.method} ${s.url} (legacy: ${s.legacyEndpoints.map((e) => origin + e).join(", ") || "none"}), JSON body keys: ${Object.keys((s.inputSchema.properties as object) ?? {}).join(", ")}`,
      `  - MCP: tool \`${s.mcpToolName}\` at ${s.mcp.endpoint}`,
      `  - Price: USD ${formatUsdCents(p.amountCents)} per call (${p.amount} atomic units of ${p.asset.name} ${p.asset.address} on ${p.asset.network}, payTo ${p.payTo}); a prepaid payment buys ${p.maxCalls} call(s) for ${p.prepaidAmount} atomic units`,
    );
  }
  const section = (title: string, steps: readonly string[]) => ["", `## ${title}`, "", ...steps.map((s, i) => `${i + 1}. ${s}`)];
  lines.push(
    ...section("Pay with x402 (HTTP)", FLOWS.x402),
    ...section("Pay with a prepaid token", FLOWS.prepaid),
    ...section("Call over MCP", FLOWS.mcp),
    "",
    "## Discovery",
    "",
    `- [Service catalog](${origin}${PATHS.services}): JSON, with schemas, examples and pricing`,
    `- [Search](${origin}${PATHS.search}?q=face): ranked text search`,
    `- [OpenAPI 3.1](${origin}${PATHS.openapi})`,
    `- [Well-known document](${origin}${PATHS.wellKnown})`,
    "",
    "## Optional",
    "",
    `- [Health](${origin}${PATHS.healthz}), [readiness](${origin}${PATHS.readyz}), [metrics](${origin}${PATHS.metrics})`,
    "",
  );
  return lines.join("\n");
}
