/**
 * Route options for Permit2 payments: `upto` (usage-based, a maximum) and
 * `assetTransferMethod: "permit2"` (x402 `exact` on any ERC-20), validated at
 * startup.
 */
import { getAddress, isAddress } from "viem";
import { ConfigError } from "../errors.js";
import type { Permit2OfferTerms } from "../protocol/permit2.js";
import type { PaymentOptions, RouteOptions, SettlementMode } from "./options.js";

/** The Permit2 terms of a route (`{ permit2 }` to spread into the resolved route), or `{}` for EIP-3009 `exact`. */
export function permit2Terms<Req>(at: string, r: RouteOptions<Req>, o: PaymentOptions, settlement: SettlementMode): { permit2?: Permit2OfferTerms } {
  const method = r.assetTransferMethod ?? o.assetTransferMethod;
  if (method !== undefined && method !== "eip3009" && method !== "permit2") {
    throw new ConfigError(r.assetTransferMethod !== undefined ? `${at}.assetTransferMethod` : "assetTransferMethod", `must be "eip3009" or "permit2", got ${JSON.stringify(method)}.`);
  }
  if (r.upto === undefined) return method === "permit2" ? { permit2: { scheme: "exact" } } : {};
  if (r.price !== undefined) throw new ConfigError(`${at}.upto`, "give either price (a fixed price) or upto (the most a request may cost), not both.");
  if (r.assetTransferMethod === "eip3009") throw new ConfigError(`${at}.assetTransferMethod`, "upto is paid over Permit2 only (EIP-3009 signs a fixed amount); drop assetTransferMethod.");
  if (settlement !== "after") throw new ConfigError(`${at}.settlement`, `upto settles what the handler charged, after it ran: settlement must be "after".`);
  const address = (o.settler as { address?: unknown }).address;
  if (typeof address !== "string" || !isAddress(address, { strict: false })) {
    throw new ConfigError(`${at}.upto`, "needs a settler with its own address (relayerSettler): the payer signs who may settle an upto payment.");
  }
  if (r.serviceId !== undefined) throw new ConfigError(`${at}.serviceId`, "prepaid tokens buy calls at a fixed price: an upto route cannot sell them (drop serviceId, or use price).");
  if (r.acceptOverpayment) throw new ConfigError(`${at}.acceptOverpayment`, "does not apply to upto routes.");
  return { permit2: { scheme: "upto", facilitator: getAddress(address) } };
}
