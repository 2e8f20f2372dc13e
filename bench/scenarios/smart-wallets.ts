/**
 * Scenario 8: the cost of each signature kind's verification, per second per
 * core: an EOA's 65-byte signature (local libsecp256k1 recovery, no network)
 * vs a deployed ERC-1271 wallet vs a counterfactual ERC-6492 wallet (each one
 * `eth_call` of server402's deployless SignatureProbe on an anvil dev chain
 * over loopback HTTP), for EIP-3009 authorizations; and the same EOA and
 * deployed ERC-1271 wallet signing Permit2 `exact` permits (issue 17; ERC-6492
 * is refused for Permit2, so it has no row). Runs in this process against its own dev chain, one
 * verification at a time, contenders alternating round by round.
 *
 * Two figures per kind: verifications per second of wall time (one in
 * flight: the latency a payer sees), and verifications per second of this
 * process's CPU time (what one server core can sustain; anvil's own CPU for
 * the eth_call is not counted, it is the RPC node's).
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createPublicClient, createWalletClient, encodeFunctionData, http, serializeErc6492Signature, type Abi, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { findNetwork, TRANSFER_WITH_AUTHORIZATION_TYPES as TYPES } from "server402";
import { startDevChain } from "server402/devchain";
import { verifyPayer } from "../../lib/src/protocol/verify.js";
import { permit2TypedData, verifyPermit2, X402_EXACT_PERMIT2_PROXY, type Permit2Payment } from "../../lib/src/protocol/permit2.js";
import { smartWalletVerifier } from "../../lib/src/chain/smart-wallet.js";
import { fmt, log, median, ROOT, settings, type Scenario } from "../lib.js";

type Kind = "eoa" | "erc1271" | "erc6492" | "permit2-eoa" | "permit2-erc1271";
/** What a signature of each kind must verify as. */
const EXPECTED: Record<Kind, "eoa" | "erc1271" | "erc6492"> = { eoa: "eoa", erc1271: "erc1271", erc6492: "erc6492", "permit2-eoa": "eoa", "permit2-erc1271": "erc1271" };

