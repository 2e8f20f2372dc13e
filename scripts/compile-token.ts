/**
 * Compile lib/contracts/TestUSDC.sol offline with solc-js and write the
 * committed artifact lib/src/devchain/TestUSDC.artifact.json.
 *
 *   npx tsx scripts/compile-token.ts
 *
 * The artifact is committed so that starting a dev chain never compiles.
 * test/devchain.test.ts recompiles and checks the artifact is up to date.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import solc from "solc";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Path of the Solidity source. */
export const SOURCE_PATH = join(ROOT, "lib/contracts/TestUSDC.sol");
/** Path of the committed artifact. */
export const ARTIFACT_PATH = join(ROOT, "lib/src/devchain/TestUSDC.artifact.json");
/** Source unit name used in the compiler input (it is part of the metadata hash). */
const SOURCE_NAME = "contracts/TestUSDC.sol";
const CONTRACT = "TestUSDC";

/** Compiler settings recorded in the artifact; changing them changes the bytecode. */
export const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
} as const;

/** Shape of lib/src/devchain/TestUSDC.artifact.json. */
export interface TokenArtifact {
  contractName: string;
  sourceName: string;
  abi: unknown[];
  bytecode: string;
  deployedBytecode: string;
  compiler: { name: "solc"; version: string; settings: { evmVersion: string; optimizer: { enabled: boolean; runs: number } } };
  /** sha256 (hex) of TestUSDC.sol. */
  sourceSha256: string;
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[];
  contracts: Record<string, Record<string, { abi: unknown[]; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>>;
}

const require = createRequire(import.meta.url);
const ozRoot = dirname(require.resolve("@openzeppelin/contracts/package.json"));

function findImports(path: string): { contents: string } | { error: string } {
  const prefix = "@openzeppelin/contracts/";
  if (!path.startsWith(prefix)) return { error: `unresolvable import ${path}` };
  try {
    return { contents: readFileSync(join(ozRoot, path.slice(prefix.length)), "utf8") };
  } catch (err) {
    return { error: String(err) };
  }
}

/** Compile TestUSDC.sol and return the artifact (does not write it). Throws on compile errors. */
export function compileTestUSDC(): TokenArtifact {
  const source = readFileSync(SOURCE_PATH, "utf8");
  const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports })) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  const out = output.contracts[SOURCE_NAME]?.[CONTRACT];
  if (!out) throw new Error(`solc produced no ${CONTRACT}`);
  return {
    contractName: CONTRACT,
    sourceName: SOURCE_NAME,
    abi: out.abi,
    bytecode: `0x${out.evm.bytecode.object}`,
    deployedBytecode: `0x${out.evm.deployedBytecode.object}`,
    compiler: {
      name: "solc",
      version: solc.version() as string,
      settings: { evmVersion: SETTINGS.evmVersion, optimizer: { ...SETTINGS.optimizer } },
    },
    sourceSha256: createHash("sha256").update(source).digest("hex"),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const started = performance.now();
  const artifact = compileTestUSDC();
  mkdirSync(dirname(ARTIFACT_PATH), { recursive: true });
  writeFileSync(ARTIFACT_PATH, `${JSON.stringify(artifact, null, 2)}\n`);
  const runtimeBytes = (artifact.deployedBytecode.length - 2) / 2;
  console.log(`wrote ${ARTIFACT_PATH} (${artifact.compiler.version}, runtime ${runtimeBytes} B) in ${Math.round(performance.now() - started)} ms`);
}
