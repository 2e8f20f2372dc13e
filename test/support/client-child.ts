/** Runs test/clients/pay.mjs (or any script there) in a child that reaches loopback only (test/clients/no-network.mjs). */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

export const CLIENTS_DIR = fileURLToPath(new URL("../clients/", import.meta.url));
export const CHILD_TIMEOUT_MS = 60_000;

export interface ChildResult {
  out: { status?: number; body?: string; receipt?: { success: boolean; transaction: string; payer?: string } | null; error?: string };
  /** Non-loopback connects and lookups the preload refused. */
  refused: string[];
}

/** `node --import ./no-network.mjs <args>` in test/clients, bounded in time; its last stdout line is the JSON result. */
export function clientChild(args: string[], env: Record<string, string> = {}): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--import", "./no-network.mjs", ...args], { cwd: CLIENTS_DIR, env: { PATH: process.env.PATH ?? "", ...env }, timeout: CHILD_TIMEOUT_MS, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      let out: ChildResult["out"];
      try {
        out = JSON.parse(stdout.trim().split("\n").pop() ?? "");
      } catch {
        return reject(new Error(`child gave no result (${err?.message ?? "exit 0"}): ${stdout.slice(-500)} ${stderr.slice(-2000)}`));
      }
      resolve({ out, refused: stderr.split("\n").filter((l) => l.startsWith("refused: ")).map((l) => l.slice(9)) });
    });
  });
}
