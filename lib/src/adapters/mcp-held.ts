/**
 * Issue 14 B10 over MCP: a paid tool call whose settlement went pending (or
 * whose client went away while it settled) keeps its tool result in the
 * store, as the HTTP paywall keeps its answer (`PaymentEngine.holdAnswer`);
 * a retry of the same tool call with the same payment gets "pending" again,
 * then that result once the transfer is confirmed, and is never charged
 * twice. With settlement before the tool, the tool runs once for the first
 * retry after confirmation.
 */
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { SettlementError } from "../errors.js";
import type { PaymentEngine, X402Attempt, X402PaymentInfo } from "../core/engine.js";
import type { Offer } from "../protocol/requirements.js";
import type { SettleResponse } from "../protocol/types.js";

/** Marks a held answer as an MCP tool result (an HTTP answer held for the same resource is never taken for one). */
const TOOL_RESULT_TYPE = "application/vnd.server402.mcp-tool-result+json";

/** What a retry of a held tool call is answered. */
export type ToolReplay =
  /** The paid result (held, or run now for settlement `before`), with its receipt and payment. */
  | { kind: "paid"; result: CallToolResult; response: SettleResponse; info: X402PaymentInfo }
  | { kind: "pending"; error: SettlementError };

/** Keep `result` (or, for settlement `before`, the right to run the tool once) for a retry with the same payment. Never rejects. */
export function holdToolResult(engine: PaymentEngine, attempt: X402Attempt, result: CallToolResult | "run"): Promise<void> {
  if (result === "run") return engine.holdAnswer(attempt, "run");
  const body = Buffer.from(JSON.stringify({ result, info: attempt.info }));
  return engine.holdAnswer(attempt, { status: 200, headers: { "content-type": TOOL_RESULT_TYPE }, body });
}

/**
 * For a refused payment (`err` from `verifyX402`) whose tool call is held:
 * the paid result once the transfer is confirmed (running the tool through
 * `run` when settlement was before it), or "pending" again. Undefined when
 * nothing is held for it (answer the refusal).
 */
export async function replayToolCall(engine: PaymentEngine, err: unknown, offer: Offer, run: (info: X402PaymentInfo) => Promise<CallToolResult>): Promise<ToolReplay | undefined> {
  const replay = await engine.replayX402(err, offer);
  if (!replay) return undefined;
  if (replay.kind === "pending") return replay;
  if (replay.kind === "run") return { kind: "paid", result: await run(replay.info), response: replay.response, info: replay.info };
  if (replay.answer.headers["content-type"] !== TOOL_RESULT_TYPE) return undefined;
  try {
    const held = JSON.parse(Buffer.from(replay.answer.body, "base64").toString("utf8")) as { result: CallToolResult; info: X402PaymentInfo };
    return { kind: "paid", result: held.result, response: replay.response, info: { ...held.info, transaction: replay.response.transaction as X402PaymentInfo["transaction"] } };
  } catch {
    return undefined;
  }
}
