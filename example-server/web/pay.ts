/**
 * Paying an x402 v2 offer from the browser: a signer (an injected EIP-1193
 * wallet through viem, or the dev wallet), the EIP-3009
 * TransferWithAuthorization it signs, and the PAYMENT-SIGNATURE header.
 */
import { createWalletClient, custom, type Hex } from "viem";
import { chainIdOf, encodeBase64Json, type PaymentRequired, type Requirements, type Signer } from "./wire.js";

interface Eip1193 {
  request(args: { method: string; params?: unknown }): Promise<unknown>;
}


/** The injected wallet, connected and switched to `chainId`. */
export async function walletSigner(chainId: number, say: (s: string) => void): Promise<Signer> {
  const eth = (window as unknown as { ethereum?: Eip1193 }).ethereum;
  if (!eth) throw new Error("No browser wallet was found. Install one (EIP-1193), use a prepaid token, or the dev wallet on the dev chain.");
  const client = createWalletClient({ transport: custom(eth) });
  say("Connecting to your wallet…");
  const [address] = await client.requestAddresses();
  if (!address) throw new Error("The wallet gave no account.");
  if ((await client.getChainId()) !== chainId) {
    say(`Switching your wallet to chain ${chainId}…`);
    try {
      await client.switchChain({ id: chainId });
    } catch (err) {
      if ((err as { code?: number }).code === 4902) throw new Error(`Your wallet does not know chain ${chainId}; add it, then try again.`);
      throw err;
    }
  }
  return { address, signTypedData: (td) => client.signTypedData({ account: address, ...td }) };
}

/** The PAYMENT-SIGNATURE header for `offer`, signed by `signer`. */
export async function paymentHeader(required: PaymentRequired, offer: Requirements, signer: Signer): Promise<string> {
  const now = BigInt(Math.floor(Date.now() / 1000));
  const nonce = `0x${Array.from(crypto.getRandomValues(new Uint8Array(32)), (x) => x.toString(16).padStart(2, "0")).join("")}` as Hex;
  const message = { from: signer.address, to: offer.payTo, value: BigInt(offer.amount), validAfter: now - 600n, validBefore: now + BigInt(offer.maxTimeoutSeconds || 300), nonce };
  const signature = await signer.signTypedData({
    domain: { name: offer.extra?.name ?? "USD Coin", version: offer.extra?.version ?? "2", chainId: chainIdOf(offer), verifyingContract: offer.asset },
    types: {
      TransferWithAuthorization: ["from:address", "to:address", "value:uint256", "validAfter:uint256", "validBefore:uint256", "nonce:bytes32"].map((f) => {
        const [name, type] = f.split(":");
        return { name: name!, type: type! };
      }),
    },
    primaryType: "TransferWithAuthorization",
    message,
  });
  const authorization = Object.fromEntries(Object.entries(message).map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : v]));
  return encodeBase64Json({ x402Version: 2, resource: required.resource, accepted: offer, payload: { signature, authorization }, ...(required.extensions ? { extensions: required.extensions } : {}) });
}
