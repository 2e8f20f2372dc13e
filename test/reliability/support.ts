/**
 * Shared pieces of the reliability suite: the example server's environment
 * against a real dev chain and the Alibaba emulator, prepaid tokens through
 * the real payments API, signed x402 headers, and on-chain / ledger reads.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getAddress, parseAbiItem, type Address, type Hex } from "viem";
import { privateKeyToAccount, generatePrivateKey } from "viem/accounts";
import { startDevChain, type DevChain } from "server402/devchain";
import { behave, startAlibabaEmulator, type AlibabaEmulator } from "../support/alibaba-emulator.js";
import { chainRpc } from "../support/chain-rpc.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { startPgCluster, type PgCluster } from "./pg-cluster.js";
import { publicClient } from "../support/paid-app.js";
import { v1Header, v2Header } from "../support/sign.js";

export const ADMIN_KEY = "reliability-admin-key-0123456789";
export const SERVICE_ID = "face-comparison";
export const FACE_PATH = "/api/tools/face-comparison";
/** USD 0.20 in USDC atomic units. */
export const PRICE = 200_000n;
const AK = { accessKeyId: "LTAI-reliability", accessKeySecret: "reliability-secret-value" };

/** The smallest body the server accepts: two 13-byte JPEG headers (the emulator does not decode images). */
export const TINY_JPEG = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0xff, 0xd9]);
export const FACE_BODY = JSON.stringify({ ImageDataA: TINY_JPEG.toString("base64"), ImageDataB: TINY_JPEG.toString("base64") });

/** Skip message for suites that need Redis. */
export const REDIS_URL = process.env.REDIS_URL;

export function startEmulator(): Promise<AlibabaEmulator> {
  return startAlibabaEmulator(AK);
}

/** A fresh, unfunded address: Transfer logs to it come only from the test that made it. */
export function freshPayTo(): Address {
  return privateKeyToAccount(generatePrivateKey()).address;
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `server402-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface EnvOptions {
  chain: DevChain;
  emulator: AlibabaEmulator;
  payTo: Address;
  /** Relayer key; default anvil #0. Give each concurrently running server its own key. */
  relayerKey?: Hex;
  store: "sqlite" | "redis" | "memory" | "postgres";
  dataDir?: string;
  redisUrl?: string;
  /** STORE=postgres: its DATABASE_URL. */
  databaseUrl?: string;
  /**
   * The handler's deadline (COMPARE_TIMEOUT_MS) and the token lease (TOKEN_LEASE_MS) both: the server
   * refuses a lease shorter than the handler's deadline (issue 14 A4). Default: the server's.
   */
  handlerDeadlineMs?: number;
  settlement?: "after" | "before";
  alibabaTimeoutMs?: number;
  extra?: Record<string, string | undefined>;
}

/** Environment of an example server on an external dev chain, the emulator as face engine. */
export function serverEnv(o: EnvOptions): Record<string, string | undefined> {
  return {
    DEVCHAIN: "off",
    RPC_URL: o.chain.rpcUrl,
    PAY_TO: o.payTo,
    RELAYER_PRIVATE_KEY: o.relayerKey ?? o.chain.accounts.relayer.privateKey,
    NETWORK: "base-sepolia",
    SETTLEMENT: o.settlement ?? "after",
    STORE: o.store,
    DATA_DIR: o.dataDir,
    REDIS_URL: o.redisUrl,
    DATABASE_URL: o.databaseUrl,
    COMPARE_TIMEOUT_MS: o.handlerDeadlineMs === undefined ? undefined : String(o.handlerDeadlineMs),
    TOKEN_LEASE_MS: o.handlerDeadlineMs === undefined ? undefined : String(o.handlerDeadlineMs),
    FACE_ENGINE: "alibaba",
    ALIBABA_CLOUD_ACCESS_KEY_ID: AK.accessKeyId,
    ALIBABA_CLOUD_ACCESS_KEY_SECRET: AK.accessKeySecret,
    ALIBABA_ENDPOINT: o.emulator.endpoint,
    ALIBABA_PROTOCOL: "http",
    ALIBABA_TIMEOUT_MS: String(o.alibabaTimeoutMs ?? 10_000),
    ADMIN_KEY,
    // The tests play clients behind a proxy on loopback: buyToken's X-Forwarded-For names the client.
    TRUST_PROXY: "loopback",
    ...o.extra,
  };
}

export interface Answer {
  status: number;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  headers: Headers;
}

/** fetch + read the body as JSON (throws if it is not JSON). */
export async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${init.method ?? "GET"} ${url} → ${res.status}: body is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, text, json, headers: res.headers };
}

/** POST the face comparison with extra headers. */
export function compare(base: string, headers: Record<string, string> = {}, body = FACE_BODY): Promise<Answer> {
  return call(`${base}${FACE_PATH}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
}

/**
 * Buy a prepaid token through the real payments API: create, then have the
 * operator confirm it. `forwardedFor` varies the client address the create
 * rate limit counts (the server trusts X-Forwarded-For from loopback).
 */
export async function buyToken(base: string, forwardedFor?: string): Promise<{ token: string; paymentId: string }> {
  const created = await call(`${base}/api/payments`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(forwardedFor ? { "x-forwarded-for": forwardedFor } : {}) },
    body: JSON.stringify({ serviceId: SERVICE_ID }),
  });
  if (created.status !== 201) throw new Error(`create payment → ${created.status}: ${created.text}`);
  const { token, paymentId } = created.json as { token: string; paymentId: string };
  const confirmed = await call(`${base}/api/payments/${paymentId}/confirm`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ provider: "reliability", reference: paymentId }),
  });
  if (confirmed.status !== 200) throw new Error(`confirm payment → ${confirmed.status}: ${confirmed.text}`);
  return { token, paymentId };
}

