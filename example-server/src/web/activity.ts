/**
 * What the operator dashboard shows besides the ledger: the latest payment
 * outcomes (settled or failed, with the reason) and the settlements whose
 * outcome is still unknown (`settlement_pending`), kept in memory from the
 * payment engine's events, bounded.
 */
import type { PaymentEvent } from "server402";
import { resourceLabel } from "../observability/metrics.js";

/** One payment outcome as the dashboard lists it. */
export interface ActivityEntry {
  time: number;
  method: "x402" | "token";
  status: "settled" | "failed" | "pending";
  /** Atomic units, for settled ones. */
  amount?: string;
  reason?: string;
  stage?: "verify" | "settle";
  resource: string;
}

export interface Activity {
  onEvent(e: PaymentEvent): void;
  recent(): ActivityEntry[];
  pending(): ActivityEntry[];
}

/** Keep the last `max` outcomes. */
export function createActivity(max = 100): Activity {
  const recent: ActivityEntry[] = [];
  const pending: ActivityEntry[] = [];
  const push = (list: ActivityEntry[], e: ActivityEntry) => {
    list.push(e);
    if (list.length > max) list.shift();
  };
  return {
    onEvent(e) {
      try {
        if (e.type === "settled") push(recent, { time: Date.now(), method: e.method, status: "settled", amount: e.amount, resource: resourceLabel(e.resource) });
        else if (e.type === "failed") {
          const entry: ActivityEntry = {
            time: Date.now(),
            method: e.method,
            status: e.reason === "settlement_pending" ? "pending" : "failed",
            reason: e.reason.slice(0, 64),
            stage: e.stage,
            resource: resourceLabel(e.resource),
          };
          push(recent, entry);
          if (entry.status === "pending") push(pending, entry);
        }
      } catch {
        /* the dashboard must never break a payment */
      }
    },
    recent: () => recent.slice().reverse(),
    pending: () => pending.slice().reverse(),
  };
}
