/**
 * Scenario 3: x402 signature verifications per second on one core (one
 * thread, one process), server402's `verifyAuthorization` against viem's
 * `verifyTypedData`, on the same signed EIP-3009 authorizations,
 * alternating contenders for `rounds` rounds of `seconds` each.
 *
 *   node bench/dist/bench/targets/verify.js '{"rounds":3,"seconds":2,"pool":500}'   (as npm run bench runs it, compiled)
 *   node --conditions=server402-source --import tsx bench/targets/verify.ts '{"rounds":3,"seconds":2,"pool":500}'   (TS sources)
 *
 * Prints `READY {"backend":...,"rounds":[{"server402":ops/s,"viem":ops/s},...]}`.
 * With SERVER402_PURE_JS_SECP256K1=1 server402 runs its pure-JS fallback.
 */
import { randomBytes } from "node:crypto";
import { findNetwork, TRANSFER_WITH_AUTHORIZATION_TYPES as TYPES } from "server402";
import { recoveryBackend, verifyAuthorization } from "server402/internal";
import { verifyTypedData, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const opts = { rounds: 3, seconds: 2, pool: 500, ...JSON.parse(process.argv[2] ?? "{}") } as { rounds: number; seconds: number; pool: number };
const usdc = findNetwork("base-sepolia")!.usdc!;
const chainId = 84532;
const payTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" as const;
const domain = { name: usdc.eip712Name, version: usdc.eip712Version, chainId, verifyingContract: usdc.address } as const;

// The same signed authorizations for both contenders (8 payers).
const accounts = Array.from({ length: 8 }, () => privateKeyToAccount(`0x${randomBytes(32).toString("hex")}` as Hex));
const now = BigInt(Math.floor(Date.now() / 1000));
const signed = await Promise.all(
  Array.from({ length: opts.pool }, async (_, i) => {
    const account = accounts[i % accounts.length]!;
    const message = { from: account.address, to: payTo, value: 10_000n, validAfter: 0n, validBefore: now + 3600n, nonce: `0x${randomBytes(32).toString("hex")}` as Hex };
    const signature = await account.signTypedData({ domain, types: TYPES, primaryType: "TransferWithAuthorization", message });
    return { message, signature };
  }),
);

const contenders: Record<string, (i: number) => Promise<boolean>> = {
  server402: async (i) => {
    const s = signed[i]!;
    const payer = await verifyAuthorization(s.message, s.signature, { asset: usdc, chainId, payTo, amount: 10_000n, amountRule: "exact", now });
    return payer === s.message.from;
  },
  viem: (i) => {
    const s = signed[i]!;
    return verifyTypedData({ address: s.message.from, domain, types: TYPES, primaryType: "TransferWithAuthorization", message: s.message, signature: s.signature });
  },
};

async function measure(name: string, seconds: number): Promise<number> {
  const fn = contenders[name]!;
  const end = performance.now() + seconds * 1000;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    // Batches of 50 keep the clock reads out of the way.
    for (let k = 0; k < 50; k++, n++) if (!(await fn(n % signed.length))) throw new Error(`${name}: verification failed`);
  }
  return n / ((performance.now() - t0) / 1000);
}

// Warm-up (JIT), then alternating rounds.
for (const name of Object.keys(contenders)) await measure(name, 0.5);
const rounds: Array<Record<string, number>> = [];
for (let r = 0; r < opts.rounds; r++) {
  const order = r % 2 ? ["viem", "server402"] : ["server402", "viem"];
  const row: Record<string, number> = {};
  for (const name of order) row[name] = await measure(name, opts.seconds);
  rounds.push(row);
}
process.stdout.write(`READY ${JSON.stringify({ backend: recoveryBackend, pool: signed.length, rounds })}\n`);
