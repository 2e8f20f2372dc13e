/**
 * Issue 15: every error server402 throws is a Server402Error with a code from
 * Server402ErrorCode. Statically: no `throw new Error/TypeError/...` in the
 * library's TypeScript. Dynamically: the failures a user can reach through the
 * public API (bad options, unreachable RPC, a closed or unreachable store,
 * garbage headers) surface as typed errors, never a bare Error or TypeError.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { createChainReader, decodeHeader, facilitatorSettler, paymentsRouter, paywall, relayerSettler, requirePayment, Server402Error, type Server402ErrorCode } from "server402";
import { SERVER402_ERROR_CODES } from "server402/internal";
import { SqliteStore } from "server402/sqlite";

const SRC = fileURLToPath(new URL("../lib/src/", import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sourceFiles(p) : /\.ts$/.test(name) ? [p] : [];
  });
}

/** A loopback port nobody listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/** `f` throws or rejects with a Server402Error whose code is in the union (and `code` if given). */
async function typed(label: string, f: () => unknown, code?: Server402ErrorCode): Promise<void> {
  let caught: unknown;
  try {
    await f();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `${label}: expected an error`);
  assert.ok(caught instanceof Server402Error, `${label}: untyped ${(caught as Error)?.constructor?.name}: ${(caught as Error)?.message}`);
  assert.ok((SERVER402_ERROR_CODES as readonly string[]).includes(caught.code), `${label}: code ${caught.code} is in Server402ErrorCode`);
  if (code) assert.equal(caught.code, code, label);
}

const PAY_TO = "0x0000000000000000000000000000000000000001";
const KEY = `0x${"11".repeat(32)}` as const;

describe("no untyped errors from the library (issue 15)", function () {
  it("the library's TypeScript throws no plain Error, TypeError or RangeError", () => {
    const offenders: string[] = [];
    for (const file of sourceFiles(SRC)) {
      readFileSync(file, "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (/throw new (Error|TypeError|RangeError|SyntaxError)\b/.test(line)) offenders.push(`${file.slice(SRC.length)}:${i + 1}: ${line.trim()}`);
        });
    }
    assert.deepEqual(offenders, []);
  });

  it("options a user can get wrong are ConfigErrors", async () => {
    const settler = relayerSettler({ rpcUrl: "http://127.0.0.1:9", chainId: 84532, privateKey: KEY });
    await typed("paywall()", () => paywall(undefined as never), "invalid_config");
    await typed("paywall without routes", () => paywall({ payTo: PAY_TO, settler } as never), "invalid_config");
    await typed("paywall bad payTo", () => paywall({ payTo: "0x12", settler, routes: { "/x": { price: "$1" } } }), "invalid_config");
    await typed("requirePayment bad price", () => requirePayment({ payTo: PAY_TO, settler, price: "one dollar" }), "invalid_config");
    await typed("relayerSettler({})", () => relayerSettler({} as never), "invalid_config");
    await typed("facilitatorSettler(undefined)", () => facilitatorSettler(undefined as never), "invalid_config");
    await typed("createChainReader({})", () => createChainReader({} as never), "invalid_config");
    await typed("paymentsRouter({})", () => paymentsRouter({} as never), "invalid_config");
  });

  it("an unreachable RPC is a ChainError; a garbage payment header a PaymentError", async () => {
    const reader = createChainReader({ rpcUrl: `http://127.0.0.1:${await closedPort()}`, chainId: 84532, timeoutMs: 1000 });
    await typed("balanceOf, RPC down", () => reader.balanceOf(PAY_TO, PAY_TO), "chain_unavailable");
    await typed("decodeHeader garbage", () => decodeHeader("%%%not base64%%%", "X-PAYMENT"), "payment_refused");
  });

  it("a store that cannot open or is closed answers StoreError", async () => {
    await typed("SqliteStore under a file, not a directory", () => new SqliteStore({ path: join(fileURLToPath(import.meta.url), "x.sqlite") }), "store_unavailable");
    const store = new SqliteStore({ path: ":memory:" });
    await store.close();
    await typed("closed SqliteStore", () => store.getPayment("pay_x"), "store_unavailable");
  });
});
