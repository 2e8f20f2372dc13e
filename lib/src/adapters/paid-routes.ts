/**
 * What every adapter builds on, without Express: the engine, the resolved
 * route table, and the offer and 402 answer of a route. The Express paywall
 * and the MCP adapter both use it, so the two can never charge differently.
 */
import { createChainReader } from "../chain/reader.js";
import { facilitatorVerifiedWallets, smartWalletVerifier } from "../chain/smart-wallet.js";
import type { FacilitatorSettler } from "../chain/facilitator.js";
import { chainChecker, type PaymentChecker } from "../core/checker.js";
import { permit2Checker } from "../chain/permit2.js";
import { shape402Body } from "../core/bodies.js";
import { PaymentEngine } from "../core/engine.js";
import { alternativesOf, DEFAULT_PAYMENTS_PATH, resolveRoute, validateShared, type PaymentOptions, type ResolvedRoute, type RouteOptions } from "../core/options.js";
import { encodeHeader } from "../protocol/encoding.js";
import type { ResolvedPrice } from "../protocol/price.js";
import { NO_PAYMENT, NO_PAYMENT_V2, requirementsV1Of, toPaymentRequiredV2, type Offer } from "../protocol/requirements.js";
import { MemoryStore } from "../state/memory.js";
import { RouteTable } from "./routes.js";

/** A priced route table and the engine that takes its payments: a paywall middleware is one, `paidRoutes()` makes one. */
export interface PaidRoutes<Req = unknown> {
  /** @internal The shared engine (store, settler); not in the published types. */
  readonly engine: PaymentEngine;
  /** Resolved routes, in match order. */
  readonly routes: readonly ResolvedRoute<Req>[];
  /** The options given. */
  readonly options: PaymentOptions;
}

/** Create the engine and resolve the routes; `table` matches requests against them. */
export function buildPaidRoutes<Req>(options: PaymentOptions, routes: Record<string, RouteOptions<Req>>): PaidRoutes<Req> & { table: RouteTable<ResolvedRoute<Req>> } {
  validateShared(options);
  const resolved: Record<string, ResolvedRoute<Req>> = {};
  for (const [key, r] of Object.entries(routes)) resolved[key] = resolveRoute(key, r, options);
  const engine = new PaymentEngine({
    store: options.store ?? new MemoryStore(),
    settler: options.settler,
    checker: defaultChecker(options, Object.values(resolved)[0]?.network.chainId ?? 84532),
    tokenLeaseMs: options.tokenLeaseMs,
    onEvent: options.onEvent,
    abuseLimits: options.abuseLimits,
    hooks: options.hooks,
    paymentIdentifier: options.paymentIdentifier, // issue 17.3
    // smart-wallet signatures (ERC-1271 / ERC-6492) are checked on-chain through rpcUrl, else by the facilitator's
    // /verify when it checks every payment (the default check without rpcUrl); with neither only EOAs pay
    smartWallets: options.rpcUrl ? smartWalletVerifier({ rpcUrl: options.rpcUrl }) : facilitatorChecks(options) ? facilitatorVerifiedWallets : undefined,
  });
  const table = new RouteTable(resolved);
  return { engine, routes: table.routes.map((r) => r.value), options, table };
}

/**
 * True when the pre-handler check is a facilitator's /verify (no rpcUrl, no checker given, a facilitatorSettler).
 * Only a facilitator: other settlers with a `checker()` (settlerByNetwork) may check on-chain balances only, and a
 * forged EOA signature must still be refused locally.
 */
function facilitatorChecks(options: PaymentOptions): boolean {
  const settler = options.settler as Partial<FacilitatorSettler>;
  return !options.rpcUrl && options.checker === undefined && settler.kind === "facilitator" && typeof settler.checker === "function";
}

/** The pre-handler check: as given; else on-chain via rpcUrl; else the facilitator's /verify; `false` for none. */
function defaultChecker(options: PaymentOptions, chainId: number): PaymentChecker | undefined {
  if (options.checker === false) return undefined;
  if (options.checker) return options.checker;
  // Permit2 payments (nonce bitmap, allowance to Permit2, balance) in front of the EIP-3009 check
  if (options.rpcUrl) return permit2Checker({ rpcUrl: options.rpcUrl }, chainChecker(createChainReader({ rpcUrl: options.rpcUrl, chainId })));
  const settler = options.settler as Partial<FacilitatorSettler>;
  return typeof settler.checker === "function" ? settler.checker() : undefined;
}

/** The offer of `route` at `price` for `resource` (an absolute URL); `method` picks the advertised schema. */
export function offerOf<Req>(route: ResolvedRoute<Req>, price: ResolvedPrice, resource: string, method = "GET"): Offer {
  return {
    network: route.network,
    asset: price.asset,
    amount: price.amount,
    payTo: route.payTo,
    maxTimeoutSeconds: route.maxTimeoutSeconds,
    resource: route.options.resource ?? resource,
    description: route.description,
    mimeType: route.mimeType,
    outputSchema: route.outputSchema(method),
    alternatives: alternativesOf(route),
    ...(route.permit2 ? { permit2: route.permit2 } : {}),
  };
}

/**
 * The 402 answer for an offer: v1 body (every option v1 clients know, how to buy a prepaid token when the
 * route sells them, and the route's custom fields) and the v2 header value (`paymentIds`: advertise the
 * payment-identifier extension).
 */
export function paymentRequiredOf<Req>(offer: Offer, route: ResolvedRoute<Req>, error: string, base: string, options: PaymentOptions, paymentIds = false): { body: Record<string, unknown>; header: string } {
  const body: Record<string, unknown> = { x402Version: 1, error, accepts: requirementsV1Of(offer) };
  if (options.acceptTokens !== false && route.options.serviceId) {
    body.prepaid = {
      header: "X-Payment-Token",
      serviceId: route.options.serviceId,
      create: { method: "POST", url: `${base}${options.paymentsPath ?? DEFAULT_PAYMENTS_PATH}`, body: { serviceId: route.options.serviceId } },
    };
  }
  // each version's `error` names the header that version pays with
  return { body: shape402Body(route.paymentRequiredBody, body, offer, NO_PAYMENT), header: encodeHeader(toPaymentRequiredV2(offer, error === NO_PAYMENT ? NO_PAYMENT_V2 : error, paymentIds)) };
}
