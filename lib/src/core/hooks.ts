/**
 * Lifecycle hooks around an x402 payment, at the moments of @x402/core 2.x's
 * resource server: before/after verify, verify failure, before/after
 * settle, settle failure. Used by the Express paywall and the MCP adapter
 * alike (they share the engine).
 *
 * Money rules: a `before*`/`onAfterVerify` hook may refuse the payment by
 * returning `{ abort: true, reason, message? }` (a 402 with that reason);
 * one that throws refuses it too (`hook_failed`, 503). Either way nothing is
 * charged and no paid answer is delivered: the authorization's lock is given
 * back, and an aborted `onBeforeSettle` withholds the handler's answer
 * (settlement `after`) or keeps the handler from running (`before`). The
 * other hooks only observe: what they throw is reported as a `hook_failed`
 * event (`onEvent`) and changes nothing; after a settlement the answer is
 * always delivered.
 */
import { PaymentError } from "../errors.js";

/** What every hook receives. */
export interface PaymentHookContext {
  /** The resource URL being paid for. */
  resource: string;
  x402Version: 1 | 2;
  /** The payment payload as the client sent it (decoded JSON). Do not modify. */
  paymentPayload: Readonly<Record<string, unknown>>;
  /** The requirements (in the client's protocol version) of the option this payment was matched to. */
  requirements: Readonly<Record<string, unknown>>;
}

/** The verified payment: payer, amount, asset, network, nonce. */
export interface VerifiedHookContext extends PaymentHookContext {
  payment: { payer: string; amount: string; asset: string; network: string; nonce: string; serviceId?: string };
}

/** A refusal a hook may return; `reason` becomes the answer's x402 `error`. */
export interface HookAbort {
  abort: true;
  /** Machine-readable reason, e.g. "payer_blocked" (letters, digits, `_`, `-`, `.`). */
  reason: string;
  /** Human text for the answer. */
  message?: string;
}

type Awaitable<T> = T | Promise<T>;

/** Lifecycle hooks (the `hooks` option). Each may be async. */
export interface PaymentHooks {
  /** After the payload is decoded and matched to an option, before the signature and chain checks. May abort. */
  onBeforeVerify?(ctx: PaymentHookContext): Awaitable<void | HookAbort>;
  /** After the payment is verified and its authorization locked, before the handler runs. May abort (the lock is given back). */
  onAfterVerify?(ctx: VerifiedHookContext): Awaitable<void | HookAbort>;
  /** A payment was refused during verification (bad signature, used nonce, funds, an aborting hook...). Observes only. */
  onVerifyFailure?(ctx: PaymentHookContext & { error: Error }): Awaitable<void>;
  /** Right before the transfer is sent. May abort: nothing is charged and the paid answer is withheld. */
  onBeforeSettle?(ctx: VerifiedHookContext): Awaitable<void | HookAbort>;
  /** The transfer is confirmed (an `upto` payment charged 0: `transaction` is "", nothing moved). Observes only: its errors are reported, the answer is delivered. */
  onAfterSettle?(ctx: VerifiedHookContext & { transaction: string }): Awaitable<void>;
  /** The transfer failed or is still pending (`error.pending`). Observes only. */
  onSettleFailure?(ctx: VerifiedHookContext & { error: Error }): Awaitable<void>;
  /**
   * Express only: every request to a priced route, before any payment step. Return
   * `{ grantAccess: true }` to let it through unpaid, `{ abort: true, reason, message? }` for a 403;
   * a throw answers 503 `hook_failed`. `ctx` is `{ req, method, path, route }` (see `ProtectedRequestContext`).
   */
  onProtectedRequest?(ctx: { req: unknown; method: string; path: string; route: string }): Awaitable<void | { grantAccess: true } | HookAbort>;
}

const HOOK_NAMES = ["onBeforeVerify", "onAfterVerify", "onVerifyFailure", "onBeforeSettle", "onAfterSettle", "onSettleFailure", "onProtectedRequest"] as const;
const REASON = /^[A-Za-z0-9_.-]{1,64}$/;

/** Validate the `hooks` option at startup (throws a TypeError-like message via the caller's ConfigError). */
export function hookProblem(hooks: unknown): string | undefined {
  if (hooks === undefined) return undefined;
  if (!hooks || typeof hooks !== "object") return "must be an object of functions, e.g. { onAfterSettle: (ctx) => log(ctx) }.";
  for (const [k, v] of Object.entries(hooks)) {
    if (!(HOOK_NAMES as readonly string[]).includes(k)) return `has an unknown hook ${JSON.stringify(k)}; known: ${HOOK_NAMES.join(", ")}.`;
    if (typeof v !== "function") return `.${k} must be a function.`;
  }
  return undefined;
}

/** Runs hooks for the engine with the money rules above. */
export class HookRunner {
  constructor(
    private readonly hooks: PaymentHooks,
    private readonly report: (hook: string, err: unknown, resource: string) => void,
  ) {}

  /** Run a hook that may refuse: an abort or a throw becomes the PaymentError to refuse with. */
  async gate<K extends "onBeforeVerify" | "onAfterVerify" | "onBeforeSettle">(name: K, ctx: Parameters<NonNullable<PaymentHooks[K]>>[0]): Promise<void> {
    const hook = this.hooks[name] as ((c: typeof ctx) => Awaitable<void | HookAbort>) | undefined;
    if (!hook) return;
    let out: void | HookAbort;
    try {
      out = await hook.call(this.hooks, ctx);
    } catch (err) {
      this.report(name, err, ctx.resource);
      throw new PaymentError("hook_failed", `the server could not take this payment right now (${name} failed); nothing was charged, retry later.`, 503, { cause: err });
    }
    if (out && out.abort === true) {
      const reason = typeof out.reason === "string" && REASON.test(out.reason) ? out.reason : "payment_refused";
      throw new PaymentError(reason, typeof out.message === "string" && out.message ? out.message : `the server refused this payment (${reason}); nothing was charged.`);
    }
  }

  /** Run a hook that only observes: never throws. */
  async observe<K extends "onVerifyFailure" | "onAfterSettle" | "onSettleFailure">(name: K, ctx: Parameters<NonNullable<PaymentHooks[K]>>[0]): Promise<void> {
    const hook = this.hooks[name] as ((c: typeof ctx) => Awaitable<void>) | undefined;
    if (!hook) return;
    try {
      await hook.call(this.hooks, ctx);
    } catch (err) {
      this.report(name, err, ctx.resource);
    }
  }
}
