/**
 * Strict decoding of `X-PAYMENT` (v1) and `PAYMENT-SIGNATURE` (v2) payloads,
 * bound to the server's own offer: the client can change neither price, payTo,
 * asset nor network. Every refusal is a PaymentError with an x402 reason.
 */
import { getAddress, isAddress, type Address, type Hex } from "viem";
import { PaymentError } from "../errors.js";
import type { ExactAuthorization } from "./signature.js";
import { MAX_SIGNATURE_BYTES } from "./signature.js";
import type { Offer } from "./requirements.js";
import type { Permit2Payment } from "./permit2.js";
import type { PaymentPayloadV1, PaymentPayloadV2 } from "./types.js";

/** A payload that passed decoding and binding, ready for signature checks. */
export interface DecodedPayment {
  x402Version: 1 | 2;
  authorization: ExactAuthorization;
  signature: Hex;
  /** The payload exactly as received (for facilitators). */
  payload: PaymentPayloadV1 | PaymentPayloadV2;
  /** v2: the client's `payment-identifier` id (issue 17.3), when it sent one. */
  paymentId?: string;
  /** Set for a Permit2 payment (see protocol/permit2.ts); `authorization` is then its EIP-3009-shaped view. */
  permit2?: Permit2Payment;
}

const UINT = /^[0-9]{1,78}$/;
const NONCE = /^0x[0-9a-fA-F]{64}$/;
const SIGNATURE = /^0x(?:[0-9a-fA-F]{2})+$/;
const MAX_UINT256 = (1n << 256n) - 1n;

