/**
 * Issue 15: README.md's error table and public-API table cannot drift from
 * the code. The error table lists each code of Server402ErrorCode exactly once
 * (and only those); the API table lists exactly what lib/src/index.ts exports.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as api from "server402";
import { DevChainError } from "server402/devchain";
import { SERVER402_ERROR_CODES } from "server402/internal";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(`${ROOT}README.md`, "utf8");

/** The markdown table rows (cells) of the `## <heading>` section. */
function tableOf(heading: string): string[][] {
  const start = README.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has a "## ${heading}" section`);
  const end = README.indexOf("\n## ", start + 1);
  const section = README.slice(start, end < 0 ? undefined : end);
  return section
    .split("\n")
    .filter((l) => l.startsWith("|") && !/^\|\s*-/.test(l))
    .slice(1) // header
    .map((l) => l.split("|").slice(1, -1).map((c) => c.trim()));
}

/** Backticked names in a cell. */
const names = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/** Every name lib/src/index.ts exports, values and types. */
function indexExports(): string[] {
  const src = readFileSync(`${ROOT}lib/src/index.ts`, "utf8").replace(/\/\/.*$/gm, "");
  const out: string[] = [];
  for (const m of src.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
    for (const part of m[1]!.split(",")) {
      const name = part.trim().replace(/^type\s+/, "").split(/\s+as\s+/).pop()!.trim();
      if (name) out.push(name);
    }
  }
  assert.doesNotMatch(src, /export\s+\*/, "index.ts exports names, not `export *`");
  return out;
}

describe("README tables match the code (issue 15)", () => {
  it("the error table has one row per Server402ErrorCode, and only those", () => {
    const rows = tableOf("Errors");
    const codes = rows.map((r) => names(r[0]!)[0]);
    assert.deepEqual([...codes].sort(), [...SERVER402_ERROR_CODES].sort());
    for (const r of rows) assert.equal(r.length, 5, `row ${r[0]} has code, class, status, meaning, what to do`);
  });

  it("each error row names a class that carries that code", () => {
    const classes: Record<string, new (...a: never[]) => Error> = { ...(api as unknown as Record<string, never>), DevChainError } as never;
    const samples: Record<string, Error> = {
      ConfigError: new api.ConfigError("x", "y"),
      MissingDependencyError: new api.MissingDependencyError("x", "y"),
      PaymentError: new api.PaymentError("x", "y"),
      SettlementError: new api.SettlementError("x", "y"),
      StoreError: new api.StoreError("x"),
      ChainError: new api.ChainError("x"),
      DevChainError: new DevChainError("spawn_failed", "x"),
      RelayerFundsError: new api.RelayerFundsError("0x0000000000000000000000000000000000000001", 0n, 1n),
    };
    for (const [codeCell, classCell] of tableOf("Errors")) {
      const code = names(codeCell!)[0]!;
      const cls = names(classCell!)[0]!;
      assert.ok(classes[cls], `${cls} is exported`);
      if (cls === "Server402Error") continue; // the base class carries any code
      assert.equal((samples[cls] as api.Server402Error).code, code, `${cls} carries ${code}`);
    }
  });

  it("the public API table lists exactly lib/src/index.ts's exports", () => {
    const listed = tableOf("Public API").flatMap((r) => names(r[0]!));
    const exported = indexExports();
    assert.deepEqual([...new Set(listed)].sort(), [...new Set(exported)].sort());
    assert.equal(listed.length, new Set(listed).size, "each export listed once");
    for (const internal of ["PaymentEngine", "authorizationDigest", "recoveryBackend", "toRequirementsV1"]) assert.ok(!(internal in api), `${internal} is not public`);
  });
});
