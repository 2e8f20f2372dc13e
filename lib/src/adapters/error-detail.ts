/** Issue 14 C16: what an error answer keeps from the client, for the server's logs. */
import type { PaymentEvent } from "../core/engine.js";
import { ChainError, Server402Error, StoreError } from "../errors.js";

/** Longest detail reported (a cause chain can carry upstream text of any size). */
const MAX_DETAIL = 2000;

/** The error's full story for logs: its `detail` (or message), then its causes', capped in length. */
export function errorDetail(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e !== undefined && e !== null; depth++) {
    if (!(e instanceof Error)) {
      parts.push(String(e));
      break;
    }
    parts.push(`${e.name}: ${(e instanceof Server402Error && e.detail) || e.message}`);
    e = e.cause;
  }
  const detail = parts.join(" <- ");
  return detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail;
}

/**
 * What a client is told of an outage while taking a payment: a status and a
 * plain message, never the error's own text (which can name a store host or
 * an RPC address). Shared by the Express and MCP adapters.
 */
export function outageAnswer(err: unknown): { status: 502 | 503; message: string } {
  if (err instanceof ChainError) return { status: 502, message: "the chain could not be reached; retry in a few seconds." };
  if (err instanceof StoreError) return { status: 503, message: "the payment store is unavailable; retry in a few seconds." };
  return { status: 503, message: "payment processing is unavailable right now; retry later." };
}

/** Send an error answer's full story (its detail and causes) to `onEvent`, for the logs; a failing listener never breaks the answer. */
export function reportErrorAnswer(onEvent: ((e: PaymentEvent) => void) | undefined, status: number, code: string, err: unknown, resource: string): void {
  try {
    onEvent?.({ type: "error_answer", status, code, detail: errorDetail(err), resource });
  } catch {
    // a listener must not break an answer
  }
}
