/**
 * Options of `paywall()` / `requirePayment()`, and their validation at
 * startup. Every mistake throws a ConfigError naming the option and the fix.
 */
import type { Address } from "viem";
import { ConfigError } from "../errors.js";
import type { Settler } from "../chain/settler.js";
import { checkSettlerNetwork } from "../chain/settler-options.js";
import type { PaymentChecker } from "./checker.js";
import type { PaymentEvent } from "./engine.js";
import type { AbuseLimits } from "./limits.js";
import type { PaymentIdentifierOptions } from "./idempotency.js";
import { resolveNetwork, requireAddress, type AssetInfo, type NetworkInfo } from "../protocol/networks.js";
import { resolvePrice, type AtomicPrice, type PriceInput, type ResolvedPrice } from "../protocol/price.js";
import type { Store } from "../state/store.js";
import { resolveOptions, type PaymentOption, type ResolvedOption } from "./offers.js";
import { hookProblem, type PaymentHooks } from "./hooks.js";
import { checkPaymentRequiredBody, type PaymentRequiredBody } from "./bodies.js";
import { permit2Terms } from "./permit2-options.js";
import type { Permit2OfferTerms } from "../protocol/permit2.js";

/** Where the prepaid payments API is served and advertised unless `paymentsPath` says otherwise. */
export const DEFAULT_PAYMENTS_PATH = "/api/payments";

/** A price, or a function of the request returning one (dynamic pricing). */
export type RoutePrice<Req> = PriceInput | ((req: Req) => PriceInput | Promise<PriceInput>);

/** One priced route. */
export interface RouteOptions<Req = unknown> {
  /** "$0.20", "0.20", `{ amount: "200000", asset }`, or `(req) => price`. The amount offered is exactly the amount verified and charged. Optional when every `accepts` option has its own price. */
  price?: RoutePrice<Req>;
  /**
   * Several payment options (the v2 `accepts` list), e.g. USDC on two
   * networks: `[{ network: "base", price: "$0.01" }, { network: "base-sepolia", price: "$0.01" }]`.
   * Each option's missing fields come from the route, then the paywall;
   * prices must be static. A payment is matched to exactly one option and
   * verified and settled against it; several networks need
   * `settler: settlerByNetwork({...})`.
   */
  accepts?: PaymentOption[];
  /**
   * Usage-based pricing instead of `price`: the most a request may cost
   * ("$0.50", an atomic price or a function, like `price`). The route is
   * offered as x402 `upto` over Permit2 (v2 only; needs a relayer settler and
   * settlement "after"); the handler reports what it used with
   * `req.payment.charge("$0.07")` (or atomic units) and only that is settled.
   */
  upto?: RoutePrice<Req>;
  /** How payers authorize the transfer: "eip3009" (default, e.g. USDC) or "permit2" (any ERC-20; the payer approves Permit2 once). Overrides the paywall's. */
  assetTransferMethod?: "eip3009" | "permit2";
  /** Human description, shown to clients in the 402 and in catalogs. */
  description?: string;
  /** MIME type of the paid response. Default "application/json". */
  mimeType?: string;
  /** Service id: lets prepaid `X-Payment-Token`s bought for this service pay this route. */
  serviceId?: string;
  /** Calls a prepaid payment for this service buys. Default 1. */
  maxCalls?: number;
  /** Lifetime of a prepaid payment for this service, in seconds. Default 86 400 (24 h). */
  tokenTtl?: number;
  /** Overrides the paywall's payTo for this route. */
  payTo?: string;
  /** Overrides the paywall's network for this route. */
  network?: string;
  /** Overrides the paywall's maxTimeoutSeconds. */
  maxTimeoutSeconds?: number;
  /** Overrides the paywall's settlement mode. */
  settlement?: SettlementMode;
  /** Absolute resource URL to advertise instead of the request's own URL. */
  resource?: string;
  /** JSON schema of the request body, advertised in the v1 `outputSchema.input`. */
  inputSchema?: Record<string, unknown>;
  /** JSON schema of the response, advertised in the v1 `outputSchema.output`. */
  outputSchema?: Record<string, unknown>;
  /** Whether discovery services may list this route. Default true. */
  discoverable?: boolean;
  /**
   * Take an x402 v1 authorization for more than the price (and settle all of
   * it). Default false: a value above the price is refused with
   * `invalid_exact_evm_payload_authorization_value_mismatch`.
   */
  acceptOverpayment?: boolean;
  /** This route's handler deadline in ms (overrides the paywall's `handlerTimeoutMs`). */
  handlerTimeoutMs?: number;
  /** Fields added to this route's 402 JSON bodies (overrides the paywall's); the x402 fields and header are untouched. */
  paymentRequiredBody?: PaymentRequiredBody;
}

