/**
 * Networks server402 knows, with their default USDC asset and its EIP-712
 * domain. Both v1 names (`base-sepolia`) and CAIP-2 ids (`eip155:84532`) resolve.
 */
import { getAddress, isAddress, type Address } from "viem";
import { ConfigError } from "../errors.js";

/** An ERC-20 asset that supports EIP-3009 `transferWithAuthorization`. */
export interface AssetInfo {
  address: Address;
  decimals: number;
  /** EIP-712 domain name, must equal the token's on-chain `name()`. */
  eip712Name: string;
  /** EIP-712 domain version, must equal the token's on-chain `version()`. */
  eip712Version: string;
}

export interface NetworkInfo {
  chainId: number;
  /** CAIP-2 id, e.g. `eip155:84532`. */
  caip2: string;
  /** x402 v1 name, when v1 clients know this network. */
  v1Name?: string;
  /** Default USDC, when known. */
  usdc?: AssetInfo;
}

const usdc = (address: string, eip712Name: string): AssetInfo => ({
  address: getAddress(address),
  decimals: 6,
  eip712Name,
  eip712Version: "2",
});

const TABLE: NetworkInfo[] = [
  { chainId: 8453, v1Name: "base", usdc: usdc("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin") },
  { chainId: 84532, v1Name: "base-sepolia", usdc: usdc("0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC") },
  { chainId: 43114, v1Name: "avalanche", usdc: usdc("0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E", "USD Coin") },
  { chainId: 43113, v1Name: "avalanche-fuji", usdc: usdc("0x5425890298aed601595a70AB815c96711a31Bc65", "USD Coin") },
  { chainId: 137, v1Name: "polygon", usdc: usdc("0x3c499c542cef5e3811e1192ce70d8cc03d5c3359", "USD Coin") },
  { chainId: 80002, v1Name: "polygon-amoy", usdc: usdc("0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582", "USDC") },
  { chainId: 1, usdc: usdc("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USD Coin") },
].map((n) => ({ ...n, caip2: `eip155:${n.chainId}` }));

const BY_NAME = new Map<string, NetworkInfo>();
for (const n of TABLE) {
  BY_NAME.set(n.caip2, n);
  if (n.v1Name) BY_NAME.set(n.v1Name, n);
}

/** Names accepted in options, for error messages. */
export const KNOWN_NETWORKS: readonly string[] = [...BY_NAME.keys()];

/**
 * Resolve a network by v1 name or CAIP-2 id. Unknown `eip155:<id>` chains
 * resolve without a default asset (the route must then name its asset).
 * Returns undefined for anything else.
 */
export function findNetwork(name: string): NetworkInfo | undefined {
  const known = BY_NAME.get(name);
  if (known) return known;
  const m = /^eip155:([1-9][0-9]{0,15})$/.exec(name);
  if (m) return { chainId: Number(m[1]), caip2: name };
  return undefined;
}

/** Like {@link findNetwork} but throws a ConfigError naming the known networks. */
export function resolveNetwork(name: unknown, option: string): NetworkInfo {
  const n = typeof name === "string" ? findNetwork(name) : undefined;
  if (!n) {
    throw new ConfigError(option, `unknown network ${JSON.stringify(name)}. Use a v1 name or CAIP-2 id, one of: ${KNOWN_NETWORKS.join(", ")} (or any "eip155:<chainId>" with an explicit asset).`);
  }
  return n;
}

/** Validate and checksum an EVM address from options. */
export function requireAddress(value: unknown, option: string): Address {
  if (typeof value !== "string" || !isAddress(value, { strict: false })) {
    throw new ConfigError(option, `${JSON.stringify(value)} is not an EVM address. Give 0x followed by 40 hex digits.`);
  }
  return getAddress(value);
}
