/** Base64 JSON, as every x402 header carries it. Decoding is strict. */
import { PaymentError } from "../errors.js";

/** Largest payment header accepted, in characters (a v2 payload is ~1.5 KB). */
export const MAX_PAYMENT_HEADER = 8192;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Encode a value as standard padded base64 of its UTF-8 JSON. */
export function encodeHeader(value: unknown): string {
  return Buffer.from(JSON.stringify(value), "utf8").toString("base64");
}

/**
 * Decode a base64 JSON header into a plain object. Throws PaymentError
 * `invalid_payload` naming what was wrong (size, alphabet, JSON, type).
 */
export function decodeHeader(value: string, name: string): Record<string, unknown> {
  if (value.length > MAX_PAYMENT_HEADER) {
    throw new PaymentError("invalid_payload", `${name} header is ${value.length} characters; at most ${MAX_PAYMENT_HEADER} are accepted.`);
  }
  const text = value.trim();
  if (text.length === 0 || text.length % 4 !== 0 || !BASE64.test(text)) {
    throw new PaymentError("invalid_payload", `${name} header is not standard padded base64.`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(text, "base64").toString("utf8"));
  } catch {
    throw new PaymentError("invalid_payload", `${name} header does not decode to JSON.`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new PaymentError("invalid_payload", `${name} header must decode to a JSON object.`);
  }
  return parsed as Record<string, unknown>;
}
