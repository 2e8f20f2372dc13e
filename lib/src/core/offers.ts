/**
 * Several payment options per route (the v2 `accepts` list with more than one
 * entry, as @x402/express 2.x lets a route declare): e.g. USDC on two chains,
 * two assets, or two payees. Every option is advertised (v1 body, v2 header,
 * MCP offer); an incoming payment is matched to exactly one of them before it
 * is verified, locked and settled against that one. A payment that matches
 * none is refused; a single-option route is unchanged.
 */
import type { Address } from "viem";
import { ConfigError, PaymentError, SettlementError } from "../errors.js";
import { createChainReader } from "../chain/reader.js";
import type { SettleRequest, SettleResult, Settler } from "../chain/settler.js";
import { chainChecker, type PaymentChecker } from "./checker.js";
import { decodeV1 } from "../protocol/payload.js";
import { resolveNetwork, requireAddress } from "../protocol/networks.js";
import { resolvePrice, type AtomicPrice, type PriceInput } from "../protocol/price.js";
import { authorizationDigest, recoverSigner } from "../protocol/verify.js";
import { offersOf, type Offer, type OfferOption } from "../protocol/requirements.js";

export { offersOf };

/** One payment option of a route: what differs between the entries of its `accepts` list. */
export interface PaymentOption {
  /** A static price: "$0.01" (the option network's USDC) or `{ amount, asset }`. Default: the route's `price` (which must then be static). */
  price?: PriceInput;
  /** Network of this option (v1 name or CAIP-2 id). Default: the route's, else the paywall's. */
  network?: string;
  /** Payee of this option. Default: the route's, else the paywall's. */
  payTo?: string;
  /** Seconds the client's authorization should stay valid. Default: the route's, else the paywall's, else 300. */
  maxTimeoutSeconds?: number;
}

/** The most options one route may offer (each is one entry of every 402 answer). */
const MAX_PAYMENT_OPTIONS = 16;

/** An option resolved at startup: network, asset, exact amount and payee. */
export type ResolvedOption = OfferOption;

/**
 * Resolve a route's `accepts` list (validated at startup). Prices must be
 * static: a 402 answer lists every option, and the amount offered is the
 * amount verified and charged. Two options that would be paid identically
 * (same network, asset, payee and amount) are refused: a payment must name
 * exactly one.
 */
