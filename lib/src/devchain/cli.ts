#!/usr/bin/env node
/**
 * `npx server402-devchain [--port 8545] [--host 127.0.0.1]`: run the dev chain
 * until Ctrl-C and print the environment a server and a paying client need.
 */
import { parseArgs } from "node:util";
import { Server402Error } from "../errors.js";
import { startDevChain } from "./index.js";

const { values } = parseArgs({ options: { port: { type: "string", default: "8545" }, host: { type: "string", default: "127.0.0.1" } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`server402-devchain: --port must be a port number, got ${JSON.stringify(values.port)}`);
  process.exit(2);
}

let dev;
try {
  dev = await startDevChain({ port, host: values.host });
} catch (err) {
  console.error(`server402-devchain: ${err instanceof Server402Error ? err.message : String(err)}`);
  process.exit(1);
}
const { rpcUrl, chainId, usdc, accounts } = dev;
console.log(`# server402 dev chain: chain ${chainId}, test USDC at ${usdc}. Ctrl-C stops it.`);
console.log(`export RPC_URL=${rpcUrl}`);
console.log(`export RELAYER_PRIVATE_KEY=${accounts.relayer.privateKey}  # pays gas`);
console.log(`export PAY_TO=${accounts.payTo.address}  # receives the payments`);
console.log(`export PAYER_PRIVATE_KEY=${accounts.payers[0].privateKey}  # holds test USDC`);

// anvil's process does not hold the event loop open (see startDevChain); this timer does, until a signal.
const keepAlive = setInterval(() => {}, 1 << 30);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    clearInterval(keepAlive);
    void dev.stop().then(() => process.exit(0));
  });
}
