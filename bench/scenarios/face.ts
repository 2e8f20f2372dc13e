/**
 * Scenario 5: the local face engine, measured by bench/face-engine.ts (owned
 * by the face engine's authors) in its own process; this only runs it and
 * reads its figures. Skipped with a message when the script is missing.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fmt, log, ROOT, settings, type Scenario } from "../lib.js";

const SCRIPT = join(ROOT, "bench", "face-engine.ts");

export async function scenarioFace(): Promise<Scenario> {
  const base = { id: 5, title: "Face engine (local), 640 px pairs", goal: "p50 ≤ 250 ms per pair with both cores", columns: ["recognizer", "workers", "p50 per pair", "p95 per pair", "loaded p50 / p95", "pairs/s (loaded)", "cold start (ready / first pair)", "peak RSS", "goal"] };
  if (!existsSync(SCRIPT)) {
    log("scenario 5 skipped: bench/face-engine.ts does not exist");
    return { ...base, rows: [], notes: [], raw: {}, skipped: "bench/face-engine.ts does not exist yet" };
  }
  const workers = process.env.BENCH_FACE_WORKERS ?? "2";
  const args = ["--conditions=server402-source", "--import", "tsx", SCRIPT, "--pairs", String(settings.facePairs), "--workers", workers];
  log(`scenario 5: node bench/face-engine.ts --pairs ${settings.facePairs} --workers ${workers}`);
  const { code, out, err } = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
    child.on("exit", (code) => resolve({ code, out, err }));
  });
  if (code !== 0) {
    log(`scenario 5 failed (exit ${code}):\n${err}`);
    return { ...base, met: false, rows: [], notes: [`bench/face-engine.ts exited with code ${code}: ${err.trim().split("\n").slice(-3).join(" ")}`], raw: { out, err } };
  }
  const rows: string[][] = [];
  const parsed: Array<Record<string, number | string>> = [];
  let met: boolean | undefined;
  const n = (re: RegExp, line: string) => Number(re.exec(line)?.[1] ?? NaN);
  for (const line of out.split("\n").filter((l) => /^workers=/.test(l))) {
    const r = {
      recognizer: /recognizer=(\S+)/.exec(line)?.[1] ?? "faceres-aligned",
      load: n(/ load ([\d.]+)/, line),
      workers: n(/workers=(\d+)/, line),
      p50: n(/ p50=([\d.]+) ms/, line),
      p95: n(/ p95=([\d.]+) ms/, line),
      loadedP50: n(/loaded p50=([\d.]+) ms/, line),
      loadedP95: n(/loaded p95=([\d.]+) ms/, line),
      pairsPerSecond: n(/([\d.]+) pairs\/s/, line),
      readyMs: n(/cold ready=([\d.]+) ms/, line),
      firstMs: n(/first-compare-done=([\d.]+) ms/, line),
      peakRssMb: n(/peak RSS ([\d.]+) MB/, line),
      errors: n(/ERRORS (\d+)/, line) || 0,
    };
    parsed.push(r);
    // The goal applies to the shipped pipeline; the others are printed beside it.
    const goalRow = r.recognizer === "faceres-aligned" && (r.workers === 2 || (workers !== "2" && r.workers === Math.max(...workers.split(",").map(Number))));
    const ok = goalRow ? r.p50 <= 250 && r.errors === 0 : undefined;
    if (ok !== undefined) met = ok;
    rows.push([`${r.recognizer}${r.recognizer === "faceres-aligned" ? " (shipped)" : ""}`, `${r.workers}`, fmt.ms(r.p50, 0), fmt.ms(r.p95, 0), `${fmt.ms(r.loadedP50, 0)} / ${fmt.ms(r.loadedP95, 0)}`, r.pairsPerSecond.toFixed(2), `${fmt.ms(r.readyMs, 0)} / ${fmt.ms(r.firstMs, 0)}`, `${r.peakRssMb} MB (load ${r.load})`, ok === undefined ? "" : `≤ 250 ms ${ok ? "✓" : "✗"}`]);
  }
  if (!rows.length) return { ...base, met: false, rows: [], notes: [`could not read bench/face-engine.ts output: ${out.slice(0, 300)}`], raw: { out } };
  const header = out.split("\n")[0] ?? "";
  // Held-out accuracy lines (fixed figures of each recognizer with its shipped anchors), side by side.
  const accuracy = out.split("\n").filter((l) => /^held-out recognizer=/.test(l)).map((l) => l.replace(/\s{2,}/g, "; "));
  return { ...base, met, rows, notes: [...accuracy, `bench/face-engine.ts --pairs ${settings.facePairs} --workers ${workers}: ${header.trim()}; p50/p95 per pair with one comparison at a time (its two images run on two workers at once); "loaded": one caller per worker in a closed loop, every worker busy (there the two images of a pair usually share a worker's turn, so latency is about twice the per-image inference).`], raw: { parsed, out } };
}
