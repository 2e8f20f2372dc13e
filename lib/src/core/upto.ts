/**
 * Usage-based payments (x402 `upto` over Permit2): the payer authorizes a
 * maximum; the paid handler reports what it used with
 * `req.payment.charge("$0.07")` (or atomic units); only that is settled,
 * after the handler succeeded. A handler that fails (status ≥ 400, throws,
 * the client goes away) settles nothing; one that succeeds without calling
 * `charge` settles nothing either (the authorization then lapses unused).
 */
import { ConfigError, PaymentError, SettlementError } from "../errors.js";
import { parseCharge } from "../protocol/permit2.js";
import type { X402Attempt, X402PaymentInfo } from "./engine.js";

/** The `upto` extras of `req.payment`. */
export interface UptoPaymentInfo {
  /** "upto": `amount` is what will be settled (the charge so far), `maximum` what the payer authorized. */
  scheme: "upto";
  /** The authorized maximum in atomic units, integer string. */
  maximum: string;
  /**
   * Set what this request costs: "$0.07" (dollars, for a USD asset), or
   * atomic units as a bigint or an integer string ("70000"). Replaces an
   * earlier charge. Throws a PaymentError (`invalid_upto_evm_payload_settlement_exceeds_amount`)
   * above the maximum, a TypeError for a malformed amount, and an Error once
   * the payment was settled. Returns the charge in atomic units.
   */
  charge(amount: string | bigint): string;
}

const charges = new WeakMap<X402PaymentInfo, { maximum: bigint; charged: bigint; closed: boolean }>();

/** Give an `upto` payment's info its `maximum` and `charge` (called once, when the payment is verified). */
export function makeUpto(info: X402PaymentInfo, decimals: number): void {
  const maximum = BigInt(info.amount);
  const state = { maximum, charged: 0n, closed: false };
  charges.set(info, state);
  const upto = info as X402PaymentInfo & UptoPaymentInfo;
  upto.scheme = "upto";
  upto.maximum = maximum.toString();
  upto.amount = "0";
  upto.charge = (amount: string | bigint): string => {
    if (state.closed) throw new ConfigError("req.payment.charge", "was called after this upto payment was settled; call it before the response ends.");
    const n = parseCharge(amount, decimals);
    if (n > state.maximum) {
      throw new PaymentError("invalid_upto_evm_payload_settlement_exceeds_amount", `charge ${n} exceeds the authorized maximum ${state.maximum}.`);
    }
    state.charged = n;
    upto.amount = n.toString();
    return upto.amount;
  };
}

/**
 * Close an `upto` attempt's charge and put it into the settle request (the
 * proxy's `amount`, and the EIP-3009-shaped value the Transfer log is checked
 * against). Returns the amount to settle; 0 means nothing is sent.
 */
export function closeUptoCharge(attempt: X402Attempt): bigint {
  const state = charges.get(attempt.info);
  const p = attempt.request.permit2;
  if (!state || !p) throw new SettlementError("unexpected_settle_error", "server402: not an upto payment");
  state.closed = true;
  p.settleAmount = state.charged.toString();
  attempt.request.authorization = { ...attempt.request.authorization, value: state.charged };
  attempt.info.amount = state.charged.toString();
  return state.charged;
}
