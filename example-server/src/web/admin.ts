/**
 * The operator dashboard's server side: who may see it (the admin key, as a
 * Bearer header or through a login form that sets an HttpOnly,
 * SameSite=Strict session cookie) and what it shows (revenue per hour or day
 * with x402 calls and prepaid purchases apart, the ledger, recent outcomes,
 * pending settlements, live counters from the Prometheus registry).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Request, Response } from "express";
import type { LedgerEntry, Store } from "server402";
import type { Metrics } from "../observability/metrics.js";
import type { Activity, ActivityEntry } from "./activity.js";

/** Name of the session cookie. */
export const SESSION_COOKIE = "s402_admin";
const SESSION_MS = 8 * 60 * 60 * 1000;
const MAX_SESSIONS = 1000;
/** Most ledger entries read for the chart and totals. */
const MAX_LEDGER = 20_000;

export interface AdminAuth {
  /** True when an admin key is configured. */
  readonly enabled: boolean;
  /** The key matches (constant time). */
  check(key: string): boolean;
  /** A new session id for a correct key. */
  login(res: Response, secure: boolean): void;
  logout(req: Request, res: Response): void;
  /** The request carries a valid session cookie or `Authorization: Bearer <admin key>`. */
  allowed(req: Request): boolean;
}

function cookieOf(req: Request, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** Sessions live in memory: a restart logs everyone out, which is fine for one operator. */
export function adminAuth(adminKey: string | undefined): AdminAuth {
  const keyHash = adminKey ? createHash("sha256").update(adminKey).digest() : undefined;
  const sessions = new Map<string, number>();
  const check = (key: string) => !!keyHash && timingSafeEqual(createHash("sha256").update(key).digest(), keyHash);
  return {
    enabled: !!keyHash,
    check,
    login(res, secure) {
      const now = Date.now();
      for (const [id, exp] of sessions) if (exp <= now) sessions.delete(id);
      if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
      const id = randomBytes(32).toString("base64url");
      sessions.set(createHash("sha256").update(id).digest("hex"), now + SESSION_MS);
      res.cookie(SESSION_COOKIE, id, { httpOnly: true, sameSite: "strict", secure, path: "/admin", maxAge: SESSION_MS });
    },
    logout(req, res) {
      const id = cookieOf(req, SESSION_COOKIE);
      if (id) sessions.delete(createHash("sha256").update(id).digest("hex"));
      res.clearCookie(SESSION_COOKIE, { httpOnly: true, sameSite: "strict", path: "/admin" });
    },
    allowed(req) {
      if (!keyHash) return false;
      const auth = req.headers.authorization;
      if (auth && /^Bearer\s+\S+$/i.test(auth)) return check(auth.replace(/^Bearer\s+/i, ""));
      const id = cookieOf(req, SESSION_COOKIE);
      if (!id || id.length > 100) return false;
      const exp = sessions.get(createHash("sha256").update(id).digest("hex"));
      return exp !== undefined && exp > Date.now();
    },
  };
}

/** Revenue per time bucket, atomic units as integer strings. */
export interface RevenueSeries {
  bucket: "hour" | "day";
  /** Bucket starts, seconds since the epoch. */
  times: number[];
  x402: string[];
  prepaid: string[];
}

/** Sum the ledger into buckets: x402 per-call payments apart from prepaid purchases (entries with a paymentId). */
export function revenueSeries(entries: readonly LedgerEntry[], bucket: "hour" | "day"): RevenueSeries {
  const size = bucket === "hour" ? 3600_000 : 86_400_000;
  const sums = new Map<number, { x402: bigint; prepaid: bigint }>();
  for (const e of entries) {
    if (!/^[0-9]+$/.test(e.amount)) continue;
    const t = Math.floor(e.time / size) * size;
    const s = sums.get(t) ?? { x402: 0n, prepaid: 0n };
    if (e.paymentId) s.prepaid += BigInt(e.amount);
    else s.x402 += BigInt(e.amount);
    sums.set(t, s);
  }
  const times = [...sums.keys()].sort((a, b) => a - b);
  return {
    bucket,
    times: times.map((t) => t / 1000),
    x402: times.map((t) => sums.get(t)!.x402.toString()),
    prepaid: times.map((t) => sums.get(t)!.prepaid.toString()),
  };
}

/** Everything the dashboard shows, as its script fetches it. */
export interface DashboardSummary {
  now: number;
  counters: Record<string, number>;
  revenue: { hour: RevenueSeries; day: RevenueSeries; totalX402: string; totalPrepaid: string };
  ledger: LedgerEntry[];
  ledgerCount: number;
  recent: ActivityEntry[];
  pending: { settlements: ActivityEntry[]; prepaidAwaitingPayment: number };
}

/** Read the whole ledger (bounded), oldest first. */
async function readLedger(store: Store): Promise<LedgerEntry[]> {
  const all: LedgerEntry[] = [];
  let afterId = 0;
  for (;;) {
    const page = await store.listLedger({ afterId, limit: 1000 });
    all.push(...page);
    if (page.length < 1000 || all.length >= MAX_LEDGER) return all;
    afterId = page[page.length - 1]!.id ?? afterId;
  }
}

/** Sum each server402 counter over its labels. */
async function counters(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    if (String(m.type) !== "counter" || !m.name.startsWith("server402_")) continue;
    out[m.name.replace(/^server402_/, "").replace(/_total$/, "")] = m.values.reduce((n, v) => n + Number(v.value), 0);
  }
  return out;
}

/** Build the summary. */
export async function dashboardSummary(deps: { store: Store; metrics: Metrics; activity: Activity }): Promise<DashboardSummary> {
  const ledger = await readLedger(deps.store);
  let x402 = 0n;
  let prepaid = 0n;
  for (const e of ledger) {
    if (!/^[0-9]+$/.test(e.amount)) continue;
    if (e.paymentId) prepaid += BigInt(e.amount);
    else x402 += BigInt(e.amount);
  }
  return {
    now: Date.now(),
    counters: await counters(deps.metrics),
    revenue: { hour: revenueSeries(ledger, "hour"), day: revenueSeries(ledger, "day"), totalX402: x402.toString(), totalPrepaid: prepaid.toString() },
    ledger: ledger.slice(-50).reverse(),
    ledgerCount: ledger.length,
    recent: deps.activity.recent().slice(0, 50),
    pending: { settlements: deps.activity.pending(), prepaidAwaitingPayment: await deps.store.countPending(Date.now()) },
  };
}
