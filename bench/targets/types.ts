/** Shared by bench/targets/http-target.ts (the child) and the scenarios (the parent). */
import type { Address, Hex } from "viem";

export type TargetKind =
  /** No payment middleware at all. */
  | "bare"
  /**
   * A middleware that only calls `next()`, mounted with `app.use` like every
   * payment middleware: the cost of one more Express layer, which no
   * middleware can avoid (a reference row, not a contender).
   */
  | "noop"
  /** server402 `paywall()` (x402 v1 + v2 + tokens). */
  | "server402"
  /** x402-express 1.2.0 `paymentMiddleware` with an in-process facilitator. */
  | "x402-express"
  /** @x402/express 2.x `paymentMiddleware` with an in-process facilitator. */
  | "x402-express-v2";

export interface Target {
  kind: TargetKind;
  /** server402 store (default memory). */
  store?: "memory" | "sqlite" | "redis";
  sqlitePath?: string;
  redisUrl?: string;
  /** Route accepts prepaid tokens: serviceId "bench", 1,000,000 calls per token, payments API served by the paywall (`payments` option). */
  tokens?: boolean;
  /**
   * Collect server402's x402 settlement durations through `onEvent`, for
   * GET /__bench/stats (scenario 4). Off elsewhere: an event hook is work a
   * server without one does not do.
   */
  settleStats?: boolean;
  /** server402's relayer sends payments in batches (`relayerSettler({ batch })`, scenario 9). */
  batch?: { contract: Address; maxSize?: number; maxWaitMs?: number };
  chain: {
    rpcUrl: string;
    chainId: number;
    usdc: Address;
    payTo: Address;
    /** Key of the wallet that submits settlements (server402 relayer or facilitator). */
    settlerKey: Hex;
  };
}

/** Operator key of the targets' payments API. */
export const ADMIN_KEY = "bench-admin-key-0123456789abcdef";
