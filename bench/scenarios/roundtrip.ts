/**
 * Scenario 4: a paid x402 request, client signs → 200, on the dev chain
 * (anvil, automine), one request at a time: server402 with its local relayer
 * (default on-chain pre-check, MemoryStore) vs x402-express 1.2.0 with the
 * repository's x402 facilitator in the same process (test/support/facilitator.ts:
 * x402@1.2.0 verify/settle). Same client, same chain, same price, v1
 * `X-PAYMENT`; contenders alternate in blocks.
 */
import type { DevChain } from "server402/devchain";
import type { Hex } from "viem";
import { v1Header } from "../../test/support/sign.js";
import { fmt, log, median, percentile, rotate, settings, type Scenario } from "../lib.js";
import { chainOf, startTargets, type Contender } from "./http.js";

const PRICE = 10_000n; // $0.01

export async function scenarioRoundTrip(chain: DevChain): Promise<Scenario> {
  const contenders: Contender[] = [
    { name: "server402 + relayer", target: { kind: "server402", settleStats: true, chain: chainOf(chain, chain.accounts.relayer.privateKey) }, status: 200 },
    { name: "x402-express 1.2.0 + in-process facilitator", target: { kind: "x402-express", chain: chainOf(chain, chain.accounts.payers[8]!.privateKey) }, status: 200 },
  ];
  const children = await startTargets(contenders);
  const payTo = chain.accounts.payTo.address;
  let n = 0;
  /** One paid round trip: sign a fresh authorization, send it, read the 200. */
  const signMs: number[][] = contenders.map(() => []);
  async function paid(url: string, i?: number): Promise<number> {
    const payer = chain.accounts.payers[n++ % 8]!;
    const t0 = performance.now();
    const header = await v1Header({ privateKey: payer.privateKey as Hex, asset: chain.usdc, payTo, value: PRICE });
    if (i !== undefined) signMs[i]!.push(performance.now() - t0);
    const res = await fetch(`${url}/weather`, { headers: { "x-payment": header, accept: "application/json" } });
    const text = await res.text();
    const ms = performance.now() - t0;
    if (res.status !== 200) throw new Error(`${url}: paid request → ${res.status} ${text.slice(0, 300)}`);
    return ms;
  }
  try {
    const before = await chain.balanceOf(payTo);
    const samples: number[][] = contenders.map(() => []);
    for (let i = 0; i < contenders.length; i++) for (let k = 0; k < 5; k++) await paid(children[i]!.url!); // warm-up
    for (let round = 0; round < settings.rounds; round++) {
      for (const i of rotate([0, 1], round)) {
        for (let k = 0; k < settings.paidPerRound; k++) samples[i]!.push(await paid(children[i]!.url!, i));
        log(`round ${round + 1}/${settings.rounds} ${contenders[i]!.name}: p50 ${fmt.ms(median(samples[i]!.slice(-settings.paidPerRound)))}`);
      }
    }
    const received = (await chain.balanceOf(payTo)) - before;
    // server402's own settlement time (relayer: fees → sign → send, receipt in the answer; no gas estimate after the on-chain pre-check), from its payment events.
    const settle = ((await (await fetch(`${children[0]!.url}/__bench/stats`)).json()) as { settleMs: number[] }).settleMs.slice(5);
    const expected = PRICE * BigInt(contenders.length * (5 + settings.rounds * settings.paidPerRound));
    const p50 = median(samples[0]!);
    const goal = 12;
    return {
      id: 4,
      title: "Paid x402 round trip on the dev chain (client signs → 200), sequential",
      goal: `server402 p50 ≤ ${goal} ms`,
      met: p50 <= goal && received === expected,
      columns: ["contender", "requests", "p50", "p95", "min", "max", "of which client signing (p50)", "p50 ratio to server402", "goal"],
      rows: contenders.map((c, i) => {
        const s = samples[i]!;
        return [
          c.name,
          `${s.length}`,
          fmt.ms(median(s)),
          fmt.ms(percentile(s, 95)),
          fmt.ms(Math.min(...s)),
          fmt.ms(Math.max(...s)),
          fmt.ms(median(signMs[i]!)),
          fmt.ratio(median(s) / p50),
          i === 0 ? `≤ ${goal} ms ${p50 <= goal ? "✓" : "✗"}` : "",
        ];
      }),
      notes: [
        `${settings.rounds} alternating rounds of ${settings.paidPerRound} paid requests per contender after 5 warm-up requests each; anvil automine on loopback; every request signs a fresh EIP-3009 authorization (viem) and sends X-PAYMENT (v1).`,
        `server402 breakdown: settlement by the relayer (fees, sign, eth_sendRawTransactionSync, which answers with the receipt on this automining chain; the gas estimate is skipped after the on-chain pre-check) p50 ${fmt.ms(median(settle))}, p95 ${fmt.ms(percentile(settle, 95))}, measured in the server; the rest is HTTP, local verification, the on-chain pre-check (authorizationState + balanceOf in one JSON-RPC batch) and the handler.`,
        `Money check: payTo received ${received} atomic USDC, expected ${expected} (every 200 settled exactly once).`,
      ],
      raw: { settleMs: settle, samples: Object.fromEntries(contenders.map((c, i) => [c.name, samples[i]])), signMs: Object.fromEntries(contenders.map((c, i) => [c.name, signMs[i]])), received: received.toString(), expected: expected.toString() },
    };
  } finally {
    await Promise.all(children.map((ch) => ch.stop()));
  }
}
