/** A small Express app priced with server402 on a real dev chain, for tests. */
import express, { type Express, type Request } from "express";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { createPublicClient, createWalletClient, defineChain, http, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { paywall, relayerSettler, requirePayment, type PaymentOptions, type PaywallMiddleware, type Store } from "server402";
import type { DevChain } from "server402/devchain";

export interface PaidApp {
  url: string;
  app: Express;
  server: Server;
  pw: PaywallMiddleware;
  /** Handler runs per route key. */
  runs: Record<string, number>;
  close(): Promise<void>;
}

export function devChainDef(chain: DevChain) {
  return defineChain({
    id: chain.chainId,
    name: "devchain",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [chain.rpcUrl] } },
  });
}

/** A viem wallet client for a payer (what x402-fetch 1.x wants). */
export function payerWallet(chain: DevChain, privateKey: Hex) {
  return createWalletClient({ account: privateKeyToAccount(privateKey), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
}

export function publicClient(chain: DevChain) {
  return createPublicClient({ chain: devChainDef(chain), transport: http(chain.rpcUrl) });
}

export interface PaidAppOptions extends Partial<PaymentOptions> {
  /** Mount prefix for the paywalled router, e.g. "/v1". */
  mount?: string;
  store?: Store;
  /** Status the paid handlers answer with (default 200). */
  handlerStatus?: () => number;
}

/**
 * Routes: paywall `GET /weather` ($0.01), `POST /echo` ($0.05, echoes the
 * JSON body), `GET /dynamic/:n` (n cents); requirePayment `POST /single` ($0.02).
 */
export async function startPaidApp(chain: DevChain, opts: PaidAppOptions = {}): Promise<PaidApp> {
  const runs: Record<string, number> = {};
  const count = (k: string) => (runs[k] = (runs[k] ?? 0) + 1);
  const settler = opts.settler ?? relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
  const shared: PaymentOptions = {
    payTo: chain.accounts.payTo.address,
    network: "base-sepolia",
    rpcUrl: chain.rpcUrl,
    ...opts,
    settler,
  };
  const pw = paywall({
    ...shared,
    routes: {
      "GET /weather": { price: "$0.01", description: "weather" },
      "POST /echo": { price: "$0.05", description: "echo", serviceId: "echo", maxCalls: 2 },
      "GET /dynamic/:n": { price: (req: Request) => `$0.${String(req.params?.n ?? req.path.split("/").pop()).padStart(2, "0")}`, description: "dynamic" },
    },
  });
  const status = opts.handlerStatus ?? (() => 200);
  const router = express.Router();
  router.use(express.json({ limit: "100kb" }));
  router.use(pw);
  router.get("/weather", (req, res) => {
    count("weather");
    res.status(status()).json({ weather: "sunny", payment: req.payment });
  });
  router.post("/echo", (req, res) => {
    count("echo");
    res.status(status()).json({ echo: req.body, payment: req.payment });
  });
  router.get("/dynamic/:n", (req, res) => {
    count("dynamic");
    res.status(status()).json({ n: req.params.n });
  });
  router.post("/single", requirePayment({ ...shared, price: "$0.02", description: "single" }), (req, res) => {
    count("single");
    res.status(status()).json({ single: true, payment: req.payment });
  });
  const app = express();
  app.use(opts.mount ?? "/", router);
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${opts.mount ?? ""}`;
  return {
    url,
    app,
    server,
    pw,
    runs,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
