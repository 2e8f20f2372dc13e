/**
 * What the server asks for: one resolved `Offer` per request, rendered as the
 * v1 402 body entry and the v2 `PAYMENT-REQUIRED` header from the same values,
 * so the amount offered is exactly the amount verified and charged.
 */
import type { Address } from "viem";
import type { AssetInfo, NetworkInfo } from "./networks.js";
import type { Eip712Extra, PaymentRequiredV2, PaymentRequirementsV1, PaymentRequirementsV2 } from "./types.js";

/** The v1 402 `error` when no payment was sent (x402-express wording, which clients show). */
export const NO_PAYMENT = "X-PAYMENT header is required";
/** The same, in the v2 `PAYMENT-REQUIRED` header: it names the header a v2 client pays with. */
export const NO_PAYMENT_V2 = "PAYMENT-SIGNATURE header is required";

/**
 * v2 `extra`: the token's EIP-712 domain, plus how to sign for it (v1 keeps
 * x402-express 1.2.0's exact `{ name, version }`).
 * `assetTransferMethod` is the spec's field (eip3009 is also its default);
 * `primaryType` is what thirdweb's client reads: without it, it asks its own
 * cloud service which method the token supports, and fails offline.
 */
function extraOf(offer: Offer): Eip712Extra {
  return { name: offer.asset.eip712Name, version: offer.asset.eip712Version, assetTransferMethod: "eip3009", primaryType: "TransferWithAuthorization" };
}

/** Everything the server asks for one paid request. */
export interface Offer {
  network: NetworkInfo;
  asset: AssetInfo;
  /** Exact price in atomic units. */
  amount: bigint;
  payTo: Address;
  maxTimeoutSeconds: number;
  /** Absolute URL of the resource. */
  resource: string;
  description: string;
  mimeType: string;
  /** v1 `outputSchema` (always an object; v1 clients reject null). */
  outputSchema: Record<string, unknown>;
  /** The route's other payment options (its `accepts` list after the first); the rest of the offer is shared. */
  alternatives?: readonly OfferOption[];
}

/** What differs between a route's payment options. */
export interface OfferOption {
  network: NetworkInfo;
  asset: AssetInfo;
  amount: bigint;
  payTo: Address;
  maxTimeoutSeconds: number;
}

/** Every payment option of an offer, the first being the offer itself. */
export function offersOf(offer: Offer): Offer[] {
  const alts = offer.alternatives;
  if (!alts || alts.length === 0) return [offer];
  return [offer, ...alts.map((a) => ({ ...offer, ...a, alternatives: undefined }))];
}

/** The v1 `accepts` list of an offer: every option on a network v1 clients know. */
export function requirementsV1Of(offer: Offer): PaymentRequirementsV1[] {
  const out: PaymentRequirementsV1[] = [];
  for (const o of offersOf(offer)) {
    const r = toRequirementsV1(o);
    if (r) out.push(r);
  }
  return out;
}

/** The v1 `accepts` entry for an offer, or undefined when the network has no v1 name. */
export function toRequirementsV1(offer: Offer): PaymentRequirementsV1 | undefined {
  if (!offer.network.v1Name) return undefined;
  return {
    scheme: "exact",
    network: offer.network.v1Name,
    maxAmountRequired: offer.amount.toString(),
    resource: offer.resource,
    description: offer.description,
    mimeType: offer.mimeType,
    payTo: offer.payTo,
    maxTimeoutSeconds: offer.maxTimeoutSeconds,
    asset: offer.asset.address,
    outputSchema: offer.outputSchema,
    extra: { name: offer.asset.eip712Name, version: offer.asset.eip712Version },
  };
}

/** The v2 requirements entry for an offer. */
export function toRequirementsV2(offer: Offer): PaymentRequirementsV2 {
  return {
    scheme: "exact",
    network: offer.network.caip2,
    amount: offer.amount.toString(),
    asset: offer.asset.address,
    payTo: offer.payTo,
    maxTimeoutSeconds: offer.maxTimeoutSeconds,
    extra: extraOf(offer),
  };
}

