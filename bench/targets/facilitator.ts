/**
 * The x402 facilitator the x402-express contenders use, started in their own
 * process: v1 bodies go to `x402@1.2.0`'s verify/settle, v2 bodies to
 * `@x402/core` + `@x402/evm`, exactly like test/support/facilitator.ts.
 *
 * One difference, on purpose: the wallet polls for receipts every 5 ms, as
 * server402's relayer does on a loopback RPC. test/support/facilitator.ts
 * keeps viem's default 4 s polling interval, which now and then adds 4 s to
 * a settlement and would make x402-express look slower than it is.
 */
import express from "express";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createWalletClient, defineChain, http, publicActions, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { settle as settleV1, verify as verifyV1 } from "x402/facilitator";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { ExactEvmScheme } from "@x402/evm/exact/facilitator";

export async function startBenchFacilitator(opts: { rpcUrl: string; chainId: number; privateKey: Hex }): Promise<{ url: string; close(): Promise<void> }> {
  const account = privateKeyToAccount(opts.privateKey);
  const chain = defineChain({ id: opts.chainId, name: "devchain", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [opts.rpcUrl] } } });
  const wallet = createWalletClient({ account, chain, transport: http(opts.rpcUrl), pollingInterval: 5 }).extend(publicActions);
  const v2 = new x402Facilitator().register(`eip155:${opts.chainId}`, new ExactEvmScheme(toFacilitatorEvmSigner({ ...(wallet as never as object), address: account.address } as never)));
  const app = express();
  app.use(express.json());
  app.get("/supported", (_req, res) => {
    res.json({ kinds: [{ x402Version: 1, scheme: "exact", network: "base-sepolia" }, { x402Version: 2, scheme: "exact", network: `eip155:${opts.chainId}` }] });
  });
  app.post("/verify", async (req, res) => {
    const { paymentPayload, paymentRequirements } = req.body;
    try {
      res.json(paymentPayload.x402Version === 1 ? await verifyV1(wallet as never, paymentPayload, paymentRequirements) : await v2.verify(paymentPayload, paymentRequirements));
    } catch (err) {
      res.status(500).json({ isValid: false, invalidReason: "unexpected_verify_error", invalidMessage: String(err).slice(0, 200) });
    }
  });
  app.post("/settle", async (req, res) => {
    const { paymentPayload, paymentRequirements } = req.body;
    try {
      res.json(paymentPayload.x402Version === 1 ? await settleV1(wallet as never, paymentPayload, paymentRequirements) : await v2.settle(paymentPayload, paymentRequirements));
    } catch (err) {
      res.json({ success: false, errorReason: "unexpected_settle_error", errorMessage: String(err).slice(0, 200), transaction: "", network: paymentRequirements?.network ?? "" });
    }
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
