/**
 * Scenario 7 (issue 14, case A8): what an unpaid request costs the example
 * server, by body size. The example answers an unpaid request from its
 * headers (402) without parsing or reading its body, so a 13 MB body should
 * cost about what a small one does. Measured: the server
 * process's CPU time (user + system, /proc) over a batch of sequential
 * unpaid POSTs of each size, per request; sizes alternate round by round.
 * Goal: 13 MB / small ≤ 2.
 */
import type { DevChain } from "server402/devchain";
import { cpuSecondsOf, fmt, log, median, settings, startChild, type Scenario } from "../lib.js";

const BIG = 13 * 1024 * 1024;

/** POST `body` to the face endpoint and read the whole answer; returns the status. */
async function post(url: string, body: Buffer): Promise<number> {
  const res = await fetch(`${url}/api/tools/face-comparison`, { method: "POST", headers: { "content-type": "application/json" }, body: new Uint8Array(body) });
  await res.arrayBuffer();
  return res.status;
}

/** A face request of about `bytes` bytes (ImageDataA padded with base64 "A"s). */
function bodyOf(bytes: number): Buffer {
  const image = "A".repeat(Math.max(4, bytes - 40 - ((bytes - 40) % 4)));
  return Buffer.from(JSON.stringify({ ImageDataA: image, ImageDataB: "AAAA" }));
}

export async function scenarioUnpaidBody(chain: DevChain): Promise<Scenario> {
  const child = await startChild("example server", "bench/targets/example-target.ts", [
    JSON.stringify({ rpcUrl: chain.rpcUrl, payTo: chain.accounts.payTo.address, relayerKey: chain.accounts.relayer.privateKey }),
  ]);
  const sizes = [
    { name: "small body (2 KB)", body: bodyOf(2048), count: 400 },
    { name: "13 MB body", body: bodyOf(BIG), count: 40 },
  ];
  const perRequest: Record<string, number[]> = Object.fromEntries(sizes.map((s) => [s.name, []]));
  const statuses: Record<string, Record<string, number>> = Object.fromEntries(sizes.map((s) => [s.name, {}]));
  try {
    for (const s of sizes) for (let i = 0; i < 20; i++) await post(child.url!, s.body); // warm-up
    const rounds = Math.max(3, settings.rounds);
    for (let round = 0; round < rounds; round++) {
      for (const s of round % 2 ? [...sizes].reverse() : sizes) {
        const before = cpuSecondsOf(child.pid);
        for (let i = 0; i < s.count; i++) {
          const status = await post(child.url!, s.body);
          statuses[s.name]![status] = (statuses[s.name]![status] ?? 0) + 1;
        }
        perRequest[s.name]!.push(((cpuSecondsOf(child.pid) - before) / s.count) * 1000);
      }
      log(`scenario 7: round ${round + 1}/${rounds}`);
    }
  } finally {
    await child.stop();
  }
  const small = median(perRequest[sizes[0]!.name]!);
  const big = median(perRequest[sizes[1]!.name]!);
  const ratio = big / small;
  const all402 = Object.values(statuses).every((st) => Object.keys(st).every((k) => k === "402"));
  return {
    id: 7,
    title: "Unpaid big bodies (example server): CPU per unpaid request, 13 MB body against a small one",
    goal: "13 MB / small ≤ 2×, every answer 402",
    met: ratio <= 2 && all402,
    columns: ["body", "requests per round", "CPU per request (median of rounds)", "answers"],
    rows: sizes.map((s) => [s.name, String(s.count), fmt.ms(median(perRequest[s.name]!), 3), JSON.stringify(statuses[s.name])]),
    notes: [
      `ratio 13 MB / small: ${ratio.toFixed(2)}× (goal ≤ 2×). The paywall answers 402 from the headers with Connection: close and leaves a large body unread (Node stops reading at 64 KB); the connection is ended 2 s later, after the client read the 402. What remains is mostly a new connection per big request (the client drops the one it could not finish sending on).`,
      "CPU is the server process's user + system time from /proc (10 ms ticks) over each batch, divided by its requests; the client runs in the bench process.",
    ],
    raw: { perRequest, statuses },
  };
}
