/** A loopback TCP server that accepts connections and never answers: a hung Redis or database (tests reach only loopback). */
import { once } from "node:events";
import { createServer, type AddressInfo, type Socket } from "node:net";

export interface SilentServer {
  port: number;
  close(): void;
}

export async function startSilentServer(): Promise<SilentServer> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => void sockets.add(socket));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}
