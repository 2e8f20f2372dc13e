#!/usr/bin/env node
/**
 * `npx server402-devchain [--port 8545] [--host 127.0.0.1] [--block-time 2]`: run
 * the dev chain until Ctrl-C and print the environment a server and a paying
 * client need. `--block-time <s>` mines a block every s seconds (as on Base,
 * 2 s) instead of one per transaction (automine, the default).
 */
import { parseArgs } from "node:util";
import { Server402Error } from "../errors.js";
import { startDevChain } from "./index.js";

const { values } = parseArgs({ options: { port: { type: "string", default: "8545" }, host: { type: "string", default: "127.0.0.1" }, "block-time": { type: "string" } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`server402-devchain: --port must be a port number, got ${JSON.stringify(values.port)}`);
  process.exit(2);
}

const blockTime = values["block-time"] === undefined ? undefined : Number(values["block-time"]);
if (blockTime !== undefined && !(Number.isFinite(blockTime) && blockTime > 0 && blockTime <= 3600)) {
  console.error(`server402-devchain: --block-time must be seconds between blocks (> 0, at most 3600), got ${JSON.stringify(values["block-time"])}`);
  process.exit(2);
}

let dev;
try {
  dev = await startDevChain({ port, host: values.host, blockTime });
} catch (err) {
  console.error(`server402-devchain: ${err instanceof Server402Error ? err.message : String(err)}`);
  process.exit(1);
}
const { rpcUrl, chainId, usdc, accounts } = dev;
console.log(`# server402 dev chain: chain ${chainId}, test USDC at ${usdc}, ${blockTime === undefined ? "a block per transaction (automine)" : `a block every ${blockTime} s`}. Ctrl-C stops it.`);
console.log(`export RPC_URL=${rpcUrl}`);
console.log(`export RELAYER_PRIVATE_KEY=${accounts.relayer.privateKey}  # pays gas`);
console.log(`export PAY_TO=${accounts.payTo.address}  # receives the payments`);
console.log(`export PAYER_PRIVATE_KEY=${accounts.payers[0].privateKey}  # holds test USDC`);
console.log(`# batched settlement: relayerSettler({ batch: { contract: "${dev.batchSettlement}" } })`);

// anvil's process does not hold the event loop open (see startDevChain); this timer does, until a signal.
const keepAlive = setInterval(() => {}, 1 << 30);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    clearInterval(keepAlive);
    void dev.stop().then(() => process.exit(0));
  });
}
