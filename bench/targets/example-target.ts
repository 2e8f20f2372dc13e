/**
 * The example server as a bench contender (scenario 7): its real app with a
 * memory store, settling through the parent's dev chain, and the Alibaba
 * engine pointed at a closed port (unpaid requests never reach an engine).
 *
 *   node bench/dist/bench/targets/example-target.js '{"rpcUrl":…,"payTo":…,"relayerKey":…}'
 *
 * Prints `READY {"port":N}` once listening on 127.0.0.1; SIGTERM closes it.
 */
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { loadConfig } from "../../example-server/src/config.js";
import { startServer } from "../../example-server/src/server.js";

const o = JSON.parse(process.argv[2] ?? "{}") as { rpcUrl: string; payTo: string; relayerKey: string };
const config = loadConfig({
  PORT: "0",
  HOST: "127.0.0.1",
  STORE: "memory",
  DEVCHAIN: "off",
  RPC_URL: o.rpcUrl,
  PAY_TO: o.payTo,
  RELAYER_PRIVATE_KEY: o.relayerKey,
  ALIBABA_CLOUD_ACCESS_KEY_ID: "bench-key-id",
  ALIBABA_CLOUD_ACCESS_KEY_SECRET: "bench-key-secret",
  ALIBABA_ENDPOINT: "127.0.0.1:9",
  ALIBABA_PROTOCOL: "http",
  LOG_LEVEL: "silent",
});
const running = await startServer(config, pino({ level: "silent" }));
process.stdout.write(`READY ${JSON.stringify({ port: (running.server.address() as AddressInfo).port })}\n`);
process.on("SIGTERM", () => void running.close().then(() => process.exit(0)));
