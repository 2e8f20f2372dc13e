/**
 * Startup checks of the settlers' options: each problem is a ConfigError that
 * names the option and says how to fix it, instead of a viem TypeError on the
 * first payment. Private keys are never echoed.
 */
import { isAddress } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { MAX_BATCH_SIZE } from "./batcher.js";
import { ConfigError } from "../errors.js";
import type { NetworkInfo } from "../protocol/networks.js";
import type { Settler } from "./settler.js";

const KEY_HINT = "read it from the environment (e.g. process.env.RELAYER_PRIVATE_KEY); `npx server402-devchain` prints one for the dev chain";

/** A http(s) URL option: required, parseable, http or https. */
function checkHttpUrl(value: unknown, option: string, example: string): URL {
  if (value === undefined || value === null || value === "") throw new ConfigError(option, `is required, e.g. ${JSON.stringify(example)}.`);
  if (typeof value !== "string") throw new ConfigError(option, `must be a URL string, e.g. ${JSON.stringify(example)}.`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(option, `${JSON.stringify(value)} is not a URL; use e.g. ${JSON.stringify(example)}.`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new ConfigError(option, `must be an http(s) URL, got ${url.protocol}//…; use e.g. ${JSON.stringify(example)}.`);
  return url;
}

/** A whole number of milliseconds from `min` to `max`, when given. */
function checkMs(value: unknown, option: string, min: number, max: number): void {
  if (value !== undefined && (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max)) {
    throw new ConfigError(option, `must be whole milliseconds from ${min} to ${max}, got ${JSON.stringify(value)}.`);
  }
}

/** Validate `relayerSettler`'s options (see RelayerSettlerOptions). */
export function validateRelayerOptions(opts: unknown): void {
  if (!opts || typeof opts !== "object") throw new ConfigError("relayerSettler", "pass an options object: relayerSettler({ rpcUrl, chainId, privateKey }).");
  const o = opts as Record<string, unknown>;
  checkHttpUrl(o.rpcUrl, "rpcUrl", "https://sepolia.base.org");
  if (typeof o.chainId !== "number" || !Number.isSafeInteger(o.chainId) || o.chainId < 1) {
    throw new ConfigError("chainId", `must be the chain's id as a positive integer (84532 Base Sepolia, 8453 Base), got ${JSON.stringify(o.chainId)}.`);
  }
  if (o.privateKeys !== undefined) {
    // a pool: each key checked like privateKey (relayerSettler refuses repeats and privateKey beside it)
    if (!Array.isArray(o.privateKeys) || o.privateKeys.length === 0) throw new ConfigError("privateKeys", `must be a non-empty array of keys (0x followed by 64 hex digits); ${KEY_HINT}.`);
    o.privateKeys.forEach((k: unknown, i: number) => checkKey(k, `privateKeys[${i}]`));
  } else checkKey(o.privateKey, "privateKey");
  checkMs(o.receiptTimeoutMs, "receiptTimeoutMs", 1, 3_600_000);
  checkMs(o.requestTimeoutMs, "requestTimeoutMs", 1, 600_000);
  checkMs(o.pollingIntervalMs, "pollingIntervalMs", 1, 60_000);
  if (o.sendMode !== undefined && o.sendMode !== "auto" && o.sendMode !== "sync" && o.sendMode !== "poll") {
    throw new ConfigError("sendMode", `must be "auto", "sync" or "poll", got ${JSON.stringify(o.sendMode)}.`);
  }
  if (o.batch !== undefined) checkBatch(o.batch);
}

/** `relayerSettler({ batch })`: the batch contract's address, a size within the per-transaction gas cap, a wait in ms. */
function checkBatch(batch: unknown): void {
  const example = "batch: { contract: dev.batchSettlement, maxSize: 100, maxWaitMs: 25 }";
  if (!batch || typeof batch !== "object" || Array.isArray(batch)) throw new ConfigError("batch", `must be an object, e.g. ${example}; leave it out to send one transaction per payment.`);
  const b = batch as Record<string, unknown>;
  if (typeof b.contract !== "string" || !isAddress(b.contract, { strict: false })) {
    throw new ConfigError(
      "batch.contract",
      `must be the address of the X402BatchSettlement contract (0x and 40 hex digits), got ${JSON.stringify(b.contract)}: \`dev.batchSettlement\` on the dev chain; on a real chain deploy it once (README, "Batched settlement").`,
    );
  }
  if (b.maxSize !== undefined && (typeof b.maxSize !== "number" || !Number.isInteger(b.maxSize) || b.maxSize < 1 || b.maxSize > MAX_BATCH_SIZE)) {
    throw new ConfigError("batch.maxSize", `must be a whole number of payments from 1 to ${MAX_BATCH_SIZE} (a batch's gas limit must stay under 2^24, the per-transaction cap on Base), got ${JSON.stringify(b.maxSize)}.`);
  }
  checkMs(b.maxWaitMs, "batch.maxWaitMs", 0, 10_000);
  const unknown = Object.keys(b).filter((k) => k !== "contract" && k !== "maxSize" && k !== "maxWaitMs");
  if (unknown.length > 0) throw new ConfigError(`batch.${unknown[0]}`, "is not an option of batch; it takes contract, maxSize and maxWaitMs.");
}

/** Validate `facilitatorSettler`'s options (see FacilitatorOptions). */
export function validateFacilitatorOptions(opts: unknown): void {
  if (!opts || typeof opts !== "object") throw new ConfigError("facilitatorSettler", 'pass an options object: facilitatorSettler({ url: "https://x402.org/facilitator" }).');
  const o = opts as Record<string, unknown>;
  checkHttpUrl(o.url, "facilitator.url", "https://x402.org/facilitator");
  checkMs(o.timeoutMs, "facilitator.timeoutMs", 1, 600_000);
  if (o.rpcUrl !== undefined) checkHttpUrl(o.rpcUrl, "facilitator.rpcUrl", "https://sepolia.base.org");
  if (o.createAuthHeaders !== undefined && typeof o.createAuthHeaders !== "function") {
    throw new ConfigError("facilitator.createAuthHeaders", "must be a function (endpoint) => headers, e.g. () => ({ authorization: `Bearer ${process.env.FACILITATOR_TOKEN}` }).");
  }
}

/**
 * A settler bound to one chain (`chainId`, as relayerSettler's is) must be on
 * the chain of every network it is asked to settle; otherwise each payment
 * would be verified for one chain and refused (or sent) on another.
 */
export function checkSettlerNetwork(settler: Settler, network: NetworkInfo, option: string): void {
  const chainId = (settler as { chainId?: unknown }).chainId;
  if (typeof chainId !== "number" || chainId === network.chainId) return;
  throw new ConfigError(
    option,
    `is ${network.caip2} (chainId ${network.chainId}), but the ${settler.kind} settler is on chainId ${chainId}: create the settler with chainId: ${network.chainId}, or set ${option} to the settler's chain.`,
  );
}

/** Validate `createChainReader`'s options (see ChainReaderOptions). */
export function validateReaderOptions(opts: unknown): void {
  if (!opts || typeof opts !== "object") throw new ConfigError("createChainReader", "pass an options object: createChainReader({ rpcUrl, chainId }).");
  const o = opts as Record<string, unknown>;
  checkHttpUrl(o.rpcUrl, "rpcUrl", "https://sepolia.base.org");
  if (typeof o.chainId !== "number" || !Number.isSafeInteger(o.chainId) || o.chainId < 1) {
    throw new ConfigError("chainId", `must be the chain's id as a positive integer (84532 Base Sepolia, 8453 Base), got ${JSON.stringify(o.chainId)}.`);
  }
  checkMs(o.timeoutMs, "timeoutMs", 1, 600_000);
}

/** A relayer key: present, 0x + 64 hex digits, and on the curve; never echoed. */
function checkKey(key: unknown, option: string): void {
  if (key === undefined || key === null || key === "") throw new ConfigError(option, `is required: the relayer wallet's key (0x followed by 64 hex digits), which pays the gas; ${KEY_HINT}.`);
  if (typeof key !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(key)) {
    const shape = typeof key === "string" ? `${key.length} characters${key.startsWith("0x") ? "" : " without the 0x prefix"}` : `a ${typeof key}`;
    throw new ConfigError(option, `must be 0x followed by 64 hex digits, got ${shape}; ${KEY_HINT}.`);
  }
  try {
    privateKeyToAccount(key as `0x${string}`);
  } catch {
    throw new ConfigError(option, "is not a valid secp256k1 key (zero or above the curve order); use another key.");
  }
}
