/**
 * Configuration from environment variables, validated at startup. Every
 * problem is reported at once, each with how to fix it. `.env.example`
 * documents each variable.
 */
import path from "node:path";
import { findNetwork, KNOWN_NETWORKS } from "server402";

export interface Config {
  port: number;
  host: string;
  publicUrl?: string;
  /**
   * Host names (lower case, without port) a request's Host may name when
   * there is no publicUrl; others are refused, so a forged Host never reaches
   * a 402 or a payment's URL. Undefined when publicUrl is set.
   */
  allowedHosts?: string[];
  /** Express's `trust proxy`: false, a hop count, or the proxies' addresses (never true). */
  trustProxy: false | number | string;
  /** Bearer token /metrics requires (it shows revenue). Without it /metrics is served on the dev chain only. */
  metricsToken?: string;
  network: string;
  /** undefined = start the embedded dev chain. */
  rpcUrl?: string;
  devchain: boolean;
  devchainPort: number;
  payTo?: string;
  settler: "relayer" | "facilitator";
  relayerPrivateKey?: string;
  facilitatorUrl?: string;
  facilitatorAuthorization?: string;
  settlement: "after" | "before";
  store: "sqlite" | "redis" | "memory";
  dataDir: string;
  sqlitePath: string;
  redisUrl?: string;
  faceEngine: "local" | "alibaba";
  faceWorkers?: number;
  alibaba?: { accessKeyId: string; accessKeySecret: string; securityToken?: string; endpoint: string; protocol: "https" | "http"; regionId: string; timeoutMs: number };
  adminKey?: string;
  /** How long a prepaid call stays reserved if the process dies mid-request. */
  tokenLeaseMs: number;
  imageAllowHosts: string[];
  imageMaxBytes: number;
  /** Largest pixel count of one image, checked from its header before decoding. */
  imageMaxPixels: number;
  imageTimeoutMs: number;
  compareTimeoutMs: number;
  /** Longest an MCP POST may take before it is answered with a timeout error. */
  mcpTimeoutMs: number;
  bodyLimitBytes: number;
  logLevel: string;
  corsOrigins: string;
}

