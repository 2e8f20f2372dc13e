/**
 * Build the committed Permit2 artifact lib/src/devchain/Permit2.artifact.json:
 *
 * - Permit2's runtime code, taken verbatim from the precompiled bytecode that
 *   the npm package @uniswap/v4-periphery@1.0.3 ships (Uniswap's own
 *   `lib/permit2/test/utils/DeployPermit2.sol`, the code Uniswap plants at the
 *   canonical address in its tests). That package is 33 MB and not a
 *   dependency: fetch it only to rebuild,
 *
 *     npm pack @uniswap/v4-periphery@1.0.3 && tar xzf uniswap-v4-periphery-1.0.3.tgz
 *     PERMIT2_PACKAGE_DIR=./package npx tsx scripts/compile-permit2.ts
 *
 *   (without PERMIT2_PACKAGE_DIR the script looks in node_modules, and keeps
 *   the committed Permit2 code when the package is in neither place).
 * - our x402 Permit2 proxies (lib/contracts/X402Permit2Proxies.sol) and the
 *   plain ERC-20 (lib/contracts/PlainPermit2Token.sol), compiled offline with
 *   solc-js and the compile-token settings.
 *
 * test/permit2-devchain.test.ts recompiles the Solidity sources and checks the
 * artifact is current (and, when the package is present, the Permit2 code).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import solc from "solc";
import { SETTINGS } from "./compile-token.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const PERMIT2_ARTIFACT_PATH = join(ROOT, "lib/src/devchain/Permit2.artifact.json");
const SOURCES = { proxies: "lib/contracts/X402Permit2Proxies.sol", token: "lib/contracts/PlainPermit2Token.sol" } as const;
/** Where Permit2's precompiled code sits inside @uniswap/v4-periphery. */
export const PERMIT2_SOURCE_IN_PACKAGE = "lib/permit2/test/utils/DeployPermit2.sol";
export const PERMIT2_PACKAGE = "@uniswap/v4-periphery@1.0.3";

export interface Permit2Artifact {
  permit2: { runtime: string; sha256: string; source: string };
  exactProxy: { abi: unknown[]; runtime: string };
  uptoProxy: { abi: unknown[]; runtime: string };
  token: { abi: unknown[]; runtime: string };
  compiler: string;
  sourcesSha256: Record<string, string>;
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[];
  contracts: Record<string, Record<string, { abi: unknown[]; evm: { deployedBytecode: { object: string } } }>>;
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

/** Permit2's runtime code from the package's DeployPermit2.sol, or undefined when the package is not at hand. */
export function permit2FromPackage(dir = process.env.PERMIT2_PACKAGE_DIR ?? join(ROOT, "node_modules/@uniswap/v4-periphery")): string | undefined {
  const file = join(dir, PERMIT2_SOURCE_IN_PACKAGE);
  if (!existsSync(file)) return undefined;
  const m = /hex"([0-9a-fA-F]+)"/.exec(readFileSync(file, "utf8"));
  if (!m) throw new Error(`${file} holds no hex"…" bytecode`);
  return `0x${m[1]!.toLowerCase()}`;
}

/** Compile the proxies and the plain token (does not write anything). */
export function compilePermit2Contracts(): Omit<Permit2Artifact, "permit2"> {
  const sources = Object.fromEntries(Object.values(SOURCES).map((p) => [p, { content: readFileSync(join(ROOT, p), "utf8") }]));
  const input = { language: "Solidity", sources, settings: { ...SETTINGS, outputSelection: { "*": { "*": ["abi", "evm.deployedBytecode.object"] } } } };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports })) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  const get = (file: string, name: string) => {
    const c = output.contracts[file]?.[name];
    if (!c) throw new Error(`solc produced no ${name}`);
    return { abi: c.abi, runtime: `0x${c.evm.deployedBytecode.object}` };
  };
  return {
    exactProxy: get(SOURCES.proxies, "X402ExactPermit2Proxy"),
    uptoProxy: get(SOURCES.proxies, "X402UptoPermit2Proxy"),
    token: get(SOURCES.token, "PlainPermit2Token"),
    compiler: solc.version() as string,
    sourcesSha256: Object.fromEntries(Object.entries(sources).map(([p, s]) => [p, createHash("sha256").update(s.content).digest("hex")])),
  };
}

export function sha256Hex(hex: string): string {
  return createHash("sha256").update(Buffer.from(hex.slice(2), "hex")).digest("hex");
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let runtime = permit2FromPackage();
  if (!runtime) {
    if (!existsSync(PERMIT2_ARTIFACT_PATH)) throw new Error(`${PERMIT2_PACKAGE} not found: npm pack it and set PERMIT2_PACKAGE_DIR (see the header of this script).`);
    runtime = (JSON.parse(readFileSync(PERMIT2_ARTIFACT_PATH, "utf8")) as Permit2Artifact).permit2.runtime;
    console.log(`${PERMIT2_PACKAGE} not at hand: keeping the committed Permit2 code`);
  }
  const artifact: Permit2Artifact = {
    permit2: { runtime, sha256: sha256Hex(runtime), source: `npm ${PERMIT2_PACKAGE}: ${PERMIT2_SOURCE_IN_PACKAGE}` },
    ...compilePermit2Contracts(),
  };
  writeFileSync(PERMIT2_ARTIFACT_PATH, `${JSON.stringify(artifact, null, 2)}\n`);
  console.log(`wrote ${PERMIT2_ARTIFACT_PATH} (Permit2 ${(runtime.length - 2) / 2} B, ${artifact.compiler})`);
}
