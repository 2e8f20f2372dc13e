/**
 * Scenario 9: paid x402 requests on a chain with 2 s blocks (anvil
 * `--block-time 2`, as on Base), many at once, settled by server402's relayer
 * from ONE wallet (one transaction per payment, nonces pipelined: issue 20
 * part 2). Measures settled payments per second, request → paid answer
 * latency (p50/p99), transactions per block and gas per settled payment.
 *
 * Its own dev chain (the other scenarios use an automining one). The server
 * is a server402 target process (bench/targets/http-target.ts, MemoryStore,
 * default on-chain pre-check); the load generator here signs a fresh EIP-3009
 * authorization for every request. Payers: fresh keys, each used by at most
 * 3 concurrent clients (below the default 4 paid requests in flight per payer).
 *
 * BENCH_BLOCK_SECONDS (20): load duration. BENCH_BLOCK_CONCURRENCY (150): paid requests in flight.
 */
import { startDevChain } from "server402/devchain";
import { createPublicClient, http, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { v1Header } from "../../test/support/sign.js";
import { fmt, log, median, percentile, startChild, type Scenario } from "../lib.js";
import { chainOf } from "./http.js";

const PRICE = 10_000n; // $0.01, the targets' price
const BLOCK_TIME = 2;
const num = (name: string, def: number) => (process.env[name] ? Number(process.env[name]) : def);

export async function scenarioBlockTime(): Promise<Scenario> {
  const seconds = num("BENCH_BLOCK_SECONDS", 20);
  const concurrency = num("BENCH_BLOCK_CONCURRENCY", 150);
  const chain = await startDevChain({ blockTime: BLOCK_TIME, mintPerPayer: 0n });
  const client = createPublicClient({ transport: http(chain.rpcUrl, { retryCount: 0 }) });
  const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;
  const payers = Array.from({ length: Math.ceil(concurrency / 3) }, () => generatePrivateKey());
  await Promise.all(payers.map((k) => chain.mint(privateKeyToAccount(k).address, 1_000_000_000n)));
  const target = await startChild("server402 + relayer (2 s blocks)", "bench/targets/http-target.ts", [JSON.stringify({ kind: "server402", settleStats: true, chain: chainOf(chain) })]);
  const payTo = chain.accounts.payTo.address;
  try {
    // warm-up: one paid request per payer's first client (module loading, connections, fee cache)
    const paid = async (key: Hex): Promise<{ ms: number; status: number }> => {
      const t0 = performance.now();
      const header = await v1Header({ privateKey: key, asset: chain.usdc, payTo, value: PRICE });
      const res = await fetch(`${target.url!}/weather`, { headers: { "x-payment": header, accept: "application/json" } });
      await res.arrayBuffer();
      return { ms: performance.now() - t0, status: res.status };
    };
    const warm = await Promise.all(payers.slice(0, 10).map((k) => paid(k)));
    if (warm.some((w) => w.status !== 200)) throw new Error(`warm-up answers ${warm.map((w) => w.status).join(",")}`);
    const before = await chain.balanceOf(payTo);
    const relayer = chain.accounts.relayer.address;
    const nonceBefore = Number(BigInt(await rpc<Hex>("eth_getTransactionCount", [relayer, "latest"])));
    const blockBefore = Number(BigInt(await rpc<Hex>("eth_blockNumber")));
    log(`scenario 9: ${concurrency} paid requests in flight for ${seconds} s, ${payers.length} payers, 2 s blocks, one relayer wallet`);

    const latencies: number[] = [];
    const statuses = new Map<number, number>();
    const t0 = performance.now();
    const endAt = t0 + seconds * 1000;
    let lastDone = t0;
    await Promise.all(
      Array.from({ length: concurrency }, async (_, i) => {
        const key = payers[i % payers.length]!;
        while (performance.now() < endAt) {
          let r: { ms: number; status: number };
          try {
            r = await paid(key);
          } catch {
            r = { ms: NaN, status: 0 };
          }
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status === 200) latencies.push(r.ms);
          lastDone = performance.now();
        }
      }),
    );
    const elapsed = (lastDone - t0) / 1000;
    const ok = statuses.get(200) ?? 0;
    // wait for the chain to carry everything (held answers settle within the request; nothing should be pending)
    await new Promise((r) => setTimeout(r, BLOCK_TIME * 1000 + 500));
    const received = (await chain.balanceOf(payTo)) - before;
    const nonceAfter = Number(BigInt(await rpc<Hex>("eth_getTransactionCount", [relayer, "latest"])));
    const blockAfter = Number(BigInt(await rpc<Hex>("eth_blockNumber")));
    let gas = 0n;
    let txs = 0;
    let maxPerBlock = 0;
    for (let b = blockBefore + 1; b <= blockAfter; b++) {
      const block = await rpc<{ gasUsed: Hex; transactions: Hex[] }>("eth_getBlockByNumber", [`0x${b.toString(16)}`, false]);
      gas += BigInt(block.gasUsed);
      txs += block.transactions.length;
      maxPerBlock = Math.max(maxPerBlock, block.transactions.length);
    }
    const stats = ((await (await fetch(`${target.url!}/__bench/stats`)).json()) as { settleMs: number[] }).settleMs.slice(warm.length);
    const perSecond = ok / elapsed;
    const p50 = median(latencies);
    const p99 = percentile(latencies, 99);
    const goalMs = BLOCK_TIME * 1000 + 100;
    const moneyOk = received === PRICE * BigInt(ok) && nonceAfter - nonceBefore === ok;
    const others = [...statuses].filter(([s]) => s !== 200).map(([s, n]) => `${n} × ${s === 0 ? "network error" : s}`);
    return {
      id: 9,
      title: "Paid x402 requests at 2 s blocks, one relayer wallet (nonces pipelined)",
      goal: `p50 request → paid answer ≤ one block + 100 ms (${fmt.int(goalMs)} ms); every 200 settled once`,
      met: p50 <= goalMs && moneyOk,
      columns: ["contender", "paid requests (200)", "settled payments/s", "p50", "p99", "relayer txs", "blocks", "most txs in a block", "gas per settled payment", "other answers"],
      rows: [
        [
          "server402 + relayer, one wallet",
          fmt.int(ok),
          perSecond.toFixed(1),
          fmt.ms(p50, 0),
          fmt.ms(p99, 0),
          fmt.int(nonceAfter - nonceBefore),
          fmt.int(blockAfter - blockBefore),
          fmt.int(maxPerBlock),
          txs ? fmt.int(Number(gas / BigInt(txs))) : "–",
          others.join(", ") || "none",
        ],
      ],
      notes: [
        `anvil --block-time ${BLOCK_TIME}; ${concurrency} clients for ${seconds} s (each: sign a fresh EIP-3009 authorization, GET /weather with X-PAYMENT, read the answer, again); ${payers.length} payers; MemoryStore; one relayer wallet, one transaction per payment.`,
        `Server-side settlement (send → receipt seen) p50 ${fmt.ms(median(stats), 0)}, p99 ${fmt.ms(percentile(stats, 99), 0)}: a payment waits for the next block, ${BLOCK_TIME / 2} s on average.`,
        `Money check: payTo received ${received} atomic USDC for ${ok} paid answers (${PRICE} each), relayer nonce advanced by ${nonceAfter - nonceBefore}: ${moneyOk ? "every 200 settled exactly once" : "MISMATCH"}.`,
      ],
      raw: { seconds, concurrency, payers: payers.length, ok, elapsed, perSecond, latencies, settleMs: stats, statuses: Object.fromEntries(statuses), received: received.toString(), txs, gas: gas.toString(), maxPerBlock, blocks: blockAfter - blockBefore },
    };
  } finally {
    await target.stop();
    await chain.stop();
  }
}
