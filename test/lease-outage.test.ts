/**
 * Issue 14 A4 after a store outage: a running token call's lease is renewed
 * every third of a lease, but renewals cannot get through while the store is
 * down. An outage longer than `tokenLeaseMs` let the reservation lapse, and a
 * second use of a 1-call token started (and was answered 200) while the
 * first handler still ran and then answered 200 too. The attacker's test:
 * the store goes down right after the first call is reserved, comes back
 * after more than a lease, and a second use follows. At most one paid answer
 * may be delivered, and the store counts every delivered one.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import express from "express";
import { z } from "zod";
import { MemoryStore, paywall, StoreError, type PaymentEvent, type Store } from "server402";
import { paidRoutes, registerPaidTool } from "server402/mcp";
import { generatePaymentToken, hashToken } from "../lib/src/state/tokens.js";
import { samplePayment } from "./store-conformance.js";

const PAY_TO = "0x2222222222222222222222222222222222222222";
const noSettle = { kind: "none" as const, settle: () => Promise.reject(new Error("this test must not settle")) };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LEASE_MS = 1000;

/** A MemoryStore that can be taken down: while `down`, every method rejects with StoreError, as a store whose server is unreachable. */
function outageStore(): { store: Store; inner: MemoryStore; setDown(down: boolean): void } {
  const inner = new MemoryStore();
  let down = false;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => (down ? Promise.reject(new StoreError("server402: store unreachable (test outage)")) : (v as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
  return { store, inner, setDown: (d) => void (down = d) };
}

async function paidToken(store: Store): Promise<{ token: string; paymentId: string }> {
  const token = generatePaymentToken();
  const p = samplePayment({ tokenHash: hashToken(token), serviceId: "svc", maxCalls: 1 });
  await store.createPayment(p);
  await store.markPaid(p.paymentId, { paidAt: Date.now() });
  return { token, paymentId: p.paymentId };
}

type ToolResult = { isError?: boolean; content: Array<{ text?: string }>; structuredContent?: Record<string, unknown> };

/** An MCP client of one tool `slow` paid by 1-call tokens of `store`; `onRun` runs first in the tool, which then takes `ms`. */
async function slowTool(store: Store, ms: number, onRun: () => void) {
  const routes = paidRoutes({ payTo: PAY_TO, settler: noSettle, checker: false, store, tokenLeaseMs: LEASE_MS, routes: { "/tools/slow": { price: "$0.01", serviceId: "svc" } } });
  const server = new McpServer({ name: "t", version: "1" });
  registerPaidTool(server, routes, {
    name: "slow",
    serviceId: "svc",
    inputSchema: { text: z.string() },
    handler: async () => {
      onRun();
      await sleep(ms);
      return { content: [{ type: "text", text: "paid content" }] };
    },
  });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "t", version: "1" });
  await client.connect(clientSide);
  const call = async (token: string) => (await client.callTool({ name: "slow", arguments: { text: "x", paymentToken: token } }, undefined, { timeout: 10_000 })) as ToolResult;
  return { call, close: () => client.close() };
}

