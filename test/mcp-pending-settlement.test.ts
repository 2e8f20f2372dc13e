/**
 * Issue 14 B10 over MCP: a paid tool call whose settlement is pending (the
 * transaction is sent, its receipt not seen in time) keeps its answer; a
 * retry of the same tool call with the same payment gets "pending" again,
 * then the paid answer once the transfer is confirmed, and is never charged
 * twice. A client gone while its payment settles gets the answer on retry.
 * Real MCP SDK server over Streamable HTTP, real dev chain with automine off.
 */
import assert from "node:assert/strict";
import express from "express";
import { MemoryStore, paywall, relayerSettler, type SettlementMode } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";
import { chainRpc } from "./support/chain-rpc.js";
import { listen } from "./support/listen.js";
import { mountMcp, registerSecretAnswer } from "./support/mcp-endpoint.js";
import { signAuthorization } from "./support/sign.js";

type ToolResult = { isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: Record<string, any>; _meta?: Record<string, any> };

const PRICE = 10_000n;

describe("issue 14 B10 over MCP: pending settlements hold the tool answer (real chain)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  const rpc = chainRpc(() => chain.rpcUrl);

  before(async () => {
    chain = await startDevChain();
  });
  afterEach(async () => {
    await rpc("evm_setAutomine", [true]);
  });
  after(async () => {
    await chain?.stop();
  });

  /** An MCP endpoint with one paid tool `secret_answer` ($0.01) over a relayer whose receipt wait is `receiptTimeoutMs`. */
  async function start(settlement: SettlementMode, receiptTimeoutMs: number) {
    const store = new MemoryStore();
    const settler = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, receiptTimeoutMs });
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      rpcUrl: chain.rpcUrl,
      settler,
      store,
      settlement,
      routes: { "POST /secret": { price: "$0.01", serviceId: "secret", description: "secret" } },
    });
    const state = { runs: 0 };
    const app = express();
    mountMcp(app, (server) => registerSecretAnswer(server, pw, "secret", () => state.runs++));
    const http = await listen(app);
    const url = `${http.url}/mcp`;
    let id = 0;
    const call = async (meta?: Record<string, unknown>, signal?: AbortSignal): Promise<ToolResult> => {
      const res = await fetch(url, {
        method: "POST",
        signal,
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method: "tools/call", params: { name: "secret_answer", arguments: { question: "life" }, ...(meta ? { _meta: meta } : {}) } }),
      });
      const body = (await res.json()) as { result?: ToolResult; error?: unknown };
      assert.ok(body.result, JSON.stringify(body));
      return body.result;
    };
    const unpaid = await call();
    const payment = async (payer: number) => ({
      "x402/payment": {
        x402Version: 2,
        accepted: unpaid.structuredContent!.accepts[0],
        payload: await signAuthorization({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE }),
      },
    });
    const close = async () => {
      pw.engine.stopReconciler();
      await http.close();
      await store.close();
    };
    return { pw, store, state, call, payment, close };
  }

  const text = (r: ToolResult) => r.content.map((c) => c.text ?? "").join("");
  const received = () => chain.balanceOf(chain.accounts.payTo.address);
  /** Mine what waits, and mine every transaction again from now on. */
  const mine = async () => {
    await rpc("evm_setAutomine", [true]);
    await rpc("evm_mine");
  };

  /** Payer `payer`'s call while the chain does not mine: refused settlement_pending, with its transaction. */
  async function pendingCall(t: Awaited<ReturnType<typeof start>>, payer: number) {
    const meta = await t.payment(payer);
    const before = await received();
    await rpc("evm_setAutomine", [false]);
    const first = await t.call(meta);
    assert.equal(first.isError, true);
    assert.equal(first.structuredContent!.reason, "settlement_pending", JSON.stringify(first));
    const tx = first._meta?.["x402/payment-response"]?.transaction as string;
    assert.match(tx, /^0x[0-9a-f]{64}$/);
    return { meta, before, first, tx };
  }

  /** Paid `PRICE` once since `before`, and on record once with `tx`. */
  async function chargedOnce(t: Awaited<ReturnType<typeof start>>, before: bigint, tx: string) {
    assert.equal((await received()) - before, PRICE, "charged exactly once");
    assert.deepEqual((await t.store.listLedger()).map((e) => e.transaction), [tx]);
  }

  it("B10 pending settlement over MCP: a retry of the same tool call payment gets pending again, then the held answer once mined; never a second charge", async () => {
    const t = await start("after", 300);
    try {
      const { meta, before, first, tx } = await pendingCall(t, 1);
      assert.ok(!JSON.stringify(first).includes("xyzzy"), "the output is withheld while the transfer is pending");
      assert.equal(t.state.runs, 1);

      const again = await t.call(meta);
      assert.equal(again.isError, true);
      assert.equal(again.structuredContent!.reason, "settlement_pending", "pending again, not duplicate_settlement: " + JSON.stringify(again.structuredContent));

      await mine();
      const paid = await t.call(meta);
      assert.notEqual(paid.isError, true, JSON.stringify(paid));
      assert.match(text(paid), /forty-two-xyzzy/);
      assert.equal(paid._meta?.["x402/payment-response"]?.success, true);
      assert.equal(paid._meta?.["x402/payment-response"]?.transaction, tx);
      assert.equal(paid._meta?.["server402/payment"]?.transaction, tx);

      const once = await t.call(meta);
      assert.match(text(once), /forty-two-xyzzy/, "the held answer is served again to the same payment");
      assert.equal(t.state.runs, 1, "the tool ran once");
      await chargedOnce(t, before, tx);
    } finally {
      await t.close();
    }
  });

  it("B10 pending settlement over MCP (settlement before the tool): once confirmed, a retry with the same payment runs the tool once, never a second charge", async () => {
    const t = await start("before", 300);
    try {
      const { meta, before, tx } = await pendingCall(t, 2);
      assert.equal(t.state.runs, 0, "settlement before the tool: not run yet");
      await mine();
      const paid = await t.call(meta);
      assert.notEqual(paid.isError, true, JSON.stringify(paid));
      assert.match(text(paid), /forty-two-xyzzy/);
      assert.equal(paid._meta?.["x402/payment-response"]?.transaction, tx);
      assert.equal(t.state.runs, 1);
      const again = await t.call(meta);
      assert.equal(again.isError, true, "the paid run is given once");
      assert.equal(t.state.runs, 1);
      await chargedOnce(t, before, tx);
    } finally {
      await t.close();
    }
  });

  it("B10 pending settlement over MCP: a client gone while its payment settles gets the paid answer on retry with the same payment; the record is kept, charged once", async () => {
    const t = await start("after", 15_000);
    try {
      const meta = await t.payment(3);
      const before = await received();
      await rpc("evm_setAutomine", [false]);
      const abort = new AbortController();
      const gone = t.call(meta, abort.signal).catch((err: unknown) => err);
      // the tool ran and its transfer is in the mempool: the client goes away
      for (let i = 0; i < 200; i++) {
        const pool = (await rpc("txpool_status")) as { pending: string };
        if (t.state.runs === 1 && BigInt(pool.pending) > 0n) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      abort.abort();
      assert.ok((await gone) instanceof Error);
      await new Promise((r) => setTimeout(r, 100));
      await mine();
      for (let i = 0; i < 200 && (await t.store.listLedger()).length === 0; i++) await new Promise((r) => setTimeout(r, 25));
      const ledger = await t.store.listLedger();
      assert.equal(ledger.length, 1, "the settled payment is on record");
      await new Promise((r) => setTimeout(r, 100));
      const retry = await t.call(meta);
      assert.notEqual(retry.isError, true, JSON.stringify(retry));
      assert.match(text(retry), /forty-two-xyzzy/);
      assert.equal(retry._meta?.["x402/payment-response"]?.transaction, ledger[0]!.transaction);
      await chargedOnce(t, before, ledger[0]!.transaction!);
      assert.equal(t.state.runs, 1, "the tool ran once");
    } finally {
      await t.close();
    }
  });
});
