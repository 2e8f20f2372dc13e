/**
 * The floor of scenario 7: a bare Node http server (no Express, no paywall)
 * that answers every request 402 from its headers with the library's own
 * unread-body close (`endBeforeBody`: a body over 64 KB still arriving is
 * left unread, the answer goes out with `Connection: close`, the connection
 * ends 2 s later). What it costs per 13 MB request is what any Node server
 * pays for that exchange; the example server cannot do less.
 *
 * Prints `READY {"port":N}` once listening on 127.0.0.1; SIGTERM closes it.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { endBeforeBody } from "server402/internal";

// about the size of the example's 402 body, so both write the same
const body = JSON.stringify({ x402Version: 2, error: "payment required", accepts: [{ scheme: "exact", padding: "x".repeat(900) }] });

const server = createServer((req, res) => {
  res.statusCode = 402;
  res.setHeader("Content-Type", "application/json");
  endBeforeBody(req, res, body);
});
server.listen(0, "127.0.0.1", () => process.stdout.write(`READY ${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`));
process.on("SIGTERM", () => process.exit(0));
