/**
 * Issue 16 (4): the official MCP conformance suite
 * (@modelcontextprotocol/conformance 0.1.16, a devDependency of test/clients)
 * runs its applicable server scenarios against the example server's /mcp.
 * Its CLI runs in a child (loopback only, test/clients/no-network.mjs) on
 * Node 20 through test/clients/node20-fs-glob.mjs, which gives that package
 * alone a `globSync` (its bundle imports it from "fs"; only `tier-check`
 * calls it). The child runs asynchronously: the server answers from this process.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startDevChain, type DevChain } from "server402/devchain";
import { startExampleApp, type ExampleApp } from "./support/example-app.js";
import { CLIENTS_DIR } from "./support/client-child.js";

const CLI = "node_modules/@modelcontextprotocol/conformance/dist/index.js";

/** Server scenarios that apply to a stateless server offering paid tools (and nothing else). */
const APPLICABLE = [
  "server-initialize",
  "ping",
  "tools-list",
  "tools-call-error",
  "dns-rebinding-protection",
  // these two find a JSON (not SSE) answer and no session, and say their checks do not apply; they must not fail
  "server-sse-polling",
  "server-sse-multiple-streams",
];

/**
 * Not applicable, and why (each needs something of the suite's own reference server):
 * logging-set-level, completion-complete: the logging and completions capabilities, which the server does not offer;
 * tools-call-* (simple-text, image, audio, embedded-resource, mixed-content, with-logging, with-progress,
 * sampling, elicitation), json-schema-2020-12, elicitation-*: the suite's test tools (e.g. `test_simple_text`);
 * resources-*, prompts-*: resources and prompts, which the server does not offer.
 */

interface Check {
  id: string;
  status: "SUCCESS" | "FAILURE" | "WARNING" | "INFO" | "SKIPPED";
  errorMessage?: string;
}

function runScenario(url: string, scenario: string, outDir: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "./no-network.mjs", "--import", "./node20-fs-glob.mjs", CLI, "server", "--url", url, "--scenario", scenario, "-o", outDir],
      { cwd: CLIENTS_DIR, env: { PATH: process.env.PATH ?? "" }, timeout: 60_000, maxBuffer: 4 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}\n${stderr}`.slice(-3000) }),
    );
  });
}

function checksOf(outDir: string, scenario: string): Check[] {
  const dir = readdirSync(outDir).find((d) => d.startsWith(`server-${scenario}-`));
  assert.ok(dir, `no results for ${scenario}`);
  return JSON.parse(readFileSync(join(outDir, dir, "checks.json"), "utf8")) as Check[];
}

describe("issue 16: the MCP conformance suite 0.1.16 against the example server's /mcp", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let example: ExampleApp;
  let outDir: string;

  before(async function () {
    if (!existsSync(join(CLIENTS_DIR, CLI))) {
      if (process.env.CI) throw new Error("the MCP conformance suite needs test/clients' install: npm ci --prefix test/clients");
      console.log("    MCP conformance skipped: run `npm ci --prefix test/clients` to install @modelcontextprotocol/conformance");
      return this.skip();
    }
    outDir = mkdtempSync(join(tmpdir(), "mcp-conformance-"));
    chain = await startDevChain();
    example = await startExampleApp(chain);
  });
  after(async () => {
    await example?.close();
    await chain?.stop();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it("16.9 the CLI loads on Node 20 with the preload (and fails to load without it, on Node < 22)", async function () {
    const withShim = await new Promise<string>((resolve) =>
      execFile(process.execPath, ["--import", "./node20-fs-glob.mjs", CLI, "--version"], { cwd: CLIENTS_DIR }, (_e, out) => resolve(out.trim())),
    );
    assert.equal(withShim, "0.1.16");
    if (Number(process.versions.node.split(".")[0]) < 22) {
      const bare = await new Promise<string>((resolve) => execFile(process.execPath, [CLI, "--version"], { cwd: CLIENTS_DIR }, (e, _o, err) => resolve(e ? err : "loaded")));
      assert.match(bare, /globSync/);
    }
  });

  for (const scenario of APPLICABLE) {
    it(`16.9 scenario ${scenario}: no check fails`, async () => {
      const { code, output } = await runScenario(`${example.url}/mcp`, scenario, outDir);
      const checks = checksOf(outDir, scenario);
      const failed = checks.filter((c) => c.status === "FAILURE");
      assert.deepEqual(failed.map((c) => `${c.id}: ${c.errorMessage}`), [], output);
      assert.equal(code, 0, output);
      if (!scenario.startsWith("server-sse-")) assert.ok(checks.some((c) => c.status === "SUCCESS"), `no check passed: ${JSON.stringify(checks)}`);
    });
  }
});