/**
 * `after` (default): verify → lock → run the handler with its response held →
 * settle only if its status < 400 → send. `before`: settle, then run the handler.
 */
export type SettlementMode = "after" | "before";

/** Options shared by `paywall()` and `requirePayment()`. */
export interface PaymentOptions {
  /** Address that receives payments. */
  payTo: string;
  /** Network as a v1 name ("base", "base-sepolia") or CAIP-2 id ("eip155:8453"). Default "base-sepolia". */
  network?: string;
  /** Asset for money prices, when not the network's USDC. */
  asset?: AtomicPrice["asset"];
  /** How payers authorize the transfer on every route: "eip3009" (default) or "permit2" (x402 `exact` over Permit2, for ERC-20s without EIP-3009). */
  assetTransferMethod?: "eip3009" | "permit2";
  /** Seconds a client's authorization should stay valid. Default 300. */
  maxTimeoutSeconds?: number;
  /** Settlement mode. Default "after". */
  settlement?: SettlementMode;
  /** Moves the money: `relayerSettler(...)` or `facilitatorSettler(...)`. Required. */
  settler: Settler;
  /**
   * Pre-handler check that the authorization is unused and funded. Default:
   * on-chain via `rpcUrl` when given, else the facilitator's `/verify` when the
   * settler is a facilitator; `false` turns it off.
   */
  checker?: PaymentChecker | false;
  /** JSON-RPC URL for the default on-chain check. */
  rpcUrl?: string;
  /** State: nonce locks, prepaid payments, ledger. Default: a new MemoryStore. */
  store?: Store;
  /** Public origin used in resource URLs, e.g. "https://api.example.com". Default: from the request (honours `trust proxy`). */
  publicUrl?: string;
  /**
   * How long a token call stays reserved if the process dies mid-request, in
   * ms. Default 120 000. While a handler runs, its call's lease is renewed
   * every quarter of this. Must not be shorter than `handlerTimeoutMs`.
   */
  tokenLeaseMs?: number;
  /**
   * The longest a paid handler may run (its deadline), in ms, when the app
   * enforces one. With it, a `tokenLeaseMs` shorter than the deadline is a
   * startup error on the routes that accept tokens.
   */
  handlerTimeoutMs?: number;
  /** Accept prepaid `X-Payment-Token`s on routes with a serviceId. Default true. */
  acceptTokens?: boolean;
  /** Where the payments API is mounted, advertised in 402 answers. Default `DEFAULT_PAYMENTS_PATH` ("/api/payments"). */
  paymentsPath?: string;
  /** Receives payment events (metrics). Must not throw. */
  onEvent?: (e: PaymentEvent) => void;
  /** Lifecycle hooks: before/after verify, verify failure, before/after settle, settle failure (see `PaymentHooks`). */
  hooks?: PaymentHooks;
  /** Fields added to every route's 402 JSON bodies, e.g. `{ docs: "https://..." }` or `(ctx) => ({ ... })`; the x402 fields and header are untouched. */
  paymentRequiredBody?: PaymentRequiredBody;

  // --- abuse limits (issue 14, A5–A7) ---
  /** Retries of failed payments, work in flight per payer, and the budget of chain checks for unpaid traffic; see `AbuseLimits` for the defaults. */
  abuseLimits?: AbuseLimits;

  /**
   * Issue 17.3: idempotent retries with the x402 v2 `payment-identifier` extension, advertised in
   * every v2 PaymentRequired (on by default when the store supports it); `false` turns it off.
   */
  paymentIdentifier?: PaymentIdentifierOptions | false;
}

/** A route with its options validated and its static parts precomputed. */
export interface ResolvedRoute<Req> {
  key: string;
  options: RouteOptions<Req>;
  network: NetworkInfo;
  payTo: Address;
  asset: AssetInfo;
  maxTimeoutSeconds: number;
  settlement: SettlementMode;
  /** Set when the price is static. */
  staticPrice?: ResolvedPrice;
  priceFn?: (req: Req) => PriceInput | Promise<PriceInput>;
  mimeType: string;
  description: string;
  maxCalls: number;
  tokenTtl: number;
  /** The v1 `outputSchema` advertised for this route; `method` is the request's when the key names no verb. */
  outputSchema(method: string): Record<string, unknown>;
  /** The payment options after the first, when the route has an `accepts` list of several (the first is `network`/`payTo`/`staticPrice`). */
  alternatives?: readonly ResolvedOption[];
  /** Custom fields of this route's 402 bodies (the route's option, else the paywall's). */
  paymentRequiredBody?: PaymentRequiredBody;
  /** Set when the route is paid over Permit2 (`exact` with assetTransferMethod permit2, or `upto`). */
  permit2?: Permit2OfferTerms;
}

