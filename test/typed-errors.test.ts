/**
 * Issue 15, "every error the library throws is a typed class with a code":
 * the dev chain, the facilitator client and the optional-dependency loader
 * throw Server402Error subclasses (never a plain Error or a fetch TypeError).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ChainError, ConfigError, MissingDependencyError, SettlementError, Server402Error, facilitatorSettler, type SettleRequest } from "server402";
import { DevChainError, startDevChain } from "server402/devchain";
import { importOptional, packageDir, requireOptional } from "../lib/src/optional.js";

/** A loopback HTTP server answering every request with `status` and `body`. */
async function answering(status: number, body: string): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => res.writeHead(status, { "content-type": "application/json" }).end(body));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((r) => server.close(() => r())) };
}

/** A loopback URL nobody listens on. */
async function closedUrl(): Promise<string> {
  const s = await answering(200, "{}");
  await s.close();
  return s.url;
}

const request = {
  x402Version: 1,
  network: "base-sepolia",
  payload: {},
  requirements: {},
  authorization: { from: "0x0000000000000000000000000000000000000001" },
} as unknown as SettleRequest;

describe("typed errors (issue 15)", function () {
  describe("facilitator client", () => {
    it("a facilitator nobody listens on: verify and supported reject with ChainError (chain_unavailable), settle with SettlementError", async () => {
      const f = facilitatorSettler({ url: await closedUrl() });
      for (const call of [() => f.verify(request), () => f.supported()]) {
        await assert.rejects(call(), (e: unknown) => e instanceof ChainError && e.code === "chain_unavailable" && /^facilitator \/(verify|supported) failed: /.test(e.detail ?? e.message));
      }
      await assert.rejects(f.settle(request), (e: unknown) => e instanceof SettlementError && e.reason === "unexpected_settle_error" && e.message === "the facilitator could not be reached." && /^facilitator \/settle failed: [^]*$/.test(e.detail ?? "") && !/failed: facilitator/.test(e.detail ?? ""));
    });

    it("answers that are not x402 (not JSON, a non-object, no isValid, no kinds) reject with ChainError", async () => {
      for (const [body, pattern] of [
        ["<html>", /body that is not JSON/],
        ["42", /non-object/],
        ["{}", /without (isValid|kinds)/],
      ] as const) {
        const s = await answering(200, body);
        try {
          const f = facilitatorSettler({ url: s.url });
          await assert.rejects(f.verify(request), (e: unknown) => e instanceof ChainError && pattern.test(e.message), `verify, body ${body}`);
          await assert.rejects(f.supported(), (e: unknown) => e instanceof ChainError && pattern.test(e.message), `supported, body ${body}`);
        } finally {
          await s.close();
        }
      }
    });

    it("a timed-out /settle is a pending SettlementError (504), not a plain error", async () => {
      const server = createServer(() => {}); // never answers
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      try {
        const f = facilitatorSettler({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, timeoutMs: 200 });
        await assert.rejects(f.settle(request), (e: unknown) => e instanceof SettlementError && e.pending && e.status === 504 && e.reason === "settlement_pending");
      } finally {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      }
    });
  });

  describe("dev chain", () => {
    it("a wildcard host or a malformed token address is a ConfigError naming the option", async () => {
      await assert.rejects(startDevChain({ host: "0.0.0.0" }), (e: unknown) => e instanceof ConfigError && e.option === "host" && e.code === "invalid_config");
      await assert.rejects(startDevChain({ usdcAddress: "0x123" as never }), (e: unknown) => e instanceof ConfigError && e.option === "usdcAddress");
    });

    it("an anvil binary that cannot run is a DevChainError (devchain_failed, spawn_failed)", async () => {
      await assert.rejects(
        startDevChain({ anvilPath: "/nonexistent/anvil" }),
        (e: unknown) => e instanceof DevChainError && e instanceof Server402Error && e.code === "devchain_failed" && e.reason === "spawn_failed",
      );
    });
  });

  describe("optional dependencies", () => {
    it("a missing package is a one-line MissingDependencyError naming the npm install", async () => {
      const check = (e: unknown) => e instanceof MissingDependencyError && e.code === "missing_dependency" && e.message === "feature X needs not-a-package-s402: npm install not-a-package-s402" && !e.message.includes("\n");
      assert.throws(() => requireOptional("not-a-package-s402", "not-a-package-s402", "feature X"), check);
      await assert.rejects(importOptional("not-a-package-s402/sub", "not-a-package-s402", "feature X"), check);
      assert.throws(() => packageDir("not-a-package-s402", "not-a-package-s402", "feature X"), check);
    });

    it("an installed package loads, and a package that fails for another reason keeps its own error", async () => {
      assert.equal(typeof requireOptional<{ Redis: unknown }>("ioredis", "ioredis", "x").Redis, "function");
      assert.equal(typeof (await importOptional<{ z: unknown }>("zod/v4", "zod", "x")).z, "object");
      // A relative module that does not exist is a bug in server402, not a missing install.
      assert.throws(() => requireOptional("./no-such-file.js", "x", "x"), (e: unknown) => !(e instanceof MissingDependencyError));
    });
  });
});
