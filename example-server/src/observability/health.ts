/**
 * Liveness and readiness. `/healthz`: the process answers. `/readyz`: the
 * payment store answers a ping, the chain RPC answers `eth_chainId` with the
 * expected chain, and the face engine is loaded; 200 or 503 with per-check
 * detail (never the RPC URL, which may embed an API key).
 */
import express, { type Router } from "express";
import type { Store } from "server402";
import type { FaceEngine } from "../engine/types.js";

/** What readiness checks. */
export interface HealthDeps {
  store: Store;
  engine: FaceEngine;
  /** Chain JSON-RPC; without it the chain check is skipped (a facilitator settles). */
  rpcUrl?: string;
  /** Expected chain id. */
  chainId?: number;
  /** Per-check timeout, ms. Default 2000. */
  timeoutMs?: number;
}

/** One check's outcome. */
export interface CheckResult {
  ok: boolean;
  ms: number;
  detail?: string;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function timed(fn: () => Promise<string | undefined>): Promise<CheckResult> {
  const started = Date.now();
  try {
    const detail = await fn();
    return { ok: true, ms: Date.now() - started, ...(detail ? { detail } : {}) };
  } catch (err) {
    return { ok: false, ms: Date.now() - started, detail: err instanceof Error ? err.message.slice(0, 300) : "failed" };
  }
}

/** Ask the RPC for its chain id. */
async function rpcChainId(rpcUrl: string, timeoutMs: number): Promise<number> {
  let res: globalThis.Response;
  try {
    res = await fetch(rpcUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const name = (err as Error)?.name;
    throw new Error(name === "TimeoutError" ? `chain RPC did not answer within ${timeoutMs} ms` : "chain RPC is unreachable");
  }
  if (!res.ok) throw new Error(`chain RPC answered HTTP ${res.status}`);
  const body = (await res.json().catch(() => undefined)) as { result?: unknown } | undefined;
  if (typeof body?.result !== "string" || !/^0x[0-9a-f]+$/i.test(body.result)) throw new Error("chain RPC answered no chain id");
  return Number.parseInt(body.result, 16);
}

/** Run every readiness check. */
export async function readiness(deps: HealthDeps): Promise<{ ready: boolean; checks: Record<string, CheckResult> }> {
  const t = deps.timeoutMs ?? 2000;
  const [store, chain, engine] = await Promise.all([
    timed(async () => {
      await withTimeout(deps.store.ping(), t, "store");
      return undefined;
    }),
    timed(async () => {
      if (!deps.rpcUrl) return "skipped: no chain RPC configured (the facilitator settles)";
      const id = await rpcChainId(deps.rpcUrl, t);
      if (deps.chainId !== undefined && id !== deps.chainId) throw new Error(`chain RPC is on chain ${id}, expected ${deps.chainId}`);
      return `chain ${id}`;
    }),
    timed(async () => {
      await withTimeout(deps.engine.ready(), t, "face engine");
      return deps.engine.name;
    }),
  ]);
  const checks = { store, chain, engine };
  return { ready: store.ok && chain.ok && engine.ok, checks };
}

/** `/healthz` and `/readyz`. */
export function healthRouter(deps: HealthDeps): Router {
  const router = express.Router();
  router.get("/healthz", (_req, res) => {
    res.status(200).set("Cache-Control", "no-store").json({ status: "ok", uptimeSeconds: Math.round(process.uptime()) });
  });
  router.get("/readyz", async (_req, res) => {
    const { ready, checks } = await readiness(deps);
    res.status(ready ? 200 : 503).set("Cache-Control", "no-store").json({ status: ready ? "ready" : "not_ready", checks });
  });
  return router;
}
