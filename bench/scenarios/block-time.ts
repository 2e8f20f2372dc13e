/**
 * Scenario 9: paid x402 requests on a chain with 2 s blocks (anvil
 * `--block-time 2`, as on Base, with Base's block gas limit of 140 M), many
 * at once, settled by server402's relayer from ONE wallet. Side by side in
 * one run: one transaction per payment (nonces pipelined, issue 20 part 2)
 * and batched settlement (`relayerSettler({ batch })`, issue 20 part 3), at
 * the same number of clients, then batched with more clients to find its
 * ceiling and with few clients for its latency under light load. Measures settled payments per second, request → paid answer
 * latency (p50/p99), gas per settled payment, the rate the block gas limit
 * allows, and where the CPU went (server, load generator, anvil).
 *
 * Its own dev chain (the other scenarios use an automining one). Each
 * contender is a server402 target process (bench/targets/http-target.ts,
 * MemoryStore, default on-chain pre-check) with its own relayer wallet. The
 * clients' EIP-3009 authorizations are signed before the timed window (agents
 * sign on their own machines); each client then sends its own, one after
 * another. Payers: fresh keys, one per client (an agent pays for one call at a
 * time; the relayer then skips its simulation after the pre-check, see the
 * README's abuse limits).
 *
 * BENCH_BLOCK_SECONDS (15): load duration per contender. BENCH_BLOCK_CONCURRENCY (150): clients of the
 * side-by-side pair. BENCH_BLOCK_HIGH (600): clients of the batched ceiling run; BENCH_BLOCK_LOW (20): clients
 * of a light-load batched run, for the latency at one block (0 skips either).
 */
import { readFileSync, readdirSync } from "node:fs";
import { loadavg } from "node:os";
import { startDevChain, type DevChain } from "server402/devchain";
import { createPublicClient, http, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { v1Header } from "../../test/support/sign.js";
import { fmt, log, median, percentile, startChild, type Scenario } from "../lib.js";
import { chainOf } from "./http.js";

const PRICE = 10_000n; // $0.01, the targets' price
const BLOCK_TIME = 2;
/** Base mainnet's block gas limit (docs.base.org, "Block building": 140 M per 2 s block). */
const GAS_LIMIT = 140_000_000;
const num = (name: string, def: number) => (process.env[name] ? Number(process.env[name]) : def);

interface Run {
  label: string;
  concurrency: number;
  ok: number;
  perSecond: number;
  p50: number;
  p99: number;
  txs: number;
  blocks: number;
  gasPerPayment: number;
  others: string;
  moneyOk: boolean;
  ranOut: boolean;
  /** CPU ms per paid request; `serverBusy`: cores the server used; `serverWaiting`: cores' worth of time its threads waited runnable for a CPU. */
  cpu: { serverMsPerPaid: number; clientMsPerPaid: number; anvilMsPerPaid: number; serverBusy: number; serverWaiting: number };
  settleP50: number;
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 10 ms
  } catch {
    return NaN;
  }
}

/** Seconds the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/<tid>/schedstat, Linux); NaN elsewhere. */
function runQueueSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[1]);
    return ns / 1e9;
  } catch {
    return NaN;
  }
}

