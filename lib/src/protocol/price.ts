/**
 * Prices, in exact integer math. A money string such as "$0.20" becomes an
 * integer amount of the asset's smallest unit (200000 for 6-decimal USDC);
 * no floating point is ever involved.
 */
import { getAddress, isAddress } from "viem";
import { ConfigError } from "../errors.js";
import type { AssetInfo } from "./networks.js";

/** A price given as an atomic amount of an explicit asset. */
export interface AtomicPrice {
  /** Integer string (or bigint) in the asset's smallest unit. */
  amount: string | bigint;
  asset: {
    address: string;
    decimals: number;
    /** EIP-712 domain of the token (required: clients sign with it). */
    eip712: { name: string; version: string };
  };
}

/**
 * A static price: a USD money string ("$0.20", "0.20", "$1"), a number of
 * dollars (converted through its shortest decimal spelling, e.g. 0.2 → "0.2"),
 * or an atomic amount with its asset.
 */
export type PriceInput = string | number | AtomicPrice;

/** A resolved price: exactly what is offered, verified and charged. */
export interface ResolvedPrice {
  amount: bigint;
  asset: AssetInfo;
}

const MONEY = /^\$?\s*([0-9]+)(?:\.([0-9]+))?\s*(?:USDC?)?$/i;
const INTEGER = /^[0-9]+$/;

/**
 * Parse a money amount into atomic units with `decimals` digits. Throws
 * ConfigError when the string is malformed, negative, zero, or has more
 * fractional digits than the asset (instead of silently rounding).
 */
export function parseMoney(input: string | number, decimals: number, option = "price"): bigint {
  let text: string;
  if (typeof input === "number") {
    if (!Number.isFinite(input)) throw new ConfigError(option, `${input} is not a price. Use a string like "$0.20".`);
    text = String(input);
    if (/e/i.test(text)) throw new ConfigError(option, `${input} cannot be written exactly; use a string like "$0.20".`);
  } else {
    text = input.trim();
  }
  const m = MONEY.exec(text);
  if (!m) throw new ConfigError(option, `${JSON.stringify(input)} is not a money amount. Use a string like "$0.20" or "0.20".`);
  const whole = m[1]!;
  const frac = m[2] ?? "";
  if (frac.length > decimals) {
    throw new ConfigError(option, `${JSON.stringify(input)} has ${frac.length} decimals but the asset has only ${decimals}. Round the price to ${decimals} decimals.`);
  }
  const amount = BigInt(whole) * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, "0") || "0");
  if (amount <= 0n) throw new ConfigError(option, `${JSON.stringify(input)} must be greater than zero.`);
  return amount;
}

/** Format atomic units as a decimal string with all `decimals` digits, e.g. 200000n, 6 → "0.200000". */
export function formatUnitsExact(amount: bigint, decimals: number): string {
  const s = amount.toString().padStart(decimals + 1, "0");
  return decimals === 0 ? s : `${s.slice(0, -decimals)}.${s.slice(-decimals)}`;
}

/**
 * Resolve any static price input against the network's default asset.
 * Throws ConfigError with a fix-it message on any problem.
 */
export function resolvePrice(input: PriceInput, defaultAsset: AssetInfo | undefined, option = "price"): ResolvedPrice {
  if (typeof input === "string" || typeof input === "number") {
    if (!defaultAsset) {
      throw new ConfigError(option, `a money price needs a network with a default USDC; give { amount, asset } instead.`);
    }
    return { amount: parseMoney(input, defaultAsset.decimals, option), asset: defaultAsset };
  }
  if (!input || typeof input !== "object") throw new ConfigError(option, `expected a money string or { amount, asset }.`);
  const amountText = typeof input.amount === "bigint" ? input.amount.toString() : input.amount;
  if (typeof amountText !== "string" || !INTEGER.test(amountText) || BigInt(amountText) <= 0n) {
    throw new ConfigError(`${option}.amount`, `${JSON.stringify(String(input.amount))} must be a positive integer string of atomic units (no decimals, no exponent).`);
  }
  const a = input.asset;
  if (!a || typeof a !== "object") throw new ConfigError(`${option}.asset`, `missing; give { address, decimals, eip712: { name, version } }.`);
  if (typeof a.address !== "string" || !isAddress(a.address, { strict: false })) {
    throw new ConfigError(`${option}.asset.address`, `${JSON.stringify(a.address)} is not an EVM address.`);
  }
  if (!Number.isInteger(a.decimals) || a.decimals < 0 || a.decimals > 36) {
    throw new ConfigError(`${option}.asset.decimals`, `must be an integer 0–36.`);
  }
  if (!a.eip712 || typeof a.eip712.name !== "string" || typeof a.eip712.version !== "string" || !a.eip712.name || !a.eip712.version) {
    throw new ConfigError(`${option}.asset.eip712`, `needs { name, version } equal to the token's on-chain name() and version().`);
  }
  return {
    amount: BigInt(amountText),
    asset: { address: getAddress(a.address), decimals: a.decimals, eip712Name: a.eip712.name, eip712Version: a.eip712.version },
  };
}

/** Price in whole USD cents for a 6-decimal USD stablecoin amount (rounded up), for display in payment objects. */
export function usdCents(amount: bigint, decimals: number): number {
  const unit = 10n ** BigInt(Math.max(decimals - 2, 0));
  return Number((amount + unit - 1n) / unit);
}
