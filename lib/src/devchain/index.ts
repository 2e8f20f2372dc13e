/**
 * An embedded local chain for development and tests: anvil as a child
 * process, chainId 84532 (Base Sepolia), a test EIP-3009 USDC planted at
 * the real Base Sepolia USDC address, and funded dev accounts.
 *
 *   import { startDevChain } from "server402/devchain";
 *   const dev = await startDevChain();
 *   ... dev.rpcUrl, dev.usdc, dev.accounts.payers[0].privateKey ...
 *   await dev.stop();
 *
 * Needs the npm package `@foundry-rs/anvil-<platform>` (e.g.
 * `@foundry-rs/anvil-linux-amd64`) or an explicit `anvilPath`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import {
  createPublicClient,
  encodeDeployData,
  encodeFunctionData,
  getAddress,
  http,
  isAddress,
  toHex,
  type Abi,
  type Address,
  type Hex,
  type PublicClient,
} from "viem";
import { EIP3009_ABI } from "../chain/abi.js";
import { ConfigError, Server402Error } from "../errors.js";
import { packageDir } from "../optional.js";
import artifact from "./TestUSDC.artifact.json" with { type: "json" };
import { plantPermit2, type DevPermit2 } from "./permit2.js";
import batchArtifact from "../chain/X402BatchSettlement.artifact.json" with { type: "json" };

/** The well-known anvil / Hardhat development mnemonic. Never hold real funds with it. */
export const DEV_MNEMONIC = "test test test test test test test test test test test junk";

/** Base Sepolia USDC; the test token is planted here by default. */
export const BASE_SEPOLIA_USDC: Address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

/**
 * The test token's minter (baked into its code as an immutable). It has no
 * known key: the dev chain impersonates it, so minting never touches the
 * relayer's nonce.
 */
export const DEV_MINTER: Address = "0x0000000000000000000000000000000000004020";

/** Where the dev chain plants the X402BatchSettlement contract (batched settlement, `relayerSettler({ batch })`). */
const DEV_BATCH_SETTLEMENT: Address = "0x0000000000000000000000000000000000402030";

/** What went wrong while running the dev chain (`DevChainError.reason`). */
export type DevChainFailure = "startup_timeout" | "anvil_exited" | "spawn_failed" | "chain_id_mismatch" | "token_setup_failed" | "mint_failed" | "rpc_failed";

/**
 * The dev chain could not start or a mint failed (code `devchain_failed`).
 * A missing anvil is a `MissingDependencyError`, a bad option a `ConfigError`.
 */
export class DevChainError extends Server402Error {
  readonly reason: DevChainFailure;
  constructor(reason: DevChainFailure, message: string, options?: { cause?: unknown }) {
    super("devchain_failed", `server402/devchain: ${message}`, options);
    this.reason = reason;
  }
}

export interface DevAccount {
  address: Address;
  privateKey: Hex;
}

export interface DevChain {
  /** `http://127.0.0.1:<port>`. */
  rpcUrl: string;
  chainId: number;
  /** Address of the planted test USDC (6 decimals, EIP-712 name "USDC", version "2"). */
  usdc: Address;
  /** relayer = anvil #0 (pays gas), payers = anvil #1..#9 (each minted USDC), payTo = mnemonic index 10 (NOT funded with USDC at start) */
  accounts: { relayer: DevAccount; payers: DevAccount[]; payTo: DevAccount };
  /** Mint test USDC (atomic units) to `to`; resolves once mined. */
  mint(to: Address, amount: bigint): Promise<void>;
  /** Test USDC balance (atomic units). */
  balanceOf(owner: Address): Promise<bigint>;
  /** Permit2 at its canonical address, the x402 exact/upto Permit2 proxies, and a plain ERC-20 (no EIP-3009) paid through them. */
  permit2: DevPermit2;
  /** Address of the X402BatchSettlement contract (planted at 0x…402030), for `relayerSettler({ batch: { contract } })`. */
  batchSettlement: Address;
  /** Mint the plain ERC-20 (atomic units) to `to`; resolves once mined. Payers are not minted any at start. */
  mintToken(to: Address, amount: bigint): Promise<void>;
  /** Stop anvil and wait for it to exit. Idempotent. */
  stop(): Promise<void>;
}

