/**
 * Where the gas of a batched settlement goes (issue 20 part 3): on a fresh
 * automining dev chain, settle one lone `transferWithAuthorization` (one
 * transaction, as official facilitators do) and one batch of N payments from
 * N distinct payers through X402BatchSettlement, then split the batch's gas
 * with `debug_traceTransaction` (opcode level): transaction intrinsic
 * (21,000 + calldata, and the EIP-7623 floor), the batch contract's own
 * opcodes, and the token's, by opcode group. Prints per-payment figures.
 *
 *   node --conditions=server402-source --import tsx scripts/batch-gas.ts [N=100]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { anvilBinaryPath, startDevChain } from "server402/devchain";
import { createPublicClient, encodeFunctionData, hexToBytes, http, toHex, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { EIP3009_ABI } from "../lib/src/chain/abi.js";
import { encodeBatch } from "../lib/src/chain/batcher.js";
import type { SettleRequest } from "../lib/src/chain/settler.js";
import { signAuthorization } from "../test/support/sign.js";

const CHAIN_ID = 84532;

interface Step {
  pc: number;
  op: string;
  gas: number;
  gasCost: number;
  depth: number;
}

/** Calldata gas: standard (4 per zero byte, 16 per other) and the EIP-7623 floor tokens (zero + 4 × other). */
export function calldataGas(data: Hex): { standard: number; tokens: number } {
  let zero = 0;
  let other = 0;
  for (const b of hexToBytes(data)) {
    if (b === 0) zero++;
    else other++;
  }
  return { standard: zero * 4 + other * 16, tokens: zero + other * 4 };
}

/** Gas used by each opcode (own cost only: a CALL's child frame is counted in the child's opcodes), with its depth. */
function ownCosts(steps: Step[]): { op: string; depth: number; cost: number }[] {
  const out: { op: string; depth: number; cost: number }[] = [];
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    const next = steps[i + 1];
    if (!next || next.depth < s.depth) {
      out.push({ op: s.op, depth: s.depth, cost: s.gasCost }); // last step of a frame (STOP/RETURN/REVERT)
    } else if (next.depth === s.depth) {
      out.push({ op: s.op, depth: s.depth, cost: s.gas - next.gas }); // includes precompile calls (ecrecover)
    } else {
      // entered a child frame: find where it returns; own = total - child's use
      let j = i + 1;
      while (j < steps.length && steps[j]!.depth > s.depth) j++;
      const last = steps[j - 1]!;
      const childUsed = next.gas - (last.gas - last.gasCost);
      const after = steps[j];
      const total = after ? s.gas - after.gas : s.gasCost;
      out.push({ op: s.op, depth: s.depth, cost: total - childUsed });
    }
  }
  return out;
}

