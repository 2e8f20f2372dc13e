/**
 * Compile lib/contracts/TestUSDC.sol offline with solc-js and write the
 * committed artifact lib/src/devchain/TestUSDC.artifact.json; also the
 * smart-wallet contracts: lib/contracts/SignatureProbe.sol (run deployless
 * by the library) → lib/src/chain/SignatureProbe.artifact.json, and the
 * test wallets lib/contracts/test/TestWallets.sol → test/fixtures/smart-wallets.artifact.json.
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

/** Path of the deployless signature probe's artifact (creation code only). */
export const PROBE_ARTIFACT_PATH = join(ROOT, "lib/src/chain/SignatureProbe.artifact.json");
/** Path of the test wallets' artifact. */
export const WALLETS_ARTIFACT_PATH = join(ROOT, "test/fixtures/smart-wallets.artifact.json");
const WALLET_SOURCES = { probe: "lib/contracts/SignatureProbe.sol", wallets: "lib/contracts/test/TestWallets.sol" } as const;

/** One compiled contract of the smart-wallet artifacts. */
export interface ContractArtifact {
  abi: unknown[];
  bytecode: string;
}

/** Compile the smart-wallet sources; `sourceSha256` lets a test check the committed artifacts are current. */
export function compileSmartWallets(): {
  probe: { bytecode: string; sourceSha256: string; compiler: string };
  wallets: { contracts: Record<string, ContractArtifact>; sourceSha256: string; compiler: string };
} {
  const sources = Object.fromEntries(Object.values(WALLET_SOURCES).map((p) => [p, { content: readFileSync(join(ROOT, p), "utf8") }]));
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports })) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  const sha = (p: string) => createHash("sha256").update(sources[p]!.content).digest("hex");
  const compiler = solc.version() as string;
  const probe = output.contracts[WALLET_SOURCES.probe]?.SignatureProbe;
  if (!probe) throw new Error("solc produced no SignatureProbe");
  const contracts: Record<string, ContractArtifact> = {};
  for (const [name, c] of Object.entries(output.contracts[WALLET_SOURCES.wallets] ?? {})) contracts[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
  return {
    probe: { bytecode: `0x${probe.evm.bytecode.object}`, sourceSha256: sha(WALLET_SOURCES.probe), compiler },
    wallets: { contracts, sourceSha256: sha(WALLET_SOURCES.wallets), compiler },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const started = performance.now();
  const artifact = compileTestUSDC();
  mkdirSync(dirname(ARTIFACT_PATH), { recursive: true });
  writeFileSync(ARTIFACT_PATH, `${JSON.stringify(artifact, null, 2)}\n`);
  const runtimeBytes = (artifact.deployedBytecode.length - 2) / 2;
  console.log(`wrote ${ARTIFACT_PATH} (${artifact.compiler.version}, runtime ${runtimeBytes} B) in ${Math.round(performance.now() - started)} ms`);
  const { probe, wallets } = compileSmartWallets();
  writeFileSync(PROBE_ARTIFACT_PATH, `${JSON.stringify(probe, null, 2)}\n`);
  writeFileSync(WALLETS_ARTIFACT_PATH, `${JSON.stringify(wallets, null, 2)}\n`);
  console.log(`wrote ${PROBE_ARTIFACT_PATH} and ${WALLETS_ARTIFACT_PATH}`);
}
