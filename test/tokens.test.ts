import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import express from "express";
import { request as httpRequest, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import {
  generatePaymentToken,
  hashToken,
  isWellFormedToken,
  newPaymentId,
  newReservationId,
  reservationPaymentId,
} from "../lib/src/state/tokens.js";
import { PaymentEngine, type PaymentEvent } from "../lib/src/core/engine.js";
import { MemoryStore } from "../lib/src/state/memory.js";
import { PaymentError, StoreError } from "../lib/src/errors.js";
import { paywall } from "../lib/src/adapters/express/paywall.js";
import { facilitatorSettler } from "../lib/src/chain/facilitator.js";
import { samplePayment } from "./store-conformance.js";

describe("payment tokens and ids", function () {
  it("generates s402_ tokens of 256 random bits that pass isWellFormedToken", function () {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = generatePaymentToken();
      assert.match(t, /^s402_[A-Za-z0-9_-]{43}$/);
      assert.equal(Buffer.from(t.slice(5), "base64url").length, 32);
      assert.ok(isWellFormedToken(t), t);
      seen.add(t);
    }
    assert.equal(seen.size, 2000);
  });

  it("isWellFormedToken rejects anything else", function () {
    const good = generatePaymentToken();
    const bad: unknown[] = [
      undefined,
      null,
      42,
      "",
      good.slice(5),
      "S402_" + good.slice(5),
      good.slice(0, -1),
      good + "A",
      ` ${good}`,
      `${good}\n`,
      good.slice(0, 10) + "+" + good.slice(11),
      good.slice(0, 10) + "=" + good.slice(11),
      good.slice(0, -1) + "B", // non-canonical: last char must have its low 2 bits zero
      "s402_" + "A".repeat(42) + "A=",
    ];
    for (const s of bad) assert.equal(isWellFormedToken(s), false, JSON.stringify(s));
    assert.equal(isWellFormedToken("s402_" + "A".repeat(43)), true);
  });

  it("hashToken is lower-case SHA-256 hex and deterministic", function () {
    assert.equal(hashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const t = generatePaymentToken();
    assert.equal(hashToken(t), hashToken(t));
    assert.notEqual(hashToken(t), hashToken(generatePaymentToken()));
  });

  it("payment ids are pay_ + 16 random bytes", function () {
    const id = newPaymentId();
    assert.match(id, /^pay_[A-Za-z0-9_-]{22}$/);
    assert.notEqual(newPaymentId(), id);
  });

  it("reservation ids embed their payment id", function () {
    const pid = newPaymentId();
    const rid = newReservationId(pid);
    assert.match(rid, /^rsv_[A-Za-z0-9_-]{13,}\.pay_/);
    assert.equal(reservationPaymentId(rid), pid);
    assert.equal(reservationPaymentId(newReservationId("any.thing")), "any.thing");
    for (const s of ["", "rsv_", "rsv_abc", "rsv_abc.", "rsv_.pay_x", "xyz_abc.pay_x"]) assert.equal(reservationPaymentId(s), undefined, s);
  });
});

describe("PaymentEngine token calls", function () {
  it("a token call is reserved, then used or given back; refusals and a failing commit are reported, never thrown", async function () {
    const store = new MemoryStore();
    const events: PaymentEvent[] = [];
    const engine = new PaymentEngine({ store, settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) }, onEvent: (e) => events.push(e) });
    const token = generatePaymentToken();
    const p = { ...samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls: 3, amountAtomic: "30000" }) };
    await store.createPayment(p);
    await store.markPaid(p.paymentId, { paidAt: Date.now() });

    const a = await engine.reserveToken(token, "svc", "http://x/y");
    assert.equal(a.info.amount, "10000");
    assert.equal(a.info.callsRemaining, 2);
    assert.equal(await engine.commitToken(a, "http://x/y"), true);
    assert.equal(store.stats().reservations, 0);
    assert.deepEqual(events.at(-1), { type: "settled", method: "token", amount: "10000", asset: "", durationMs: 0, resource: "http://x/y" });
    const b = await engine.reserveToken(token, "svc", "http://x/y");
    engine.finishToken(b, "http://x/y", false);
    await waitFor(() => store.stats().reservations === 0);
    assert.equal((await store.getPayment(p.paymentId))!.callsUsed, 1);
    await assert.rejects(engine.reserveToken("s402_nope", "svc", "http://x/y"), (e: PaymentError) => e.reason === "unknown_token");
    await assert.rejects(engine.reserveToken(token, "other", "http://x/y"), (e: PaymentError) => e.reason === "wrong_service");

    // a failing commit is reported, never thrown
    const c = await engine.reserveToken(token, "svc", "http://x/y");
    store.commitCall = () => Promise.reject(new StoreError("server402: MemoryStore commitCall failed: disk on fire"));
    assert.doesNotThrow(() => engine.finishToken(c, "http://x/y", true));
    await waitFor(() => events.at(-1)?.type === "failed");
    assert.deepEqual(events.at(-1), { type: "failed", method: "token", reason: "store_unavailable", stage: "settle", resource: "http://x/y" });
    await store.close();
  });

  it("commitToken never rejects: a store failure resolves false and is reported as a failed settle event", async function () {
    const store = new MemoryStore();
    const events: PaymentEvent[] = [];
    const engine = new PaymentEngine({ store, settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) }, onEvent: (e) => events.push(e) });
    const token = generatePaymentToken();
    const p = { ...samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls: 2 }) };
    await store.createPayment(p);
    await store.markPaid(p.paymentId, { paidAt: Date.now() });
    const attempt = await engine.reserveToken(token, "svc", "http://x/y");
    store.commitCall = () => Promise.reject(new StoreError("server402: MemoryStore commitCall failed: disk on fire"));
    assert.equal(await engine.commitToken(attempt, "http://x/y"), false);
    assert.deepEqual(events.at(-1), { type: "failed", method: "token", reason: "store_unavailable", stage: "settle", resource: "http://x/y" });
    await store.close();
  });
});

