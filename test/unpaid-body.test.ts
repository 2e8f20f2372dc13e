/**
 * Issue 14 A8, unpaid big bodies: the paywall answers 402 from the headers
 * without reading a large body, and every kind of client still gets the 402
 * and its body (undici fetch, Node's http client, supertest, a real x402
 * client that then pays).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import request from "supertest";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { paywall, relayerSettler } from "server402";
import { startDevChain, type DevChain } from "server402/devchain";

const BIG = 13 * 1024 * 1024;
const PAY_TO = "0x1111111111111111111111111111111111111111";
const noSettle = { kind: "none", settle: () => Promise.reject(new Error("unused")) };

/** An app with one priced POST route; `read` collects how many bytes each connection had read when it closed. */
async function serve(pw = paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "POST /x": { price: "$0.01" } } })) {
  const app = express();
  app.use(pw);
  let runs = 0;
  app.post("/x", express.raw({ type: () => true, limit: "20mb" }), (req, res) => {
    runs++;
    res.json({ paid: true, bytes: (req.body as Buffer).length });
  });
  const server: Server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  const read: number[] = [];
  server.on("connection", (socket) => socket.on("close", () => read.push(socket.bytesRead)));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    read,
    runs: () => runs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("issue 14 A8: unpaid big bodies", function () {
  this.timeout(60_000);

  it("A8 unpaid big bodies: undici fetch gets the whole 402 for a 13 MB body, and the server reads a small part of it", async function () {
    const app = await serve();
    try {
      const body = new Uint8Array(BIG).fill(65);
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${app.url}/x`, { method: "POST", headers: { "content-type": "application/json" }, body });
        assert.equal(res.status, 402);
        const json = (await res.json()) as { accepts: unknown[] };
        assert.equal(json.accepts.length, 1);
        assert.ok(res.headers.get("payment-required"));
      }
      await waitFor(() => app.read.length >= 5);
      for (const bytes of app.read) assert.ok(bytes < 1024 * 1024, `the server read ${bytes} bytes of a ${BIG}-byte body`);
      assert.equal(app.runs(), 0);
    } finally {
      await app.close();
    }
  });

  it("A8 unpaid big bodies: Node's http client and supertest get the 402 and its body", async function () {
    const app = await serve();
    try {
      const body = Buffer.alloc(BIG, 65);
      const viaHttp = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = httpRequest(`${app.url}/x`, { method: "POST", headers: { "content-type": "application/json", "content-length": body.length } }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode!, text }));
        });
        req.on("error", (err) => reject(err));
        req.end(body);
      });
      assert.equal(viaHttp.status, 402);
      assert.equal((JSON.parse(viaHttp.text) as { x402Version: number }).x402Version, 1);

      const viaSupertest = await request(app.server).post("/x").set("content-type", "application/octet-stream").send(body);
      assert.equal(viaSupertest.status, 402);
      assert.equal((JSON.parse(viaSupertest.text) as { x402Version: number }).x402Version, 1);
      assert.equal(app.runs(), 0);
    } finally {
      await app.close();
    }
  });

  it("A8 unpaid big bodies: a small unpaid body, or none, keeps the connection (keep-alive), and the next request on it is answered", async function () {
    const pw = paywall({ payTo: PAY_TO, settler: noSettle, checker: false, routes: { "/x": { price: "$0.01" } } });
    const app = await serve(pw);
    try {
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${app.url}/x`);
        assert.equal(res.status, 402);
        assert.notEqual(res.headers.get("connection"), "close", "a GET without a body lost its connection");
        await res.arrayBuffer();
      }
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${app.url}/x`, { method: "POST", body: "x".repeat(2048) });
        assert.equal(res.status, 402);
        assert.notEqual(res.headers.get("connection"), "close");
        await res.arrayBuffer();
      }
      assert.equal(app.read.length, 0, "no connection was closed");
    } finally {
      await app.close();
    }
  });

  describe("on the dev chain", function () {
    let chain: DevChain;
    before(async () => {
      chain = await startDevChain();
    });
    after(async () => {
      await chain?.stop();
    });

    it("A8 unpaid big bodies: a real x402 client sending a 13 MB body gets the 402, pays, and the handler receives the whole body", async function () {
      const pw = paywall({
        payTo: chain.accounts.payTo.address,
        rpcUrl: chain.rpcUrl,
        settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
        routes: { "POST /x": { price: "$0.01" } },
      });
      const app = await serve(pw);
      try {
        const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[0]!.privateKey)));
        const res = await wrapFetchWithPayment(fetch, client)(`${app.url}/x`, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: new Uint8Array(BIG).fill(66) });
        assert.equal(res.status, 200, await res.clone().text());
        assert.deepEqual(await res.json(), { paid: true, bytes: BIG });
        assert.equal(app.runs(), 1);
      } finally {
        await app.close();
      }
    });
  });
});