export async function paymentOf(base: string, paymentId: string): Promise<{ status: string; callsUsed: number; callsRemaining?: number; [k: string]: unknown }> {
  const r = await call(`${base}/api/payments/${paymentId}`);
  if (r.status !== 200) throw new Error(`GET payment → ${r.status}: ${r.text}`);
  return r.json;
}

/** x402 payment headers for the face route (v1 `X-PAYMENT` or v2 `PAYMENT-SIGNATURE`). */
export async function x402Headers(chain: DevChain, payer: Hex, payTo: Address, version: 1 | 2 = 2, extra: { nonce?: Hex; validBefore?: bigint } = {}): Promise<Record<string, string>> {
  const parts = { privateKey: payer, asset: chain.usdc, payTo, value: PRICE, ...extra };
  return version === 1 ? { "x-payment": await v1Header(parts) } : { "payment-signature": await v2Header(parts) };
}

/** The authorization (from, nonce) inside an x402 header. */
export function authorizationOf(headers: Record<string, string>): { from: Address; nonce: Hex } {
  const raw = headers["x-payment"] ?? headers["payment-signature"]!;
  const p = JSON.parse(Buffer.from(raw, "base64").toString("utf8"));
  return { from: getAddress(p.payload.authorization.from), nonce: p.payload.authorization.nonce };
}

const TRANSFER = parseAbiItem("event Transfer(address indexed from, address indexed to, uint256 value)");

/** Every on-chain USDC Transfer to `payTo` (tx hash, from, value). */
export async function transfersTo(chain: DevChain, payTo: Address): Promise<Array<{ transaction: Hex; from: Address; value: bigint }>> {
  const logs = await publicClient(chain).getLogs({ address: chain.usdc, event: TRANSFER, args: { to: payTo }, fromBlock: 0n, toBlock: "latest" });
  return logs.map((l) => ({ transaction: l.transactionHash, from: l.args.from!, value: l.args.value! }));
}

/** `authorizationState(from, nonce)` on the token: true once the authorization was used on-chain. */
export function authorizationUsed(chain: DevChain, from: Address, nonce: Hex): Promise<boolean> {
  return publicClient(chain).readContract({
    address: chain.usdc,
    abi: [parseAbiItem("function authorizationState(address authorizer, bytes32 nonce) view returns (bool)")],
    functionName: "authorizationState",
    args: [from, nonce],
  });
}

export interface LedgerRow {
  id: number;
  method: "x402" | "token";
  payer: string;
  amount: string;
  transaction?: string;
  paymentId?: string;
  network: string;
}

/** The whole operator ledger of a server. */
export async function ledgerOf(base: string): Promise<LedgerRow[]> {
  const rows: LedgerRow[] = [];
  let after = 0;
  for (;;) {
    const r = await call(`${base}/api/ledger?afterId=${after}&limit=1000`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    if (r.status !== 200) throw new Error(`GET ledger → ${r.status}: ${r.text}`);
    rows.push(...r.json.entries);
    if (r.json.entries.length < 1000) return rows;
    after = r.json.nextAfterId;
  }
}

/** Poll `cond` every 20 ms until true or `timeoutMs`; throws with `what` on timeout. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** What `postgresServersPerSuite` starts for its suite (set by its `before` hook). */
export interface PostgresServers {
  cluster: PgCluster;
  chain: DevChain;
  emulator: AlibabaEmulator;
  servers: ServerProcess[];
  /** In a test: skip it, saying why, when no PostgreSQL cluster could be made. */
  skipUnlessReady(test: Mocha.Context, suite: string): void;
}

/**
 * Issue 20 (20b, 20c): hooks of the calling suite that start a throwaway PostgreSQL cluster, a dev chain
 * (a block every `blockTime` s when given), the emulator answering in 20 ms and `count` example servers
 * on STORE=postgres, and stop them all after it. The servers start one after another (the first runs the
 * schema migration alone); several get a relayer wallet each (one nonce sequence each).
 */
export function postgresServersPerSuite(o: { name: string; payTo: Address; count?: number; blockTime?: number }): PostgresServers {
  let why: string | undefined;
  const s = {
    servers: [],
    skipUnlessReady(test, suite) {
      if (why === undefined) return;
      console.log(`    ${suite} skipped: ${why}`);
      test.skip();
    },
  } as Partial<PostgresServers> as PostgresServers;
  before(async () => {
    const cluster = await startPgCluster();
    if (typeof cluster === "string") return void (why = cluster);
    s.cluster = cluster;
    s.chain = await startDevChain(o.blockTime === undefined ? {} : { blockTime: o.blockTime });
    s.emulator = await startEmulator();
    s.emulator.setDefault(behave.success(undefined, 20));
    const count = o.count ?? 1;
    const keys = count > 1 ? Array.from({ length: count }, () => generatePrivateKey()) : [];
    const rpc = chainRpc(() => s.chain.rpcUrl);
    for (const k of keys) await rpc("anvil_setBalance", [privateKeyToAccount(k).address, "0x3635c9adc5dea00000"]);
    for (let i = 0; i < count; i++) {
      const env = serverEnv({ chain: s.chain, emulator: s.emulator, payTo: o.payTo, relayerKey: keys[i], store: "postgres", databaseUrl: cluster.url, handlerDeadlineMs: 20_000 });
      s.servers.push(await startServerProcess({ name: count > 1 ? `${o.name}-${i}` : o.name, readyTimeoutMs: 120_000, env }));
    }
  });
  after(async () => {
    await Promise.all(s.servers.map((p) => p.stop()));
    await s.emulator?.close();
    await s.chain?.stop();
    await s.cluster?.destroy();
  });
  return s;
}