/** Build the v1 `outputSchema` of a route once per HTTP method. */
function outputSchemaOf<Req>(key: string, r: RouteOptions<Req>): (method: string) => Record<string, unknown> {
  const verb = /^([A-Za-z]+)\s/.exec(key.trim())?.[1]?.toUpperCase();
  const byMethod = new Map<string, Record<string, unknown>>();
  return (method) => {
    const m = verb ?? method;
    let schema = byMethod.get(m);
    if (!schema) {
      const input = { type: "http", method: m, discoverable: r.discoverable ?? true, ...(r.inputSchema ? { bodyType: "json", bodyFields: r.inputSchema } : {}) };
      schema = { input, ...(r.outputSchema ? { output: r.outputSchema } : {}) };
      byMethod.set(m, schema);
    }
    return schema;
  };
}

const DEFAULT_NETWORK = "base-sepolia";

/** The first-option price objects of routes with several options, and the other options. */
const optionPrices = new WeakMap<ResolvedPrice, readonly ResolvedOption[]>();

/**
 * The other payment options an offer for `route` carries: the route's own,
 * only while its price is the route's own first option. A copy of the route
 * with another price (a prepaid payment for several calls) offers that price
 * alone, never the per-call prices of the other options.
 */
export function alternativesOf<Req>(route: ResolvedRoute<Req>): readonly ResolvedOption[] | undefined {
  return route.staticPrice ? optionPrices.get(route.staticPrice) : undefined;
}

/** Validate the shared options (without routes). */
export function validateShared(o: PaymentOptions): void {
  if (!o || typeof o !== "object") throw new ConfigError("options", "pass an options object.");
  requireAddress(o.payTo, "payTo");
  const network = resolveNetwork(o.network ?? DEFAULT_NETWORK, "network");
  if (!o.settler || typeof o.settler.settle !== "function") {
    throw new ConfigError("settler", "is required: pass relayerSettler({ rpcUrl, chainId, privateKey }) or facilitatorSettler({ url }).");
  }
  checkSettlerNetwork(o.settler, network, "network");
  if (o.settlement !== undefined && o.settlement !== "after" && o.settlement !== "before") {
    throw new ConfigError("settlement", `must be "after" or "before", got ${JSON.stringify(o.settlement)}.`);
  }
  if (o.maxTimeoutSeconds !== undefined && (!Number.isInteger(o.maxTimeoutSeconds) || o.maxTimeoutSeconds < 10 || o.maxTimeoutSeconds > 86_400)) {
    throw new ConfigError("maxTimeoutSeconds", "must be an integer from 10 to 86400.");
  }
  if (o.tokenLeaseMs !== undefined && (!Number.isInteger(o.tokenLeaseMs) || o.tokenLeaseMs < 1000 || o.tokenLeaseMs > 3_600_000)) {
    throw new ConfigError("tokenLeaseMs", "must be whole milliseconds from 1000 to 3600000 (longer than your slowest handler).");
  }
  checkDeadline(o.handlerTimeoutMs, "handlerTimeoutMs");
  checkPaymentRequiredBody("paymentRequiredBody", o.paymentRequiredBody);
  const hooks = hookProblem(o.hooks);
  if (hooks) throw new ConfigError("hooks", hooks);
  if (o.publicUrl !== undefined && !/^https?:\/\/[^/\s]+$/.test(o.publicUrl)) {
    throw new ConfigError("publicUrl", `must be an origin like "https://api.example.com" (no path, no trailing slash), got ${JSON.stringify(o.publicUrl)}.`);
  }
}

/** A handler deadline, when given, is whole milliseconds from 1 to 3 600 000. */
function checkDeadline(ms: number | undefined, option: string): void {
  if (ms !== undefined && (!Number.isInteger(ms) || ms < 1 || ms > 3_600_000)) {
    throw new ConfigError(option, "must be whole milliseconds from 1 to 3600000 (the longest the handler may run).");
  }
}

/**
 * A token call's lease must outlast the handler's deadline: the lease is
 * renewed while the handler runs, but a lease shorter than the deadline says
 * the configuration was not thought through (and lapses at the first missed renewal).
 */
function checkLease<Req>(at: string, r: RouteOptions<Req>, o: PaymentOptions): void {
  if (!r.serviceId || o.acceptTokens === false) return;
  const deadline = r.handlerTimeoutMs ?? o.handlerTimeoutMs;
  const lease = o.tokenLeaseMs ?? 120_000;
  if (deadline === undefined || lease >= deadline) return;
  const source = r.handlerTimeoutMs !== undefined ? `${at}.handlerTimeoutMs` : "handlerTimeoutMs";
  throw new ConfigError(
    "tokenLeaseMs",
    `is ${lease} ms, shorter than ${source} (${deadline} ms): a token call's reservation could lapse while its handler still runs and the call be spent twice. Set tokenLeaseMs to at least ${deadline} (or shorten the deadline).`,
  );
}