export interface DevChainOptions {
  /** 0 or undefined = a free port. */
  port?: number;
  /** Loopback address to bind; default 127.0.0.1. Wildcard addresses are refused. */
  host?: string;
  /** Default 84532 (Base Sepolia). */
  chainId?: number;
  /** Where to plant the test token; default the Base Sepolia USDC address. */
  usdcAddress?: Address;
  /** USDC minted to each payer at start, atomic units; default 1000 USDC. */
  mintPerPayer?: bigint;
  /** anvil binary; default {@link anvilBinaryPath}(). */
  anvilPath?: string;
  /**
   * Interval mining: seconds between blocks (anvil `--block-time`), e.g. 2 as
   * on Base; transactions wait in the mempool until the next block, so
   * settlements overlap the way they do on a real chain. Undefined = automine
   * (a block per transaction, at once). Fractions are allowed (0.5).
   */
  blockTime?: number;
  /**
   * Block gas limit (anvil `--gas-limit`); default anvil's 30,000,000. Base
   * mainnet runs with about 140,000,000 per 2 s block: give that to measure
   * what a Base block can carry.
   */
  gasLimit?: number;
}

const STARTUP_TIMEOUT_MS = 15_000;
const POLL_MS = 5;
const PAYER_COUNT = 9;
const MINT_GAS = 200_000n;
const ANVIL_PLATFORMS: Record<string, string> = {
  "linux-x64": "linux-amd64",
  "linux-arm64": "linux-arm64",
  "darwin-x64": "darwin-amd64",
  "darwin-arm64": "darwin-arm64",
  "win32-x64": "win32-amd64",
};

/**
 * Path of the anvil binary shipped in the npm package
 * `@foundry-rs/anvil-<platform>`. Throws MissingDependencyError naming the
 * package to install when it is missing, ConfigError on a platform without one.
 */
export function anvilBinaryPath(): string {
  const platform = ANVIL_PLATFORMS[`${process.platform}-${process.arch}`];
  if (!platform) throw new ConfigError("anvilPath", `there is no anvil npm package for ${process.platform}-${process.arch}; install foundry and pass the anvil binary's path.`);
  const pkg = `@foundry-rs/anvil-${platform}`;
  const root = packageDir(pkg, pkg, "server402/devchain");
  return join(root, "bin", platform.startsWith("win32") ? "anvil.exe" : "anvil");
}

/**
 * Start a local anvil chain with the test USDC planted at `usdcAddress` and
 * `mintPerPayer` minted to each payer. Resolves when the chain is ready.
 * Call `stop()` when done; anvil is also killed when this process exits.
 */
