/**
 * Wire the example server together from its configuration: chain, settler,
 * store, face engine, app; listen; close cleanly.
 */
import type { Server } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { Express } from "express";
import { facilitatorSettler, findNetwork, MemoryStore, relayerSettler, type PaymentEvent, type PaywallMiddleware, type Settler, type Store } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { createApp } from "./app.js";
import type { Config } from "./config.js";
import type { FaceEngine } from "./engine/types.js";
import type { ServiceSpec } from "./discovery/catalog.js";
import { redactingLogger } from "./observability/logging.js";
import { checkPortFree, listen, originOf, prepareDataDir, probeRpc, probeStore, StartupError, type StartupReport } from "./startup.js";
import type { Metrics } from "./observability/metrics.js";

/** A listening example server and its parts. */
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
  /** The app's Prometheus registry and metrics. */
  metrics: Metrics;
  /** Stop accepting, drain in-flight requests (and their settlements), then release everything. */
  close(): Promise<void>;
}

/** Parts tests may supply instead of the configured ones. */
export interface ServerOverrides {
  /** Use this engine instead of the configured one (tests). */
  engine?: FaceEngine;
  /** Use this chain instead of starting one (tests). */
  devchain?: DevChain;
  onEvent?: (e: PaymentEvent) => void;
  /** Sell these instead of service.ts's services (e.g. another price). */
  services?: readonly ServiceSpec[];
  /** Where startup progress and warnings go (default: the logger). */
  report?: StartupReport;
}

async function openStore(config: Config): Promise<Store> {
  if (config.store === "memory") return new MemoryStore();
  if (config.store === "redis") {
    const { RedisStore } = await import("server402/redis");
    return new RedisStore({ url: config.redisUrl! });
  }
  if (config.store === "postgres") {
    const { PostgresStore } = await import("server402/postgres");
    return PostgresStore.open({ connectionString: config.databaseUrl!, schema: config.databaseSchema }).catch((err: Error) => {
      throw new StartupError("DATABASE_URL", `DATABASE_URL (${originOf(config.databaseUrl!)}) could not be opened (${err.message}): check DATABASE_URL and that PostgreSQL runs.`, { cause: err });
    });
  }
  const { SqliteStore } = await import("server402/sqlite");
  prepareDataDir(config.dataDir);
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

/**
 * Answer requests Node refuses before Express sees them (headers over the
 * limit, malformed HTTP, header timeout) with JSON instead of Node's empty
 * answer.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === "ECONNRESET" || !socket.writable) return void socket.destroy();
  const [status, reason, code, message] =
    err.code === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large", "headers_too_large", "the request headers are larger than allowed."]
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "Request Timeout", "request_timeout", "the request took too long to arrive."]
        : [400, "Bad Request", "bad_request", "the request is not valid HTTP."];
  const body = JSON.stringify({ error: code, message });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`);
}

/** Start everything and listen on config.host:config.port. */
export async function startServer(config: Config, baseLogger: Logger, overrides: ServerOverrides = {}): Promise<RunningServer> {
  const logger = redactingLogger(baseLogger);
  const report: StartupReport = overrides.report ?? ((kind, message) => (kind === "warning" ? logger.warn(message) : logger.info(message)));
  await checkPortFree(config.host, config.port);
  if (config.devchain && !overrides.devchain) await checkPortFree("127.0.0.1", config.devchainPort, "DEVCHAIN_PORT");
  if (config.devchain && !overrides.devchain) report("progress", "starting the dev chain (anvil + test USDC)…");
  const devchain = overrides.devchain ?? (config.devchain ? await startDevChain({ port: config.devchainPort }) : undefined);
  const cleanups: Array<() => Promise<void>> = [];
  if (devchain && !overrides.devchain) cleanups.push(() => devchain.stop());
  try {
    const rpcUrl = devchain?.rpcUrl ?? config.rpcUrl;
    const payTo = config.payTo ?? devchain!.accounts.payTo.address;
    let settler: Settler;
    const chainId = devchain?.chainId ?? findNetwork(config.network)!.chainId;
    if (config.settler === "facilitator") {
      const auth = config.facilitatorAuthorization;
      // with RPC_URL, settlements the facilitator leaves unknown are looked up on the chain (issue 14 B10)
      settler = facilitatorSettler({ url: config.facilitatorUrl!, createAuthHeaders: auth ? () => ({ authorization: auth }) : undefined, rpcUrl });
    } else {
      settler = relayerSettler({ rpcUrl: rpcUrl!, chainId, privateKey: (config.relayerPrivateKey ?? devchain!.accounts.relayer.privateKey) as `0x${string}` });
    }
    const store = await openStore(config);
    cleanups.push(() => store.close());
    // Reachability warnings run while the face engine loads.
    const probes = Promise.all([
      config.store === "redis" ? probeStore(store, "REDIS_URL", config.redisUrl!, report) : undefined,
      rpcUrl && !devchain ? probeRpc(rpcUrl, chainId, report) : undefined,
    ]);
    if (!overrides.engine) report("progress", `loading the face engine (${config.faceEngine}${config.faceEngine === "local" ? "; 20-30 s on a first start" : ""})…`);
    const engine = overrides.engine ?? (await openEngine(config));
    if (!overrides.engine) cleanups.push(() => engine.close());
    await engine.ready();
    await probes;

    const { app, paywall, metrics } = createApp({
      config,
      payTo,
      store,
      settler,
      rpcUrl,
      chainId,
      engine,
      logger,
      services: overrides.services,
      onEvent: overrides.onEvent,
    });
    if (devchain) {
      app.locals.devchain = devchain;
    }
    const server: Server = await listen(app, config.host, config.port);
    server.on("clientError", answerClientError);
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
      metrics,
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