describe("issue 14 A4: a lease lost in a store outage", function () {
  this.timeout(20_000);

  it("A4 lease lost in a store outage (Express): the store down longer than tokenLeaseMs while the handler runs, then a second use of the 1-call token: one paid answer, counted", async function () {
    const { store, inner, setDown } = outageStore();
    const { token, paymentId } = await paidToken(store);
    let runs = 0;
    const events: PaymentEvent[] = [];
    const a = express();
    a.use(paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, tokenLeaseMs: LEASE_MS, onEvent: (e) => events.push(e), routes: { "GET /slow": { price: "$0.01", serviceId: "svc" } } }));
    a.get("/slow", async (_req, res) => {
      if (++runs === 1) setDown(true); // the store goes down right after the first call was reserved
      await sleep(2200);
      res.json({ paid: "content" });
    });
    const server = a.listen(0, "127.0.0.1");
    await once(server, "listening");
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slow`;
    try {
      const first = fetch(url, { headers: { "x-payment-token": token } }).then(
        async (r) => ({ status: r.status, text: await r.text() }),
        (err: Error) => ({ status: 0, text: String(err) }),
      );
      await sleep(LEASE_MS + 300);
      setDown(false);
      const second = await fetch(url, { headers: { "x-payment-token": token } });
      const answers = [await first, { status: second.status, text: await second.text() }];
      const paid = answers.filter((r) => r.status === 200 && r.text.includes("content"));
      assert.equal(paid.length, 1, `paid answers for one call: ${JSON.stringify(answers)}`);
      await sleep(100);
      assert.equal((await inner.getPayment(paymentId))!.callsUsed, 1);
      const third = await fetch(url, { headers: { "x-payment-token": token } });
      assert.equal(third.status, 402, await third.text());
      // the cut answer is on record for the operator
      assert.ok(events.some((e) => e.type === "error_answer" && e.code === "store_unavailable" && /lease/.test(e.detail)), JSON.stringify(events));
    } finally {
      server.closeAllConnections();
      server.close();
      await inner.close();
    }
  });

  it("A4 commit refused by a store blip after the answer: the delivered call is counted once the store answers, not given back when its lease lapses", async function () {
    const { store, inner, setDown } = outageStore();
    const { token, paymentId } = await paidToken(store);
    let runs = 0;
    const a = express();
    const mw = paywall({ payTo: PAY_TO, settler: noSettle, checker: false, store, tokenLeaseMs: LEASE_MS, routes: { "GET /fast": { price: "$0.01", serviceId: "svc" } } });
    a.use(mw);
    a.get("/fast", (_req, res) => {
      runs++;
      setDown(true); // the store is down when the call is committed, and back a moment later
      res.json({ paid: "content" });
    });
    const server = a.listen(0, "127.0.0.1");
    await once(server, "listening");
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fast`;
    try {
      const first = await fetch(url, { headers: { "x-payment-token": token } });
      assert.equal(first.status, 200, await first.text());
      await sleep(50);
      setDown(false);
      await mw.engine.reconcile(); // the next reconciler pass (every 5 s by default)
      await sleep(LEASE_MS + 200); // the reservation's lease has ended
      const second = await fetch(url, { headers: { "x-payment-token": token } });
      assert.equal(second.status, 402, `a 1-call token answered twice: ${await second.text()}`);
      assert.equal(runs, 1);
      assert.equal((await inner.getPayment(paymentId))!.callsUsed, 1);
    } finally {
      server.closeAllConnections();
      server.close();
      await inner.close();
    }
  });

  it("A4 lease overrun (MCP): tokenLeaseMs 1000 and a 1.5 s tool: a second use of a 1-call token is refused while the first runs", async function () {
    const store = new MemoryStore();
    const { token, paymentId } = await paidToken(store);
    let runs = 0;
    const t = await slowTool(store, 1500, () => void runs++);
    const call = () => t.call(token);
    try {
      const first = call();
      await sleep(1200);
      const second = await call();
      assert.equal(second.structuredContent?.reason, "exhausted", JSON.stringify(second));
      assert.equal((await first).content[0]?.text, "paid content");
      assert.equal(runs, 1);
      await sleep(50);
      assert.equal((await store.getPayment(paymentId))!.callsUsed, 1);
    } finally {
      await t.close();
      await store.close();
    }
  });

  it("A4 lease lost in a store outage (MCP): the tool's result is withheld once its reservation may have lapsed; the second use gets the one paid result", async function () {
    const { store, inner, setDown } = outageStore();
    const { token, paymentId } = await paidToken(store);
    let runs = 0;
    const t = await slowTool(store, 2200, () => void (++runs === 1 && setDown(true)));
    const call = () => t.call(token);
    try {
      const first = call();
      await sleep(LEASE_MS + 300);
      setDown(false);
      const answers = await Promise.all([first, call()]);
      const paid = answers.filter((r) => !r.isError && r.content[0]?.text === "paid content");
      assert.equal(paid.length, 1, `paid results for one call: ${JSON.stringify(answers)}`);
      await sleep(100);
      assert.equal((await inner.getPayment(paymentId))!.callsUsed, 1);
    } finally {
      await t.close();
      await inner.close();
    }
  });
});
