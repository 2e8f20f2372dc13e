/**
 * Issue 16 (3): lifecycle hooks (before/after verify, verify failure,
 * before/after settle, settle failure), called with the right data; a hook
 * that aborts or throws never loses money nor gives work for free.
 */
import assert from "node:assert/strict";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { ConfigError, decodeHeader, paywall, relayerSettler, type PaymentEvent, type PaymentHooks } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { startPaidApp, type PaidApp } from "./support/paid-app.js";
import { v2Header } from "./support/sign.js";

describe("issue 16: lifecycle hooks", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: PaidApp;
  const calls: Array<{ hook: string; ctx: Record<string, any> }> = [];
  const events: PaymentEvent[] = [];
  /** What each hook does in the current test: nothing, abort, or throw. */
  let act: Partial<Record<keyof PaymentHooks, "abort" | "throw">> = {};

  const hook =
    (name: keyof PaymentHooks) =>
    async (ctx: Record<string, any>): Promise<any> => {
      calls.push({ hook: name, ctx });
      if (act[name] === "throw") throw new Error(`${name} broke`);
      if (act[name] === "abort") return { abort: true, reason: "payer_blocked", message: "this payer is blocked here" };
    };
  const hooks: PaymentHooks = {
    onBeforeVerify: hook("onBeforeVerify"),
    onAfterVerify: hook("onAfterVerify"),
    onVerifyFailure: hook("onVerifyFailure"),
    onBeforeSettle: hook("onBeforeSettle"),
    onAfterSettle: hook("onAfterSettle"),
    onSettleFailure: hook("onSettleFailure"),
  };

  before(async () => {
    chain = await startDevChain();
    app = await startPaidApp(chain, { hooks, onEvent: (e) => events.push(e) });
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });
  beforeEach(() => {
    calls.length = 0;
    events.length = 0;
    act = {};
  });

  const payee = () => chain.balanceOf(chain.accounts.payTo.address);
  const sign = (payer: number) => v2Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10_000n });
  const paid = (_payer: number, header: string) => fetch(`${app.url}/weather`, { headers: { "PAYMENT-SIGNATURE": header } });

  it("16.3 a payment by @x402/fetch calls before/after verify and before/after settle, in order, with the payload, the requirements, the payment and the transaction", async () => {
    const before = await payee();
    const pay = wrapFetchWithPayment(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[0]!.privateKey))));
    const res = await pay(`${app.url}/weather`);
    assert.equal(res.status, 200);
    const receipt = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    assert.deepEqual(calls.map((c) => c.hook), ["onBeforeVerify", "onAfterVerify", "onBeforeSettle", "onAfterSettle"]);
    const [bv, av, bs, as] = calls.map((c) => c.ctx);
    assert.equal(bv!.x402Version, 2);
    assert.equal(bv!.resource, `${app.url}/weather`);
    assert.equal(bv!.requirements.amount, "10000");
    assert.equal((bv!.paymentPayload.accepted as { amount: string }).amount, "10000");
    assert.equal(av!.payment.payer, chain.accounts.payers[0]!.address);
    assert.equal(av!.payment.amount, "10000");
    assert.equal(bs!.payment.nonce, av!.payment.nonce);
    assert.equal(as!.transaction, receipt.transaction);
    assert.equal((await payee()) - before, 10_000n);
  });

  it("16.3 onBeforeVerify aborting → 402 with its reason and message, onVerifyFailure told, nothing charged, the handler not run", async () => {
    act = { onBeforeVerify: "abort" };
    const [before, runs] = [await payee(), app.runs.weather ?? 0];
    const res = await paid(1, await sign(1));
    assert.equal(res.status, 402);
    const body = (await res.json()) as { error: string; message: string };
    assert.deepEqual([body.error, body.message], ["payer_blocked", "this payer is blocked here"]);
    assert.equal((decodeHeader(res.headers.get("payment-required")!, "PAYMENT-REQUIRED") as { error: string }).error, "payer_blocked");
    assert.deepEqual(calls.map((c) => c.hook), ["onBeforeVerify", "onVerifyFailure"]);
    assert.equal(calls[1]!.ctx.error.reason, "payer_blocked");
    assert.equal(await payee(), before);
    assert.equal(app.runs.weather ?? 0, runs);
  });

  it("16.3 onAfterVerify throwing → 503 hook_failed with nothing charged and the lock given back: the same authorization pays once the hook works", async () => {
    act = { onAfterVerify: "throw" };
    const [before, runs] = [await payee(), app.runs.weather ?? 0];
    const header = await sign(2);
    const res = await paid(2, header);
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error: string }).error, "hook_failed");
    assert.ok(events.some((e) => e.type === "hook_failed" && e.hook === "onAfterVerify" && /broke/.test(e.reason)));
    assert.equal(await payee(), before);
    assert.equal(app.runs.weather ?? 0, runs);
    act = {};
    const again = await paid(2, header);
    assert.equal(again.status, 200, await again.clone().text());
    assert.equal((await payee()) - before, 10_000n);
    assert.equal(app.runs.weather, runs + 1);
  });

  for (const how of ["abort", "throw"] as const) {
    it(`16.3 onBeforeSettle ${how === "abort" ? "aborting" : "throwing"} (settlement after the handler) → nothing charged and the handler's answer withheld; onSettleFailure told`, async () => {
      act = { onBeforeSettle: how };
      const before = await payee();
      const res = await paid(3, await sign(3));
      const text = await res.text();
      assert.equal(res.status, how === "abort" ? 402 : 503, text);
      assert.doesNotMatch(text, /sunny/, "the paid answer is not delivered");
      assert.equal(JSON.parse(text).error, how === "abort" ? "payer_blocked" : "hook_failed");
      assert.deepEqual(calls.map((c) => c.hook), ["onBeforeVerify", "onAfterVerify", "onBeforeSettle", "onSettleFailure"]);
      assert.equal(await payee(), before);
    });
  }

  it("16.3 onAfterSettle throwing is reported (hook_failed event) and the paid answer is still delivered, charged once", async () => {
    act = { onAfterSettle: "throw" };
    const before = await payee();
    const res = await paid(4, await sign(4));
    assert.equal(res.status, 200);
    assert.match(await res.text(), /sunny/);
    assert.ok(res.headers.get("payment-response"));
    assert.ok(events.some((e) => e.type === "hook_failed" && e.hook === "onAfterSettle"));
    assert.equal((await payee()) - before, 10_000n);
  });

  it("16.3 observing hooks that throw change nothing: a throwing onVerifyFailure still gives the refusal's own answer", async () => {
    act = { onBeforeVerify: "abort", onVerifyFailure: "throw" };
    const res = await paid(5, await sign(5));
    assert.equal(res.status, 402);
    assert.equal(((await res.json()) as { error: string }).error, "payer_blocked");
  });

  it("16.3 an unknown hook name or a hook that is no function is a startup error", () => {
    const base = { payTo: chain.accounts.payTo.address, settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey }), routes: { "/x": { price: "$0.01" } } };
    assert.throws(() => paywall({ ...base, hooks: { onBeforeVerfy: () => {} } as never }), (e: unknown) => e instanceof ConfigError && /onBeforeVerfy/.test(e.message));
    assert.throws(() => paywall({ ...base, hooks: { onAfterSettle: "log" } as never }), (e: unknown) => e instanceof ConfigError && /function/.test(e.message));
  });

  describe("onProtectedRequest", () => {
    let guarded: PaidApp;
    const seen: Array<{ method: string; path: string; route: string }> = [];
    before(async () => {
      guarded = await startPaidApp(chain, {
        hooks: {
          onProtectedRequest: ({ req, method, path, route }) => {
            seen.push({ method, path, route });
            const h = (req as { headers: Record<string, string | undefined> }).headers;
            if (h["x-api-key"] === "good") return { grantAccess: true };
            if (h["x-blocked"]) return { abort: true, reason: "region_blocked", message: "not served in your region" };
            if (h["x-throw"]) throw new Error("guard broke");
          },
        },
      });
    });
    after(async () => {
      await guarded?.close();
    });

    it("16.3 runs before any payment step with the route; grantAccess lets the request through unpaid, abort answers 403 with its reason, a throw 503 hook_failed, and no answer asks for payment", async () => {
      const runs = guarded.runs.weather ?? 0;
      const free = await fetch(`${guarded.url}/weather`, { headers: { "x-api-key": "good" } });
      assert.equal(free.status, 200);
      assert.equal(((await free.json()) as { payment?: unknown }).payment, undefined, "no req.payment");
      assert.equal(guarded.runs.weather, runs + 1);
      assert.deepEqual(seen.at(-1), { method: "GET", path: "/weather", route: "GET /weather" });
      const blocked = await fetch(`${guarded.url}/weather`, { headers: { "x-blocked": "1" } });
      assert.equal(blocked.status, 403);
      assert.deepEqual(await blocked.json(), { error: "region_blocked", message: "not served in your region" });
      assert.equal(blocked.headers.get("payment-required"), null);
      const broken = await fetch(`${guarded.url}/weather`, { headers: { "x-throw": "1", "PAYMENT-SIGNATURE": await sign(6) } });
      assert.equal(broken.status, 503);
      assert.equal(((await broken.json()) as { error: string }).error, "hook_failed");
      assert.equal(guarded.runs.weather, runs + 1, "neither ran the handler");
    });

    it("16.3 when it returns nothing the payment flow is unchanged: 402 unpaid, then paid and charged once", async () => {
      assert.equal((await fetch(`${guarded.url}/weather`)).status, 402);
      const before = await payee();
      const res = await fetch(`${guarded.url}/weather`, { headers: { "PAYMENT-SIGNATURE": await sign(6) } });
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal((await payee()) - before, 10_000n);
    });
  });
});