/** Opcode groups of the breakdown. */
function group(op: string): string {
  if (op === "SSTORE") return "SSTORE";
  if (op === "SLOAD") return "SLOAD";
  if (op.startsWith("LOG")) return "LOG";
  if (op === "STATICCALL") return "STATICCALL (ecrecover)";
  if (op === "CALL") return "CALL";
  if (op === "KECCAK256") return "KECCAK256";
  if (/^(CALLDATA|MLOAD|MSTORE|MCOPY|RETURNDATA)/.test(op)) return "calldata/memory/returndata";
  return "other (stack, jumps, arithmetic)";
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 100);
  // anvil records opcode steps for debug_traceTransaction only with --steps-tracing: run it through a wrapper
  const dir = mkdtempSync(join(tmpdir(), "batch-gas-"));
  const anvilPath = join(dir, "anvil");
  writeFileSync(anvilPath, `#!/bin/sh\nexec '${anvilBinaryPath()}' --steps-tracing "$@"\n`, { mode: 0o755 });
  const dev = await startDevChain({ mintPerPayer: 0n, gasLimit: 140_000_000, anvilPath });
  try {
    const client = createPublicClient({ transport: http(dev.rpcUrl, { retryCount: 0 }) });
    const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;
    const relayer = generatePrivateKey();
    await rpc("anvil_setBalance", [privateKeyToAccount(relayer).address, toHex(10n ** 20n)]);
    let nonce = 0;
    async function send(to: Address, data: Hex): Promise<{ hash: Hex; gasUsed: number; status: Hex }> {
      const tx = await privateKeyToAccount(relayer).signTransaction({
        chainId: CHAIN_ID,
        nonce: nonce++,
        to,
        data,
        gas: 16_000_000n,
        maxFeePerGas: 10n ** 10n,
        maxPriorityFeePerGas: 10n ** 9n,
      });
      const hash = await rpc<Hex>("eth_sendRawTransaction", [tx]);
      let receipt: { gasUsed: Hex; status: Hex } | null = null;
      while (!(receipt = await rpc<{ gasUsed: Hex; status: Hex } | null>("eth_getTransactionReceipt", [hash]))) await new Promise((res) => setTimeout(res, 20));
      return { hash, gasUsed: Number(BigInt(receipt.gasUsed)), status: receipt.status };
    }
    const payTo = dev.accounts.payTo.address;
    const now = BigInt(Math.floor(Date.now() / 1000));
    async function request(): Promise<SettleRequest> {
      const key = `0x${randomBytes(32).toString("hex")}` as Hex;
      await dev.mint(privateKeyToAccount(key).address, 1_000_000n);
      const { signature, authorization: a } = await signAuthorization({ privateKey: key, asset: dev.usdc, payTo, value: 10_000n, validBefore: now + 3600n });
      const authorization = { from: a.from, to: a.to, value: 10_000n, validAfter: BigInt(a.validAfter), validBefore: BigInt(a.validBefore), nonce: a.nonce };
      return {
        authorization,
        signature,
        asset: dev.usdc,
        chainId: CHAIN_ID,
        network: `eip155:${CHAIN_ID}`,
        v1Network: "base-sepolia",
        x402Version: 2,
        payload: {},
        requirements: {},
      };
    }
    await dev.mint(payTo, 1n); // the payee's balance is not zero, as after its first sale

    // one transaction per payment (the baseline)
    const lone = await request();
    const a = lone.authorization;
    const sig = lone.signature;
    const v = Number(BigInt(`0x${sig.slice(130, 132)}`));
    const loneData = encodeFunctionData({
      abi: EIP3009_ABI,
      functionName: "transferWithAuthorization",
      args: [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v < 27 ? v + 27 : v, `0x${sig.slice(2, 66)}`, `0x${sig.slice(66, 130)}`],
    });
    const loneTx = await send(dev.usdc, loneData);
    if (loneTx.status !== "0x1") throw new Error("lone transfer reverted");

    // one batch of n distinct payers
    const reqs: SettleRequest[] = [];
    for (let i = 0; i < n; i++) reqs.push(await request());
    const data = encodeBatch(dev.usdc, reqs);
    const batch = await send(dev.batchSettlement, data);
    if (batch.status !== "0x1") throw new Error("batch reverted");

    const trace = await rpc<{ gas: number; structLogs: Step[] }>("debug_traceTransaction", [
      batch.hash,
      { disableStack: true, disableMemory: true, disableStorage: true },
    ]);
    const costs = ownCosts(trace.structLogs);
    const cd = calldataGas(data);
    const intrinsic = 21_000 + cd.standard;
    const execution = costs.reduce((s, c) => s + c.cost, 0);
    const floor = 21_000 + 10 * cd.tokens;
    const per = (x: number) => (x / n).toFixed(0).padStart(7);
    console.log(`lone transferWithAuthorization: ${loneTx.gasUsed} gas (calldata ${calldataGas(loneData).standard})`);
    console.log(
      `batch of ${n}: ${batch.gasUsed} gas = ${(batch.gasUsed / n).toFixed(1)} per payment = ${(batch.gasUsed / n / loneTx.gasUsed).toFixed(4)}× lone`,
    );
    console.log(`calldata ${(data.length - 2) / 2} B (${((data.length - 2) / 2 / n).toFixed(1)} B per payment)`);
    console.log(
      `check: 21,000 + calldata ${cd.standard} + execution ${execution} = ${intrinsic + execution} (receipt ${batch.gasUsed}); EIP-7623 floor 21,000 + 10 × ${cd.tokens} tokens = ${floor} (${floor > intrinsic + execution ? "BINDS" : "does not bind"})`,
    );
    console.log(`per payment:`);
    console.log(`${per(21_000)}  transaction base 21,000 (shared)`);
    console.log(`${per(cd.standard)}  calldata`);
    for (const [label, depth] of [
      ["batch contract", 1],
      ["token", 2],
    ] as const) {
      const mine = costs.filter((c) => c.depth === depth);
      console.log(`${per(mine.reduce((s, c) => s + c.cost, 0))}  ${label}:`);
      const groups = new Map<string, number>();
      for (const c of mine) groups.set(group(c.op), (groups.get(group(c.op)) ?? 0) + c.cost);
      for (const [g, gas] of [...groups].sort((x, y) => y[1] - x[1])) console.log(`  ${per(gas)}  ${g}`);
      if (process.env.OPS) {
        const ops = new Map<string, [number, number]>();
        for (const c of mine) ops.set(c.op, [(ops.get(c.op)?.[0] ?? 0) + c.cost, (ops.get(c.op)?.[1] ?? 0) + 1]);
        for (const [op, [gas, count]] of [...ops].sort((x, y) => y[1][0] - x[1][0]))
          console.log(`      ${(gas / n).toFixed(1).padStart(8)} ${(count / n).toFixed(1).padStart(6)}×  ${op}`);
      }
    }
    const deeper = costs.filter((c) => c.depth > 2).reduce((s, c) => s + c.cost, 0);
    if (deeper) console.log(`${per(deeper)}  deeper frames`);
  } finally {
    await dev.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