/** The v2 PaymentRequired object for an offer, with its bazaar discovery extension when the route is discoverable. */
export function toPaymentRequiredV2(offer: Offer, error: string): PaymentRequiredV2 {
  const bazaar = bazaarOf(offer.outputSchema);
  return {
    x402Version: 2,
    error,
    resource: { url: offer.resource, description: offer.description, mimeType: offer.mimeType },
    accepts: offer.alternatives?.length ? offersOf(offer).map(toRequirementsV2) : [toRequirementsV2(offer)],
    ...(bazaar ? { extensions: { bazaar } } : {}),
  };
}

const QUERY_METHODS = ["GET", "HEAD", "DELETE"];
const BODY_METHODS = ["POST", "PUT", "PATCH"];
const JSON_SCHEMA_2020 = "https://json-schema.org/draft/2020-12/schema";
const bazaars = new WeakMap<object, BazaarExtension | null>();

/**
 * The v2 `bazaar` discovery extension (`{ info, schema }`, where `schema`
 * validates `info`), built from the route's v1 `outputSchema`: the HTTP
 * method, the request's JSON schema (body for POST/PUT/PATCH, query for
 * GET/HEAD/DELETE) and the response's. `info.input.body` is an example: the
 * input schema's first `examples` entry, else `{}`. One per schema object
 * (routes keep one per method). Undefined when the route is not discoverable
 * or not HTTP (MCP offers carry their own).
 */
function bazaarOf(outputSchema: Record<string, unknown>): BazaarExtension | undefined {
  let ext = bazaars.get(outputSchema);
  if (ext === undefined) {
    ext = buildBazaar(outputSchema);
    bazaars.set(outputSchema, ext);
  }
  return ext ?? undefined;
}

/** A bazaar discovery extension: discovery data and the JSON schema it validates against. */
export interface BazaarExtension {
  info: { input: Record<string, unknown>; output?: Record<string, unknown> };
  schema: Record<string, unknown>;
}

function buildBazaar(outputSchema: Record<string, unknown>): BazaarExtension | null {
  const input = outputSchema.input as Record<string, unknown> | undefined;
  if (!input || input.type !== "http" || input.discoverable === false || typeof input.method !== "string") return null;
  const method = input.method.toUpperCase();
  const body = BODY_METHODS.includes(method);
  if (!body && !QUERY_METHODS.includes(method)) return null;
  const fields = isRecord(input.bodyFields) ? input.bodyFields : undefined;
  const example = Array.isArray(fields?.examples) && isRecord(fields.examples[0]) ? fields.examples[0] : {};
  const output = isRecord(outputSchema.output) ? outputSchema.output : undefined;
  const inputProps: Record<string, unknown> = { type: { type: "string", const: "http" }, method: { type: "string", enum: body ? BODY_METHODS : QUERY_METHODS } };
  const infoInput: Record<string, unknown> = { type: "http", method };
  if (body) {
    inputProps.bodyType = { type: "string", enum: ["json", "form-data", "text"] };
    inputProps.body = fields ?? { type: "object" };
    Object.assign(infoInput, { bodyType: "json", body: example });
  } else if (fields) {
    inputProps.queryParams = { type: "object", ...fields };
    infoInput.queryParams = example;
  }
  const properties: Record<string, unknown> = {
    input: { type: "object", properties: inputProps, required: body ? ["type", "method", "bodyType", "body"] : ["type", "method"], additionalProperties: false },
  };
  if (output) properties.output = { type: "object", properties: { type: { type: "string" }, example: { type: "object", ...output } }, required: ["type"] };
  return {
    info: { input: infoInput, ...(output ? { output: { type: "json" } } : {}) },
    schema: { $schema: JSON_SCHEMA_2020, type: "object", properties, required: ["input"] },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}
