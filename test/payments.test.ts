/** The prepaid payments API over HTTP, paid with x402 on a real chain, with a real SQLite store. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import express, { type Express } from "express";
import request from "supertest";
import { paymentsRouter, paywall, relayerSettler, type PaywallMiddleware } from "server402";
import { SqliteStore } from "server402/sqlite";
import { startDevChain, type DevChain } from "server402/devchain";
import { v1Header, v2Header } from "./support/sign.js";

const ADMIN = "admin-key-for-tests-0123456789";

describe("prepaid payments and X-Payment-Token (real chain, real SQLite)", function () {
  let chain: DevChain;
  let app: Express;
  /** The same paywall with the API mounted apart, by `paymentsRouter`. */
  let routerApp: Express;
  let pw: PaywallMiddleware;
  let store: SqliteStore;
  let dir: string;
  const runs = { echo: 0, multi: 0 };

  before(async () => {
    chain = await startDevChain();
    dir = mkdtempSync(path.join(tmpdir(), "s402-pay-"));
    store = new SqliteStore({ path: path.join(dir, "db.sqlite") });
    pw = paywall({
      payTo: chain.accounts.payTo.address,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey }),
      rpcUrl: chain.rpcUrl,
      store,
      routes: {
        "POST /echo": { price: "$0.05", serviceId: "echo", description: "echo" },
        "POST /multi": { price: "$0.01", serviceId: "multi", maxCalls: 3, tokenTtl: 3600 },
        "POST /sub/echo": { price: "$0.05", serviceId: "echo" },
      },
      payments: { adminKey: ADMIN, createLimit: { max: 40, windowMs: 60_000 } },
    });
    app = express();
    app.use(pw);
    app.use(express.json());
    app.post("/echo", (req, res) => {
      runs.echo++;
      if (req.body?.fail) return void res.status(500).json({ error: "handler failed" });
      res.json({ ok: true, payment: req.payment });
    });
    // a sub-app has its own request prototype; req.payment set in the parent app must still show there
    const sub = express();
    sub.post("/echo", (req, res) => void res.json({ ok: true, payment: req.payment }));
    app.use("/sub", sub);
    app.post("/multi", (req, res) => {
      runs.multi++;
      res.locals.payment = "the app's own value"; // server402 keeps req.payment elsewhere
      res.json({ ok: true, payment: req.payment, locals: res.locals.payment });
    });
    routerApp = express();
    routerApp.use(paymentsRouter({ paywall: pw, adminKey: ADMIN }));
    routerApp.use(pw);
    routerApp.post("/echo", (req, res) => void res.json({ ok: true, payment: req.payment }));
  });
  after(async () => {
    await store?.close();
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function create(serviceId = "echo") {
    const res = await request(app).post("/api/payments").send({ serviceId });
    assert.equal(res.status, 201, res.text);
    return res.body as { paymentId: string; token: string; amount: string; pay: { url: string }; status: string };
  }
  async function pay(p: { paymentId: string; amount: string }, payer = 0, version: 1 | 2 = 2) {
    const parts = { privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: BigInt(p.amount) };
    const header = version === 2 ? { "payment-signature": await v2Header(parts) } : { "x-payment": await v1Header(parts) };
    return request(app).post(`/api/payments/${p.paymentId}/pay`).set(header);
  }
  const useToken = (token: string, route = "/echo", body: object = {}) => request(app).post(route).set("X-Payment-Token", token).send(body);

  it("creates a pending payment with a token, the price, and how to pay it", async () => {
    const p = await create();
    assert.match(p.paymentId, /^pay_/);
    assert.match(p.token, /^s402_[A-Za-z0-9_-]{43}$/);
    assert.equal(p.status, "pending");
    assert.equal(p.amount, "50000");
    const body = (await request(app).get(`/api/payments/${p.paymentId}`)).body;
    assert.equal(body.token, undefined, "the token is shown only at creation");
    assert.equal(body.tokenHash, undefined);
    assert.deepEqual(
      Object.keys(body).sort(),
      ["amount", "amountCents", "billingMode", "callsRemaining", "createdAt", "currency", "expiresAt", "maxCalls", "network", "paidAt", "payTo", "paymentId", "provider", "serviceId", "status", "transaction"].sort(),
    );
    assert.equal(body.amountCents, 5);
    assert.equal(body.currency, "USD");
    assert.equal(body.billingMode, "per_call");
    const unpaid = await request(app).post(`/api/payments/${p.paymentId}/pay`);
    assert.equal(unpaid.status, 402);
    assert.equal(unpaid.body.accepts[0].maxAmountRequired, "50000");
    assert.match(unpaid.body.accepts[0].resource, new RegExp(`/api/payments/${p.paymentId}/pay$`));
  });

  it("refuses bad creation requests with 400/404 naming the problem", async () => {
    const unknown = await request(app).post("/api/payments").send({ serviceId: "nope" });
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.body.serviceIds.sort(), ["echo", "multi"]);
    assert.equal((await request(app).post("/api/payments").send({})).status, 400);
    assert.equal((await request(app).post("/api/payments").send({ serviceId: "echo", extra: 1 })).body.error, "invalid_body");
    const bad = await request(app).post("/api/payments").set("content-type", "application/json").send("{nope");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, "invalid_json");
    assert.equal((await request(app).get("/api/payments/pay_doesnotexist123")).status, 404);
    assert.equal((await request(app).get("/api/payments/../../etc")).status, 404);
  });

  it("a pending token gets 402 'pending' with the payment object, and the handler does not run", async () => {
    const p = await create();
    const before = runs.echo;
    const res = await useToken(p.token);
    assert.equal(res.status, 402);
    assert.equal(res.body.error, "pending");
    assert.equal(res.body.payment.paymentId, p.paymentId);
    assert.equal(res.body.payment.status, "pending");
    assert.equal(runs.echo, before);
  });

  it("pays with x402 (v1 and v2), charges exactly once even when paid twice, then the token buys exactly one call", async () => {
    for (const version of [1, 2] as const) {
      const p = await create();
      const before = await chain.balanceOf(chain.accounts.payTo.address);
      const paid = await pay(p, 1, version);
      assert.equal(paid.status, 200, paid.text);
      assert.equal(paid.body.status, "paid");
      assert.match(paid.body.transaction, /^0x[0-9a-f]{64}$/);
      assert.ok(paid.headers[version === 2 ? "payment-response" : "x-payment-response"]);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 50000n);
      const again = await pay(p, 1, version);
      assert.equal(again.status, 200);
      assert.match(again.body.message, /already paid/);
      assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 50000n, "paying twice never charges twice");
      const used = await useToken(p.token, version === 1 ? "/echo" : "/sub/echo", { x: 1 });
      assert.equal(used.status, 200);
      assert.equal(used.body.payment.method, "token");
      assert.equal(used.body.payment.paymentId, p.paymentId);
      const exhausted = await useToken(p.token);
      assert.equal(exhausted.status, 402);
      assert.equal(exhausted.body.error, "exhausted");
      assert.equal(exhausted.body.payment.callsRemaining, 0);
    }
  });

  it("two concurrent pay requests for one payment charge once", async () => {
    const p = await create();
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const [a, b] = await Promise.all([pay(p, 2), pay(p, 3)]);
    const statuses = [a.status, b.status].sort();
    assert.ok(statuses[0] === 200 && (statuses[1] === 200 || statuses[1] === 409), JSON.stringify(statuses));
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 50000n);
  });

  it("50 concurrent uses of a 1-call token: exactly 1 success", async () => {
    const p = await create();
    assert.equal((await pay(p, 4)).status, 200);
    const before = runs.echo;
    const results = await Promise.all(Array.from({ length: 50 }, () => useToken(p.token)));
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.ok(results.filter((r) => r.status !== 200).every((r) => r.status === 402 && r.body.error === "exhausted"));
    assert.equal(runs.echo, before + 1);
  });

  it("a failed handler (>= 400) gives the call back; a multi-call token counts down", async () => {
    const p = await create();
    assert.equal((await pay(p, 5)).status, 200);
    assert.equal((await useToken(p.token, "/echo", { fail: true })).status, 500);
    assert.equal((await request(app).get(`/api/payments/${p.paymentId}`)).body.callsRemaining, 1);
    assert.equal((await useToken(p.token)).status, 200);
    const m = await create("multi");
    assert.equal(m.amount, "30000", "3 calls at $0.01");
    assert.equal((await pay(m, 5)).status, 200);
    for (let i = 2; i >= 0; i--) {
      const r = await useToken(m.token, "/multi");
      assert.equal(r.status, 200);
      assert.equal(r.body.payment.callsRemaining, i);
      assert.equal(r.body.locals, "the app's own value");
    }
    assert.equal((await useToken(m.token, "/multi")).body.error, "exhausted");
  });

  it("a token for one service does not pay another", async () => {
    const p = await create();
    assert.equal((await pay(p, 6)).status, 200);
    const res = await useToken(p.token, "/multi");
    assert.equal(res.status, 402);
    assert.equal(res.body.error, "wrong_service");
  });

  for (const form of ["paywall({ payments })", "paymentsRouter()"] as const) {
    it(`${form} dispatches only its own endpoints: trailing slashes match, other methods and paths fall through to the app`, async () => {
      const target = form === "paymentsRouter()" ? routerApp : app;
      const p = await create();
      const shown = await request(target).get(`/api/payments/${p.paymentId}/`);
      assert.equal(shown.status, 200, shown.text);
      assert.equal(shown.body.paymentId, p.paymentId);
      assert.equal((await request(target).head(`/api/payments/${p.paymentId}`)).status, 200);
      assert.equal((await request(target).get("/api/payments/pay_doesnotexist")).body.error, "payment_not_found");
      // not ours: Express's own 404 page, not a JSON answer from the payments API
      for (const [method, url] of [
        ["put", "/api/payments"],
        ["get", "/api/payments"],
        ["delete", `/api/payments/${p.paymentId}`],
        ["get", `/api/payments/${p.paymentId}/pay`],
        ["post", `/api/payments/${p.paymentId}/refund`],
        ["post", `/api/payments/${p.paymentId}/pay/more`],
        ["post", "/api/paymentsX"],
        ["post", "/api/ledger"],
      ] as const) {
        const r = await request(target)[method](url);
        assert.equal(r.status, 404, `${method} ${url}: ${r.status} ${r.text}`);
        assert.match(r.headers["content-type"] ?? "", /text\/html/, `${method} ${url}`);
      }
      assert.equal((await request(target).get("/api/ledger/")).status, 401);
      for (const url of ["/api/payments/pay_%zz", "/api/payments/%E2%82/confirm"]) {
        const r = await request(target).post(url).send({});
        assert.equal(r.status, 400, `${url}: ${r.text}`);
        assert.equal(r.body.error, "invalid_path");
      }
      assert.equal((await request(target).get("/api/payments/pay_%41bcdefghij")).body.error, "payment_not_found");
      const bad = await request(target).post(`/api/payments/${p.paymentId}/confirm`).set("Authorization", `Bearer ${ADMIN}`).set("content-type", "application/json").send("{nope");
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error, "invalid_json");
      // and the payments it sells pay the paywall's routes
      const confirmed = await request(target).post(`/api/payments/${p.paymentId}/confirm`).set("Authorization", `Bearer ${ADMIN}`).send({});
      assert.equal(confirmed.status, 200, confirmed.text);
      const used = await request(target).post("/echo").set("X-Payment-Token", p.token).send({});
      assert.equal(used.status, 200, used.text);
      assert.equal(used.body.payment.paymentId, p.paymentId);
    });
  }

  it("operator confirmation needs the admin key: 401 without, 403 wrong, 200 right; ledger records it", async () => {
    const p = await create();
    const url = `/api/payments/${p.paymentId}/confirm`;
    assert.equal((await request(app).post(url)).status, 401);
    assert.equal((await request(app).post(url).set("Authorization", "Bearer wrong-key-wrong-key-wrong")).status, 403);
    const ok = await request(app).post(url).set("Authorization", `Bearer ${ADMIN}`).send({ provider: "stripe", reference: "pi_123" });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.status, "paid");
    assert.equal(ok.body.provider, "stripe");
    assert.equal((await useToken(p.token)).status, 200);
    assert.equal((await request(app).get("/api/ledger")).status, 401);
    const ledger = await request(app).get("/api/ledger?limit=1000").set("Authorization", `Bearer ${ADMIN}`);
    assert.equal(ledger.status, 200);
    const entries = ledger.body.entries as Array<{ method: string; paymentId?: string; transaction?: string; amount: string }>;
    assert.ok(entries.some((e) => e.method === "token" && e.paymentId === p.paymentId && e.transaction === "pi_123"));
    const onchain = entries.filter((e) => e.method === "x402");
    assert.ok(onchain.length >= 5);
    assert.ok(onchain.every((e) => /^0x[0-9a-f]{64}$/.test(e.transaction!)));
    assert.equal((await request(app).get("/api/ledger?limit=0").set("Authorization", `Bearer ${ADMIN}`)).status, 400);
    // Empty parameters mean their defaults (issue 15: the README's `?afterId=&limit=` answered 400).
    const empty = await request(app).get("/api/ledger?afterId=&limit=").set("Authorization", `Bearer ${ADMIN}`);
    assert.equal(empty.status, 200);
    assert.equal(empty.body.entries.length, entries.length);
  });

  it("creation is rate limited per client with 429", async () => {
    const limited = express();
    limited.use(paymentsRouter({ paywall: pw, createLimit: { max: 2, windowMs: 60_000 } }));
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(limited).post("/api/payments").send({ serviceId: "echo" })).status);
    assert.deepEqual(statuses, [201, 201, 429, 429]);
  });
});