export function resolveOptions(
  at: string,
  accepts: unknown,
  defaults: { price?: unknown; network?: string; payTo?: string; maxTimeoutSeconds: number; asset?: AtomicPrice["asset"] },
  settler: Settler,
): ResolvedOption[] {
  if (!Array.isArray(accepts) || accepts.length === 0 || accepts.length > MAX_PAYMENT_OPTIONS) {
    throw new ConfigError(`${at}.accepts`, `must be a list of 1 to ${MAX_PAYMENT_OPTIONS} payment options, e.g. [{ network: "base", price: "$0.01" }, { network: "base-sepolia", price: "$0.01" }].`);
  }
  const seen = new Set<string>();
  const out: ResolvedOption[] = [];
  accepts.forEach((raw: unknown, i) => {
    const here = `${at}.accepts[${i}]`;
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(here, "must be an object like { price, network?, payTo? }.");
    const opt = raw as PaymentOption;
    const network = resolveNetwork(opt.network ?? defaults.network ?? "base-sepolia", opt.network ? `${here}.network` : "network");
    const payTo = requireAddress(opt.payTo ?? defaults.payTo, opt.payTo ? `${here}.payTo` : "payTo");
    const price = opt.price ?? defaults.price;
    if (price === undefined || price === null) throw new ConfigError(`${here}.price`, `is required (or give the route a static price), e.g. "$0.01".`);
    if (typeof price === "function") throw new ConfigError(`${here}.price`, "must be static in a list of payment options (every 402 answer lists them all); use a single-option route for a price that depends on the request.");
    const defaultAsset = defaults.asset && !opt.network ? resolvePrice({ amount: "1", asset: defaults.asset }, undefined, "asset").asset : network.usdc;
    const resolved = resolvePrice(price as PriceInput, defaultAsset, `${here}.price`);
    const maxTimeoutSeconds = opt.maxTimeoutSeconds ?? defaults.maxTimeoutSeconds;
    if (!Number.isInteger(maxTimeoutSeconds) || maxTimeoutSeconds < 10 || maxTimeoutSeconds > 86_400) {
      throw new ConfigError(`${here}.maxTimeoutSeconds`, "must be an integer from 10 to 86400.");
    }
    const key = `${network.caip2}|${resolved.asset.address}|${payTo}|${resolved.amount}`.toLowerCase();
    if (seen.has(key)) throw new ConfigError(here, "repeats another option (same network, asset, payTo and amount): a payment could not say which one it pays.");
    seen.add(key);
    out.push({ network, asset: resolved.asset, amount: resolved.amount, payTo, maxTimeoutSeconds });
  });
  const networks = settlerNetworks(settler);
  const chains = new Set(out.map((o) => o.network.caip2));
  if (networks) {
    for (const c of chains) {
      if (!networks.includes(c)) throw new ConfigError(`${at}.accepts`, `offers ${c}, which the settler does not cover (it settles ${networks.join(", ")}); add it to settlerByNetwork({ ... }).`);
    }
  } else if (chains.size > 1) {
    throw new ConfigError(`${at}.accepts`, `offers several networks (${[...chains].join(", ")}) but the settler settles one; pass settler: settlerByNetwork({ "<network>": settler, ... }).`);
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function sameAddress(a: unknown, b: string): boolean {
  return typeof a === "string" && a.toLowerCase() === b.toLowerCase();
}

/**
 * The one option of `offer` a payment object pays. A single-option offer is
 * returned as is (decoding then names what does not match). v2: the client's
 * `accepted` must equal one option in network, asset, payTo and amount. v1
 * names only the network: options on it are told apart by the
 * authorization's payee and value and, when assets differ, by whose EIP-712
 * domain the signature recovers under. Throws PaymentError when none matches.
 */
export async function chooseOffer(version: 1 | 2, raw: Record<string, unknown>, offer: Offer): Promise<Offer> {
  const all = offersOf(offer);
  if (all.length === 1) return offer;
  if (version === 2) {
    const acc = raw.accepted;
    if (!isObject(acc)) return offer; // decoding refuses it with the reason
    const match = all.filter((o) => acc.network === o.network.caip2 && sameAddress(acc.asset, o.asset.address) && sameAddress(acc.payTo, o.payTo) && acc.amount === o.amount.toString());
    if (match.length === 1) return match[0]!;
    throw new PaymentError(
      "invalid_payment_requirements",
      `accepted (network ${JSON.stringify(acc.network)}, asset ${JSON.stringify(acc.asset)}, payTo ${JSON.stringify(acc.payTo)}, amount ${JSON.stringify(acc.amount)}) is none of this resource's ${all.length} payment options; copy one entry of PAYMENT-REQUIRED's accepts as offered.`,
    );
  }
  let candidates = all.filter((o) => o.network.v1Name !== undefined && raw.network === o.network.v1Name);
  if (candidates.length === 0) {
    const names = all.map((o) => o.network.v1Name).filter((n): n is string => !!n);
    throw new PaymentError("invalid_network", `network ${JSON.stringify(raw.network)} is none of the offered ${JSON.stringify([...new Set(names)])}.`);
  }
  if (candidates.length === 1) return candidates[0]!;
  const decoded = decodeV1(raw, candidates[0]!); // same v1 network: only parses
  const auth = decoded.authorization;
  const byPayee = candidates.filter((o) => sameAddress(auth.to, o.payTo));
  if (byPayee.length === 1) return byPayee[0]!;
  if (byPayee.length > 1) candidates = byPayee;
  const exact = candidates.filter((o) => auth.value === o.amount);
  if (exact.length === 1) return exact[0]!;
  if (exact.length > 1) candidates = exact;
  // same network, payee and value: the asset is told by the signature's EIP-712 domain
  for (const o of candidates) {
    const signer: Address | undefined = await recoverSigner(authorizationDigest(auth, o.asset, o.network.chainId), decoded.signature).catch(() => undefined);
    if (signer && signer.toLowerCase() === auth.from.toLowerCase()) return o;
  }
  return candidates[0]!; // no EOA signature recovers: verification refuses it, or a smart wallet's check decides
}

/** What `settlerByNetwork` takes per network: a settler, and optionally the RPC URL of the default pre-handler check. */
export type NetworkSettlerEntry = Settler | { settler: Settler; rpcUrl?: string };

/** A settler that hands each payment to its network's settler, with the networks it covers. */
export interface NetworkSettler extends Settler {
  /** CAIP-2 ids it settles. */
  readonly networks: readonly string[];
  /** The pre-handler check per network: on-chain where an `rpcUrl` was given, else the network settler's own (a facilitator's `/verify`), else none. */
  checker(): PaymentChecker | undefined;
}

function settlerNetworks(settler: Settler): readonly string[] | undefined {
  const n = (settler as Partial<NetworkSettler>).networks;
  return Array.isArray(n) ? n : undefined;
}

/**
 * One settler per network, for routes that offer several networks:
 * `settlerByNetwork({ "base": relayerSettler({...}), "eip155:84532": { settler, rpcUrl } })`.
 * A payment goes to the settler of the network of the option it paid.
 * Without `rpcUrl` in the paywall options, the default pre-handler check is
 * this settler's `checker()` (each network's own).
 */
export function settlerByNetwork(map: Record<string, NetworkSettlerEntry>): NetworkSettler {
  if (!map || typeof map !== "object" || Object.keys(map).length === 0) throw new ConfigError("settlerByNetwork", 'give at least one network, e.g. { "base-sepolia": relayerSettler({ ... }) }.');
  const byChain = new Map<number, { settler: Settler; rpcUrl?: string; caip2: string }>();
  for (const [name, entry] of Object.entries(map)) {
    const network = resolveNetwork(name, `settlerByNetwork[${JSON.stringify(name)}]`);
    const e = entry && typeof (entry as Settler).settle === "function" ? { settler: entry as Settler } : (entry as { settler: Settler; rpcUrl?: string });
    if (!e || !e.settler || typeof e.settler.settle !== "function") throw new ConfigError(`settlerByNetwork[${JSON.stringify(name)}]`, "must be a settler or { settler, rpcUrl? }.");
    if (byChain.has(network.chainId)) throw new ConfigError(`settlerByNetwork[${JSON.stringify(name)}]`, `names ${network.caip2} twice.`);
    byChain.set(network.chainId, { ...e, caip2: network.caip2 });
  }
  const of = (req: SettleRequest): Settler => {
    const e = byChain.get(req.chainId);
    if (!e) throw new SettlementError("unexpected_settle_error", `no settler for chain ${req.chainId}.`);
    return e.settler;
  };
  let checker: PaymentChecker | undefined | null = null;
  return {
    kind: "by-network",
    networks: [...byChain.values()].map((e) => e.caip2),
    settle: (req: SettleRequest): Promise<SettleResult> => of(req).settle(req),
    async confirm(req: SettleRequest, transaction: string): Promise<SettleResult | undefined> {
      const s = of(req);
      return s.confirm ? s.confirm(req, transaction) : s.settle(req);
    },
    checker(): PaymentChecker | undefined {
      if (checker !== null) return checker;
      const checks = new Map<number, PaymentChecker>();
      let onChain = true;
      for (const [chainId, e] of byChain) {
        const own = e.rpcUrl ? chainChecker(createChainReader({ rpcUrl: e.rpcUrl, chainId })) : (e.settler as { checker?: () => PaymentChecker | undefined }).checker?.();
        if (own) checks.set(chainId, own);
        if (!own?.onChain) onChain = false;
      }
      checker = checks.size === 0 ? undefined : { onChain, check: async (req) => checks.get(req.chainId)?.check(req) };
      return checker;
    },
  };
}