/** Thrown with every configuration problem found. */
export class ConfigurationError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}\nSee .env.example for every variable.`);
    this.name = "ConfigurationError";
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

/** Read and validate the configuration. Throws ConfigurationError. */
export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const problems: string[] = [];
  const str = (k: string) => {
    const v = env[k]?.trim();
    return v ? v : undefined;
  };
  const int = (k: string, def: number, min: number, max: number) => {
    const v = str(k);
    if (v === undefined) return def;
    if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max) {
      problems.push(`${k}=${JSON.stringify(v)} must be a whole number from ${min} to ${max}.`);
      return def;
    }
    return Number(v);
  };
  const oneOf = <T extends string>(k: string, allowed: readonly T[], def: T): T => {
    const v = str(k);
    if (v === undefined) return def;
    if (!allowed.includes(v as T)) {
      problems.push(`${k}=${JSON.stringify(v)} must be one of ${allowed.join(", ")}.`);
      return def;
    }
    return v as T;
  };

  const network = str("NETWORK") ?? "base-sepolia";
  const net = findNetwork(network);
  if (!net) problems.push(`NETWORK=${JSON.stringify(network)} is unknown; use one of ${KNOWN_NETWORKS.join(", ")}.`);
  const rpcUrl = str("RPC_URL");
  const facilitatorUrl = str("FACILITATOR_URL");
  const devchainSetting = oneOf("DEVCHAIN", ["auto", "on", "off"] as const, "auto");
  const devchain = devchainSetting === "on" || (devchainSetting === "auto" && !rpcUrl && !facilitatorUrl);
  if (devchain && net && net.chainId !== 84532) problems.push(`the embedded dev chain runs Base Sepolia (84532); NETWORK=${network} needs RPC_URL (and FACILITATOR_URL or RELAYER_PRIVATE_KEY).`);
  const settler = oneOf("SETTLER", ["relayer", "facilitator"] as const, facilitatorUrl ? "facilitator" : "relayer");
  const relayerPrivateKey = str("RELAYER_PRIVATE_KEY");
  if (relayerPrivateKey && !/^0x[0-9a-fA-F]{64}$/.test(relayerPrivateKey)) problems.push("RELAYER_PRIVATE_KEY must be 0x followed by 64 hex digits.");
  if (settler === "relayer" && !devchain) {
    if (!relayerPrivateKey) problems.push("SETTLER=relayer needs RELAYER_PRIVATE_KEY (a funded wallet that pays gas), or set FACILITATOR_URL.");
    if (!rpcUrl) problems.push("SETTLER=relayer needs RPC_URL (your chain's JSON-RPC endpoint).");
  }
  if (settler === "facilitator" && !facilitatorUrl) problems.push("SETTLER=facilitator needs FACILITATOR_URL, e.g. https://x402.org/facilitator.");
  for (const [k, v] of [["RPC_URL", rpcUrl], ["FACILITATOR_URL", facilitatorUrl], ["PUBLIC_URL", str("PUBLIC_URL")]] as const) {
    if (v && !/^https?:\/\/[^\s]+$/.test(v)) problems.push(`${k}=${JSON.stringify(v)} must be an http(s) URL.`);
  }
  const publicUrl = str("PUBLIC_URL")?.replace(/\/+$/, "");
  if (publicUrl && /^https?:\/\/[^/]+\/./.test(publicUrl)) problems.push("PUBLIC_URL must be an origin without a path, e.g. https://api.example.com.");
  const isLoopbackHost = (h: string) => /^(localhost|127(\.\d+){3}|::1|\[::1\])$/i.test(h);
  const host = str("HOST") ?? "127.0.0.1";
  const allowedHostsSetting = str("ALLOWED_HOSTS")?.split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
  if (!publicUrl && !allowedHostsSetting && !devchain && !isLoopbackHost(host)) {
    problems.push(`HOST=${host} serves other machines: set PUBLIC_URL (the origin clients use, e.g. https://api.example.com) or ALLOWED_HOSTS (the host names clients may use), so a forged Host header never reaches payment URLs.`);
  }
  // Without PUBLIC_URL, only these Host names are answered: the loopback names and HOST itself unless ALLOWED_HOSTS says otherwise.
  const allowedHosts = publicUrl ? undefined : (allowedHostsSetting ?? [...new Set(["localhost", "127.0.0.1", "::1", "[::1]", host.toLowerCase()])]);
  const trustSetting = str("TRUST_PROXY") ?? "false";
  let trustProxy: false | number | string = false;
  if (/^[0-9]+$/.test(trustSetting)) trustProxy = Number(trustSetting);
  else if (trustSetting === "true") problems.push("TRUST_PROXY=true would believe any client's X-Forwarded-For (rate limits, Host): give the number of proxies in front (e.g. 1) or their addresses (e.g. loopback, 10.0.0.0/8).");
  else if (trustSetting !== "false") {
    const entries = trustSetting.split(",").map((e) => e.trim());
    if (entries.every((e) => /^(loopback|linklocal|uniquelocal|[0-9a-fA-F:.]+(\/[0-9]{1,3})?)$/.test(e))) trustProxy = entries.join(",");
    else problems.push(`TRUST_PROXY=${JSON.stringify(trustSetting)} must be false, a number of proxy hops, or proxy addresses/CIDRs (loopback, linklocal, uniquelocal allowed).`);
  }
  const metricsToken = str("METRICS_TOKEN");
  if (metricsToken && metricsToken.length < 16) problems.push("METRICS_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 32`).");

  const payTo = str("PAY_TO");
  if (payTo && !/^0x[0-9a-fA-F]{40}$/.test(payTo)) problems.push("PAY_TO must be an EVM address (0x followed by 40 hex digits).");
  if (!payTo && !devchain) problems.push("PAY_TO is required (the address that receives payments) unless the embedded dev chain runs.");

  const dataDir = path.resolve(cwd, str("DATA_DIR") ?? "data");
  const store = oneOf("STORE", ["sqlite", "redis", "memory"] as const, str("REDIS_URL") && !str("STORE") ? "redis" : "sqlite");
  const redisUrl = str("REDIS_URL");
  if (store === "redis" && !redisUrl) problems.push("STORE=redis needs REDIS_URL, e.g. redis://127.0.0.1:6379.");
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) problems.push("REDIS_URL must start with redis:// or rediss://.");

  const ak = str("ALIBABA_CLOUD_ACCESS_KEY_ID");
  const sk = str("ALIBABA_CLOUD_ACCESS_KEY_SECRET");
  if (!!ak !== !!sk) problems.push("set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or neither (then the local engine runs).");
  const faceEngine = oneOf("FACE_ENGINE", ["local", "alibaba"] as const, ak && sk ? "alibaba" : "local");
  if (faceEngine === "alibaba" && !(ak && sk)) problems.push("FACE_ENGINE=alibaba needs ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET.");
  const alibabaEndpoint = str("ALIBABA_ENDPOINT") ?? "facebody.cn-shanghai.aliyuncs.com";
  if (/^[a-z]+:\/\//i.test(alibabaEndpoint)) problems.push("ALIBABA_ENDPOINT is host[:port] without a scheme; set ALIBABA_PROTOCOL=http for a local emulator.");

  const adminKey = str("ADMIN_KEY");
  if (adminKey && adminKey.length < 16) problems.push("ADMIN_KEY must be at least 16 characters (e.g. `openssl rand -hex 32`).");

  const compareTimeoutMs = int("COMPARE_TIMEOUT_MS", 30_000, 1000, 300_000);
  const config: Config = {
    port: int("PORT", 4020, 0, 65535),
    host,
    publicUrl,
    allowedHosts,
    trustProxy,
    metricsToken,
    network,
    rpcUrl,
    devchain,
    devchainPort: int("DEVCHAIN_PORT", 8545, 0, 65535),
    payTo,
    settler,
    relayerPrivateKey,
    facilitatorUrl,
    facilitatorAuthorization: str("FACILITATOR_AUTHORIZATION"),
    settlement: oneOf("SETTLEMENT", ["after", "before"] as const, "after"),
    store,
    dataDir,
    sqlitePath: path.resolve(dataDir, str("SQLITE_FILE") ?? "server402.sqlite"),
    redisUrl,
    faceEngine,
    faceWorkers: str("FACE_WORKERS") ? int("FACE_WORKERS", 2, 1, 64) : undefined,
    alibaba:
      ak && sk
        ? {
            accessKeyId: ak,
            accessKeySecret: sk,
            securityToken: str("ALIBABA_CLOUD_SECURITY_TOKEN"),
            endpoint: alibabaEndpoint,
            protocol: oneOf("ALIBABA_PROTOCOL", ["https", "http"] as const, "https"),
            regionId: str("ALIBABA_REGION") ?? "cn-shanghai",
            timeoutMs: int("ALIBABA_TIMEOUT_MS", 10_000, 100, 120_000),
          }
        : undefined,
    adminKey,
    tokenLeaseMs: int("TOKEN_LEASE_MS", 120_000, 1000, 3_600_000),
    imageAllowHosts: (str("IMAGE_FETCH_ALLOW_HOSTS") ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    imageMaxBytes: int("IMAGE_MAX_BYTES", 5 * 1024 * 1024, 1024, 50 * 1024 * 1024),
    imageMaxPixels: int("IMAGE_MAX_PIXELS", 4096 * 4096, 1024, 100_000_000),
    imageTimeoutMs: int("IMAGE_FETCH_TIMEOUT_MS", 10_000, 100, 120_000),
    compareTimeoutMs,
    mcpTimeoutMs: int("MCP_TIMEOUT_MS", compareTimeoutMs + 35_000, 1000, 600_000),
    bodyLimitBytes: int("BODY_LIMIT_BYTES", 15 * 1024 * 1024, 1024, 100 * 1024 * 1024),
    logLevel: oneOf("LOG_LEVEL", ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const, "info"),
    corsOrigins: str("CORS_ORIGINS") ?? "*",
  };
  if (problems.length) throw new ConfigurationError(problems);
  return config;
}
