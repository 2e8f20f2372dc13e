/** Issue 14 C16: what an error answer keeps from the client, for the server's logs. */
import { Server402Error } from "../errors.js";

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