function fail(reason: string, message: string): never {
  throw new PaymentError(reason, message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function uint(v: unknown, field: string): bigint {
  if (typeof v !== "string" || !UINT.test(v)) fail("invalid_payload", `authorization.${field} must be a decimal integer string.`);
  const n = BigInt(v);
  if (n > MAX_UINT256) fail("invalid_payload", `authorization.${field} exceeds uint256.`);
  return n;
}

function address(v: unknown, field: string): Address {
  if (typeof v !== "string" || !isAddress(v, { strict: false })) fail("invalid_payload", `${field} must be an EVM address.`);
  return getAddress(v);
}

function sameAddress(a: unknown, b: string): boolean {
  return typeof a === "string" && a.toLowerCase() === b.toLowerCase();
}

function exactPayload(p: unknown): { authorization: ExactAuthorization; signature: Hex } {
  if (!isObject(p)) fail("invalid_payload", "payload must be an object with signature and authorization.");
  const { signature, authorization: a } = p;
  // length first, so an over-long signature is refused before any pattern matching (and never reaches the chain)
  if (typeof signature !== "string" || signature.length > 2 + 2 * MAX_SIGNATURE_BYTES) {
    fail("invalid_exact_evm_payload_signature", `payload.signature must be 0x-prefixed hex of 65 to ${MAX_SIGNATURE_BYTES} bytes.`);
  }
  if (signature.length < 2 + 2 * 65 || !SIGNATURE.test(signature)) {
    fail("invalid_exact_evm_payload_signature", `payload.signature must be 0x-prefixed hex of 65 to ${MAX_SIGNATURE_BYTES} bytes.`);
  }
  if (!isObject(a)) fail("invalid_payload", "payload.authorization must be an object.");
  if (typeof a.nonce !== "string" || !NONCE.test(a.nonce)) fail("invalid_payload", "authorization.nonce must be 0x followed by 64 hex digits.");
  return {
    signature: signature.toLowerCase() as Hex,
    authorization: {
      from: address(a.from, "authorization.from"),
      to: address(a.to, "authorization.to"),
      value: uint(a.value, "value"),
      validAfter: uint(a.validAfter, "validAfter"),
      validBefore: uint(a.validBefore, "validBefore"),
      nonce: a.nonce.toLowerCase() as Hex,
    },
  };
}

/** Decode a v1 `X-PAYMENT` payload object and bind it to `offer`. */
export function decodeV1(raw: Record<string, unknown>, offer: Offer): DecodedPayment {
  if (raw.x402Version !== 1) fail("invalid_x402_version", `X-PAYMENT carries x402Version ${JSON.stringify(raw.x402Version)}; expected 1 (send v2 payloads in PAYMENT-SIGNATURE).`);
  if (raw.scheme !== "exact") fail("unsupported_scheme", `scheme ${JSON.stringify(raw.scheme)} is not supported; use "exact".`);
  if (typeof raw.network !== "string" || raw.network !== offer.network.v1Name) {
    fail("invalid_network", `network ${JSON.stringify(raw.network)} does not match the required ${JSON.stringify(offer.network.v1Name ?? offer.network.caip2)}.`);
  }
  return { x402Version: 1, ...exactPayload(raw.payload), payload: raw as unknown as PaymentPayloadV1 };
}

/** Decode a v2 `PAYMENT-SIGNATURE` payload object and bind its `accepted` entry to `offer`. */
export function decodeV2(raw: Record<string, unknown>, offer: Offer): DecodedPayment {
  if (raw.x402Version !== 2) fail("invalid_x402_version", `PAYMENT-SIGNATURE carries x402Version ${JSON.stringify(raw.x402Version)}; expected 2 (send v1 payloads in X-PAYMENT).`);
  const acc = raw.accepted;
  if (!isObject(acc)) fail("invalid_payload", "accepted must be the payment requirements object the client chose.");
  if (acc.scheme !== "exact") fail("unsupported_scheme", `scheme ${JSON.stringify(acc.scheme)} is not supported; use "exact".`);
  if (acc.network !== offer.network.caip2) fail("invalid_network", `accepted.network ${JSON.stringify(acc.network)} does not match the required ${JSON.stringify(offer.network.caip2)}.`);
  if (!sameAddress(acc.asset, offer.asset.address)) fail("invalid_payment_requirements", `accepted.asset does not match the required asset ${offer.asset.address}.`);
  if (!sameAddress(acc.payTo, offer.payTo)) fail("invalid_payment_requirements", `accepted.payTo does not match the required payTo ${offer.payTo}.`);
  if (acc.amount !== offer.amount.toString()) fail("invalid_payment_requirements", `accepted.amount ${JSON.stringify(acc.amount)} does not match the price ${offer.amount}.`);
  const paymentId = paymentIdentifierOf(raw);
  return { x402Version: 2, ...exactPayload(raw.payload), payload: raw as unknown as PaymentPayloadV2, ...(paymentId ? { paymentId } : {}) };
}

/** Name of the x402 v2 `payment-identifier` extension (issue 17.3). */
export const PAYMENT_IDENTIFIER = "payment-identifier";
const PAYMENT_ID = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The `payment-identifier` id of a v2 payload (`extensions["payment-identifier"].info.id`), or
 * undefined when the client sent none (an echo of the server's declaration without an `id` is none).
 * A malformed extension or id (not 16–128 characters of A–Z, a–z, 0–9, `-`, `_`) is refused with
 * `invalid_payload`.
 */
export function paymentIdentifierOf(raw: Record<string, unknown>): string | undefined {
  const exts = raw.extensions;
  if (exts === undefined || exts === null) return undefined;
  if (!isObject(exts)) fail("invalid_payload", "extensions must be an object.");
  const ext = exts[PAYMENT_IDENTIFIER];
  if (ext === undefined || ext === null) return undefined;
  if (!isObject(ext) || !isObject(ext.info)) fail("invalid_payload", `extensions["${PAYMENT_IDENTIFIER}"] must be an object with an info object.`);
  const id = ext.info.id;
  if (id === undefined) return undefined;
  if (typeof id !== "string" || !PAYMENT_ID.test(id)) {
    fail("invalid_payload", `extensions["${PAYMENT_IDENTIFIER}"].info.id must be 16 to 128 characters of A-Z, a-z, 0-9, '-' and '_'.`);
  }
  return id;
}
