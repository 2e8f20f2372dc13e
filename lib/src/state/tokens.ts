/**
 * Identifiers and secrets for prepaid payments. A payment token is a bearer
 * secret shown to the client once; stores keep only its SHA-256.
 */
import * as crypto from "node:crypto";

/** Prefix of every payment token, so leaked tokens are recognisable (e.g. by secret scanners). */
export const TOKEN_PREFIX = "s402_";

/**
 * `s402_` + 32 random bytes in base64url (43 characters). The last character
 * carries only 4 bits of the 256, so it is one of 16 characters.
 */
const TOKEN_RE = /^s402_[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

/** A new payment token: `s402_` + 32 random bytes (256 bits) in base64url. */
export function generatePaymentToken(): string {
  return TOKEN_PREFIX + crypto.randomBytes(32).toString("base64url");
}

/** SHA-256 of a token, lower-case hex: the only form in which stores keep it. */
export function hashToken(token: string): string {
  return oneShotHash ? oneShotHash("sha256", token, "hex") : crypto.createHash("sha256").update(token, "utf8").digest("hex");
}

/** `crypto.hash` (Node ≥ 20.12): one call instead of a Hash object per paid request. */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: "hex") => string }).hash;

/**
 * True only for strings exactly shaped like a token from `generatePaymentToken()`.
 * Use it to reject malformed input before any store lookup.
 */
export function isWellFormedToken(s: unknown): s is string {
  return typeof s === "string" && TOKEN_RE.test(s);
}

/** A new payment id: `pay_` + 16 random bytes in base64url. */
export function newPaymentId(): string {
  return "pay_" + crypto.randomBytes(16).toString("base64url");
}

/**
 * A new reservation id for a call on `paymentId`: `rsv_` + a per-process
 * random prefix and a counter, then `.` and the payment id, so a store can find the payment from
 * the reservation id alone (see `reservationPaymentId`).
 */
export function newReservationId(paymentId: string): string {
  return `rsv_${RESERVATION_PREFIX}${(reservationCounter++).toString(36)}.${paymentId}`;
}

/**
 * Reservation ids are internal (never shown to clients) and need only be
 * unique, also across processes sharing a store: a random per-process prefix
 * plus a counter, which avoids a CSPRNG call on every paid request.
 */
const RESERVATION_PREFIX = crypto.randomBytes(9).toString("base64url");
let reservationCounter = 0;

/** The payment id embedded in a reservation id, or undefined if it is not one. */
export function reservationPaymentId(reservationId: string): string | undefined {
  if (!reservationId.startsWith("rsv_")) return undefined;
  const dot = reservationId.indexOf(".");
  return dot > 4 && dot < reservationId.length - 1 ? reservationId.slice(dot + 1) : undefined;
}
