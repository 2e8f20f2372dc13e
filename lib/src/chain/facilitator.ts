/**
 * An x402 facilitator over HTTP (`/verify`, `/settle`, `/supported`; v1 and
 * v2 bodies), usable as the settler and as the pre-handler checker.
 */
import type { Address, Hex } from "viem";
import { ChainError, PaymentError, SettlementError } from "../errors.js";
import type { PaymentChecker } from "../core/checker.js";
import type { SettleRequest, SettleResult, Settler } from "./settler.js";
import { validateFacilitatorOptions } from "./settler-options.js";

export interface FacilitatorOptions {
  /** Base URL, e.g. "https://x402.org/facilitator". Trailing slash ignored. */
  url: string;
  /** Per-request timeout in ms. Default 30 000 for settle, a third of it for verify and supported. */
  timeoutMs?: number;
  /** Extra headers per endpoint (e.g. CDP JWTs). Called for every request. */
  createAuthHeaders?: (endpoint: "verify" | "settle" | "supported") => Record<string, string> | Promise<Record<string, string>>;
}

/** A facilitator client that is also a `Settler`. */
export interface FacilitatorSettler extends Settler {
  readonly kind: "facilitator";
  /** POST /verify; resolves `{isValid, invalidReason?, payer?}`. */
  verify(req: SettleRequest): Promise<{ isValid: boolean; invalidReason?: string; payer?: string }>;
  /** GET /supported. */
  supported(): Promise<{ kinds: Array<{ x402Version: number; scheme: string; network: string }> }>;
  /** A pre-handler checker that asks this facilitator's `/verify`. */
  checker(): PaymentChecker;
}

/** Create a facilitator client. Throws ConfigError for a missing or malformed option. */
export function facilitatorSettler(opts: FacilitatorOptions): FacilitatorSettler {
  validateFacilitatorOptions(opts);
  const base = new URL(opts.url);
  const root = base.toString().replace(/\/+$/, "");
  const timeoutMs = opts.timeoutMs ?? 30_000;

  /**
   * One request. Every failure (unreachable, timeout, a body that is not a
   * JSON object) is a ChainError; `timedOut` tells settle that the outcome is unknown.
   */
  async function call(endpoint: "verify" | "settle" | "supported", body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    let res: Response;
    let text: string;
    try {
      const headers: Record<string, string> = { accept: "application/json", ...(await opts.createAuthHeaders?.(endpoint)) };
      if (body !== undefined) headers["content-type"] = "application/json";
      res = await fetch(`${root}/${endpoint}`, {
        method: body === undefined ? "GET" : "POST",
        headers,
        body: body === undefined ? undefined : JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v)),
        signal: AbortSignal.timeout(endpoint === "settle" ? timeoutMs : Math.ceil(timeoutMs / 3)),
        redirect: "error",
      });
      text = await res.text();
    } catch (err) {
      const timedOut = (err as Error | undefined)?.name === "TimeoutError";
      throw new FacilitatorUnavailable(`facilitator /${endpoint} ${timedOut ? "did not answer in time" : `failed: ${(err as Error).message}`}`, timedOut, err);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new FacilitatorUnavailable(`facilitator /${endpoint} answered HTTP ${res.status} with a body that is not JSON`);
    }
    if (!json || typeof json !== "object") throw new FacilitatorUnavailable(`facilitator /${endpoint} answered HTTP ${res.status} with a non-object`);
    return { status: res.status, json: json as Record<string, unknown> };
  }

  const bodyOf = (req: SettleRequest) => ({ x402Version: req.x402Version, paymentPayload: req.payload, paymentRequirements: req.requirements });

  const settler: FacilitatorSettler = {
    kind: "facilitator",
    async settle(req: SettleRequest): Promise<SettleResult> {
      let r;
      try {
        r = await call("settle", bodyOf(req));
      } catch (err) {
        const timedOut = err instanceof FacilitatorUnavailable && err.timedOut;
        const detail = err instanceof FacilitatorUnavailable ? err.message : `facilitator /settle failed: ${(err as Error).message}`;
        throw new SettlementError(timedOut ? "settlement_pending" : "unexpected_settle_error", timedOut ? `facilitator /settle did not answer within ${timeoutMs} ms; the transfer may still happen.` : "the facilitator could not be reached.", { pending: timedOut, cause: err, detail });
      }
      const j = r.json;
      if (j.success === true && typeof j.transaction === "string" && /^0x[0-9a-fA-F]{64}$/.test(j.transaction)) {
        return { transaction: j.transaction as Hex, network: req.network, payer: (typeof j.payer === "string" ? j.payer : req.authorization.from) as Address };
      }
      const reason = typeof j.errorReason === "string" ? j.errorReason : "unexpected_settle_error";
      // The facilitator's own text goes to `detail` (logs); clients get its reason code.
      throw new SettlementError(reason, `the facilitator refused the settlement: ${reason}`, {
        detail: `facilitator /settle refused (HTTP ${r.status}): ${reason}${typeof j.errorMessage === "string" ? `: ${j.errorMessage}` : ""}`,
        transaction: typeof j.transaction === "string" && j.transaction ? j.transaction : undefined,
        pending: reason === "settlement_pending",
      });
    },
    async verify(req) {
      const r = await call("verify", bodyOf(req));
      const j = r.json;
      if (typeof j.isValid !== "boolean") throw new FacilitatorUnavailable(`facilitator /verify answered HTTP ${r.status} without isValid`);
      return { isValid: j.isValid, invalidReason: typeof j.invalidReason === "string" ? j.invalidReason : undefined, payer: typeof j.payer === "string" ? j.payer : undefined };
    },
    async supported() {
      const r = await call("supported");
      if (!Array.isArray(r.json.kinds)) throw new FacilitatorUnavailable(`facilitator /supported answered HTTP ${r.status} without kinds`);
      return r.json as { kinds: Array<{ x402Version: number; scheme: string; network: string }> };
    },
    checker(): PaymentChecker {
      return { check: (req) => facilitatorVerify(settler, req) };
    },
  };
  return settler;
}

/** A facilitator that could not be reached or answered something that is not x402 (code `chain_unavailable`). */
class FacilitatorUnavailable extends ChainError {
  /** True when the request timed out (for /settle: the transfer may still happen). */
  readonly timedOut: boolean;
  constructor(message: string, timedOut = false, cause?: unknown) {
    super(message, { cause });
    this.timedOut = timedOut;
  }
}

/** Raise the PaymentError or ChainError matching a facilitator verify result. */
export async function facilitatorVerify(f: FacilitatorSettler, req: SettleRequest): Promise<void> {
  let r;
  try {
    r = await f.verify(req);
  } catch (err) {
    const detail = err instanceof ChainError ? err.message : `facilitator /verify failed: ${(err as Error).message}`;
    throw new ChainError("the facilitator could not be reached.", { cause: err, detail });
  }
  if (!r.isValid) throw new PaymentError(r.invalidReason ?? "invalid_payment", `the facilitator refused the payment: ${r.invalidReason ?? "invalid"}`);
}
