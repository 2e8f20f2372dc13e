/**
 * Test support for the SSRF tests: real HTTP listeners that record every TCP
 * connection they receive, bound to the SAME port on several loopback
 * addresses (127.0.0.1, 127.0.0.2, ::1), plus an outbound-connection monitor.
 *
 * Same port matters: a refused URL like http://127.0.0.1:P/ or a rebinding
 * attack that swaps 127.0.0.2 for 127.0.0.1 keeps the port, so a guard bug
 * lands on a listener and is counted instead of dying as ECONNREFUSED.
 */
import http from "node:http";
import net from "node:net";
import { AsyncLocalStorage } from "node:async_hooks";

/** Request handler used by a {@link RecordingServer}. */
export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** An HTTP server on one loopback address that counts connections and requests. */
export interface RecordingServer {
  /** The address it is bound to ("127.0.0.1", "127.0.0.2" or "::1"). */
  readonly host: string;
  /** TCP connections accepted since the last reset. */
  connections: number;
  /** Requests seen since the last reset (method, path, Host header). */
  requests: Array<{ method: string; url: string; host: string | undefined }>;
  /** Server-side sockets accepted since the last reset (to observe early closes). */
  sockets: net.Socket[];
  /** Current handler; reset to {@link trapHandler} by {@link ListenerSet.reset}. */
  handler: Handler;
  /** The underlying server. */
  readonly server: http.Server;
}

/** Listeners on one port across the loopback addresses this host can bind. */
export interface ListenerSet {
  /** The shared port. */
  readonly port: number;
  /** Listener on 127.0.0.1 (always present). */
  readonly v4: RecordingServer;
  /** Listener on 127.0.0.2, when the OS routes all of 127/8 to loopback (Linux does). */
  readonly alt: RecordingServer | undefined;
  /** Listener on ::1, when IPv6 loopback is available. */
  readonly v6: RecordingServer | undefined;
  /** All bound listeners. */
  all(): RecordingServer[];
  /** Sum of connections over all listeners. */
  totalConnections(): number;
  /** Zeroes counters and restores the trap handler everywhere. */
  reset(): void;
  /** Closes all listeners (and any open connection). */
  close(): Promise<void>;
}

/**
 * A tiny but valid JPEG header: if a guard bug lets a refused fetch reach a
 * trap, the fetch SUCCEEDS, so the test fails on the result as well as on the
 * connection count.
 */
export const TRAP_BODY = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0xff, 0xd9]);

/** Default handler: answer 200 with {@link TRAP_BODY}. */
export const trapHandler: Handler = (_req, res) => {
  res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": TRAP_BODY.length });
  res.end(TRAP_BODY);
};

function makeServer(host: string): RecordingServer {
  const rec: RecordingServer = {
    host,
    connections: 0,
    requests: [],
    sockets: [],
    handler: trapHandler,
    server: http.createServer((req, res) => {
      rec.requests.push({ method: req.method ?? "", url: req.url ?? "", host: req.headers.host });
      rec.handler(req, res);
    }),
  };
  rec.server.on("connection", (socket: net.Socket) => {
    rec.connections += 1;
    rec.sockets.push(socket);
  });
  // Keep-alive off: every fetch is a fresh connection anyway.
  rec.server.keepAliveTimeout = 1;
  return rec;
}

function listen(rec: RecordingServer, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    rec.server.once("error", onError);
    rec.server.listen({ host: rec.host, port, exclusive: true }, () => {
      rec.server.off("error", onError);
      resolve((rec.server.address() as net.AddressInfo).port);
    });
  });
}

function closeServer(rec: RecordingServer): Promise<void> {
  return new Promise((resolve) => {
    rec.server.closeAllConnections();
    rec.server.close(() => resolve());
  });
}

/**
 * Starts recording listeners on one shared free port: 127.0.0.1 always, and
 * 127.0.0.2 / ::1 when bindable (reported as undefined otherwise).
 */
export async function startListenerSet(): Promise<ListenerSet> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const v4 = makeServer("127.0.0.1");
    const port = await listen(v4, 0);
    const optional: Array<RecordingServer | undefined> = [];
    let clash = false;
    for (const host of ["127.0.0.2", "::1"]) {
      const rec = makeServer(host);
      try {
        await listen(rec, port);
        optional.push(rec);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE") clash = true;
        optional.push(undefined);
      }
    }
    if (clash) {
      // Someone else holds this port on another loopback address: try another port.
      await Promise.all([v4, ...optional].filter((r): r is RecordingServer => r !== undefined).map(closeServer));
      continue;
    }
    const [alt, v6] = optional;
    const all = () => [v4, alt, v6].filter((r): r is RecordingServer => r !== undefined);
    return {
      port,
      v4,
      alt,
      v6,
      all,
      totalConnections: () => all().reduce((n, r) => n + r.connections, 0),
      reset() {
        for (const r of all()) {
          r.connections = 0;
          r.requests = [];
          r.sockets = [];
          r.handler = trapHandler;
        }
      },
      close: async () => {
        await Promise.all(all().map(closeServer));
      },
    };
  }
  throw new Error("could not find a port free on all loopback addresses");
}

/** One outbound TCP connect attempt seen by the {@link ConnectMonitor}. */
export interface ConnectAttempt {
  host: string | undefined;
  port: number | undefined;
}

/** Records outbound `net.Socket#connect` calls made inside {@link ConnectMonitor.run}. */
export interface ConnectMonitor {
  /** Attempts recorded so far. */
  readonly attempts: ConnectAttempt[];
  /** Runs `fn` so that connects made from its async context are recorded. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Restores the original `connect`. */
  stop(): void;
}

/**
 * Patches `net.Socket.prototype.connect` (which plain TCP and TLS sockets both
 * use) to record connect attempts. Only calls made inside `run()` — tracked by
 * AsyncLocalStorage — are recorded, so unrelated sockets in the same mocha
 * process do not pollute the record. This proves "no connection attempted"
 * for targets no test can bind (10.0.0.1, 169.254.169.254, ...).
 */
export function startConnectMonitor(): ConnectMonitor {
  const als = new AsyncLocalStorage<true>();
  const attempts: ConnectAttempt[] = [];
  const proto = net.Socket.prototype as unknown as { connect: (...args: unknown[]) => unknown };
  const original = proto.connect;
  proto.connect = function patchedConnect(this: net.Socket, ...args: unknown[]) {
    if (als.getStore()) {
      // connect(options[, cb]) | connect(port[, host][, cb]) | connect(path[, cb]); Node also passes [options, cb] arrays.
      let first = args[0];
      if (Array.isArray(first)) first = first[0];
      if (typeof first === "object" && first !== null) {
        const o = first as { host?: string; port?: number | string };
        attempts.push({ host: o.host, port: o.port === undefined ? undefined : Number(o.port) });
      } else {
        attempts.push({ host: typeof args[1] === "string" ? args[1] : undefined, port: Number(first) });
      }
    }
    return original.apply(this, args);
  };
  return {
    attempts,
    run: (fn) => als.run(true, fn),
    stop() {
      proto.connect = original;
    },
  };
}
