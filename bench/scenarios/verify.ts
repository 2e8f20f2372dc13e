/**
 * Scenario 3: x402 verifications per second per core — server402's
 * verifyAuthorization (native libsecp256k1, and its pure-JS fallback) vs
 * viem's verifyTypedData on the same signed authorizations. Each runs in a
 * single-threaded child (bench/targets/verify.ts), contenders alternating
 * within it.
 */
import { fmt, log, median, settings, startChild, type Scenario } from "../lib.js";

interface VerifyOut {
  backend: "native" | "js";
  pool: number;
  rounds: Array<Record<string, number>>;
}

async function run(label: string, env: Record<string, string>): Promise<VerifyOut> {
  log(`scenario 3: ${label}`);
  const child = await startChild(label, "bench/targets/verify.ts", [JSON.stringify({ rounds: settings.rounds, seconds: settings.verifySeconds, pool: 500 })], env);
  await child.exited;
  return child.ready as unknown as VerifyOut;
}

export async function scenarioVerify(): Promise<Scenario> {
  const native = await run("verify (native)", {});
  const js = await run("verify (pure-JS fallback)", { SERVER402_PURE_JS_SECP256K1: "1" });
  const s402 = median(native.rounds.map((r) => r.server402!));
  const viem = median([...native.rounds, ...js.rounds].map((r) => r.viem!));
  const s402js = median(js.rounds.map((r) => r.server402!));
  const ratios = native.rounds.map((r) => r.server402! / r.viem!);
  const goal = 3000;
  return {
    id: 3,
    title: "x402 verification rate per core (EIP-3009 signature + fields)",
    goal: `server402 ≥ ${fmt.int(goal)} verifications/s on one core`,
    met: s402 >= goal,
    columns: ["contender", "verifications/s (median)", "per-round", "ratio to viem", "goal"],
    rows: [
      [`server402 verifyAuthorization (${native.backend} secp256k1)`, fmt.int(s402), native.rounds.map((r) => fmt.int(r.server402!)).join(" / "), fmt.ratio(median(ratios)), `≥ ${fmt.int(goal)} ${s402 >= goal ? "✓" : "✗"}`],
      [`server402 verifyAuthorization (${js.backend} fallback)`, fmt.int(s402js), js.rounds.map((r) => fmt.int(r.server402!)).join(" / "), fmt.ratio(median(js.rounds.map((r) => r.server402! / r.viem!))), ""],
      ["viem verifyTypedData", fmt.int(viem), [...native.rounds, ...js.rounds].map((r) => fmt.int(r.viem!)).join(" / "), "1.00", ""],
    ],
    notes: [`${native.pool} distinct signed authorizations from 8 payers, verified in a loop on one thread for ${settings.verifySeconds} s per contender per round, ${settings.rounds} rounds, alternating.`],
    raw: { native, js },
  };
}
