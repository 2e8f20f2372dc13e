/**
 * Scenario 7 (issue 14, case A8): what an unpaid request costs the example
 * server, by body size. The example answers an unpaid request from its
 * headers (402) without parsing or reading its body, so a 13 MB body should
 * cost about what a small one does. Goal: 13 MB / small ≤ 2.
 *
 * Measured: the server process's CPU time (the scheduler's run time of all
 * its threads, ns) over a batch of sequential unpaid POSTs of each size
 * (undici fetch, as a client sends them: keep-alive, whole body), per
 * request. Each batch's window runs until every connection it opened has
 * ended (a big body's connection ends 2 s after its 402), so a big request's
 * close is not counted in the next batch; the server's idle CPU over an
 * equal window, measured in the same round, is taken off.
 *
 * The floor: a bare Node http server answering 402 with the library's same
 * unread-body close (bench/targets/bare-unread-target.ts), measured in the
 * same rounds. Its extra CPU for a 13 MB body (a new connection, a 64 KB
 * read, the close of a socket holding the unread body) is what any Node
 * server pays for that exchange.
 */
import type { DevChain } from "server402/devchain";
import { cpuNsOf, fmt, log, median, settings, startChild, type Child, type Scenario } from "../lib.js";

const BIG = 13 * 1024 * 1024;
/** Longer than the 2 s after which a big body's connection is ended (lib/src/adapters/express/unread-body.ts). */
const SETTLE_MS = 2500;

/** POST `body` to `url` and read the whole answer; returns the status. */
async function post(url: string, body: Buffer): Promise<number> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: new Uint8Array(body) });
  await res.arrayBuffer();
  return res.status;
}

/** A face request of about `bytes` bytes (ImageDataA padded with base64 "A"s). */
function bodyOf(bytes: number): Buffer {
  const image = "A".repeat(Math.max(4, bytes - 40 - ((bytes - 40) % 4)));
  return Buffer.from(JSON.stringify({ ImageDataA: image, ImageDataB: "AAAA" }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function scenarioUnpaidBody(chain: DevChain): Promise<Scenario> {
  const example = await startChild("example server", "bench/targets/example-target.ts", [
    JSON.stringify({ rpcUrl: chain.rpcUrl, payTo: chain.accounts.payTo.address, relayerKey: chain.accounts.relayer.privateKey }),
  ]);
  const bare = await startChild("bare Node http (floor)", "bench/targets/bare-unread-target.ts");
  const contenders: Array<{ name: string; child: Child; url: string }> = [
    { name: "example server", child: example, url: `${example.url!}/api/tools/face-comparison` },
    { name: "bare Node http (floor)", child: bare, url: `${bare.url!}/` },
  ];
  const sizes = [
    { name: "small body (2 KB)", body: bodyOf(2048), count: 400 },
    { name: "13 MB body", body: bodyOf(BIG), count: 40 },
  ];
  const key = (c: string, s: string) => `${c} · ${s}`;
  const perRequest: Record<string, number[]> = {};
  const statuses: Record<string, Record<string, number>> = {};
  const ratios: Record<string, number[]> = Object.fromEntries(contenders.map((c) => [c.name, []]));
  try {
    for (const c of contenders) for (const s of sizes) for (let i = 0; i < 20; i++) await post(c.url, s.body); // warm-up
    await sleep(SETTLE_MS);
    const rounds = Math.max(3, settings.rounds);
    for (let round = 0; round < rounds; round++) {
      for (const c of round % 2 ? [...contenders].reverse() : contenders) {
        const idle0 = cpuNsOf(c.child.pid);
        await sleep(SETTLE_MS);
        const idleNs = cpuNsOf(c.child.pid) - idle0;
        const ms: Record<string, number> = {};
        for (const s of round % 2 ? [...sizes].reverse() : sizes) {
          const k = key(c.name, s.name);
          const st = (statuses[k] ??= {});
          const before = cpuNsOf(c.child.pid);
          for (let i = 0; i < s.count; i++) {
            const status = await post(c.url, s.body);
            st[status] = (st[status] ?? 0) + 1;
          }
          await sleep(SETTLE_MS);
          ms[s.name] = (cpuNsOf(c.child.pid) - before - idleNs) / s.count / 1e6;
          (perRequest[k] ??= []).push(ms[s.name]!);
        }
        ratios[c.name]!.push(ms[sizes[1]!.name]! / ms[sizes[0]!.name]!);
      }
      log(`scenario 7: round ${round + 1}/${rounds}`);
    }
  } finally {
    await Promise.all(contenders.map((c) => c.child.stop()));
  }
  const ratio = median(ratios[contenders[0]!.name]!);
  const floor = median(ratios[contenders[1]!.name]!);
  const extra = (c: string) => median(perRequest[key(c, sizes[1]!.name)]!) - median(perRequest[key(c, sizes[0]!.name)]!);
  const all402 = Object.values(statuses).every((st) => Object.keys(st).every((k) => k === "402"));
  return {
    id: 7,
    title: "Unpaid big bodies (example server): CPU per unpaid request, 13 MB body against a small one",
    goal: "13 MB / small ≤ 2×, every answer 402",
    met: ratio <= 2 && all402,
    columns: ["server", "body", "requests per round", "CPU per request (median of rounds)", "answers"],
    rows: contenders.flatMap((c) =>
      sizes.map((s) => [c.name, s.name, String(s.count), fmt.ms(median(perRequest[key(c.name, s.name)]!), 3), JSON.stringify(statuses[key(c.name, s.name)])]),
    ),
    notes: [
      `ratio 13 MB / small, example server: ${ratio.toFixed(2)}× (goal ≤ 2×; rounds ${ratios[contenders[0]!.name]!.map((r) => r.toFixed(2)).join(" / ")}).`,
      `floor, a bare Node http server with the same unread-body close: ${floor.toFixed(2)}× (rounds ${ratios[contenders[1]!.name]!.map((r) => r.toFixed(2)).join(" / ")}). Extra CPU of a 13 MB request over a small one: example ${fmt.ms(extra(contenders[0]!.name), 3)}, bare Node ${fmt.ms(extra(contenders[1]!.name), 3)}.`,
      "Both answer 402 from the headers with Connection: close and leave a large body unread (Node reads 64 KB of it); the connection ends 2 s later, after the client read the 402. A small body is read and the connection kept (keep-alive).",
      "CPU is the server process's scheduler run time over all its threads (/proc/<pid>/task/*/schedstat), per batch until its connections ended, minus the idle CPU of an equal window; the client runs in the bench process.",
    ],
    raw: { perRequest, statuses, ratios },
  };
}
