/**
 * An x402 facilitator over HTTP (`/verify`, `/settle`, `/supported`; v1 and
 * v2 bodies), usable as the settler and as the pre-handler checker.
 */
import type { Address, Hex } from "viem";
import { ChainError, PaymentError, SettlementError } from "../errors.js";
import type { PaymentChecker } from "../core/checker.js";
import type { SettleRequest, SettleResult, Settler } from "./settler.js";
import { validateFacilitatorOptions } from "./settler-options.js";
import { settlementLookup, type SettlementLookup } from "./settlement-lookup.js";

export interface FacilitatorOptions {
  /** Base URL, e.g. "https://x402.org/facilitator". Trailing slash ignored. */
  url: string;
  /** Per-request timeout in ms. Default 30 000 for settle, a third of it for verify and supported. */
  timeoutMs?: number;
  /** Extra headers per endpoint (e.g. CDP JWTs). Called for every request. */
  createAuthHeaders?: (endpoint: "verify" | "settle" | "supported") => Record<string, string> | Promise<Record<string, string>>;
  /**
   * JSON-RPC endpoint of the chain the facilitator settles on (issue 14 B10).
   * With it, a settlement whose outcome the facilitator left unknown (no
   * answer in time, a cut connection, an answer that is not x402) is looked
   * up on the chain instead of given up: the authorization used by the
   * authorized transfer means settled (with that transaction's hash), also
   * when a third party's copy of it was mined first; the reconciler confirms
   * pending ones the same way, never settling twice. Without it, a
   * facilitator that cut the connection counts as a failure and the
   * reconciler asks the facilitator again.
   */
  rpcUrl?: string;
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
    let sending = false;
    try {
      const headers: Record<string, string> = { accept: "application/json", ...(await opts.createAuthHeaders?.(endpoint)) };
      if (body !== undefined) headers["content-type"] = "application/json";
      sending = true;
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
      const unavailable = new FacilitatorUnavailable(`facilitator /${endpoint} ${timedOut ? "did not answer in time" : `failed: ${(err as Error).message}`}`, timedOut, err);
      throw sending ? unavailable : Object.assign(unavailable, { notSent: true });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw Object.assign(new FacilitatorUnavailable(`facilitator /${endpoint} answered HTTP ${res.status} with a body that is not JSON`), { status: res.status });
    }
    if (!json || typeof json !== "object") throw new FacilitatorUnavailable(`facilitator /${endpoint} answered HTTP ${res.status} with a non-object`);
    return { status: res.status, json: json as Record<string, unknown> };
  }

  const bodyOf = (req: SettleRequest) => ({ x402Version: req.x402Version, paymentPayload: req.payload, paymentRequirements: req.requirements });
  // issue 14 B10: outcomes the facilitator left unknown are read from the chain (see FacilitatorOptions.rpcUrl)
  const lookup = opts.rpcUrl ? chainLookup(settlementLookup(opts.rpcUrl, Math.ceil(timeoutMs / 3))) : undefined;

  const settler: FacilitatorSettler = {
    kind: "facilitator",
    async settle(req: SettleRequest): Promise<SettleResult> {
      const started = Date.now();
      let r;
      try {
        r = await call("settle", bodyOf(req));
      } catch (err) {
        if (lookup && !neverReached(err)) return lookup.unknownOutcome(req, err, timeoutMs);
        const timedOut = err instanceof FacilitatorUnavailable && err.timedOut;
        const detail = err instanceof FacilitatorUnavailable ? err.message : `facilitator /settle failed: ${(err as Error).message}`;
        throw new SettlementError(timedOut ? "settlement_pending" : "unexpected_settle_error", timedOut ? `facilitator /settle did not answer within ${timeoutMs} ms; the transfer may still happen.` : "the facilitator could not be reached.", { pending: timedOut, cause: err, detail });
      }
      const j = r.json;
      if (j.success === true && typeof j.transaction === "string" && /^0x[0-9a-fA-F]{64}$/.test(j.transaction)) {
        return { transaction: j.transaction as Hex, network: req.network, payer: (typeof j.payer === "string" ? j.payer : req.authorization.from) as Address };
      }
      const reason = typeof j.errorReason === "string" ? j.errorReason : "unexpected_settle_error";
      // a refusal while the authorization was used (e.g. a copy of it front-ran the facilitator's transaction): paid as signed
      if (lookup && reason !== "settlement_pending") {
        const used = await lookup.usedSince(req, started, reason);
        if (used) return used;
      }
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
  if (lookup) {
    settler.confirm = (req, transaction) => lookup.outcome(req, transaction, () => settler.settle(req));
    settler.lookup = (req) => lookup.outcome(req, undefined, () => settler.settle(req));
  }
  return settler;
}

/** True when a /settle request certainly never reached the facilitator, or was refused before processing (so nothing can have been settled). */
function neverReached(err: unknown): boolean {
  const { notSent, status } = err as { notSent?: boolean; status?: number };
  if (notSent || (status !== undefined && status >= 400 && status < 500)) return true; // not sent, or refused (e.g. 401): not processed
  const causes: unknown[] = [];
  for (let e: unknown = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) causes.push(e);
  return causes.some((e) => /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_CONNECT_TIMEOUT)$/.test(String((e as { code?: unknown }).code ?? "")));
}

/** The settlement lookup as the facilitator settler uses it: only for requests on the lookup's chain. */
function chainLookup(l: SettlementLookup) {
  const sameChain = async (req: SettleRequest) => (await l.chainId()) === req.chainId;
  return {
    /** Confirm from the chain; a request on another chain is asked of the facilitator again (`otherwise`). */
    async outcome(req: SettleRequest, transaction: string | undefined, otherwise: () => Promise<SettleResult>): Promise<SettleResult | undefined> {
      if (!(await sameChain(req))) return otherwise();
      return l.outcome(req, transaction);
    },
    /** After a refusal: a use of the authorization since `startedMs`; an RPC failure makes the outcome unknown (pending). */
    async usedSince(req: SettleRequest, startedMs: number, reason: string): Promise<SettleResult | undefined> {
      try {
        if (!(await sameChain(req))) return undefined;
        return await l.usedSince(req, startedMs);
      } catch (err) {
        throw new SettlementError("settlement_pending", "the facilitator refused the settlement and the chain could not be asked whether the transfer happened; retry later with the same payment.", {
          pending: true,
          cause: err,
          detail: `facilitator /settle refused (${reason}); the settlement lookup failed: ${(err as Error)?.message ?? String(err)}`,
        });
      }
    },
    /** The facilitator was reached but its answer is unknown: settled if the chain already shows it, else pending (the reconciler looks again). */
    async unknownOutcome(req: SettleRequest, err: unknown, timeoutMs: number): Promise<SettleResult> {
      const timedOut = err instanceof FacilitatorUnavailable && err.timedOut;
      const why = err instanceof FacilitatorUnavailable ? err.message : `facilitator /settle failed: ${(err as Error)?.message ?? String(err)}`;
      try {
        if (await sameChain(req)) {
          const found = await l.outcome(req);
          if (found) return found;
        }
      } catch (lookupErr) {
        // a payer's cancel is final; RPC trouble leaves it pending
        if (lookupErr instanceof SettlementError && lookupErr.reason === "settlement_canceled") throw lookupErr;
      }
      throw new SettlementError(
        "settlement_pending",
        timedOut ? `facilitator /settle did not answer within ${timeoutMs} ms; the transfer may still happen.` : "the facilitator's answer was lost; the transfer may still happen.",
        { pending: true, cause: err, detail: `${why} (outcome unknown: looked up on the chain until settled or expired)` },
      );
    },
  };
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
