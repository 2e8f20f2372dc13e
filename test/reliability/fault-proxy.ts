/**
 * A TCP proxy on 127.0.0.1 for fault injection between the server under test
 * and one of its peers (the chain RPC): pass traffic, refuse it, hang it, or
 * delay every chunk of the answer.
 */
import net from "node:net";

export type ProxyMode = { kind: "pass" } | { kind: "down" } | { kind: "hang" } | { kind: "slow"; delayMs: number };

export interface FaultProxy {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Change the behaviour; every open connection is cut so pooled sockets obey too. */
  set(mode: ProxyMode): void;
  close(): Promise<void>;
}

export async function startFaultProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<FaultProxy> {
  let mode: ProxyMode = { kind: "pass" };
  let connections = 0;
  const open = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const track = (s: net.Socket) => {
    open.add(s);
    s.on("close", () => open.delete(s));
    s.on("error", () => {});
  };
  const server = net.createServer((client) => {
    connections++;
    track(client);
    const m = mode;
    if (m.kind === "down") return void client.destroy();
    if (m.kind === "hang") return void client.on("data", () => {});
    const upstream = net.connect(targetPort, targetHost);
    track(upstream);
    client.pipe(upstream);
    if (m.kind === "slow") {
      upstream.on("data", (chunk: Buffer) => {
        const t = setTimeout(() => {
          timers.delete(t);
          if (!client.destroyed) client.write(chunk);
        }, m.delayMs);
        timers.add(t);
      });
      upstream.on("end", () => {
        const t = setTimeout(() => client.end(), m.delayMs);
        timers.add(t);
      });
    } else {
      upstream.pipe(client);
    }
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => {
      if (m.kind !== "slow") client.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    set(next) {
      mode = next;
      for (const s of open) s.destroy();
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