describe("paywall token calls", function () {
  /** A MemoryStore paywall under /v1 with one paid token of `maxCalls`; GET /v1/weather waits `delayMs`, then answers. */
  async function serve(opts: { onEvent?: (e: PaymentEvent) => void; maxCalls?: number; delayMs?: number; closeEarly?: boolean; context?: AsyncLocalStorage<string> } = {}) {
    const store = new MemoryStore();
    const token = generatePaymentToken();
    const maxCalls = opts.maxCalls ?? 2;
    const p = samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls, amountAtomic: String(10000 * maxCalls) });
    await store.createPayment(p);
    await store.markPaid(p.paymentId, { paidAt: Date.now() });
    let runs = 0;
    let answered = 0;
    const router = express.Router();
    // the response reports 'close' right after the paywall took the request, before its call is reserved
    if (opts.closeEarly) router.use((_req, res, next) => (next(), void res.emit("close")));
    // request-scoped context, as tracing and logging libraries keep it
    if (opts.context) router.use((req, _res, next) => opts.context!.run(String(req.headers["x-request-id"]), next));
    router.use(
      paywall({
        payTo: "0x1111111111111111111111111111111111111111",
        network: "base-sepolia",
        settler: facilitatorSettler({ url: "http://127.0.0.1:9" }),
        checker: false,
        store,
        onEvent: opts.onEvent,
        routes: { "GET /weather": { price: "$0.01", serviceId: "svc" } },
      }),
    );
    router.get("/weather", (req, res) => {
      runs++;
      const requestId = opts.context?.getStore();
      setTimeout(() => {
        answered++;
        res.json({ paidBy: req.payment?.method, ...(requestId === undefined ? {} : { requestId }) });
      }, opts.delayMs ?? 0);
    });
    const app = express();
    app.use("/v1", router);
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return {
      url,
      token,
      store,
      runs: () => runs,
      answered: () => answered,
      connections: () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
      callsUsed: async () => (await store.getPayment(p.paymentId))!.callsUsed,
      close: async () => {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
        await store.close();
      },
    };
  }

  it("with onEvent, a token call's events carry the request's resource URL (mount path included); without, calls work the same", async function () {
    const events: PaymentEvent[] = [];
    const watched = await serve({ onEvent: (e) => events.push(e) });
    try {
      const res = await fetch(`${watched.url}/v1/weather`, { headers: { "x-payment-token": watched.token } });
      assert.deepEqual(await res.json(), { paidBy: "token" });
      const resource = `${watched.url}/v1/weather`;
      await waitFor(() => events.some((e) => e.type === "settled"));
      assert.deepEqual(events, [
        { type: "verified", method: "token", resource },
        { type: "settled", method: "token", amount: "10000", asset: "", durationMs: 0, resource },
      ]);
      const refused = await fetch(`${watched.url}/v1/weather`, { headers: { "x-payment-token": generatePaymentToken() } });
      assert.equal(refused.status, 402);
      assert.equal(((await refused.json()) as { accepts: Array<{ resource: string }> }).accepts[0]!.resource, resource);
      assert.deepEqual(events.slice(2), [
        { type: "failed", method: "token", reason: "unknown_token", stage: "verify", resource },
        { type: "payment_required", resource },
      ]);
    } finally {
      await watched.close();
    }

    const quiet = await serve();
    try {
      const res = await fetch(`${quiet.url}/v1/weather`, { headers: { "x-payment-token": quiet.token } });
      assert.deepEqual(await res.json(), { paidBy: "token" });
      await waitFor(async () => (await quiet.callsUsed()) === 1);
      const refused = await fetch(`${quiet.url}/v1/weather`, { headers: { "x-payment-token": generatePaymentToken() } });
      assert.equal(((await refused.json()) as { accepts: Array<{ resource: string }> }).accepts[0]!.resource, `${quiet.url}/v1/weather`);
    } finally {
      await quiet.close();
    }
  });

  it("a client that goes away before the answer is not charged: its 1-call token still buys one call", async function () {
    const app = await serve({ maxCalls: 1, delayMs: 150 });
    try {
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${app.url}/v1/weather`, { headers: { "x-payment-token": app.token } });
        req.on("error", () => resolve()); // the socket we destroy
        req.on("response", () => reject(new Error("the answer came before the client left")));
        req.end();
        const gone = setInterval(() => {
          if (app.runs() === 1) {
            clearInterval(gone);
            req.destroy();
          }
        }, 2);
      });
      await waitFor(() => app.answered() === 1); // the handler answers into the closed connection
      await waitFor(() => app.store.stats().reservations === 0);
      assert.equal(app.runs(), 1);
      assert.equal(await app.callsUsed(), 0);
      assert.equal(app.store.stats().reservations, 0, "the reservation was given back, not left to lapse");
      const res = await fetch(`${app.url}/v1/weather`, { headers: { "x-payment-token": app.token } });
      assert.deepEqual(await res.json(), { paidBy: "token" });
      await waitFor(async () => (await app.callsUsed()) === 1);
      const after = await fetch(`${app.url}/v1/weather`, { headers: { "x-payment-token": app.token } });
      assert.equal(after.status, 402);
      assert.equal(((await after.json()) as { error: string }).error, "exhausted");
    } finally {
      await app.close();
    }
  });

  it("30 token calls sent in one turn of the event loop on a 10-call token → exactly 10 runs and 10 calls used, 20 × 402 exhausted", async function () {
    const app = await serve({ maxCalls: 10, delayMs: 20 });
    try {
      const answers = (await inOneTurn(app, "/v1/weather", Array.from({ length: 30 }, () => ({ "x-payment-token": app.token })))) as Array<{
        status: number;
        body: { error?: string; paidBy?: string };
      }>;
      const paid = answers.filter((a) => a.status === 200);
      assert.equal(paid.length, 10);
      assert.ok(paid.every((a) => a.body.paidBy === "token"));
      const refused = answers.filter((a) => a.status === 402);
      assert.equal(refused.length, 20);
      assert.ok(refused.every((a) => a.body.error === "exhausted"), JSON.stringify(refused.map((a) => a.body.error)));
      assert.equal(app.runs(), 10);
      await waitFor(async () => (await app.callsUsed()) === 10);
      assert.equal(app.store.stats().reservations, 0);
    } finally {
      await app.close();
    }
  });

  it("each request's handler runs in its own async context (AsyncLocalStorage), also when 40 token calls share a turn", async function () {
    const context = new AsyncLocalStorage<string>();
    const app = await serve({ maxCalls: 100, context });
    try {
      const ids = Array.from({ length: 40 }, (_, i) => `req-${i}`);
      const answers = await inOneTurn(app, "/v1/weather", ids.map((id) => ({ "x-payment-token": app.token, "x-request-id": id })));
      assert.deepEqual(
        answers,
        ids.map((requestId) => ({ status: 200, body: { paidBy: "token", requestId } })),
      );
    } finally {
      await app.close();
    }
  });

  it("a request whose response closes before its call is reserved runs nothing, and the token keeps its call", async function () {
    // A socket's close is reported in a later phase of the event loop than the request read from it, so
    // a real client cannot make this happen on cue; the app here emits the response's 'close' itself.
    const events: PaymentEvent[] = [];
    const app = await serve({ maxCalls: 1, closeEarly: true, onEvent: (e) => events.push(e) });
    try {
      const ac = new AbortController();
      const pending = fetch(`${app.url}/v1/weather`, { headers: { "x-payment-token": app.token }, signal: ac.signal }).then(async (r) => `${r.status} ${await r.text()}`, () => "aborted");
      // the call was reserved (verified), then given back in the same step
      await waitFor(() => events.some((e) => e.type === "verified"));
      await waitFor(() => app.store.stats().reservations === 0);
      await new Promise((r) => setImmediate(r));
      assert.equal(app.runs(), 0, "the handler ran for a response that had closed");
      assert.equal(await app.callsUsed(), 0);
      ac.abort();
      assert.equal(await pending, "aborted");
    } finally {
      await app.close();
    }
    const control = await serve({ maxCalls: 1 });
    try {
      const res = await fetch(`${control.url}/v1/weather`, { headers: { "x-payment-token": control.token } });
      assert.deepEqual(await res.json(), { paidBy: "token" });
      assert.equal(control.runs(), 1);
      await waitFor(async () => (await control.callsUsed()) === 1);
    } finally {
      await control.close();
    }
  });
});

/**
 * Send one GET per header set, each on its own connection, so that the server
 * (in this process) reads them all in one turn of the event loop: connect
 * every socket first, then write every request before yielding. Resolves
 * with each answer's status and JSON body, in the order given.
 */
async function inOneTurn(app: { url: string; connections(): Promise<number> }, path: string, headerSets: Array<Record<string, string>>): Promise<Array<{ status: number; body: unknown }>> {
  const url = app.url;
  const { hostname, port } = new URL(url);
  const sockets: Socket[] = await Promise.all(
    headerSets.map(
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect(Number(port), hostname, () => resolve(s)).once("error", reject);
        }),
    ),
  );
  await waitFor(async () => (await app.connections()) === headerSets.length); // the server accepted them all
  const answers = sockets.map(
    (s) =>
      new Promise<{ status: number; body: unknown }>((resolve, reject) => {
        let raw = "";
        s.setEncoding("utf8");
        s.on("data", (chunk: string) => {
          raw += chunk;
          const end = raw.indexOf("\r\n\r\n");
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(raw)?.[1] ?? NaN);
          if (end < 0 || raw.length - end - 4 < length) return;
          s.destroy();
          resolve({ status: Number(raw.slice(9, 12)), body: JSON.parse(raw.slice(end + 4, end + 4 + length)) });
        });
        s.once("error", reject);
      }),
  );
  headerSets.forEach((headers, i) => {
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
    sockets[i]!.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n${lines.join("")}\r\n`);
  });
  return Promise.all(answers);
}

/** Poll `check` until it holds (the call is committed when the response closes, just after the client has it). */
async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`condition not met within ${timeoutMs} ms`);
}
