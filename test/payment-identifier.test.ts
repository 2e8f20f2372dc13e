/**
 * Issue 17 part 3: idempotent retries with the x402 v2 `payment-identifier`
 * extension, on the dev chain. A retry with the same id, the same payment and
 * the same request gets the same paid answer (status, body, PAYMENT-RESPONSE)
 * with one charge and one handler run; the same id with another payment or
 * request is refused with 409; parallel copies run the handler once; two app
 * instances sharing SQLite or Redis behave as one; a real client
 * (@x402/fetch, which re-signs on every 402) works when its captured
 * PAYMENT-SIGNATURE header is replayed, as the extension's client example does.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request as httpRequest } from "node:http";
import express from "express";
import type { Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { appendPaymentIdentifierToExtensions, isPaymentIdentifierExtension } from "@x402/extensions/payment-identifier";
import { encodeHeader, MemoryStore, paywall, relayerSettler, type PaymentEvent, type PaymentOptions, type Settler, type Store } from "server402";
import { PaymentEngine } from "server402/internal";
import type { X402Replay } from "../lib/src/core/engine.js";
import { startDevChain, type DevChain } from "server402/devchain";
import { SqliteStore } from "../lib/src/state/sqlite.js";
import { RedisStore } from "../lib/src/state/redis.js";
import { chainRpc } from "./support/chain-rpc.js";
import { listen } from "./support/listen.js";
import { v2Header } from "./support/sign.js";
import { startPaidApp } from "./support/paid-app.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";
import { registerPaidTool } from "server402/mcp";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const decode = (h: string | null) => JSON.parse(Buffer.from(h ?? "", "base64").toString()) as Record<string, unknown>;
const newId = () => `pay_${randomUUID().replace(/-/g, "")}`;

interface App {
  url: string;
  runs: { weather: number; echo: number; before: number };
  /** Status the handlers answer with. */
  status: { value: number };
  /** Called when a handler starts (tests that act while a request is in flight). */
  onRun: { fn?: () => void };
  close(): Promise<void>;
}

