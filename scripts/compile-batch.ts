/**
 * Compile lib/contracts/X402BatchSettlement.sol offline with solc-js (the
 * compile-token settings) and write the committed artifact
 * lib/src/chain/X402BatchSettlement.artifact.json: its ABI, creation code
 * (to deploy it on a real chain, see the README's "Batched settlement") and
 * runtime code (planted on the dev chain, and compared with the code at the
 * configured address before the first batch).
 *
 *   npx tsx scripts/compile-batch.ts
 *
 * test/relayer-batch.test.ts recompiles and checks the artifact is current.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import solc from "solc";
import { SETTINGS } from "./compile-token.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SOURCE = "lib/contracts/X402BatchSettlement.sol";
export const BATCH_ARTIFACT_PATH = join(ROOT, "lib/src/chain/X402BatchSettlement.artifact.json");

export interface BatchArtifact {
  contractName: string;
  abi: unknown[];
  bytecode: string;
  deployedBytecode: string;
  compiler: string;
  sourceSha256: string;
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[];
  contracts: Record<string, Record<string, { abi: unknown[]; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>>;
}

/** Compile the batch contract (does not write anything). Throws on compile errors. */
export function compileBatchContract(): BatchArtifact {
  const content = readFileSync(join(ROOT, SOURCE), "utf8");
  const input = { language: "Solidity", sources: { [SOURCE]: { content } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input))) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  const out = output.contracts[SOURCE]?.X402BatchSettlement;
  if (!out) throw new Error("solc produced no X402BatchSettlement");
  return {
    contractName: "X402BatchSettlement",
    abi: out.abi,
    bytecode: `0x${out.evm.bytecode.object}`,
    deployedBytecode: `0x${out.evm.deployedBytecode.object}`,
    compiler: solc.version() as string,
    sourceSha256: createHash("sha256").update(content).digest("hex"),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const artifact = compileBatchContract();
  writeFileSync(BATCH_ARTIFACT_PATH, `${JSON.stringify(artifact, null, 2)}\n`);
  console.log(`wrote ${BATCH_ARTIFACT_PATH} (${artifact.compiler}, runtime ${(artifact.deployedBytecode.length - 2) / 2} B)`);
}