export async function startDevChain(opts: DevChainOptions = {}): Promise<DevChain> {
  const host = opts.host ?? "127.0.0.1";
  if (host === "0.0.0.0" || host === "::" || host === "[::]") {
    throw new ConfigError("host", `refusing to bind anvil to ${host}; its accounts are unlocked. Use a loopback address.`);
  }
  const chainId = opts.chainId ?? 84532;
  if (opts.usdcAddress !== undefined && !isAddress(opts.usdcAddress, { strict: false })) throw new ConfigError("usdcAddress", `${JSON.stringify(opts.usdcAddress)} is not an address (0x and 40 hex digits).`);
  const usdc = getAddress(opts.usdcAddress ?? BASE_SEPOLIA_USDC);
  const mintPerPayer = opts.mintPerPayer ?? 1_000_000_000n;
  if (opts.blockTime !== undefined && !(typeof opts.blockTime === "number" && Number.isFinite(opts.blockTime) && opts.blockTime > 0 && opts.blockTime <= 3600)) {
    throw new ConfigError("blockTime", `must be the seconds between blocks (> 0, at most 3600), got ${String(opts.blockTime)}; leave it out for automine.`);
  }
  const args = ["--host", host, "--port", String(opts.port ?? 0), "--chain-id", String(chainId), "--mnemonic", DEV_MNEMONIC, "--accounts", "10"];
  if (opts.blockTime !== undefined) args.push("--block-time", String(opts.blockTime));
  if (opts.gasLimit !== undefined && !(Number.isSafeInteger(opts.gasLimit) && opts.gasLimit >= 1_000_000)) {
    throw new ConfigError("gasLimit", `must be the block gas limit as an integer of at least 1000000, got ${String(opts.gasLimit)}; leave it out for anvil's 30000000.`);
  }
  if (opts.gasLimit !== undefined) args.push("--gas-limit", String(opts.gasLimit));

  const anvil = spawnAnvil(opts.anvilPath ?? anvilBinaryPath(), args);
  try {
    const port = await anvil.listening;
    const rpcUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
    const client = createPublicClient({ transport: http(rpcUrl, { retryCount: 0 }) });
    await waitForChainId(client, chainId, anvil);
    const accounts = devAccounts();

    // Run the constructor in an eth_call: its return data is the runtime code
    // (immutables filled in), which is planted without deploying anything.
    const initCode = encodeDeployData({ abi: artifact.abi as Abi, bytecode: artifact.bytecode as Hex, args: [DEV_MINTER] });
    const [{ data: runtime }] = await Promise.all([
      client.call({ data: initCode }),
      client.request({ method: "anvil_impersonateAccount", params: [DEV_MINTER] } as never),
      client.request({ method: "anvil_setBalance", params: [DEV_MINTER, toHex(10n ** 24n)] } as never),
    ]);
    if (!runtime || runtime === "0x") throw new DevChainError("token_setup_failed", "the test token's constructor returned no code");
    const [, permit2] = await Promise.all([
      client.request({ method: "anvil_setCode", params: [usdc, runtime] } as never),
      plantPermit2(client),
      client.request({ method: "anvil_setCode", params: [DEV_BATCH_SETTLEMENT, batchArtifact.deployedBytecode] } as never),
    ]);

    // Only this chain sends as DEV_MINTER, so a local nonce counter is exact.
    // Sends go out one after another (a queue), so anvil never sees a nonce
    // gap; receipts are awaited concurrently.
    let minterNonce = 0;
    let sendQueue: Promise<unknown> = Promise.resolve();
    const mineTimeoutMs = 30_000 + 3_000 * (opts.blockTime ?? 0);
    const mintOnce = async (to: Address, amount: bigint, token: Address = usdc): Promise<void> => {
      const data = encodeFunctionData({ abi: EIP3009_ABI, functionName: "mint", args: [to, amount] });
      const send = sendQueue.then(() => {
        const tx = { from: DEV_MINTER, to: token, data, gas: toHex(MINT_GAS), nonce: toHex(minterNonce++) };
        return client.request({ method: "eth_sendTransaction", params: [tx] } as never) as Promise<Hex>;
      });
      sendQueue = send.catch(() => {});
      const hash = await send;
      const receipt = await receiptOf(client, hash, mineTimeoutMs);
      if (receipt.status !== "0x1") throw new DevChainError("mint_failed", `mint to ${to} reverted (${hash})`);
    };
    const mint = async (to: Address, amount: bigint): Promise<void> => {
      try {
        await mintOnce(to, amount);
      } catch (err) {
        throw asDevChainError(err, "mint_failed", `mint to ${to} failed`);
      }
    };
    const balanceOf = async (owner: Address): Promise<bigint> => {
      try {
        return await client.readContract({ address: usdc, abi: EIP3009_ABI, functionName: "balanceOf", args: [owner] });
      } catch (err) {
        throw asDevChainError(err, "rpc_failed", "balanceOf failed");
      }
    };
    if (mintPerPayer > 0n) await Promise.all(accounts.payers.map((p) => mint(p.address, mintPerPayer)));

    return {
      rpcUrl,
      chainId,
      usdc,
      accounts,
      mint,
      balanceOf,
      permit2,
      batchSettlement: DEV_BATCH_SETTLEMENT,
      mintToken: async (to: Address, amount: bigint) => {
        try {
          await mintOnce(to, amount, permit2.token);
        } catch (err) {
          throw asDevChainError(err, "mint_failed", `mint of the plain token to ${to} failed`);
        }
      },
      stop: anvil.stop,
    };
  } catch (err) {
    await anvil.stop();
    throw asDevChainError(err, "token_setup_failed", "setting up the test token failed");
  }
}

/** server402's own errors pass through; anything else (a viem RPC error) becomes a DevChainError. */
function asDevChainError(err: unknown, reason: DevChainFailure, what: string): Server402Error {
  if (err instanceof Server402Error) return err;
  const detail = err instanceof Error ? (err as { shortMessage?: string }).shortMessage ?? err.message : String(err);
  return new DevChainError(reason, `${what}: ${detail}`, { cause: err });
}