/** The dev chain's anvil: this process's child named anvil. */
function anvilPid(): number | undefined {
  for (const d of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (stat.includes("(anvil)") && Number(stat.split(") ")[1]!.split(" ")[1]) === process.pid) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

export async function scenarioBlockTime(): Promise<Scenario> {
  const seconds = num("BENCH_BLOCK_SECONDS", 15);
  const concurrency = num("BENCH_BLOCK_CONCURRENCY", 150);
  const high = num("BENCH_BLOCK_HIGH", 600);
  const low = num("BENCH_BLOCK_LOW", 20);
  const load0 = loadavg()[0]!;
  const chain = await startDevChain({ blockTime: BLOCK_TIME, mintPerPayer: 0n, gasLimit: GAS_LIMIT });
  const client = createPublicClient({ transport: http(chain.rpcUrl, { retryCount: 0 }) });
  const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;
  const maxClients = Math.max(concurrency, high);
  const payers = Array.from({ length: maxClients }, () => generatePrivateKey());
  await Promise.all(payers.map((k) => chain.mint(privateKeyToAccount(k).address, 1_000_000_000n)));
  const anvil = anvilPid();
  try {
    const single = await contender(chain, rpc, anvil, payers, { label: "one transaction per payment", concurrency, seconds, relayer: chain.accounts.relayer.privateKey, presign: 80 * seconds });
    const batched = await contender(chain, rpc, anvil, payers, {
      label: "batched",
      concurrency,
      seconds,
      relayer: chain.accounts.payers[8]!.privateKey, // a funded anvil account of its own: its own nonce sequence
      batch: { contract: chain.batchSettlement },
      presign: 400 * seconds,
    });
    const ceiling = high > 0
      ? await contender(chain, rpc, anvil, payers, {
          label: "batched, more clients",
          concurrency: high,
          seconds,
          relayer: chain.accounts.payers[7]!.privateKey,
          batch: { contract: chain.batchSettlement },
          presign: 600 * seconds,
        })
      : undefined;
    const light = low > 0
      ? await contender(chain, rpc, anvil, payers, { label: "batched, few clients", concurrency: low, seconds, relayer: chain.accounts.payers[6]!.privateKey, batch: { contract: chain.batchSettlement }, presign: 40 * seconds })
      : undefined;
    const runs = [single, batched, ...(ceiling ? [ceiling] : []), ...(light ? [light] : [])];
    const load1 = loadavg()[0]!;
    const gasRatio = batched.gasPerPayment / single.gasPerPayment;
    const best = runs.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
    const goalMs = BLOCK_TIME * 1000 + 100;
    const chainCap = (r: Run) => GAS_LIMIT / r.gasPerPayment / BLOCK_TIME;
    const limiter = (r: Run) => {
      const cores = 2;
      const busy = (r.cpu.serverMsPerPaid + r.cpu.clientMsPerPaid + r.cpu.anvilMsPerPaid) * r.perSecond / 1000;
      return `${(busy / cores * 100).toFixed(0)} % of the ${cores} cores`;
    };
    return {
      id: 9,
      title: "Paid x402 requests at 2 s blocks, one relayer wallet: one transaction each vs batched",
      goal: `batched: ≥ 500 settled payments/s, gas per payment ≤ 0.6× one transaction each, p50 request → paid answer ≤ one block + 100 ms (${fmt.int(goalMs)} ms); every 200 settled once`,
      met: best.perSecond >= 500 && gasRatio <= 0.6 && Math.min(...runs.filter((r) => r !== single).map((r) => r.p50)) <= goalMs && runs.every((r) => r.moneyOk),
      columns: ["contender", "clients", "paid (200)", "settled payments/s", "p50", "p99", "relayer txs", "payments per tx", "gas per settled payment", "chain's ceiling at this gas", "server CPU per paid request", "load generator CPU per paid request", "anvil CPU per paid request", "other answers"],
      rows: runs.map((r) => [
        r.label,
        fmt.int(r.concurrency),
        fmt.int(r.ok),
        r.perSecond.toFixed(1) + (r.ranOut ? " (authorizations ran out)" : ""),
        fmt.ms(r.p50, 0),
        fmt.ms(r.p99, 0),
        fmt.int(r.txs),
        r.txs ? (r.ok / r.txs).toFixed(1) : "–",
        fmt.int(r.gasPerPayment),
        `${fmt.int(chainCap(r))}/s`,
        fmt.ms(r.cpu.serverMsPerPaid, 2),
        fmt.ms(r.cpu.clientMsPerPaid, 2),
        fmt.ms(r.cpu.anvilMsPerPaid, 2),
        r.others || "none",
      ]),
      notes: [
        `anvil --block-time ${BLOCK_TIME} --gas-limit ${GAS_LIMIT} (Base mainnet's block gas limit); each contender ${seconds} s with its own relayer wallet (one), MemoryStore, default pre-check; batched: maxSize 100, maxWaitMs 25 (the defaults). One payer per client; authorizations signed before the timed window; each client sends GET /weather with X-PAYMENT, reads the answer, sends its next one.`,
        `Gas per settled payment, batched / one each: ${fmt.ratio(gasRatio)} (goal ≤ 0.60). The chain's ceiling is ${fmt.int(GAS_LIMIT)} gas per ${BLOCK_TIME} s block divided by the gas per payment.`,
        `Server-side settlement (send → receipt seen) p50: ${runs.map((r) => `${r.label} ${fmt.ms(r.settleP50, 0)}`).join(", ")}.`,
        `CPU in the timed window (server, load generator, anvil together): ${runs.map((r) => `${r.label} ${limiter(r)}, server process ran ${(r.cpu.serverBusy * 100).toFixed(0)} % of one core and waited runnable for a CPU ${(r.cpu.serverWaiting * 100).toFixed(0)} % of one core`).join("; ")}. Load average ${load0.toFixed(1)} before, ${load1.toFixed(1)} after (2 cores shared with other work).`,
        `Money check: ${runs.map((r) => `${r.label}: ${r.moneyOk ? "payTo received exactly the price of every 200" : "MISMATCH"}`).join("; ")}.`,
      ],
      raw: { seconds, concurrency, high, low, runs, gasRatio, load: [load0, load1] },
    };
  } finally {
    await chain.stop();
  }
}

async function contender(
  chain: DevChain,
  rpc: <T>(method: string, params?: unknown[]) => Promise<T>,
  anvil: number | undefined,
  payers: Hex[],
  o: { label: string; concurrency: number; seconds: number; relayer: Hex; batch?: { contract: Hex }; presign: number },
): Promise<Run> {
  const target = await startChild(`server402 + relayer (${o.label})`, "bench/targets/http-target.ts", [JSON.stringify({ kind: "server402", settleStats: true, chain: chainOf(chain, o.relayer), batch: o.batch })]);
  const payTo = chain.accounts.payTo.address;
  const sign = (key: Hex) => v1Header({ privateKey: key, asset: chain.usdc, payTo, value: PRICE });
  /** One paid request: its latency, and "200" or the status with the error code of the answer. */
  const paid = async (header: string): Promise<{ ms: number; status: string }> => {
    const t0 = performance.now();
    const res = await fetch(`${target.url!}/weather`, { headers: { "x-payment": header, accept: "application/json" } });
    const text = await res.text();
    const code = res.status === 200 ? "" : ` ${(JSON.parse(text || "{}") as { error?: string }).error ?? ""}`;
    return { ms: performance.now() - t0, status: `${res.status}${code}` };
  };
  try {
    // warm-up: module loading, connections, fee cache, the batch contract check
    const warm = await Promise.all(payers.slice(0, 10).map(async (k) => paid(await sign(k))));
    if (warm.some((w) => w.status !== "200")) throw new Error(`warm-up answers ${warm.map((w) => w.status).join(",")}`);
    log(`scenario 9 (${o.label}): signing ${o.presign} authorizations for ${o.concurrency} clients`);
    const perClient = Math.ceil(o.presign / o.concurrency);
    const queues: string[][] = [];
    for (let i = 0; i < o.concurrency; i++) {
      const key = payers[i % payers.length]!;
      queues.push(await Promise.all(Array.from({ length: perClient }, () => sign(key))));
    }
    const before = await chain.balanceOf(payTo);
    const blockBefore = Number(BigInt(await rpc<Hex>("eth_blockNumber")));
    log(`scenario 9 (${o.label}): ${o.concurrency} clients for ${o.seconds} s, 2 s blocks, one relayer wallet`);
    const cpu0 = { server: cpuSeconds(target.pid), client: process.cpuUsage(), anvil: cpuSeconds(anvil), waited: runQueueSeconds(target.pid) };
    const latencies: number[] = [];
    const statuses = new Map<string, number>();
    const t0 = performance.now();
    const endAt = t0 + o.seconds * 1000;
    let lastDone = t0;
    let ranOut = false;
    await Promise.all(
      queues.map(async (queue) => {
        while (performance.now() < endAt) {
          const header = queue.pop();
          if (!header) {
            ranOut = true;
            return;
          }
          let r: { ms: number; status: string };
          try {
            r = await paid(header);
          } catch {
            r = { ms: NaN, status: "network error" };
          }
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status === "200") latencies.push(r.ms);
          lastDone = performance.now();
        }
      }),
    );
    const elapsed = (lastDone - t0) / 1000;
    const clientCpu = process.cpuUsage(cpu0.client);
    const cpu1 = { server: cpuSeconds(target.pid), anvil: cpuSeconds(anvil), waited: runQueueSeconds(target.pid) };
    const ok = statuses.get("200") ?? 0;
    // wait for the chain to carry everything (a paid answer waited for its receipt; nothing should be pending)
    await new Promise((r) => setTimeout(r, BLOCK_TIME * 1000 + 500));
    const received = (await chain.balanceOf(payTo)) - before;
    const blockAfter = Number(BigInt(await rpc<Hex>("eth_blockNumber")));
    let gas = 0n;
    let txs = 0;
    for (let b = blockBefore + 1; b <= blockAfter; b++) {
      const block = await rpc<{ gasUsed: Hex; transactions: Hex[] }>("eth_getBlockByNumber", [`0x${b.toString(16)}`, false]);
      gas += BigInt(block.gasUsed);
      txs += block.transactions.length;
    }
    const stats = ((await (await fetch(`${target.url!}/__bench/stats`)).json()) as { settleMs: number[] }).settleMs.slice(warm.length);
    const perPaid = (s: number) => (s * 1000) / ok;
    return {
      label: o.label,
      concurrency: o.concurrency,
      ok,
      perSecond: ok / elapsed,
      p50: median(latencies),
      p99: percentile(latencies, 99),
      txs,
      blocks: blockAfter - blockBefore,
      gasPerPayment: ok ? Number(gas) / ok : NaN,
      others: [...statuses]
        .filter(([s]) => s !== "200")
        .map(([s, n]) => `${n} × ${s}`)
        .join(", "),
      moneyOk: received === PRICE * BigInt(ok),
      ranOut,
      cpu: {
        serverMsPerPaid: perPaid(cpu1.server - cpu0.server),
        clientMsPerPaid: perPaid((clientCpu.user + clientCpu.system) / 1e6),
        anvilMsPerPaid: perPaid(cpu1.anvil - cpu0.anvil),
        serverBusy: (cpu1.server - cpu0.server) / elapsed,
        serverWaiting: (cpu1.waited - cpu0.waited) / elapsed,
      },
      settleP50: median(stats),
    };
  } finally {
    await target.stop();
  }
}
