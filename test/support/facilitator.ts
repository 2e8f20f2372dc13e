/**
 * A real x402 facilitator on a local chain, for tests and the bench: v1
 * bodies go to the `x402@1.2.0` facilitator functions, v2 bodies to
 * `@x402/core` + `@x402/evm` 2.x. Counts calls per endpoint and can inject
 * faults. Its wallet polls for receipts every 5 ms, as server402's relayer
 * does on a loopback RPC, so comparisons are fair.
 */
import express from "express";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createWalletClient, defineChain, http, publicActions, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { verify as verifyV1, settle as settleV1 } from "x402/facilitator";
import { x402Facilitator } from "@x402/core/facilitator";
import { ExactEvmScheme } from "@x402/evm/exact/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";

export interface TestFacilitator {
  url: string;
  calls: { verify: number; settle: number; supported: number };
  /** Make every endpoint answer like this instead (fault injection). */
  fault?: "down" | "garbage" | "hang" | "refuse" | "refuse-settle" | "settle-late" | "settle-drop";
  /** `settle-late`: the settlement is made, then answered after this many ms (default 3000). `settle-drop`: made, then the connection is cut. */
  lateMs?: number;
  /** Runs before each /settle settles (e.g. a third party copies the authorization first). */
  beforeSettle?: (paymentPayload: Record<string, any>) => Promise<void>;
  /** Transaction hashes of the settlements this facilitator made (success answers, sent or not). */
  settled: string[];
  close(): Promise<void>;
}

/** Where the facilitator settles: a dev chain, or its RPC URL, chain id and the settling wallet's key. */
export type FacilitatorChain = { rpcUrl: string; chainId: number; privateKey: Hex } | { rpcUrl: string; chainId: number; accounts: { relayer: { privateKey: Hex } } };

/** `eip6492AllowedFactories`: the official scheme's option taking counterfactual wallets (ERC-6492) of these factories, deployed before settling. */
export async function startFacilitator(chain: FacilitatorChain, config: { eip6492AllowedFactories?: string[] } = {}): Promise<TestFacilitator> {
  const privateKey = "privateKey" in chain ? chain.privateKey : chain.accounts.relayer.privateKey;
  const account = privateKeyToAccount(privateKey);
  const viemChain = defineChain({ id: chain.chainId, name: "devchain", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [chain.rpcUrl] } } });
  const wallet = createWalletClient({ account, chain: viemChain, transport: http(chain.rpcUrl), pollingInterval: 5 }).extend(publicActions);
  const v2 = new x402Facilitator().register(
    `eip155:${chain.chainId}`,
    new ExactEvmScheme(toFacilitatorEvmSigner({ ...(wallet as never as object), address: account.address } as never), config),
  );
  const calls = { verify: 0, settle: 0, supported: 0 };
  const state: TestFacilitator = { url: "", calls, settled: [], close: async () => {} };
  const app = express();
  app.use(express.json());
  app.use((_req, res, next) => {
    if (state.fault === "garbage") return void res.status(200).type("text/plain").send("<html>oops</html>");
    if (state.fault === "hang") return;
    if (state.fault === "down") return void res.socket?.destroy();
    next();
  });
  app.get("/supported", (_req, res) => {
    calls.supported++;
    res.json({ kinds: [{ x402Version: 1, scheme: "exact", network: "base-sepolia" }, { x402Version: 2, scheme: "exact", network: `eip155:${chain.chainId}` }] });
  });
  app.post("/verify", async (req, res) => {
    calls.verify++;
    if (state.fault === "refuse") return void res.json({ isValid: false, invalidReason: "insufficient_funds" });
    const { paymentPayload, paymentRequirements } = req.body;
    try {
      res.json(paymentPayload.x402Version === 1 ? await verifyV1(wallet as never, paymentPayload, paymentRequirements) : await v2.verify(paymentPayload, paymentRequirements));
    } catch (err) {
      res.status(500).json({ isValid: false, invalidReason: "unexpected_verify_error", invalidMessage: String(err).slice(0, 200) });
    }
  });
  app.post("/settle", async (req, res) => {
    calls.settle++;
    if (state.fault === "refuse" || state.fault === "refuse-settle") return void res.json({ success: false, errorReason: "insufficient_funds", transaction: "", network: "base-sepolia" });
    const { paymentPayload, paymentRequirements } = req.body;
    try {
      await state.beforeSettle?.(paymentPayload);
      const answer = paymentPayload.x402Version === 1 ? await settleV1(wallet as never, paymentPayload, paymentRequirements) : await v2.settle(paymentPayload, paymentRequirements);
      if (answer.success && answer.transaction) state.settled.push(answer.transaction);
      if (state.fault === "settle-drop") return void res.socket?.destroy();
      if (state.fault === "settle-late") await new Promise((r) => setTimeout(r, state.lateMs ?? 3000));
      if (!res.writableEnded && !res.destroyed) res.json(answer);
    } catch (err) {
      res.json({ success: false, errorReason: "unexpected_settle_error", errorMessage: String(err).slice(0, 200), transaction: "", network: paymentRequirements?.network ?? "" });
    }
  });
  const server: Server = await new Promise((r) => {
    const s = app.listen(0, "127.0.0.1", () => r(s));
  });
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
