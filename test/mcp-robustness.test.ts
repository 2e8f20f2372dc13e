/**
 * Issue 14, MCP cases: a batch that cancels its own call is answered (C13),
 * every MCP POST is answered within a bound (C13), and a client's text never
 * floods the logs (C14). Real MCP wire format over HTTP, real dev chain,
 * real local face engine or the Alibaba SDK against its emulator.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { startDevChain, type DevChain } from "server402/devchain";
import { loadConfig } from "../example-server/src/config.js";
import { cappedLogger } from "../example-server/src/observability/logging.js";
import { startServer, type RunningServer } from "../example-server/src/server.js";
import { behave } from "./support/alibaba-emulator.js";
import { paidToken, TEST_ADMIN_KEY as ADMIN_KEY } from "./support/paid-token.js";
import { IMAGE_A, IMAGE_B, startExampleApp, type ExampleApp } from "./support/example-app.js";

const ARGS = { ImageDataA: IMAGE_A, ImageDataB: IMAGE_B };
const MCP_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

const callTool = (id: number, args: Record<string, unknown>) => ({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "face_comparison", arguments: args } });
const cancel = (requestId: number, reason: string) => ({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId, reason } });

/** POST JSON-RPC to /mcp; "no answer" when none came within `ms`. */
async function post(url: string, body: unknown, ms: number): Promise<{ status: number; text: string; elapsedMs: number } | "no answer"> {
  const t0 = Date.now();
  try {
    const res = await fetch(`${url}/mcp`, { method: "POST", headers: MCP_HEADERS, body: JSON.stringify(body), signal: AbortSignal.timeout(ms) });
    return { status: res.status, text: await res.text(), elapsedMs: Date.now() - t0 };
  } catch (err) {
    if ((err as Error).name === "TimeoutError") return "no answer";
    throw err;
  }
}

describe("issue 14: MCP robustness (local face engine)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let srv: RunningServer;
  let url: string;
  const lines: string[] = [];

  before(async () => {
    chain = await startDevChain();
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(...String(chunk).split("\n").filter(Boolean));
        done();
      },
    });
    srv = await startServer(
      loadConfig({ PORT: "0", STORE: "memory", DEVCHAIN: "off", RPC_URL: chain.rpcUrl, PAY_TO: chain.accounts.payTo.address, RELAYER_PRIVATE_KEY: chain.accounts.relayer.privateKey, FACE_WORKERS: "1", ADMIN_KEY, PUBLIC_URL: "http://127.0.0.1" }),
      pino({ level: "info" }, sink),
    );
    url = `http://127.0.0.1:${(srv.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    srv?.server.closeAllConnections();
    await srv?.close();
    await chain?.stop();
  });

  it("C13 MCP batch with a cancel: [tools/call id 7, notifications/cancelled requestId 7] is answered at once, the call is not run and its token keeps its call", async () => {
    const { token, paymentId } = await paidToken(url);
    const r = await post(url, [callTool(7, { ...ARGS, paymentToken: token }), cancel(7, "changed my mind")], 5000);
    assert.notEqual(r, "no answer", "the batch got an HTTP answer");
    assert.equal((r as { status: number }).status, 202, (r as { text: string }).text);
    const withOther = await post(url, [callTool(7, { ...ARGS, paymentToken: token }), { jsonrpc: "2.0", id: 8, method: "tools/list" }, cancel(7, "no")], 5000);
    assert.notEqual(withOther, "no answer");
    const answers = JSON.parse((withOther as { text: string }).text);
    assert.deepEqual([answers].flat().map((a: { id: number }) => a.id), [8], "the cancelled call gets no response (MCP), the other one does");
    const state = await (await fetch(`${url}/api/payments/${paymentId}`)).json();
    assert.equal(state.callsRemaining, 1, "nothing was charged");
  });

  it("C14 log flooding: a paid MCP call cancelled with a 1 MB reason writes no line longer than a few KB", async () => {
    const { token } = await paidToken(url);
    lines.length = 0;
    const reason = "R".repeat(1024 * 1024);
    await post(url, [callTool(9, { ...ARGS, paymentToken: token }), cancel(9, reason)], 3000);
    await new Promise((r) => setTimeout(r, 500));
    const longest = Math.max(0, ...lines.map((l) => l.length));
    assert.ok(longest < 8192, `longest log line: ${longest} characters`);
  });
});

describe("issue 14: C14 log lines", function () {
  it("C14 log flooding: an error whose text is client input (1 MB) is logged capped, with the cause chain capped too", () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const log = cappedLogger(pino({ level: "info" }, sink));
    const big = "x".repeat(1024 * 1024);
    log.error({ err: new Error(big, { cause: new Error(big) }) }, "unexpected error");
    log.error({ err: big }, "a thrown string");
    assert.equal(lines.length, 2);
    for (const l of lines) assert.ok(l.length < 16_384, `line of ${l.length} characters`);
    assert.match(lines[0]!, /more characters/);
  });
});

describe("issue 14: MCP robustness (Alibaba engine, hanging upstream)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;
  before(async () => {
    chain = await startDevChain();
    app = await startExampleApp(chain, { env: { ADMIN_KEY, MCP_TIMEOUT_MS: "1500", COMPARE_TIMEOUT_MS: "60000", ALIBABA_TIMEOUT_MS: "60000" } });
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("C13 MCP batch with a cancel: every MCP POST is answered within MCP_TIMEOUT_MS (a timeout error when the tool hangs), and the aborted call is not charged", async () => {
    const { token, paymentId } = await paidToken(app.url);
    app.emulator.script(behave.hang());
    const r = await post(app.url, callTool(3, { ...ARGS, paymentToken: token }), 10_000);
    assert.notEqual(r, "no answer");
    const { status, text, elapsedMs } = r as { status: number; text: string; elapsedMs: number };
    assert.equal(status, 504, text);
    assert.equal(JSON.parse(text).error.code, -32001);
    assert.ok(elapsedMs < 5000, `answered after ${elapsedMs} ms`);
    await new Promise((res) => setTimeout(res, 300));
    const state = await (await fetch(`${app.url}/api/payments/${paymentId}`)).json();
    assert.equal(state.callsRemaining, 1, "the aborted call was given back");
  });
});
