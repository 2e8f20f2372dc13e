/**
 * Attacks on the landed issue 14 fixes (paywall path): combinations the
 * per-case tests do not cover, each against a small app built on the library
 * paying on the dev chain.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:net";
import type { AddressInfo } from "node:net";
import express, { type Express } from "express";
import { startDevChain, type DevChain } from "server402/devchain";
import { paywall } from "../lib/src/adapters/express/paywall.js";
import { relayerSettler } from "../lib/src/chain/relayer.js";
import { MemoryStore } from "../lib/src/state/memory.js";
import { generatePaymentToken, hashToken } from "../lib/src/state/tokens.js";
import { samplePayment } from "./store-conformance.js";
import { v1Header } from "./support/sign.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Serve `app` on a loopback port. */
async function listen(app: Express): Promise<{ url: string; close(): Promise<void> }> {
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  const close = () => (server.closeAllConnections(), new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close };
}

describe("attack: Express paywall on the dev chain", function () {
  this.timeout(120_000);
  let chain: DevChain;
  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
  });

  function paidApp(setup: (a: Express) => void) {
    const a = express();
    a.set("env", "test");
    const store = new MemoryStore();
    a.use(
      paywall({
        payTo: chain.accounts.payTo.address,
        rpcUrl: chain.rpcUrl,
        store,
        settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
        routes: { "GET /paid": { price: "$0.01" } },
      }),
    );
    setup(a);
    return { store, listening: listen(a) };
  }
  const header = (payer: number) => v1Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10_000n });

  it("attack: an error raised after the handler ended its answer (during settlement) does not turn a charged answer into a 500", async function () {
    const { listening } = paidApp((a) => {
      a.get("/paid", async (_req, res) => {
        res.type("text/plain").send("PAID-CONTENT");
        await sleep(1); // e.g. an audit write after answering that fails
        throw new Error("audit failed");
      });
      a.use((_err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        res.status(500).json({ error: "internal_error" });
      });
    });
    const srv = await listening;
    try {
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const res = await fetch(`${srv.url}/paid`, { headers: { "x-payment": await header(4) } });
      const text = await res.text();
      const charged = (await chain.balanceOf(chain.accounts.payTo.address)) - before;
      // charged ⇒ the paid answer was delivered, whole
      if (charged > 0n) {
        assert.equal(res.status, 200, `charged ${charged} and answered ${res.status} ${text}`);
        assert.equal(text, "PAID-CONTENT");
        assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
      } else assert.ok(res.status >= 400);
    } finally {
      await srv.close();
    }
  });

  it("attack: a client that goes away while its payment settles gets the paid answer on a retry with the same payment (charged once)", async function () {
    const relayer = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
    // a slow chain: the transfer takes 400 ms to confirm
    const slow = { kind: relayer.kind, settle: async (r: Parameters<typeof relayer.settle>[0]) => (await sleep(400), relayer.settle(r)) };
    let runs = 0;
    const a = express();
    a.use(paywall({ payTo: chain.accounts.payTo.address, rpcUrl: chain.rpcUrl, settler: slow, routes: { "GET /paid": { price: "$0.01" } } }));
    a.get("/paid", (_req, res) => {
      runs++;
      res.type("text/plain").send("PAID-CONTENT");
    });
    const srv = await listen(a);
    try {
      const payment = await v1Header({ privateKey: chain.accounts.payers[5]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10_000n });
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const gone = new AbortController();
      const first = fetch(`${srv.url}/paid`, { headers: { "x-payment": payment }, signal: gone.signal }).catch((e: Error) => e);
      await sleep(150); // the handler answered; the transfer is being settled
      gone.abort();
      assert.ok((await first) instanceof Error);
      await sleep(800);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n, "the first request was charged");
      const retry = await fetch(`${srv.url}/paid`, { headers: { "x-payment": payment } });
      const text = await retry.text();
      assert.equal(retry.status, 200, text);
      assert.equal(text, "PAID-CONTENT");
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 10_000n, "charged once");
      assert.equal(runs, 1);
    } finally {
      await srv.close();
    }
  });
});

/** A request line sent as written (no client normalises the target); resolves with the status line and body. */
function rawGet(url: string, target: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const c = connect(Number(port), hostname, () => {
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
      c.write(`GET ${target} HTTP/1.1\r\nHost: ${hostname}\r\n${extra}Connection: close\r\n\r\n`);
    });
    let data = "";
    c.on("data", (b: Buffer) => (data += b.toString()));
    c.on("error", reject);
    c.on("end", () => resolve({ status: Number(data.split(" ")[1]), body: data.slice(data.indexOf("\r\n\r\n") + 4) }));
  });
}

/** A settler for apps whose tests must never reach settlement: any call fails the test. */
const noSettle = { kind: "none", settle: () => Promise.reject(new Error("this test must not settle")) };

describe("attack: Express paywall, no chain needed", function () {
  it("attack: an encoded slash or a backslash in a route parameter (/items/a%2Fb, /items/a\\b) does not skip the paywall", async function () {
    let runs = 0;
    const a = express();
    a.use(paywall({ payTo: "0x2222222222222222222222222222222222222222", settler: noSettle, checker: false, routes: { "GET /items/:id": { price: "$0.01" } } }));
    a.get("/items/:id", (req, res) => {
      runs++;
      res.send(`PAID item ${String(req.params.id)}`);
    });
    const srv = await listen(a);
    try {
      for (const target of ["/items/42", "/items/42%2F", "/items/a%2Fb", "/items/a%2fb", "/items/a%5Cb", "/items/a\\b"]) {
        const res = await rawGet(srv.url, target);
        assert.equal(res.status, 402, `${target}: ${res.status} ${res.body.slice(0, 80)}`);
      }
      assert.equal(runs, 0);
    } finally {
      await srv.close();
    }
  });
});

describe("attack: token path, no chain needed", function () {
  it("attack: a token-paid stream that fails after its 200 went out, with an error handler that sets 500, still uses the call", async function () {
    const store = new MemoryStore();
    const token = generatePaymentToken();
    const p = samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls: 1 });
    await store.createPayment(p);
    await store.markPaid(p.paymentId, { paidAt: Date.now() });
    let runs = 0;
    const a = express();
    a.set("env", "test");
    a.use(paywall({ payTo: "0x2222222222222222222222222222222222222222", settler: noSettle, checker: false, store, routes: { "GET /feed": { price: "$0.01", serviceId: "svc" } } }));
    a.get("/feed", async (_req, res) => {
      runs++;
      // the head explicitly, or implicitly by the first write
      if (runs % 2) res.writeHead(200, { "content-type": "text/plain" });
      else res.type("text/plain");
      res.write("PAID-1\n");
      await sleep(10);
      res.write("PAID-2\n");
      throw new Error("the source failed mid-stream");
    });
    // a common error handler: status first, then a body it cannot send any more
    a.use((_err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500);
      if (res.headersSent) return void res.end();
      res.json({ error: "internal_error" });
    });
    const srv = await listen(a);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const res = await rawGet(srv.url, "/feed", { "x-payment-token": token });
        statuses.push(res.status);
        await sleep(50);
      }
      assert.deepEqual(statuses, [200, 402, 402, 402], `runs ${runs}`);
      assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
    } finally {
      await srv.close();
    }
  });
});
