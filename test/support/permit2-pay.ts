/** Hand-made x402 Permit2 payments (a client written to the specification), for tests that need the signed parts. */
import { randomBytes } from "node:crypto";
import { createWalletClient, http, maxUint256, type Address, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { encodeHeader } from "server402";
import type { DevChain } from "server402/devchain";
import { PERMIT2_ADDRESS, permit2TypedData, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY, type Permit2Payment } from "../../lib/src/protocol/permit2.js";
import { PERMIT2_READ_ABI } from "../../lib/src/chain/permit2.js";
import { devChainDef, publicClient } from "./paid-app.js";

export type TypedData = ReturnType<typeof permit2TypedData>;

export interface Permit2PaymentParts {
  scheme: "exact" | "upto";
  /** Who pays (an EOA or a smart wallet's address). */
  owner: Address;
  /** Signs the typed data: an EOA key's signTypedData, or a smart wallet's owners. */
  sign: (td: TypedData) => Promise<Hex>;
  token: Address;
  amount: bigint;
  payTo: Address;
  /** `upto`: the settling facilitator (our relayer). */
  facilitator?: Address;
  /** Network of the offer (CAIP-2); default "eip155:84532". */
  network?: string;
  /** Replace the signature (e.g. wrap it). */
  mangle?: (signature: Hex) => Hex;
}

/** A signed v2 Permit2 payment: its `PAYMENT-SIGNATURE` header, the decoded permit and the signature. */
export async function permit2Payment(chain: DevChain, o: Permit2PaymentParts): Promise<{ header: string; p: Permit2Payment; signature: Hex }> {
  const now = Math.floor(Date.now() / 1000);
  const p: Permit2Payment = {
    scheme: o.scheme,
    proxy: o.scheme === "upto" ? X402_UPTO_PERMIT2_PROXY : X402_EXACT_PERMIT2_PROXY,
    owner: o.owner,
    token: o.token,
    permitted: o.amount.toString(),
    nonce: BigInt(`0x${randomBytes(32).toString("hex")}`).toString(),
    deadline: String(now + 300),
    to: o.payTo,
    validAfter: "0",
    ...(o.scheme === "upto" ? { facilitator: o.facilitator } : {}),
  };
  const signed = await o.sign(permit2TypedData(p, chain.chainId));
  const signature = o.mangle ? o.mangle(signed) : signed;
  const witness = o.scheme === "upto" ? { to: p.to, facilitator: p.facilitator, validAfter: p.validAfter } : { to: p.to, validAfter: p.validAfter };
  const header = encodeHeader({
    x402Version: 2,
    accepted: { scheme: o.scheme, network: o.network ?? "eip155:84532", amount: p.permitted, asset: p.token, payTo: p.to, maxTimeoutSeconds: 300, extra: {} },
    payload: { signature, permit2Authorization: { from: p.owner, permitted: { token: p.token, amount: p.permitted }, spender: p.proxy, nonce: p.nonce, deadline: p.deadline, witness } },
  });
  return { header, p, signature };
}

/** The payer (an EOA key) approves Permit2 on `asset`: the one-time step the specification leaves to the payer. */
export async function approvePermit2(chain: DevChain, key: Hex, asset: Address): Promise<void> {
  const wallet = createWalletClient({ account: privateKeyToAccount(key), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
  const hash = await wallet.writeContract({ address: asset, abi: PERMIT2_READ_ABI, functionName: "approve", args: [PERMIT2_ADDRESS, maxUint256], account: wallet.account, chain: wallet.chain });
  const receipt = await publicClient(chain).waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") throw new Error(`approve reverted (${hash})`);
}
