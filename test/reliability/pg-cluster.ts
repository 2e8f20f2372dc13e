/**
 * A throwaway PostgreSQL cluster of the test's own (initdb in a temp
 * directory, a free port on 127.0.0.1, trust auth), so a test may stop and
 * restart it without touching the shared server on 5432. Uses the Debian
 * binaries (/usr/lib/postgresql/<version>/bin); as root it runs them as the
 * `postgres` user (initdb refuses root).
 */
import { execFile } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface PgCluster {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string;
  readonly port: number;
  /** Stop the server: `immediate` is a crash (no checkpoint; recovery at the next start), `fast` a clean shutdown. */
  stop(mode?: "immediate" | "fast"): Promise<void>;
  /** Start it again on the same port; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stop it and delete its files. */
  destroy(): Promise<void>;
}

/** The newest Debian PostgreSQL bin directory with initdb, or undefined. */
function binDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] && join(root, versions[0], "bin");
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Start a new cluster, or return why one cannot be started here (the caller skips with that message). */
export async function startPgCluster(): Promise<PgCluster | string> {
  const bin = binDir();
  if (!bin) return "no PostgreSQL binaries under /usr/lib/postgresql/*/bin";
  const asRoot = process.getuid?.() === 0;
  let uid: number | undefined;
  let gid: number | undefined;
  if (asRoot) {
    try {
      uid = Number((await run("id", ["-u", "postgres"])).stdout.trim());
      gid = Number((await run("id", ["-g", "postgres"])).stdout.trim());
    } catch {
      return "running as root and there is no postgres user to run initdb as";
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "server402-pg-"));
  if (uid !== undefined) chownSync(dir, uid, gid!);
  const data = join(dir, "data");
  const port = await freePort();
  const pg = (tool: string, args: string[]) => (asRoot ? run("runuser", ["-u", "postgres", "--", join(bin, tool), ...args]) : run(join(bin, tool), args));
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=50`;
  const start = async () => {
    await pg("pg_ctl", ["-D", data, "-l", join(dir, "log"), "-w", "-t", "60", "-o", opts, "start"]);
  };
  try {
    await pg("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
    await start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    return `could not start a PostgreSQL cluster of its own: ${(err as Error).message.split("\n")[0]}`;
  }
  let running = true;
  const stop = async (mode: "immediate" | "fast" = "fast") => {
    if (!running) return;
    await pg("pg_ctl", ["-D", data, "-m", mode, "-w", "stop"]);
    running = false;
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    stop,
    async start() {
      await start();
      running = true;
    },
    async destroy() {
      await stop("immediate").catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
