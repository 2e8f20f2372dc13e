/**
 * Custom 402 bodies: a route (or paywall) option adds fields of its own to
 * the JSON body of its 402 answers, the unpaid one and the refusals
 * (settlement failures included), e.g. a link to docs or a plan list. The
 * x402 fields stay intact: `x402Version`, `error`, `accepts`, `prepaid`,
 * `message` and `payment` are the server's, and the `PAYMENT-REQUIRED`
 * header is not touched, so x402 clients pay as before. Browsers get the
 * HTML paywall page (`paywallPage`) instead.
 */
import { ConfigError } from "../errors.js";
import type { Offer } from "../protocol/requirements.js";

/** What a `paymentRequiredBody` function is told about the answer being built. */
export interface PaymentRequiredBodyContext {
  /** The x402 `error` of this answer: "X-PAYMENT header is required" when unpaid, else the refusal's reason (e.g. "insufficient_funds"). */
  reason: string;
  /** True for the answer to a request that carried no payment. */
  unpaid: boolean;
  resource: string;
  description: string;
  /** The first payment option's price: atomic amount, asset and CAIP-2 network. */
  amount: string;
  asset: string;
  network: string;
}

/**
 * Fields to add to a 402 JSON body: an object, or a function of the answer
 * (called once per distinct answer; its result may be cached, so it must
 * depend only on its context). A function that throws or returns a
 * non-object adds nothing.
 */
export type PaymentRequiredBody = Record<string, unknown> | ((ctx: PaymentRequiredBodyContext) => Record<string, unknown>);

/** Keys of the 402 body that belong to x402 and server402: never replaced by custom fields. */
const RESERVED_402_KEYS: readonly string[] = ["x402Version", "error", "accepts", "prepaid", "message", "payment"];

/** Validate the option at startup. */
export function checkPaymentRequiredBody(option: string, v: unknown): void {
  if (v === undefined || typeof v === "function") return;
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new ConfigError(option, "must be an object of fields to add to the 402 body, or a function returning one.");
  const clash = Object.keys(v).find((k) => RESERVED_402_KEYS.includes(k));
  if (clash) throw new ConfigError(option, `may not set ${JSON.stringify(clash)}: the x402 fields (${RESERVED_402_KEYS.join(", ")}) are the server's.`);
  try {
    JSON.stringify(v);
  } catch {
    throw new ConfigError(option, "must be JSON-serialisable.");
  }
}

/** The body with the custom fields added (x402 fields first and unchanged). */
export function shape402Body(custom: PaymentRequiredBody | undefined, body: Record<string, unknown>, offer: Offer, unpaidReason: string): Record<string, unknown> {
  if (custom === undefined) return body;
  let fields: unknown = custom;
  if (typeof custom === "function") {
    const reason = String(body.error);
    try {
      fields = custom({ reason, unpaid: reason === unpaidReason, resource: offer.resource, description: offer.description, amount: offer.amount.toString(), asset: offer.asset.address, network: offer.network.caip2 });
      JSON.stringify(fields);
    } catch {
      return body;
    }
  }
  if (!fields || typeof fields !== "object" || Array.isArray(fields)) return body;
  const out: Record<string, unknown> = { ...body };
  for (const [k, v] of Object.entries(fields)) if (!RESERVED_402_KEYS.includes(k) && v !== undefined) out[k] = v;
  return out;
}