/** Validate one route and precompute what can be. */
export function resolveRoute<Req>(key: string, r: RouteOptions<Req>, o: PaymentOptions): ResolvedRoute<Req> {
  const at = `routes[${JSON.stringify(key)}]`;
  if (!r || typeof r !== "object") throw new ConfigError(at, "must be an object with at least { price }.");
  const price = r.upto ?? r.price;
  if ((price === undefined || price === null) && r.accepts === undefined) throw new ConfigError(`${at}.price`, `is required, e.g. "$0.20" (or upto: "$0.50" for usage-based pricing).`);
  const network = resolveNetwork(r.network ?? o.network ?? DEFAULT_NETWORK, r.network ? `${at}.network` : "network");
  if (o.settler) checkSettlerNetwork(o.settler, network, r.network ? `${at}.network` : "network");
  const payTo = requireAddress(r.payTo ?? o.payTo, r.payTo ? `${at}.payTo` : "payTo");
  const defaultAsset = o.asset ? resolvePrice({ amount: "1", asset: o.asset }, undefined, "asset").asset : network.usdc;
  const maxCalls = r.maxCalls ?? 1;
  if (!Number.isInteger(maxCalls) || maxCalls < 1 || maxCalls > 1_000_000) throw new ConfigError(`${at}.maxCalls`, "must be an integer from 1 to 1000000.");
  const tokenTtl = r.tokenTtl ?? 86_400;
  if (!Number.isInteger(tokenTtl) || tokenTtl < 60 || tokenTtl > 31_536_000) throw new ConfigError(`${at}.tokenTtl`, "must be whole seconds from 60 to 31536000.");
  if (r.serviceId !== undefined && !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(r.serviceId)) {
    throw new ConfigError(`${at}.serviceId`, "must be 1–64 characters of a-z, 0-9, '.', '_' or '-'.");
  }
  checkDeadline(r.handlerTimeoutMs, `${at}.handlerTimeoutMs`);
  checkLease(at, r, o);
  if (r.acceptOverpayment !== undefined && typeof r.acceptOverpayment !== "boolean") throw new ConfigError(`${at}.acceptOverpayment`, "must be true or false.");
  const maxTimeoutSeconds = r.maxTimeoutSeconds ?? o.maxTimeoutSeconds ?? 300;
  const resolved: ResolvedRoute<Req> = {
    key,
    options: r,
    network,
    payTo,
    asset: defaultAsset ?? (undefined as never),
    maxTimeoutSeconds,
    settlement: r.settlement ?? o.settlement ?? "after",
    mimeType: r.mimeType ?? "application/json",
    description: r.description ?? "",
    maxCalls,
    tokenTtl,
    outputSchema: outputSchemaOf(key, r),
    ...permit2Terms(at, r, o, r.settlement ?? o.settlement ?? "after"),
  };
  if (r.accepts !== undefined && resolved.permit2) throw new ConfigError(`${at}.accepts`, `cannot be combined with Permit2 (upto or assetTransferMethod "permit2"); offer those on their own route.`);
  checkPaymentRequiredBody(`${at}.paymentRequiredBody`, r.paymentRequiredBody);
  if (r.paymentRequiredBody !== undefined || o.paymentRequiredBody !== undefined) resolved.paymentRequiredBody = r.paymentRequiredBody ?? o.paymentRequiredBody;
  if (r.accepts !== undefined) {
    // several payment options: the first is the route's own network, payee and price; the rest ride along in every offer
    const [first, ...rest] = resolveOptions(at, r.accepts, { price: r.price, network: r.network ?? o.network, payTo: r.payTo ?? o.payTo, maxTimeoutSeconds, asset: o.asset }, o.settler);
    const primary: ResolvedPrice = { amount: first!.amount, asset: first!.asset };
    Object.assign(resolved, { network: first!.network, payTo: first!.payTo, asset: first!.asset, maxTimeoutSeconds: first!.maxTimeoutSeconds, staticPrice: primary });
    if (rest.length > 0) {
      resolved.alternatives = rest;
      optionPrices.set(primary, rest);
    }
  } else if (typeof price === "function") {
    resolved.priceFn = price;
    if (!defaultAsset) throw new ConfigError(`${at}.network`, `${network.caip2} has no default USDC; set the "asset" option.`);
  } else {
    resolved.staticPrice = resolvePrice(price as PriceInput, defaultAsset, `${at}.${r.upto !== undefined ? "upto" : "price"}`);
    resolved.asset = resolved.staticPrice.asset;
  }
  return resolved;
}