export async function scenarioSmartWallets(): Promise<Scenario> {
  const chain = await startDevChain();
  try {
    const factoryArtifact = (JSON.parse(readFileSync(join(ROOT, "test/fixtures/smart-wallets.artifact.json"), "utf8")) as { contracts: Record<string, { abi: Abi; bytecode: Hex }> }).contracts.TestWalletFactory!;
    const deployer = createWalletClient({ account: privateKeyToAccount(chain.accounts.payers[8]!.privateKey), transport: http(chain.rpcUrl) });
    const pub = createPublicClient({ transport: http(chain.rpcUrl) });
    const deployHash = await deployer.deployContract({ abi: factoryArtifact.abi, bytecode: factoryArtifact.bytecode, chain: null });
    const factory = (await pub.waitForTransactionReceipt({ hash: deployHash })).contractAddress!;
    const owner = privateKeyToAccount(generatePrivateKey());
    const deployCall = (salt: Hex) => encodeFunctionData({ abi: factoryArtifact.abi, functionName: "deploy", args: [[owner.address], salt] });
    const walletAt = (salt: Hex) => pub.readContract({ address: factory, abi: factoryArtifact.abi, functionName: "walletAddress", args: [[owner.address], salt] }) as Promise<Address>;
    const deployedSalt = `0x${"01".repeat(32)}` as Hex;
    const counterfactualSalt = `0x${"02".repeat(32)}` as Hex;
    await pub.waitForTransactionReceipt({ hash: await deployer.sendTransaction({ to: factory, data: deployCall(deployedSalt), chain: null }) });
    const deployed = await walletAt(deployedSalt);
    const payers: Record<Kind, Address> = { eoa: owner.address, erc1271: deployed, erc6492: await walletAt(counterfactualSalt), "permit2-eoa": owner.address, "permit2-erc1271": deployed };

    const usdc = findNetwork("base-sepolia")!.usdc!;
    const payTo = chain.accounts.payTo.address;
    const now = BigInt(Math.floor(Date.now() / 1000));
    const domain = { name: usdc.eip712Name, version: usdc.eip712Version, chainId: chain.chainId, verifyingContract: usdc.address } as const;
    const pool = 200;
    const signed: Record<Kind, Array<{ message: { from: Address; to: Address; value: bigint; validAfter: bigint; validBefore: bigint; nonce: Hex }; signature: Hex; permit?: Permit2Payment }>> = {
      eoa: [],
      erc1271: [],
      erc6492: [],
      "permit2-eoa": [],
      "permit2-erc1271": [],
    };
    for (const kind of Object.keys(payers) as Kind[]) {
      for (let i = 0; i < pool; i++) {
        if (kind.startsWith("permit2")) {
          const permit: Permit2Payment = {
            scheme: "exact",
            proxy: X402_EXACT_PERMIT2_PROXY,
            owner: payers[kind],
            token: usdc.address,
            permitted: "10000",
            nonce: BigInt(`0x${randomBytes(32).toString("hex")}`).toString(),
            deadline: String(now + 3600n),
            to: payTo,
            validAfter: "0",
          };
          const signature = await owner.signTypedData(permit2TypedData(permit, chain.chainId));
          signed[kind].push({ message: { from: permit.owner, to: payTo, value: 10_000n, validAfter: 0n, validBefore: now + 3600n, nonce: "0x" }, signature, permit });
          continue;
        }
        const message = { from: payers[kind], to: payTo, value: 10_000n, validAfter: 0n, validBefore: now + 3600n, nonce: `0x${randomBytes(32).toString("hex")}` as Hex };
        const sig = await owner.signTypedData({ domain, types: TYPES, primaryType: "TransferWithAuthorization", message });
        const signature = kind === "erc6492" ? serializeErc6492Signature({ address: factory, data: deployCall(counterfactualSalt), signature: sig }) : sig;
        signed[kind].push({ message, signature });
      }
    }
    const smartWallets = smartWalletVerifier({ rpcUrl: chain.rpcUrl });
    const verifyOne = async (kind: Kind, i: number) => {
      const s = signed[kind][i % pool]!;
      const r = s.permit
        ? await verifyPermit2(s.permit, s.signature, chain.chainId, now, smartWallets)
        : await verifyPayer(s.message, s.signature, { asset: usdc, chainId: chain.chainId, payTo, amount: 10_000n, amountRule: "exact", now, smartWallets });
      if (r.kind !== EXPECTED[kind] || r.payer !== s.message.from) throw new Error(`${kind}: verified as ${r.kind}`);
    };
    const measure = async (kind: Kind, seconds: number) => {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      let n = 0;
      while (performance.now() - t0 < seconds * 1000) for (let k = 0; k < 10; k++) await verifyOne(kind, n++);
      const wall = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      return { wall: n / wall, cpu: n / ((cpu.user + cpu.system) / 1e6) };
    };

    const kinds: Kind[] = ["eoa", "erc1271", "erc6492", "permit2-eoa", "permit2-erc1271"];
    for (const k of kinds) await measure(k, 0.3); // warm-up (JIT, HTTP keep-alive)
    const rounds: Array<Record<Kind, { wall: number; cpu: number }>> = [];
    for (let r = 0; r < settings.rounds; r++) {
      log(`scenario 8: round ${r + 1}/${settings.rounds}`);
      const row = {} as Record<Kind, { wall: number; cpu: number }>;
      for (const k of r % 2 ? [...kinds].reverse() : kinds) row[k] = await measure(k, settings.verifySeconds);
      rounds.push(row);
    }
    const wall = (k: Kind) => median(rounds.map((r) => r[k].wall));
    const cpu = (k: Kind) => median(rounds.map((r) => r[k].cpu));
    const label: Record<Kind, string> = {
      eoa: "EOA, 65-byte signature (local recovery, no RPC)",
      erc1271: "deployed ERC-1271 wallet (one eth_call: isValidSignature)",
      erc6492: "counterfactual ERC-6492 wallet (one eth_call: factory deploy + isValidSignature)",
      "permit2-eoa": "Permit2 exact, EOA (local recovery of the PermitWitnessTransferFrom digest)",
      "permit2-erc1271": "Permit2 exact, deployed ERC-1271 wallet (one eth_call: isValidSignature)",
    };
    return {
      id: 8,
      title: "signature verification cost by kind: EOA vs ERC-1271 vs ERC-6492 (EIP-3009), EOA vs ERC-1271 (Permit2)",
      goal: "EOA path unchanged (local); smart-wallet paths measured",
      met: undefined,
      columns: ["signature kind", "verifications/s, one in flight (wall)", "verifications/s per core (server CPU)", "per-round wall", "ratio to EOA (CPU)"],
      rows: kinds.map((k) => [label[k], fmt.int(wall(k)), fmt.int(cpu(k)), rounds.map((r) => fmt.int(r[k].wall)).join(" / "), fmt.ratio(cpu(k) / cpu("eoa"))]),
      notes: [
        `${pool} signed authorizations per kind, one verification in flight, ${settings.verifySeconds} s per kind per round, ${settings.rounds} rounds alternating; anvil on 127.0.0.1 over HTTP. Per-core figures divide by this process's CPU time only (anvil's is extra).`,
      ],
      raw: { rounds },
    };
  } finally {
    await chain.stop();
  }
}
