/**
 * Wire the example server together from its configuration: chain, settler,
 * store, face engine, app; listen; close cleanly.
 */
import { mkdirSync } from "node:fs";
import type { Server } from "node:http";
import type { Logger } from "pino";
import type { Express } from "express";
import { facilitatorSettler, MemoryStore, relayerSettler, type PaymentEvent, type PaywallMiddleware, type Settler, type Store } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { createApp } from "./app.js";
import type { Config } from "./config.js";
import type { FaceEngine } from "./engine/types.js";

export interface RunningServer {
  server: Server;
  app: Express;
  paywall: PaywallMiddleware;
  store: Store;
  engine: FaceEngine;
  engineName: string;
  payTo: string;
  rpcUrl?: string;
  devchain?: DevChain;
  /** Stop accepting, drain in-flight requests (and their settlements), then release everything. */
  close(): Promise<void>;
}

export interface ServerOverrides {
  /** Use this engine instead of the configured one (tests). */
  engine?: FaceEngine;
  /** Use this chain instead of starting one (tests). */
  devchain?: DevChain;
  onEvent?: (e: PaymentEvent) => void;
}

async function openStore(config: Config): Promise<Store> {
  if (config.store === "memory") return new MemoryStore();
  if (config.store === "redis") {
    const { RedisStore } = await import("server402/redis");
    return new RedisStore({ url: config.redisUrl! });
  }
  const { SqliteStore } = await import("server402/sqlite");
  mkdirSync(config.dataDir, { recursive: true });
  return new SqliteStore({ path: config.sqlitePath });
}

async function openEngine(config: Config): Promise<FaceEngine> {
  if (config.faceEngine === "alibaba") {
    const { createAlibabaEngine } = await import("./engine/alibaba.js");
    return createAlibabaEngine({ ...config.alibaba! });
  }
  const { createLocalEngine } = await import("./engine/local/index.js");
  return createLocalEngine({ workers: config.faceWorkers });
}

/** Start everything and listen on config.host:config.port. */
export async function startServer(config: Config, logger: Logger, overrides: ServerOverrides = {}): Promise<RunningServer> {
  const devchain = overrides.devchain ?? (config.devchain ? await startDevChain({ port: config.devchainPort }) : undefined);
  const cleanups: Array<() => Promise<void>> = [];
  if (devchain && !overrides.devchain) cleanups.push(() => devchain.stop());
  try {
    const rpcUrl = devchain?.rpcUrl ?? config.rpcUrl;
    const payTo = config.payTo ?? devchain!.accounts.payTo.address;
    let settler: Settler;
    if (config.settler === "facilitator") {
      const auth = config.facilitatorAuthorization;
      settler = facilitatorSettler({ url: config.facilitatorUrl!, createAuthHeaders: auth ? () => ({ authorization: auth }) : undefined });
    } else {
      const chainId = devchain?.chainId ?? (await import("server402")).findNetwork(config.network)!.chainId;
      settler = relayerSettler({ rpcUrl: rpcUrl!, chainId, privateKey: (config.relayerPrivateKey ?? devchain!.accounts.relayer.privateKey) as `0x${string}` });
    }
    const store = await openStore(config);
    cleanups.push(() => store.close());
    const engine = overrides.engine ?? (await openEngine(config));
    if (!overrides.engine) cleanups.push(() => engine.close());
    await engine.ready();

    const { app, paywall } = createApp({
      config,
      payTo,
      store,
      settler,
      rpcUrl,
      engine,
      onEvent: overrides.onEvent,
      onError: (err) => logger.error({ err }, "unexpected error"),
    });
    if (devchain) {
      app.locals.devchain = devchain;
    }
    const server: Server = await new Promise((resolve, reject) => {
      const s = app.listen(config.port, config.host, () => resolve(s));
      s.once("error", reject);
    });
    server.requestTimeout = 60_000;
    server.headersTimeout = 20_000;
    server.keepAliveTimeout = 5_000;
    let closing: Promise<void> | undefined;
    return {
      server,
      app,
      paywall,
      store,
      engine,
      engineName: engine.name,
      payTo,
      rpcUrl,
      devchain,
      close: () =>
        (closing ??= (async () => {
          await new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeIdleConnections();
          });
          for (const c of cleanups.reverse()) await c().catch((err) => logger.warn({ err }, "cleanup failed"));
        })()),
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    throw err;
  }
}