describe("issue 17.3: payment-identifier (idempotent retries, dev chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let relayer: Settler;
  let payerSeq = 0;

  before(async () => {
    chain = await startDevChain();
    relayer = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
  });
  after(async () => {
    await chain?.stop();
  });

  /**
   * `GET /weather` ($0.01) and `POST /echo` ($0.05; the paywall sees the raw body: the JSON parser
   * is mounted after it) settle after the handler; `POST /before` ($0.02) settles before it. Each
   * answer carries a random `answer` so a second handler run would show.
   */
  async function startApp(store: Store, opts: Partial<PaymentOptions> = {}): Promise<App> {
    const runs = { weather: 0, echo: 0, before: 0 };
    const status = { value: 200 };
    const onRun: App["onRun"] = {};
    const app = express();
    app.use(
      paywall({
        payTo: chain.accounts.payTo.address,
        network: "base-sepolia",
        rpcUrl: chain.rpcUrl,
        settler: relayer,
        store,
        ...opts,
        routes: {
          "GET /weather": { price: "$0.01" },
          "POST /echo": { price: "$0.05" },
          "POST /before": { price: "$0.02", settlement: "before" },
        },
      }),
    );
    app.get("/weather", (req, res) => {
      runs.weather++;
      onRun.fn?.();
      res.status(status.value).setHeader("x-run", String(runs.weather)).json({ weather: "sunny", answer: randomUUID(), q: req.query });
    });
    app.post("/echo", express.json(), (req, res) => {
      runs.echo++;
      onRun.fn?.();
      res.status(status.value).json({ echo: req.body, answer: randomUUID() });
    });
    app.post("/before", express.json(), (req, res) => {
      runs.before++;
      res.status(status.value).json({ before: req.body, answer: randomUUID() });
    });
    const { url, close } = await listen(app);
    return { url, runs, status, onRun, close };
  }

  /** A PAYMENT-SIGNATURE of `value` from a payer (a different one per call), with `id` in the payment-identifier extension. */
  function payment(value: bigint, id?: string, payer = payerSeq++ % chain.accounts.payers.length): Promise<string> {
    const extensions = id !== undefined ? { "payment-identifier": { info: { required: false, id } } } : undefined;
    return v2Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value }, undefined, extensions);
  }

  const balance = () => chain.balanceOf(chain.accounts.payTo.address);

  let app: App;
  let store: MemoryStore;
  /** Hooks of the calling describe: a fresh MemoryStore and `startApp` on it (`app`, `store`) for each test. */
  function freshAppEachTest(): void {
    beforeEach(async () => {
      store = new MemoryStore();
      app = await startApp(store);
    });
    afterEach(async () => {
      await app.close();
      await store.close();
    });
  }

  async function call(url: string, sig: string, init: { method?: string; body?: unknown } = {}) {
    const res = await fetch(url, {
      method: init.method ?? (init.body !== undefined ? "POST" : "GET"),
      headers: { "payment-signature": sig, ...(init.body !== undefined ? { "content-type": "application/json" } : {}) },
      body: init.body !== undefined ? JSON.stringify(init.body) : undefined,
    });
    return { status: res.status, text: await res.text(), headers: res.headers };
  }

  describe("advertising and parsing", function () {
    freshAppEachTest();

    it("every v2 PaymentRequired declares payment-identifier (info.required false, the id schema), as @x402/extensions reads it", async () => {
      const res = await fetch(`${app.url}/weather`);
      assert.equal(res.status, 402);
      const pr = decode(res.headers.get("payment-required")) as { extensions: Record<string, { info: Record<string, unknown>; schema: { properties: { id: Record<string, unknown> } } }> };
      const ext = pr.extensions["payment-identifier"]!;
      assert.deepEqual(ext.info, { required: false });
      assert.deepEqual(ext.schema.properties.id, { type: "string", minLength: 16, maxLength: 128, pattern: "^[a-zA-Z0-9_-]+$" });
      assert.equal(isPaymentIdentifierExtension(ext), true);
      const exts = pr.extensions as Record<string, unknown>;
      appendPaymentIdentifierToExtensions(exts, "pay_0123456789abcdef");
      assert.equal((exts["payment-identifier"] as { info: { id: string } }).info.id, "pay_0123456789abcdef");
    });

    it("paymentIdentifier: false: not declared, and an id is not acted on", async () => {
      const off = await startApp(new MemoryStore(), { paymentIdentifier: false });
      try {
        const pr = decode((await fetch(`${off.url}/weather`)).headers.get("payment-required")) as { extensions?: Record<string, unknown> };
        assert.equal(pr.extensions?.["payment-identifier"], undefined);
        const id = newId();
        const sig = await payment(10_000n, id);
        assert.equal((await call(`${off.url}/weather`, sig)).status, 200);
        const again = await call(`${off.url}/weather`, sig);
        assert.equal(again.status, 402, "without the extension a retry is a used authorization");
        assert.equal(JSON.parse(again.text).error, "duplicate_settlement");
      } finally {
        await off.close();
      }
    });

    it("a malformed id (too short, bad characters, not a string, info not an object) is 400 invalid_payload: no handler run, no charge", async () => {
      const before = await balance();
      for (const bad of [{ info: { id: "short" } }, { info: { id: "pay_0123456789abcdef!" } }, { info: { id: 1234567890123456 } }, { info: { id: "x".repeat(129) } }, { info: "pay_0123456789abcdef" }, "text"]) {
        const payload = decode(await payment(10_000n));
        const sig = encodeHeader({ ...payload, extensions: { "payment-identifier": bad } });
        const res = await call(`${app.url}/weather`, sig);
        assert.equal(res.status, 400, `${JSON.stringify(bad)}: ${res.text}`);
        assert.equal(JSON.parse(res.text).error, "invalid_payload");
      }
      assert.equal(app.runs.weather, 0);
      assert.equal(await balance(), before);
    });

    it("the declaration echoed without an id (what @x402/fetch sends by default) pays as before", async () => {
      const payload = decode(await payment(10_000n));
      const sig = encodeHeader({ ...payload, extensions: { "payment-identifier": { info: { required: false }, schema: {} } } });
      const res = await call(`${app.url}/weather`, sig);
      assert.equal(res.status, 200, res.text);
      assert.equal((await call(`${app.url}/weather`, sig)).status, 402, "no id: a retry is a used authorization");
    });
  });

  describe("retries on one instance", function () {
    freshAppEachTest();

    it("a retry with the same id after a lost answer gets the same answer (status, body, PAYMENT-RESPONSE): one charge, one handler run", async () => {
      const before = await balance();
      const sig = await payment(10_000n, newId());
      const first = await call(`${app.url}/weather?city=paris`, sig);
      assert.equal(first.status, 200, first.text);
      const receipt = decode(first.headers.get("payment-response"));
      assert.equal(receipt.success, true);
      // the answer was lost on the way: the client retries with the very same PAYMENT-SIGNATURE
      for (let i = 0; i < 2; i++) {
        const again = await call(`${app.url}/weather?city=paris`, sig);
        assert.equal(again.status, 200, again.text);
        assert.equal(again.text, first.text, "the same body");
        assert.deepEqual(decode(again.headers.get("payment-response")), receipt);
        assert.equal(again.headers.get("x-run"), "1", "the handler's own headers too");
        assert.match(again.headers.get("cache-control") ?? "", /private/);
      }
      assert.equal(app.runs.weather, 1, "the handler ran once");
      assert.equal((await balance()) - before, 10_000n, "charged once");
      assert.equal((await store.listLedger()).length, 1);
    });

    it("a client that went away while the payment settled gets the paid answer with its retry (raw body bound): one charge", async () => {
      const slow: Settler = { ...relayer, settle: async (r) => (await sleep(400), relayer.settle(r)) } as Settler;
      const slowApp = await startApp(store, { settler: slow });
      try {
        const before = await balance();
        const sig = await payment(50_000n, newId());
        const body = JSON.stringify({ text: "hello", n: 1 });
        // send, and drop the connection while the transfer is being settled (after the handler answered)
        await new Promise<void>((resolve) => {
          const req = httpRequest(`${slowApp.url}/echo`, { method: "POST", headers: { "payment-signature": sig, "content-type": "application/json", "content-length": Buffer.byteLength(body) } });
          slowApp.onRun.fn = () => setTimeout(() => (req.destroy(), resolve()), 100);
          req.on("error", () => {});
          req.end(body);
        });
        slowApp.onRun.fn = undefined;
        let retry = await call(`${slowApp.url}/echo`, sig, { body: { text: "hello", n: 1 } });
        for (let i = 0; i < 20 && retry.status === 409; i++) {
          await sleep(100); // still settling: 409 in progress, Retry-After
          retry = await call(`${slowApp.url}/echo`, sig, { body: { text: "hello", n: 1 } });
        }
        assert.equal(retry.status, 200, retry.text);
        assert.deepEqual(JSON.parse(retry.text).echo, { text: "hello", n: 1 });
        assert.equal(decode(retry.headers.get("payment-response")).success, true);
        assert.equal(slowApp.runs.echo, 1);
        assert.equal((await balance()) - before, 50_000n, "charged once");
        // the same id and payment with another body is not this request
        const other = await call(`${slowApp.url}/echo`, sig, { body: { text: "hello", n: 2 } });
        assert.equal(other.status, 409, other.text);
        assert.equal(JSON.parse(other.text).error, "payment_identifier_conflict");
      } finally {
        await slowApp.close();
      }
    });

    it("a GET whose client went away while it settled (the body never read, the request destroyed): the retry gets the answer, one charge", async () => {
      const slow: Settler = { ...relayer, settle: async (r) => (await sleep(300), relayer.settle(r)) } as Settler;
      const slowApp = await startApp(store, { settler: slow });
      try {
        const before = await balance();
        const sig = await payment(10_000n, newId());
        await new Promise<void>((resolve) => {
          const req = httpRequest(`${slowApp.url}/weather`, { headers: { "payment-signature": sig } });
          slowApp.onRun.fn = () => setTimeout(() => (req.destroy(), resolve()), 50);
          req.on("error", () => {});
          req.end();
        });
        slowApp.onRun.fn = undefined;
        let retry = await call(`${slowApp.url}/weather`, sig);
        for (let i = 0; i < 20 && retry.status === 409; i++) {
          await sleep(100);
          retry = await call(`${slowApp.url}/weather`, sig);
        }
        assert.equal(retry.status, 200, retry.text);
        assert.equal(JSON.parse(retry.text).weather, "sunny");
        assert.equal(slowApp.runs.weather, 1);
        assert.equal((await balance()) - before, 10_000n);
      } finally {
        await slowApp.close();
      }
    });

    it("the same id with another payment, body, query, path or method is 409: no handler run, no charge", async () => {
      const id = newId();
      const sig = await payment(50_000n, id);
      const first = await call(`${app.url}/echo`, sig, { body: { a: 1 } });
      assert.equal(first.status, 200, first.text);
      const before = await balance();
      const runs = app.runs.echo;
      const tries: Array<[string, Promise<{ status: number; text: string }>]> = [
        ["re-signed payment (fresh signature, same id)", payment(50_000n, id).then((s) => call(`${app.url}/echo`, s, { body: { a: 1 } }))],
        ["another body", call(`${app.url}/echo`, sig, { body: { a: 2 } })],
        ["another query", call(`${app.url}/echo?page=2`, sig, { body: { a: 1 } })],
      ];
      for (const [what, p] of tries) {
        const r = await p;
        assert.equal(r.status, 409, `${what}: ${r.text}`);
        assert.equal(JSON.parse(r.text).error, "payment_identifier_conflict", what);
      }
      // another path or method on the same payTo: the offer differs in price, or the route does
      const weather = await call(`${app.url}/weather`, await payment(10_000n, id));
      assert.equal(weather.status, 409, weather.text);
      assert.equal(app.runs.echo, runs);
      assert.equal(app.runs.weather, 0);
      assert.equal(await balance(), before, "nothing more charged");
      // and the original retry still gets its answer
      const again = await call(`${app.url}/echo`, sig, { body: { a: 1 } });
      assert.equal(again.text, first.text);
    });

    it("a JSON body parsed before the paywall (express.json mounted first) is bound by its value: same → the answer, other → 409", async () => {
      const paid = await startPaidApp(chain, { store, settler: relayer });
      try {
        const before = await balance();
        const sig = await payment(50_000n, newId());
        const first = await call(`${paid.url}/echo`, sig, { body: { k: "v" } });
        assert.equal(first.status, 200, first.text);
        assert.equal((await call(`${paid.url}/echo`, sig, { body: { k: "v" } })).text, first.text);
        const other = await call(`${paid.url}/echo`, sig, { body: { k: "w" } });
        assert.equal(other.status, 409, other.text);
        assert.equal(paid.runs.echo, 1);
        assert.equal((await balance()) - before, 50_000n);
      } finally {
        await paid.close();
      }
    });

    it("parallel copies of one request: the handler runs once, one charge; the others get 409 with Retry-After (or the answer), then the answer", async () => {
      const before = await balance();
      const sig = await payment(10_000n, newId());
      const copies = await Promise.all(Array.from({ length: 6 }, () => call(`${app.url}/weather`, sig)));
      const ok = copies.filter((c) => c.status === 200);
      const busy = copies.filter((c) => c.status === 409);
      assert.equal(ok.length + busy.length, copies.length, copies.map((c) => `${c.status} ${c.text}`).join("\n"));
      assert.ok(ok.length >= 1);
      for (const b of busy) {
        assert.equal(JSON.parse(b.text).error, "payment_identifier_in_progress");
        assert.equal(b.headers.get("retry-after"), "1");
      }
      assert.ok(ok.every((c) => c.text === ok[0]!.text));
      const later = await call(`${app.url}/weather`, sig);
      assert.equal(later.status, 200);
      assert.equal(later.text, ok[0]!.text);
      assert.equal(app.runs.weather, 1, "one handler run");
      assert.equal((await balance()) - before, 10_000n, "one charge");
    });

    it("nothing charged (the handler failed): the id is free, and a retry with it runs and pays once", async () => {
      const before = await balance();
      const sig = await payment(10_000n, newId());
      app.status.value = 500;
      const failed = await call(`${app.url}/weather`, sig);
      assert.equal(failed.status, 500);
      assert.equal(await balance(), before);
      app.status.value = 200;
      const ok = await call(`${app.url}/weather`, sig);
      assert.equal(ok.status, 200, ok.text);
      assert.equal((await call(`${app.url}/weather`, sig)).text, ok.text);
      assert.equal(app.runs.weather, 2);
      assert.equal((await balance()) - before, 10_000n);
    });

    it("settlement before the handler: a retry is never charged or run twice (409 naming the transaction, the answer is not kept)", async () => {
      const before = await balance();
      const sig = await payment(20_000n, newId());
      const first = await call(`${app.url}/before`, sig, { body: { b: 1 } });
      assert.equal(first.status, 200, first.text);
      const tx = decode(first.headers.get("payment-response")).transaction as string;
      const again = await call(`${app.url}/before`, sig, { body: { b: 1 } });
      assert.equal(again.status, 409, again.text);
      assert.equal(JSON.parse(again.text).error, "payment_identifier_answer_unavailable");
      assert.match(JSON.parse(again.text).message, new RegExp(tx));
      assert.equal(app.runs.before, 1);
      assert.equal((await balance()) - before, 20_000n);
    });

    it("pending settlement (the money-safety path): the retry with the same id gets 504 settlement_pending with the same transaction, then the same answer once mined; never a second charge", async () => {
      const rpc = chainRpc(() => chain.rpcUrl);
      const settler = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5, receiptTimeoutMs: 300 });
      const pending = await startApp(store, { settler });
      try {
        const before = await balance();
        const sig = await payment(50_000n, newId());
        await rpc("evm_setAutomine", [false]);
        const first = await call(`${pending.url}/echo`, sig, { body: { p: 1 } });
        assert.equal(first.status, 504, first.text);
        assert.equal(JSON.parse(first.text).error, "settlement_pending");
        const tx = decode(first.headers.get("payment-response")).transaction;
        const again = await call(`${pending.url}/echo`, sig, { body: { p: 1 } });
        assert.equal(again.status, 504, again.text);
        assert.equal(JSON.parse(again.text).error, "settlement_pending");
        assert.ok(again.headers.get("retry-after"));
        const other = await call(`${pending.url}/echo`, sig, { body: { p: 2 } });
        assert.equal(other.status, 409, "another body with the id is refused while pending too");
        await rpc("evm_setAutomine", [true]);
        await rpc("evm_mine");
        const paid = await call(`${pending.url}/echo`, sig, { body: { p: 1 } });
        assert.equal(paid.status, 200, paid.text);
        assert.deepEqual(JSON.parse(paid.text).echo, { p: 1 });
        assert.equal(decode(paid.headers.get("payment-response")).transaction, tx);
        assert.equal((await call(`${pending.url}/echo`, sig, { body: { p: 1 } })).text, paid.text);
        assert.equal(pending.runs.echo, 1);
        assert.equal((await balance()) - before, 50_000n);
      } finally {
        await rpc("evm_setAutomine", [true]).catch(() => {});
        await pending.close();
      }
    });

    it("a store whose payment-id write hangs does not hold the paid answer past recordWaitMs (was awaited without bound): reported, the id stays in progress, and the write lands when the store answers", async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      // the store hangs on exactly the write that marks the id's answer kept (as a store stuck in an outage would)
      const hanging = new Proxy(store, {
        get(target, key, receiver) {
          const v = Reflect.get(target, key, receiver) as unknown;
          if (typeof v !== "function") return v;
          if (key === "updatePaymentId") return async (...args: unknown[]) => (await gate, (v as (...a: unknown[]) => unknown).apply(target, args));
          return (v as (...a: unknown[]) => unknown).bind(target);
        },
      }) as Store;
      const events: PaymentEvent[] = [];
      const engine = new PaymentEngine({ store: hanging, settler: relayer, reconcileIntervalMs: 0, recordWaitMs: 300, onEvent: (e) => events.push(e) });
      const pw = paywall({ payTo: chain.accounts.payTo.address, network: "base-sepolia", settler: relayer, store, checker: false, routes: { "GET /r": { price: "$0.01" } } });
      try {
        const offer = await pw.offerFor(pw.routes[0]!, "http://127.0.0.1/r");
        const raw = decode(await payment(10_000n, newId()));
        const request = { parts: ["test", "GET /r"] };
        const claimed = await engine.paymentIds!.begin<X402Replay>(raw, offer, request);
        assert.equal(claimed.kind, "claimed");
        const attempt = await engine.verifyX402(2, raw, offer);
        attempt.paymentId = claimed.kind === "claimed" ? claimed.hold : undefined;
        attempt.paymentId!.answer = { status: 200, headers: { "content-type": "text/plain" }, body: Buffer.from("the paid answer") };
        const settled = await Promise.race([engine.settleX402(attempt), sleep(5_000).then(() => "still waiting" as const)]);
        assert.notEqual(settled, "still waiting", "the paid answer waited on the hanging payment-id write");
        assert.ok(events.some((e) => e.type === "record_failed" && e.what === "answer" && e.reason === "record_timeout"), JSON.stringify(events));
        const during = await engine.paymentIds!.begin<X402Replay>(raw, offer, request);
        assert.equal(during.kind === "refused" && during.error.reason, "payment_identifier_in_progress", "while the write hangs a retry is told to wait, never charged again");
        release();
        let after = await engine.paymentIds!.begin<X402Replay>(raw, offer, request);
        for (let i = 0; i < 50 && after.kind === "refused"; i++) after = (await sleep(20), await engine.paymentIds!.begin<X402Replay>(raw, offer, request));
        assert.equal(after.kind, "replay", JSON.stringify(after));
        const replay = after.kind === "replay" ? after.replay : undefined;
        assert.equal(replay?.kind === "paid" && Buffer.from(replay.answer.body, "base64").toString(), "the paid answer");
      } finally {
        release();
        engine.stopReconciler();
        pw.engine.stopReconciler();
      }
    });

    it("a store full of live identifiers refuses a new id with 503 (Retry-After) before any payment step", async () => {
      const small = await startApp(new MemoryStore(), { paymentIdentifier: { maxEntries: 1 } });
      try {
        const before = await balance();
        assert.equal((await call(`${small.url}/weather`, await payment(10_000n, newId()))).status, 200);
        const full = await call(`${small.url}/weather`, await payment(10_000n, newId()));
        assert.equal(full.status, 503, full.text);
        assert.equal(JSON.parse(full.text).error, "payment_identifier_store_full");
        assert.ok(full.headers.get("retry-after"));
        assert.equal((await call(`${small.url}/weather`, await payment(10_000n))).status, 200, "a payment without an id still pays");
        assert.equal(small.runs.weather, 2);
        assert.equal((await balance()) - before, 20_000n);
      } finally {
        await small.close();
      }
    });
  });

  describe("two app instances sharing a store", function () {
    const dir = mkdtempSync(join(tmpdir(), "server402-pid-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
    const prefix = `server402-test-pid:${process.pid}-${Date.now()}:`;

    const shared: Array<[string, () => [Store, Store]]> = [
      ["SQLite (one file)", () => { const path = join(dir, `${randomUUID()}.db`); return [new SqliteStore({ path }), new SqliteStore({ path })]; }],
      ["Redis", () => { const keyPrefix = `${prefix}${randomUUID()}:`; return [new RedisStore({ url: redisUrl, keyPrefix }), new RedisStore({ url: redisUrl, keyPrefix })]; }],
    ];
    for (const [name, make] of shared) {
      it(`${name}: a retry on the other instance gets the same answer; parallel copies across both run once; one charge each`, async () => {
        const [sa, sb] = make();
        // two instances behind one public origin (a load balancer)
        const a = await startApp(sa, { publicUrl: "https://api.example.test" });
        const b = await startApp(sb, { publicUrl: "https://api.example.test" });
        try {
          const before = await balance();
          const sig = await payment(50_000n, newId());
          const first = await call(`${a.url}/echo`, sig, { body: { across: true } });
          assert.equal(first.status, 200, first.text);
          const onB = await call(`${b.url}/echo`, sig, { body: { across: true } });
          assert.equal(onB.status, 200, onB.text);
          assert.equal(onB.text, first.text);
          assert.deepEqual(decode(onB.headers.get("payment-response")), decode(first.headers.get("payment-response")));
          const conflict = await call(`${b.url}/echo`, sig, { body: { across: false } });
          assert.equal(conflict.status, 409);

          const sig2 = await payment(10_000n, newId());
          const copies = await Promise.all(Array.from({ length: 6 }, (_, i) => call(`${i % 2 ? a.url : b.url}/weather`, sig2)));
          assert.ok(copies.every((c) => c.status === 200 || (c.status === 409 && JSON.parse(c.text).error === "payment_identifier_in_progress")), copies.map((c) => `${c.status} ${c.text}`).join("\n"));
          const answer = await call(`${a.url}/weather`, sig2);
          assert.equal(answer.status, 200);
          assert.ok(copies.filter((c) => c.status === 200).every((c) => c.text === answer.text));
          assert.equal(a.runs.echo + b.runs.echo, 1);
          assert.equal(a.runs.weather + b.runs.weather, 1);
          assert.equal((await balance()) - before, 60_000n);
        } finally {
          await a.close();
          await b.close();
          await sa.close();
          await sb.close();
        }
      });
    }
  });

  describe("MCP transport", function () {
    it("a tool call retried with the same id and arguments gets the same result (one run, one charge); other arguments with the id are refused", async () => {
      const store = new MemoryStore();
      const pw = paywall({ payTo: chain.accounts.payTo.address, rpcUrl: chain.rpcUrl, settler: relayer, store, routes: { "POST /tool": { price: "$0.03", serviceId: "tool" } } });
      const server = new McpServer({ name: "t", version: "1.0.0" });
      let runs = 0;
      registerPaidTool(server, pw, {
        name: "lucky",
        serviceId: "tool",
        inputSchema: { word: z.string() },
        handler: async ({ word }) => ({ content: [{ type: "text", text: `${word} ${randomUUID()} run ${++runs}` }] }),
      });
      const client = new Client({ name: "t", version: "1.0.0" });
      const [ct, st] = InMemoryTransport.createLinkedPair();
      await Promise.all([server.connect(st), client.connect(ct)]);
      type R = { isError?: boolean; content: Array<{ text?: string }>; structuredContent?: Record<string, unknown>; _meta?: Record<string, unknown> };
      const callTool = async (word: string, meta?: Record<string, unknown>) => (await client.callTool({ name: "lucky", arguments: { word }, ...(meta ? { _meta: meta } : {}) })) as R;
      try {
        const unpaid = await callTool("a");
        assert.equal(unpaid.isError, true);
        const exts = unpaid.structuredContent!.extensions as Record<string, { info: unknown }>;
        assert.deepEqual(exts["payment-identifier"]!.info, { required: false });
        assert.ok(exts.bazaar, "the tool's bazaar data stays");

        const before = await balance();
        const payload = decode(await payment(30_000n, newId()));
        const first = await callTool("clover", { "x402/payment": payload });
        assert.equal(first.isError, undefined, JSON.stringify(first));
        const again = await callTool("clover", { "x402/payment": payload });
        assert.equal(again.isError, undefined, JSON.stringify(again));
        assert.deepEqual(again.content, first.content, "the same result");
        assert.deepEqual(again._meta!["x402/payment-response"], first._meta!["x402/payment-response"]);
        const other = await callTool("horseshoe", { "x402/payment": payload });
        assert.equal(other.isError, true);
        assert.equal(other.structuredContent!.error, "payment_identifier_conflict");
        assert.equal(runs, 1);
        assert.equal((await balance()) - before, 30_000n);
      } finally {
        await client.close();
        await server.close();
        await store.close();
      }
    });
  });

  describe("a real client", function () {
    it("@x402/fetch with the id added by its hook: the captured PAYMENT-SIGNATURE replayed after a lost answer gets the same answer, one charge", async () => {
      const store = new MemoryStore();
      const app = await startApp(store);
      try {
        const id = newId();
        let captured: string | undefined;
        const spy: typeof fetch = async (input, init) => {
          const sig = new Headers(input instanceof Request ? input.headers : init?.headers).get("payment-signature");
          if (sig) captured = sig;
          return fetch(input, init);
        };
        const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[8]!.privateKey as Hex)));
        client.onBeforePaymentCreation(async (ctx) => {
          if (ctx.paymentRequired.extensions) appendPaymentIdentifierToExtensions(ctx.paymentRequired.extensions, id);
        });
        const before = await balance();
        const res = await wrapFetchWithPayment(spy, client)(`${app.url}/echo`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ from: "x402-fetch" }) });
        const text = await res.text();
        assert.equal(res.status, 200, text);
        assert.ok(captured);
        assert.equal((decode(captured) as { extensions: Record<string, { info: { id: string } }> }).extensions["payment-identifier"]!.info.id, id);
        const receipt = decodePaymentResponseHeader(res.headers.get("payment-response")!);
        // the answer was lost: replay the captured header (@x402/fetch itself would sign a new payment → 409)
        const again = await call(`${app.url}/echo`, captured, { body: { from: "x402-fetch" } });
        assert.equal(again.status, 200, again.text);
        assert.equal(again.text, text);
        assert.equal(decodePaymentResponseHeader(again.headers.get("payment-response")!).transaction, receipt.transaction);
        const resigned = await wrapFetchWithPayment(fetch, client)(`${app.url}/echo`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ from: "x402-fetch" }) });
        assert.equal(resigned.status, 409, "a fresh signature with the same id is another payment");
        assert.equal(app.runs.echo, 1);
        assert.equal((await balance()) - before, 50_000n);
      } finally {
        await app.close();
        await store.close();
      }
    });
  });
});
