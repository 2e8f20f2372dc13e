/**
 * Issue 14, the Express paywall's cases: A1 (writeHead then error), A2
 * (OPTIONS bypass), A3 (streamed token answers), A4 (lease overrun), A9
 * (overpayment) and B12 (store and chain outages on the paywall path). Each
 * test is the attacker's request against a small app built on the library.
 */
import assert from "node:assert/strict";
import { request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express, { type Express, type NextFunction, type Request, type Response } from "express";
import cors from "cors";
import type { Address, Hex } from "viem";
import { generatePrivateKey } from "viem/accounts";
import { startDevChain, type DevChain } from "server402/devchain";
import { ConfigError, StoreError } from "../lib/src/errors.js";
import { paywall, type PaywallOptions } from "../lib/src/adapters/express/paywall.js";
import { relayerSettler } from "../lib/src/chain/relayer.js";
import { MemoryStore } from "../lib/src/state/memory.js";
import type { Store } from "../lib/src/state/store.js";
import { generatePaymentToken, hashToken } from "../lib/src/state/tokens.js";
import { samplePayment } from "./store-conformance.js";
import { startExampleApp } from "./support/example-app.js";
import { v1Header } from "./support/sign.js";

const PAY_TO: Address = "0x2222222222222222222222222222222222222222";
/** Base Sepolia USDC, the asset of "$" prices on the default network. */
const USDC: Address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A settler for apps whose tests must never reach settlement: any call fails the test. */
const noSettle = { kind: "none", settle: () => Promise.reject(new Error("this test must not settle")) };

interface Running {
  url: string;
  close(): Promise<void>;
}

async function listen(app: Express): Promise<Running> {
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A paid 1-call (or `maxCalls`) token for service `svc` in `store`. */
async function paidToken(store: Store, maxCalls = 1): Promise<{ token: string; paymentId: string }> {
  const token = generatePaymentToken();
  const p = samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls });
  await store.createPayment(p);
  await store.markPaid(p.paymentId, { paidAt: Date.now() });
  return { token, paymentId: p.paymentId };
}

const stores: Array<[string, () => Store]> = [
  ["MemoryStore", () => new MemoryStore()],
];

/** A v1 X-PAYMENT for `value` atomic units of USDC to PAY_TO from a fresh key (local signature checks pass). */
const x402Header = (value: bigint, privateKey: Hex = generatePrivateKey()) => v1Header({ privateKey, asset: USDC, payTo: PAY_TO, value });