interface AnvilProcess {
  /** Resolves with the bound port once anvil prints "Listening on". */
  listening: Promise<number>;
  /** Resolves once the process has exited. */
  exited: Promise<void>;
  /** Last output lines, for error messages. */
  output(): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Spawn anvil; it is tracked so it dies with this process. */
function spawnAnvil(path: string, args: string[]): AnvilProcess {
  const child = spawn(path, args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of running) c.kill("SIGKILL");
    });
  }
  let tail = "";
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString("utf8")).slice(-4000);
  };
  child.stderr!.on("data", keep);
  child.stdout!.on("data", keep);

  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => {
      running.delete(child);
      resolve();
    });
  });
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DevChainError("startup_timeout", `anvil did not start within ${STARTUP_TIMEOUT_MS} ms. Output:\n${tail}`)), STARTUP_TIMEOUT_MS);
    const onData = (): void => {
      const m = /Listening on \S+:(\d+)/.exec(tail);
      if (!m) return;
      clearTimeout(timer);
      // From now on stdout (one line per RPC call) is drained and dropped; stderr is still kept.
      child.stdout!.off("data", onData);
      child.stdout!.off("data", keep);
      resolve(Number(m[1]));
    };
    child.stdout!.on("data", onData);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new DevChainError("spawn_failed", `cannot run anvil at ${path}: ${err.message}`, { cause: err }));
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new DevChainError("anvil_exited", `anvil exited during startup (code ${child.exitCode}). Output:\n${tail}`));
    });
  });
  listening.catch(() => {});
  // Do not keep the event loop alive just for anvil; the exit hook kills it.
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void }).unref?.();

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    child.kill("SIGTERM");
    const force = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(force);
  };
  return { listening, exited, output: () => tail, stop };
}

/** Poll eth_chainId until anvil answers. */
async function waitForChainId(client: PublicClient, chainId: number, anvil: AnvilProcess): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let actual: number | undefined;
  while (actual === undefined) {
    try {
      actual = await client.getChainId();
    } catch (err) {
      if (Date.now() > deadline) throw new DevChainError("startup_timeout", `anvil RPC did not answer within ${STARTUP_TIMEOUT_MS} ms. Output:\n${anvil.output()}`, { cause: err });
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
  if (actual !== chainId) throw new DevChainError("chain_id_mismatch", `anvil reports chain ${actual}, expected ${chainId}`);
}

/** Poll until the transaction is mined (automine or interval mining). */
async function receiptOf(client: PublicClient, hash: Hex, timeoutMs: number): Promise<{ status: Hex }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const receipt = (await client.request({ method: "eth_getTransactionReceipt", params: [hash] })) as { status: Hex } | null;
    if (receipt) return receipt;
    if (Date.now() > deadline) throw new DevChainError("mint_failed", `transaction ${hash} not mined within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/**
 * [address, private key] of DEV_MNEMONIC at m/44'/60'/0'/0/i, i = 0..10.
 * Precomputed (deriving them costs hundreds of ms on a cold start);
 * test/devchain.test.ts checks them against the mnemonic.
 */
export const DEV_KEYS: readonly (readonly [Address, Hex])[] = [
  ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"],
  ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"],
  ["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"],
  ["0x90F79bf6EB2c4f870365E785982E1f101E93b906", "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"],
  ["0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65", "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"],
  ["0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc", "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"],
  ["0x976EA74026E726554dB657fA54763abd0C3a0aa9", "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"],
  ["0x14dC79964da2C08b23698B3D3cc7Ca32193d9955", "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"],
  ["0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f", "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97"],
  ["0xa0Ee7A142d267C1f36714E4a8F75612F20a79720", "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"],
  ["0xBcd4042DE499D14e55001CcbB24a551F3b954096", "0xf214f2b2cd398c806f84e317254e0f0b801d0643303237d97a22a48e01628897"],
];

/** Fresh copies of the dev accounts: relayer #0, payers #1..#9, payTo #10. */
function devAccounts(): DevChain["accounts"] {
  const all = DEV_KEYS.map(([address, privateKey]) => ({ address, privateKey }));
  return { relayer: all[0], payers: all.slice(1, PAYER_COUNT + 1), payTo: all[PAYER_COUNT + 1] };
}
