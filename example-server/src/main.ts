/**
 * `npm start`: run the example server. With no configuration it starts the
 * embedded dev chain (anvil + test USDC), the SQLite store under ./data and
 * the local face engine.
 */
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { ConfigurationError, loadConfig } from "./config.js";
import { startServer } from "./server.js";
import { StartupError, type StartupReport } from "./startup.js";

async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigurationError) {
      process.stderr.write(`server402 example: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = pino({ level: config.logLevel, base: undefined });
  // Progress on stdout as plain lines (the dev chain and the local face engine take a while); warnings on stderr.
  const report: StartupReport = (kind, message) =>
    kind === "warning" ? process.stderr.write(`server402 example: warning: ${message}\n`) : process.stdout.write(`server402 example: ${message}\n`);
  // A signal while the dev chain or the face engine loads exits at once; process exit hooks stop anvil.
  const duringStartup = (signal: NodeJS.Signals) => process.exit(signal === "SIGINT" ? 130 : 143);
  process.once("SIGINT", duringStartup);
  process.once("SIGTERM", duringStartup);
  const running = await startServer(config, logger, { report });
  const { port } = running.server.address() as AddressInfo;
  const url = `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${port}`;
  const lines = [
    "",
    `server402 example is serving face comparison at ${url}`,
    `  paid endpoint   POST ${url}/api/tools/face-comparison  (USD 0.20 per call)`,
    `  MCP             ${url}/mcp`,
    `  catalog         ${url}/api/services   OpenAPI ${url}/openapi.json   ${url}/llms.txt`,
    `  face engine     ${running.engineName}   store ${config.store}${config.store === "sqlite" ? ` (${config.sqlitePath})` : ""}`,
    `  payTo           ${running.payTo}`,
  ];
  if (running.devchain) {
    const payer = running.devchain.accounts.payers[0]!;
    lines.push(
      `  dev chain RPC   ${running.devchain.rpcUrl}  (chainId ${running.devchain.chainId}, test USDC at ${running.devchain.usdc})`,
      `  funded payer    ${payer.address}`,
      `  payer key       ${payer.privateKey}  (anvil's public test key; worthless)`,
      `  try it          npm run demo`,
    );
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: draining requests and settlements");
    const force = setTimeout(() => {
      logger.error("shutdown took longer than 30 s; exiting");
      process.exit(1);
    }, 30_000);
    force.unref();
    await running.close();
    logger.info("stopped");
    process.exit(0);
  };
  process.off("SIGINT", duringStartup);
  process.off("SIGTERM", duringStartup);
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.stdout.write(`${lines.join("\n")}\n\n`);
  await once(process, "beforeExit");
}

main().catch((err) => {
  if (err instanceof StartupError) {
    process.stderr.write(`server402 example: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`server402 example failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
