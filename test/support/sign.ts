/** Hand-made x402 payments for tests that need to bend the rules. */
import { randomBytes } from "node:crypto";
import type { Address, Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { encodeHeader, TRANSFER_WITH_AUTHORIZATION_TYPES } from "server402";

export interface PaymentParts {
  privateKey: Hex;
  asset: Address;
  payTo: Address;
  value: bigint;
  chainId?: number;
  validAfter?: bigint;
  validBefore?: bigint;
  nonce?: Hex;
  /** Sign as this address claims to be `from` (another key's signature). */
  from?: Address;
  name?: string;
}


/** Sign an EIP-3009 authorization and return the wire payload parts. */
export async function signAuthorization(p: PaymentParts) {
  const account = privateKeyToAccount(p.privateKey);
  const now = BigInt(Math.floor(Date.now() / 1000));
  const message = {
    from: p.from ?? account.address,
    to: p.payTo,
    value: p.value,
    validAfter: p.validAfter ?? now - 600n,
    validBefore: p.validBefore ?? now + 300n,
    nonce: p.nonce ?? (`0x${randomBytes(32).toString("hex")}` as Hex),
  };
  const signature = await account.signTypedData({
    domain: { name: p.name ?? "USDC", version: "2", chainId: p.chainId ?? 84532, verifyingContract: p.asset },
    types: TRANSFER_WITH_AUTHORIZATION_TYPES,
    primaryType: "TransferWithAuthorization",
    message,
  });
  return {
    signature,
    authorization: {
      from: message.from,
      to: message.to,
      value: message.value.toString(),
      validAfter: message.validAfter.toString(),
      validBefore: message.validBefore.toString(),
      nonce: message.nonce,
    },
  };
}

/** `X-PAYMENT` header value (v1). */
export async function v1Header(p: PaymentParts, network = "base-sepolia"): Promise<string> {
  return encodeHeader({ x402Version: 1, scheme: "exact", network, payload: await signAuthorization(p) });
}

/** `PAYMENT-SIGNATURE` header value (v2), with `extensions` (e.g. a payment identifier) when given. */
export async function v2Header(p: PaymentParts, accepted?: Record<string, unknown>, extensions?: Record<string, unknown>): Promise<string> {
  return encodeHeader({
    x402Version: 2,
    payload: await signAuthorization(p),
    accepted: accepted ?? {
      scheme: "exact",
      network: `eip155:${p.chainId ?? 84532}`,
      amount: p.value.toString(),
      asset: p.asset,
      payTo: p.payTo,
      maxTimeoutSeconds: 300,
      extra: { name: "USDC", version: "2" },
    },
    ...(extensions ? { extensions } : {}),
  });
}
