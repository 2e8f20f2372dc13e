/**
 * Held MCP tool results, and what a retry of a held tool call gets. Two
 * paths keep a paid tool result in the store as a held answer
 * (`PaymentEngine.holdAnswer`) and replay it through the engine:
 * - issue 14 B10: a tool call whose settlement went pending (or whose client
 *   went away while it settled); a retry with the same payment gets
 *   "pending" again, then that result once the transfer is confirmed;
 * - issue 17.3: a `payment-identifier` retry of a paid tool call.
 * Both use the one format and the one replay below, and neither is ever
 * charged twice. With settlement before the tool, the tool runs once for the
 * first retry after confirmation.
 */
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { SettlementError } from "../errors.js";
import type { PaymentEngine, X402Attempt, X402PaymentInfo, X402Replay } from "../core/engine.js";
import type { SettleResponse } from "../protocol/types.js";

/** Marks a held answer as an MCP tool result (an HTTP answer held for the same resource is never taken for one). */
const TOOL_RESULT_TYPE = "application/vnd.server402.mcp-tool-result+json";

/** What a retry of a held tool call is answered. */
export type ToolReplay =
  /** The paid result (held, or run now for settlement `before`), with its receipt and payment (its transaction the receipt's). */
  | { kind: "paid"; result: CallToolResult; response: SettleResponse; info: X402PaymentInfo }
  | { kind: "pending"; error: SettlementError };

/** A paid tool result as a held answer (status, headers, body). */
export function toolAnswer(result: CallToolResult, info: X402PaymentInfo): { status: number; headers: Record<string, string>; body: Buffer } {
  return { status: 200, headers: { "content-type": TOOL_RESULT_TYPE }, body: Buffer.from(JSON.stringify({ result, info })) };
}

/** Keep `result` (or, for settlement `before`, the right to run the tool once) for a retry with the same payment. Never rejects. */
export function holdToolResult(engine: PaymentEngine, attempt: X402Attempt, result: CallToolResult | "run"): Promise<void> {
  return engine.holdAnswer(attempt, result === "run" ? "run" : toolAnswer(result, attempt.info));
}

/**
 * The answer to a retry the engine replays (`replayX402`, or a `payment-identifier` retry): "pending"
 * again, or the paid result once the transfer is confirmed (running the tool through `run` when
 * settlement was before it). Undefined when the held answer is no tool result (the caller refuses).
 */
export async function toolReplay(replay: X402Replay, run: (info: X402PaymentInfo) => Promise<CallToolResult>): Promise<ToolReplay | undefined> {
  if (replay.kind === "pending") return replay;
  const transaction = replay.response.transaction as X402PaymentInfo["transaction"];
  if (replay.kind === "run") return { kind: "paid", result: await run(replay.info), response: replay.response, info: { ...replay.info, transaction } };
  if (replay.answer.headers["content-type"] !== TOOL_RESULT_TYPE) return undefined;
  try {
    const held = JSON.parse(Buffer.from(replay.answer.body, "base64").toString("utf8")) as { result: CallToolResult; info: X402PaymentInfo };
    return { kind: "paid", result: held.result, response: replay.response, info: { ...held.info, transaction } };
  } catch {
    return undefined;
  }
}
