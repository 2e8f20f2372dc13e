/**
 * Micro-measure (issue 17.2): local verification cost per core of a Permit2
 * payment (x402 `exact` over Permit2, and `upto`: strict decoding + the
 * PermitWitnessTransferFrom digest + signature recovery) next to the EOA
 * EIP-3009 path (decodeV2 + verifyPayer). CPU time of this process only;
 * the on-chain pre-check (one batched RPC) is not counted.
 *
 *   node --conditions=server402-source --import tsx bench/permit2-verify.ts [iterations]
 */
import { randomBytes } from "node:crypto";
import { privateKeyToAccount } from "viem/accounts";
import { decodeV2 } from "../lib/src/protocol/payload.js";
import { verifyPayer, recoveryBackend, TRANSFER_WITH_AUTHORIZATION_TYPES } from "../lib/src/protocol/verify.js";
import { findNetwork } from "../lib/src/protocol/networks.js";
import { decodePermit2V2, permit2TypedData, verifyPermit2, X402_EXACT_PERMIT2_PROXY, X402_UPTO_PERMIT2_PROXY, type Permit2Payment } from "../lib/src/protocol/permit2.js";
import type { Offer } from "../lib/src/protocol/requirements.js";

const N = Number(process.argv[2] ?? 3000);
const account = privateKeyToAccount(`0x${"11".repeat(32)}`);
const network = findNetwork("base-sepolia")!;
const payTo = privateKeyToAccount(`0x${"22".repeat(32)}`).address;
const relayer = privateKeyToAccount(`0x${"33".repeat(32)}`).address;
const now = BigInt(Math.floor(Date.now() / 1000));
const base: Offer = { network, asset: network.usdc!, amount: 10_000n, payTo, maxTimeoutSeconds: 300, resource: "http://x/y", description: "", mimeType: "", outputSchema: {} };

async function eip3009Payloads(): Promise<Record<string, unknown>[]> {
  const out = [];
  for (let i = 0; i < 64; i++) {
    const message = { from: account.address, to: payTo, value: 10_000n, validAfter: 0n, validBefore: now + 300n, nonce: `0x${randomBytes(32).toString("hex")}` as const };
    const signature = await account.signTypedData({ domain: { name: "USDC", version: "2", chainId: network.chainId, verifyingContract: base.asset.address }, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization", message });
    out.push({
      x402Version: 2,
      accepted: { scheme: "exact", network: network.caip2, amount: "10000", asset: base.asset.address, payTo, maxTimeoutSeconds: 300, extra: {} },
      payload: { signature, authorization: { ...message, value: "10000", validAfter: "0", validBefore: String(message.validBefore) } },
    });
  }
  return out;
}

async function permit2Payloads(scheme: "exact" | "upto"): Promise<Record<string, unknown>[]> {
  const out = [];
  for (let i = 0; i < 64; i++) {
    const p: Permit2Payment = {
      scheme,
      proxy: scheme === "upto" ? X402_UPTO_PERMIT2_PROXY : X402_EXACT_PERMIT2_PROXY,
      owner: account.address,
      token: base.asset.address,
      permitted: "10000",
      nonce: BigInt(`0x${randomBytes(32).toString("hex")}`).toString(),
      deadline: String(now + 300n),
      to: payTo,
      validAfter: "0",
      ...(scheme === "upto" ? { facilitator: relayer } : {}),
    };
    const signature = await account.signTypedData(permit2TypedData(p, network.chainId));
    const witness = scheme === "upto" ? { to: p.to, facilitator: relayer, validAfter: "0" } : { to: p.to, validAfter: "0" };
    out.push({
      x402Version: 2,
      accepted: { scheme, network: network.caip2, amount: "10000", asset: base.asset.address, payTo, maxTimeoutSeconds: 300, extra: {} },
      payload: { signature, permit2Authorization: { from: p.owner, permitted: { token: p.token, amount: p.permitted }, spender: p.proxy, nonce: p.nonce, deadline: p.deadline, witness } },
    });
  }
  return out;
}

async function measure(name: string, payloads: Record<string, unknown>[], one: (raw: Record<string, unknown>) => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 200; i++) await one(payloads[i % payloads.length]!); // warm-up
  const cpu = process.cpuUsage();
  for (let i = 0; i < N; i++) await one(payloads[i % payloads.length]!);
  const used = process.cpuUsage(cpu);
  const perSecond = N / ((used.user + used.system) / 1e6);
  console.log(`${name.padEnd(34)} ${Math.round(perSecond).toLocaleString("en-US").padStart(7)} verifications/s per core of CPU`);
  return perSecond;
}

const eoa = await eip3009Payloads();
const exact = await permit2Payloads("exact");
const upto = await permit2Payloads("upto");
console.log(`recovery backend: ${recoveryBackend}, ${N} verifications each`);
const expect = { asset: base.asset, chainId: network.chainId, payTo, amount: 10_000n, amountRule: "exact" as const, now };
for (let round = 0; round < 2; round++) {
  await measure("EIP-3009 exact (EOA)", eoa, async (raw) => {
    const d = decodeV2(raw, base);
    return verifyPayer(d.authorization, d.signature, expect);
  });
  await measure("Permit2 exact (EOA)", exact, async (raw) => {
    const d = decodePermit2V2(raw, { ...base, permit2: { scheme: "exact" } });
    return verifyPermit2(d.permit2, d.signature, network.chainId, now);
  });
  await measure("Permit2 upto (EOA)", upto, async (raw) => {
    const d = decodePermit2V2(raw, { ...base, permit2: { scheme: "upto", facilitator: relayer } });
    return verifyPermit2(d.permit2, d.signature, network.chainId, now);
  });
}