describe("issue 14, Express paywall: money safety", function () {
  describe("A1 writeHead then error", function () {
    async function app(errorHandler?: (err: unknown, req: Request, res: Response, next: NextFunction) => void) {
      const a = express();
      a.set("env", "test"); // Express's default error handler logs the stack otherwise
      a.use((_req, res, next) => {
        res.setHeader("x-request-id", "req-1");
        next();
      });
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "GET /a1": { price: "$0.01" } } }));
      a.get("/a1", (_req, res, next) => {
        res.setHeader("x-paid-result", "match");
        res.writeHead(200, { "content-type": "text/plain", "x-secret-header": "paid" });
        res.write("PAID-CONTENT-1 ");
        res.write("PAID-CONTENT-2");
        next(new Error("boom"));
      });
      if (errorHandler) a.use(errorHandler);
      return listen(a);
    }

    it("A1 writeHead then error: an app error handler's 500 is all the client gets (no held 200, no paid bytes)", async function () {
      const srv = await app((_err, _req, res, _next) => {
        res.status(500).json({ error: "internal_error" });
      });
      try {
        const res = await fetch(`${srv.url}/a1`, { headers: { "x-payment": await x402Header(10_000n) } });
        const text = await res.text();
        assert.equal(res.status, 500, text);
        assert.deepEqual(JSON.parse(text), { error: "internal_error" });
        assert.equal(res.headers.get("x-secret-header"), null);
        assert.equal(res.headers.get("x-paid-result"), null, "a header the handler set is part of its unpaid answer");
        assert.equal(res.headers.get("x-request-id"), "req-1", "headers set before the handler stay");
        assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
      } finally {
        await srv.close();
      }
    });

    it("A1 writeHead then error: Express's default error handler's 500 is all the client gets", async function () {
      const srv = await app();
      try {
        const res = await fetch(`${srv.url}/a1`, { headers: { "x-payment": await x402Header(10_000n) } });
        const text = await res.text();
        assert.equal(res.status, 500, text);
        assert.doesNotMatch(text, /PAID-CONTENT/);
        assert.equal(res.headers.get("x-secret-header"), null);
      } finally {
        await srv.close();
      }
    });

    it("A1 writeHead then error: a handler's own error answer (writeHead 404 + body) is still sent whole", async function () {
      const a = express();
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "GET /nf": { price: "$0.01" } } }));
      a.get("/nf", (_req, res) => {
        res.writeHead(404, { "content-type": "text/plain" });
        res.write("not ");
        res.end("found");
      });
      const srv = await listen(a);
      try {
        const res = await fetch(`${srv.url}/nf`, { headers: { "x-payment": await x402Header(10_000n) } });
        assert.equal(res.status, 404);
        assert.equal(await res.text(), "not found");
      } finally {
        await srv.close();
      }
    });
  });

  describe("A2 OPTIONS bypass", function () {
    it("A2 OPTIONS bypass: a route key without a verb prices OPTIONS like any method, preflight-shaped or not", async function () {
      let runs = 0;
      const a = express();
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "/any": { price: "$0.01" }, "POST /post-only": { price: "$0.01" } } }));
      a.all("/any", (_req, res) => {
        runs++;
        res.json({ paid: "content" });
      });
      a.options("/post-only", (_req, res) => res.status(204).end());
      const srv = await listen(a);
      try {
        const preflight = { Origin: "https://attacker.example", "Access-Control-Request-Method": "POST" };
        for (const headers of [{}, preflight]) {
          const res = await fetch(`${srv.url}/any`, { method: "OPTIONS", headers });
          const text = await res.text();
          assert.equal(res.status, 402, text);
          assert.equal(JSON.parse(text).accepts[0].outputSchema.input.method, "OPTIONS");
        }
        assert.equal(runs, 0, "the paid handler never ran unpaid");
        // a key with a verb does not cover OPTIONS: that request is the app's
        assert.equal((await fetch(`${srv.url}/post-only`, { method: "OPTIONS", headers: preflight })).status, 204);
      } finally {
        await srv.close();
      }
    });

    it("A2 OPTIONS bypass: a CORS middleware mounted before the paywall still answers preflights", async function () {
      const a = express();
      a.use(cors({ allowedHeaders: ["content-type", "x-payment", "payment-signature", "x-payment-token"] }));
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "/any": { price: "$0.01" } } }));
      a.all("/any", (_req, res) => res.json({ paid: "content" }));
      const srv = await listen(a);
      try {
        const res = await fetch(`${srv.url}/any`, { method: "OPTIONS", headers: { Origin: "https://agent.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-payment" } });
        assert.equal(res.status, 204);
        assert.match(res.headers.get("access-control-allow-headers")!, /x-payment/);
      } finally {
        await srv.close();
      }
    });
  });

  describe("A3 streamed token answers", function () {
    /** GET `url` with the token; read `lines` lines of the body, then abort. Resolves with the status. */
    function readSomeLines(url: string, token: string, lines: number): Promise<{ status: number; lines: number }> {
      return new Promise((resolve, reject) => {
        const req = httpRequest(url, { headers: { "x-payment-token": token } }, (res: IncomingMessage) => {
          if (res.statusCode !== 200) {
            res.resume();
            return res.on("end", () => resolve({ status: res.statusCode!, lines: 0 }));
          }
          let seen = 0;
          res.on("data", (chunk: Buffer) => {
            seen += chunk.toString().split("\n").length - 1;
            if (seen >= lines) {
              req.destroy();
              resolve({ status: 200, lines: seen });
            }
          });
          res.on("end", () => resolve({ status: 200, lines: seen }));
        });
        req.on("error", (err) => (req.destroyed ? undefined : reject(err)));
        req.end();
      });
    }

    for (const [kind, makeStore] of stores) {
      it(`A3 streamed token answers: a client that reads 9 of 10 chunks and aborts, three rounds on a 1-call token → one 200 (${kind})`, async function () {
        const store = makeStore();
        const { token, paymentId } = await paidToken(store);
        let runs = 0;
        const a = express();
        a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, routes: { "GET /stream": { price: "$0.01", serviceId: "svc" } } }));
        a.get("/stream", async (_req, res) => {
          runs++;
          res.writeHead(200, { "content-type": "text/plain" });
          for (let i = 1; i <= 10 && !res.destroyed; i++) {
            res.write(`chunk ${i}\n`);
            await sleep(30);
          }
          res.end();
        });
        const srv = await listen(a);
        try {
          const rounds = [];
          for (let i = 0; i < 3; i++) {
            rounds.push(await readSomeLines(`${srv.url}/stream`, token, 9));
            await sleep(100); // let the server see the close
          }
          assert.deepEqual(rounds.map((r) => r.status), [200, 402, 402], JSON.stringify(rounds));
          assert.equal(runs, 1);
          assert.equal((await store.getPayment(paymentId))!.callsUsed, 1);
        } finally {
          await srv.close();
          await store.close();
        }
      });
    }

    it("A3 streamed token answers: a call is given back when nothing was sent yet, or when the answer is ≥ 400", async function () {
      const store = new MemoryStore();
      const { token, paymentId } = await paidToken(store);
      let fail = true;
      const a = express();
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, routes: { "GET /slow": { price: "$0.01", serviceId: "svc" }, "GET /fails": { price: "$0.01", serviceId: "svc" } } }));
      a.get("/slow", async (_req, res) => {
        await sleep(300);
        if (!res.destroyed) res.json({ ok: true });
      });
      a.get("/fails", (_req, res) => {
        if (fail) res.status(503).json({ error: "engine_unavailable" });
        else res.json({ ok: true });
      });
      const srv = await listen(a);
      try {
        // the client gives up before any byte was sent: the call comes back
        await assert.rejects(fetch(`${srv.url}/slow`, { headers: { "x-payment-token": token }, signal: AbortSignal.timeout(100) }));
        await sleep(400);
        assert.equal((await fetch(`${srv.url}/fails`, { headers: { "x-payment-token": token } })).status, 503);
        fail = false;
        assert.equal((await fetch(`${srv.url}/fails`, { headers: { "x-payment-token": token } })).status, 200);
        assert.equal((await fetch(`${srv.url}/fails`, { headers: { "x-payment-token": token } })).status, 402);
        assert.equal((await store.getPayment(paymentId))!.callsUsed, 1);
      } finally {
        await srv.close();
        await store.close();
      }
    });
  });

  describe("A4 lease overrun", function () {
    for (const [kind, makeStore] of stores) {
      it(`A4 lease overrun: tokenLeaseMs 1000 and a 1.5 s handler: a second use of a 1-call token is refused while the first runs (${kind})`, async function () {
        const store = makeStore();
        const { token, paymentId } = await paidToken(store);
        let runs = 0;
        const a = express();
        a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, tokenLeaseMs: 1000, routes: { "GET /slow": { price: "$0.01", serviceId: "svc" } } }));
        a.get("/slow", async (_req, res) => {
          runs++;
          await sleep(1500);
          res.json({ ok: true });
        });
        const srv = await listen(a);
        try {
          const first = fetch(`${srv.url}/slow`, { headers: { "x-payment-token": token } });
          await sleep(1200);
          const second = await fetch(`${srv.url}/slow`, { headers: { "x-payment-token": token } });
          const text = await second.text();
          assert.equal(second.status, 402, text);
          assert.equal(JSON.parse(text).error, "exhausted");
          assert.equal((await first).status, 200);
          assert.equal(runs, 1);
          await sleep(50);
          assert.equal((await store.getPayment(paymentId))!.callsUsed, 1);
        } finally {
          await srv.close();
          await store.close();
        }
      });
    }

    it("A4 lease overrun: a tokenLeaseMs shorter than a handler deadline the configuration states is refused at startup", function () {
      const base: PaywallOptions = { payTo: PAY_TO, settler: noSettle, tokenLeaseMs: 1000, routes: { "GET /slow": { price: "$0.01", serviceId: "svc", handlerTimeoutMs: 1500 } } };
      assert.throws(() => paywall(base), (e: ConfigError) => e instanceof ConfigError && e.option === "tokenLeaseMs" && /1500/.test(e.message) && /handlerTimeoutMs/.test(e.message));
      const tokenRoute = { "GET /slow": { price: "$0.01", serviceId: "svc" } };
      assert.throws(() => paywall({ ...base, handlerTimeoutMs: 30_000, routes: tokenRoute }), ConfigError);
      // the default lease (120 s) against a longer deadline
      assert.throws(() => paywall({ ...base, tokenLeaseMs: undefined, handlerTimeoutMs: 300_000, routes: tokenRoute }), ConfigError);
      // a route that takes no tokens has no lease to outlast
      assert.doesNotThrow(() => paywall({ ...base, handlerTimeoutMs: 30_000, routes: { "GET /x402-only": { price: "$0.01" } } }));
      // a lease at least as long as the deadline is fine
      assert.doesNotThrow(() => paywall({ ...base, tokenLeaseMs: 1500 }));
    });
  });

  describe("on the dev chain: A9 overpayment, and the example server's A4 check", function () {
    this.timeout(120_000);
    let chain: DevChain;
    let srv: Running;
    before(async () => {
      chain = await startDevChain();
      srv = await chainApp();
    });
    after(async () => {
      await srv?.close();
      await chain?.stop();
    });

    async function chainApp() {
      const a = express();
      const pw = paywall({
        payTo: chain.accounts.payTo.address,
        rpcUrl: chain.rpcUrl,
        settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
        routes: {
          "GET /exact": { price: "$0.01", serviceId: "svc" },
          "GET /tip-jar": { price: "$0.01", acceptOverpayment: true },
        },
        payments: {},
      });
      a.use(pw);
      a.get(["/exact", "/tip-jar"], (_req, res) => res.json({ ok: true }));
      return listen(a);
    }
    const header = (value: bigint, payer: number) => v1Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value });

    it("A9 overpayment: a 10× v1 authorization on a priced route is refused with a clear reason and nothing moves", async function () {
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const res = await fetch(`${srv.url}/exact`, { headers: { "x-payment": await header(100_000n, 1) } });
      const body = await res.json();
      assert.equal(res.status, 402, JSON.stringify(body));
      assert.equal(body.error, "invalid_exact_evm_payload_authorization_value_mismatch");
      assert.match(body.message, /more than the price/);
      assert.equal(await chain.balanceOf(chain.accounts.payTo.address), before);
      // the exact price still pays
      assert.equal((await fetch(`${srv.url}/exact`, { headers: { "x-payment": await header(10_000n, 1) } })).status, 200);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n);
    });

    it("A9 overpayment: a route that opts in (acceptOverpayment) takes more than its price", async function () {
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      assert.equal((await fetch(`${srv.url}/tip-jar`, { headers: { "x-payment": await header(50_000n, 2) } })).status, 200);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 50_000n);
    });

    it("A9 overpayment: the payments API's pay endpoint refuses a 10× authorization and leaves the payment unpaid", async function () {
      const created = await (await fetch(`${srv.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "svc" }) })).json();
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const res = await fetch(created.pay.url, { method: "POST", headers: { "x-payment": await header(100_000n, 3) } });
      const body = await res.json();
      assert.equal(res.status, 402, JSON.stringify(body));
      assert.equal(body.error, "invalid_exact_evm_payload_authorization_value_mismatch");
      assert.equal(await chain.balanceOf(chain.accounts.payTo.address), before);
      assert.equal((await (await fetch(`${srv.url}/api/payments/${created.paymentId}`)).json()).status, "pending");
      const paid = await fetch(created.pay.url, { method: "POST", headers: { "x-payment": await header(10_000n, 3) } });
      assert.equal(paid.status, 200);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n);
    });

    it("A4 lease overrun: the example server's COMPARE_TIMEOUT_MS feeds the check (a shorter TOKEN_LEASE_MS does not start)", async function () {
      await assert.rejects(startExampleApp(chain, { env: { TOKEN_LEASE_MS: "5000", COMPARE_TIMEOUT_MS: "10000" } }), (e: ConfigError) => e instanceof ConfigError && e.option === "tokenLeaseMs");
      const ok = await startExampleApp(chain, { env: { TOKEN_LEASE_MS: "10000", COMPARE_TIMEOUT_MS: "10000" } });
      await ok.close();
    });
  });

  describe("B12 store outage = 500 (paywall path)", function () {
    /** A MemoryStore whose methods `fail` with the given error. */
    function brokenStore(how: "StoreError" | "rejects"): Store {
      const store = new MemoryStore();
      const fail = () => (how === "StoreError" ? new StoreError("server402: RedisStore claimNonce failed: connect ECONNREFUSED") : new Error("connect ECONNREFUSED 127.0.0.1:6379"));
      for (const m of ["claimNonce", "getNonce", "reserveCall", "commitCall", "releaseCall", "renewCall"] as const) {
        (store as unknown as Record<string, unknown>)[m] = () => Promise.reject(fail());
      }
      return store;
    }

    async function expectOutage(res: globalThis.Response, code: string) {
      const text = await res.text();
      assert.ok([502, 503, 504].includes(res.status), `${res.status} ${text}`);
      assert.match(res.headers.get("retry-after") ?? "", /^\d+$/, "Retry-After");
      assert.equal(JSON.parse(text).error, code, text);
    }

    for (const how of ["StoreError", "rejects"] as const) {
      it(`B12 store outage = 500: x402 and token paths answer 503 with a code and Retry-After (store ${how === "StoreError" ? "throws StoreError" : "methods reject"})`, async function () {
        const store = brokenStore(how);
        let runs = 0;
        const a = express();
        a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, routes: { "GET /x": { price: "$0.01", serviceId: "svc" } } }));
        a.get("/x", (_req, res) => {
          runs++;
          res.json({ ok: true });
        });
        const srv = await listen(a);
        try {
          // x402: a StoreError keeps its code; an error of no known kind is answered as a generic outage
          await expectOutage(await fetch(`${srv.url}/x`, { headers: { "x-payment": await x402Header(10_000n) } }), how === "StoreError" ? "store_unavailable" : "service_unavailable");
          // token: only the store is asked, so whatever it throws is a store outage
          await expectOutage(await fetch(`${srv.url}/x`, { headers: { "x-payment-token": generatePaymentToken() } }), "store_unavailable");
          assert.equal(runs, 0);
        } finally {
          await srv.close();
        }
      });
    }

    it("B12 store outage = 500: a chain outage answers 502 with Retry-After, before the handler (check) and after it (settlement)", async function () {
      const dead = await listen(express().use((req, _res) => req.socket.destroy()));
      let runs = 0;
      const a = express();
      const deadSettler = relayerSettler({ rpcUrl: dead.url, chainId: 84532, privateKey: generatePrivateKey(), requestTimeoutMs: 1000 });
      a.use(paywall({ payTo: PAY_TO, settler: noSettle, rpcUrl: dead.url, routes: { "GET /x": { price: "$0.01" } } }));
      a.use("/unchecked", paywall({ payTo: PAY_TO, settler: deadSettler, checker: false, routes: { "GET /x": { price: "$0.01" } } }));
      a.get(["/x", "/unchecked/x"], (_req, res) => {
        runs++;
        res.json({ paid: "content" });
      });
      const srv = await listen(a);
      try {
        await expectOutage(await fetch(`${srv.url}/x`, { headers: { "x-payment": await x402Header(10_000n) } }), "chain_unavailable");
        assert.equal(runs, 0);
        await expectOutage(await fetch(`${srv.url}/unchecked/x`, { headers: { "x-payment": await x402Header(10_000n) } }), "unexpected_settle_error");
        assert.equal(runs, 1, "the handler ran; its answer was withheld");
      } finally {
        await srv.close();
        await dead.close();
      }
    });
  });
});
