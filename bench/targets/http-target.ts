/**
 * One contender of the HTTP benchmarks, run as its own process so the load
 * generator (bench/run.ts) never shares a CPU queue, heap or JIT with it.
 *
 *   node bench/dist/bench/targets/http-target.js '<json Target>'   (as npm run bench runs it, compiled)
 *   node --conditions=server402-source --import tsx bench/targets/http-target.ts '<json Target>'   (TS sources)
 *
 * Prints `READY {"port":N}` once listening on 127.0.0.1; SIGTERM closes it
 * (and deletes its Redis keys). Every contender serves the same route,
 * `GET /weather` → 200 `{"weather":"sunny","temperature":21}` when paid (or
 * unpriced), priced at $0.01 on base-sepolia.
 */
import express, { type RequestHandler } from "express";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { paywall, relayerSettler, type Store } from "server402";
import { ADMIN_KEY, type Target } from "./types.js";

const PRICE = "$0.01";
const body = { weather: "sunny", temperature: 21 };

const target = JSON.parse(process.argv[2] ?? "{}") as Target;
const cleanups: Array<() => Promise<void>> = [];
/** server402's own settlement durations (x402), for GET /__bench/stats. */
const settleMs: number[] = [];

async function openStore(): Promise<Store | undefined> {
  if (target.store === "sqlite") {
    const { SqliteStore } = await import("server402/sqlite");
    const s = new SqliteStore({ path: target.sqlitePath! });
    cleanups.push(() => s.close());
    return s;
  }
  if (target.store === "redis") {
    const { RedisStore } = await import("server402/redis");
    const keyPrefix = `server402-bench:${process.pid}-${Date.now()}:`;
    const s = new RedisStore({ url: target.redisUrl!, keyPrefix });
    cleanups.push(async () => {
      const c = s.client;
      let cursor = "0";
      do {
        const [next, keys] = await c.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000);
        cursor = next;
        if (keys.length) await c.del(...keys);
      } while (cursor !== "0");
      await s.close();
    });
    return s;
  }
  return undefined; // MemoryStore (the default)
}

/** An x402 facilitator in this process (test/support/facilitator.ts), settling with `settlerKey`. */
async function inProcessFacilitator(): Promise<string> {
  const { startFacilitator } = await import("../../test/support/facilitator.js");
  const c = target.chain;
  const f = await startFacilitator({ rpcUrl: c.rpcUrl, chainId: c.chainId, privateKey: c.settlerKey });
  cleanups.push(() => f.close());
  return f.url;
}

async function middleware(): Promise<RequestHandler | undefined> {
  const c = target.chain;
  switch (target.kind) {
    case "bare":
      return undefined;
    case "noop":
      return (_req, _res, next) => next();
    case "server402": {
      const pw = paywall({
        payTo: c.payTo,
        network: "base-sepolia",
        rpcUrl: c.rpcUrl,
        settler: relayerSettler({ rpcUrl: c.rpcUrl, chainId: c.chainId, privateKey: c.settlerKey, batch: target.batch }),
        store: await openStore(),
        onEvent: target.settleStats
          ? (e) => {
              if (e.type === "settled" && e.method === "x402" && settleMs.length < 100_000) settleMs.push(e.durationMs);
            }
          : undefined,
        routes: { "GET /weather": { price: PRICE, description: "weather", ...(target.tokens ? { serviceId: "bench", maxCalls: 1_000_000 } : {}) } },
        ...(target.tokens ? { payments: { adminKey: ADMIN_KEY, createLimit: { max: 1_000_000, windowMs: 60_000 } } } : {}),
      });
      return pw;
    }
    case "x402-express": {
      const { paymentMiddleware } = await import("x402-express");
      const url = await inProcessFacilitator();
      return paymentMiddleware(c.payTo, { "GET /weather": { price: PRICE, network: "base-sepolia", config: { description: "weather" } } }, { url: url as `${string}://${string}` }) as unknown as RequestHandler;
    }
    case "x402-express-v2": {
      const { paymentMiddleware, x402ResourceServer } = await import("@x402/express");
      const { HTTPFacilitatorClient } = await import("@x402/core/server");
      const { ExactEvmScheme } = await import("@x402/evm/exact/server");
      const url = await inProcessFacilitator();
      const server = new x402ResourceServer(new HTTPFacilitatorClient({ url })).register(`eip155:${c.chainId}`, new ExactEvmScheme());
      return paymentMiddleware(
        { "GET /weather": { accepts: { scheme: "exact", network: `eip155:${c.chainId}`, payTo: c.payTo, price: PRICE }, description: "weather" } },
        server,
      ) as unknown as RequestHandler;
    }
  }
}

const app = express();
app.disable("x-powered-by");
const mw = await middleware();
if (mw) app.use(mw);
app.get("/weather", (_req, res) => void res.json(body));
app.get("/__bench/stats", (_req, res) => void res.json({ settleMs }));
const server: Server = await new Promise((resolve) => {
  const s = app.listen(0, "127.0.0.1", () => resolve(s));
});
server.keepAliveTimeout = 60_000;
process.stdout.write(`READY ${JSON.stringify({ port: (server.address() as AddressInfo).port, pid: process.pid })}\n`);

let closing = false;
process.on("SIGTERM", async () => {
  if (closing) return;
  closing = true;
  server.closeAllConnections();
  server.close();
  for (const c of cleanups.reverse()) await c().catch(() => {});
  process.exit(0);
});
