import assert from "node:assert/strict";
import express from "express";
import { ConfigError, PaymentError, decodeHeader, encodeHeader, findNetwork, paywall, requirePayment } from "server402";
import { parseMoney, resolvePrice } from "server402/internal";
import { compileRoute, normalizePath, RouteTable } from "../lib/src/adapters/routes.js";

describe("price parsing (exact integer math)", () => {
  it("converts money strings without floating point", () => {
    assert.equal(parseMoney("$0.20", 6), 200000n);
    assert.equal(parseMoney("0.20", 6), 200000n);
    assert.equal(parseMoney("$1", 6), 1000000n);
    assert.equal(parseMoney("$0.0079", 6), 7900n); // x402-express 1.2.0 emits 7900.000000000001
    assert.equal(parseMoney("$0.0157", 6), 15700n);
    assert.equal(parseMoney(0.2, 6), 200000n);
    assert.equal(parseMoney("123456789.123456", 6), 123456789123456n);
  });
  it("every price 0.0001–9.9999 converts to an exact integer", () => {
    for (let i = 1; i < 100000; i++) {
      const s = `${Math.floor(i / 10000)}.${String(i % 10000).padStart(4, "0")}`;
      assert.equal(parseMoney(s, 6), BigInt(i) * 100n, s);
    }
  });
  it("refuses more decimals than the asset, zero, negatives and junk with a fix-it message", () => {
    assert.throws(() => parseMoney("$0.0000001", 6), (e: unknown) => e instanceof ConfigError && /7 decimals but the asset has only 6/.test(e.message));
    assert.throws(() => parseMoney("$0", 6), /greater than zero/);
    assert.throws(() => parseMoney("-1", 6), /not a money amount/);
    assert.throws(() => parseMoney("1e3", 6), /not a money amount/);
    assert.throws(() => parseMoney(1e-7, 6), /cannot be written exactly/);
  });
  it("resolves atomic prices with an explicit asset", () => {
    const p = resolvePrice({ amount: "42", asset: { address: "0x036cbd53842c5426634e7929541ec2318f3dcf7e", decimals: 6, eip712: { name: "USDC", version: "2" } } }, undefined);
    assert.equal(p.amount, 42n);
    assert.equal(p.asset.address, "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    assert.throws(() => resolvePrice({ amount: "4.2", asset: p.asset as never }, undefined), /positive integer string/);
  });
});

describe("networks", () => {
  it("resolves v1 names and CAIP-2 ids to the same network", () => {
    assert.equal(findNetwork("base-sepolia"), findNetwork("eip155:84532"));
    assert.equal(findNetwork("base")?.usdc?.eip712Name, "USD Coin");
    assert.equal(findNetwork("base-sepolia")?.usdc?.eip712Name, "USDC");
    assert.equal(findNetwork("eip155:999")?.chainId, 999);
    assert.equal(findNetwork("solana"), undefined);
  });
});

describe("route keys", () => {
  const t = new RouteTable({ "POST /api/tools/face": 1, "/api/*": 2, "GET /items/:id": 3, "/items/[id]/raw": 4, "/exact": 5 });
  it("matches verbs, wildcards, :param and [param], most specific first", () => {
    assert.equal(t.match("POST", "/api/tools/face")?.value, 1);
    assert.equal(t.match("GET", "/api/tools/face")?.value, 2);
    assert.equal(t.match("GET", "/api")?.value, 2);
    assert.equal(t.match("GET", "/items/7")?.value, 3);
    assert.equal(t.match("HEAD", "/items/7")?.value, 3);
    assert.equal(t.match("POST", "/items/7"), undefined);
    assert.equal(t.match("PUT", "/items/7/raw")?.value, 4);
    assert.equal(t.match("GET", "/EXACT")?.value, 5);
    assert.equal(t.match("GET", "/exactly"), undefined);
  });
  it("normalises paths", () => {
    assert.equal(normalizePath("//api//tools/face/?x=1"), "/api/tools/face");
    assert.equal(normalizePath("/a%20b"), "/a b");
    // Express matches a backslash or an encoded slash inside one segment: they stay as written
    assert.equal(normalizePath("/items/a\\b"), "/items/a\\b");
    assert.equal(normalizePath("/items/a%2Fb%5c%41"), "/items/a%2Fb%5cA");
  });
  it("the paywall prices a route whatever the query string, repeated or trailing slashes; other paths pass through", async () => {
    const app = express();
    app.use(paywall({ payTo: "0x1111111111111111111111111111111111111111", settler: { kind: "none", settle: () => Promise.reject(new Error("unused")) }, checker: false, routes: { "GET /a/b": { price: "$0.01" } } }));
    app.use((_req, res) => void res.status(404).json({ passed: true }));
    const server = app.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      for (const path of ["/a/b", "/a/b?x=1", "/a/b?", "/a/b/", "//a//b", "/A/B", "/a/%62"]) assert.equal((await fetch(base + path)).status, 402, path);
      for (const path of ["/a", "/a/bc", "/a/b/c", "/a%2Fb"]) assert.equal((await fetch(base + path)).status, 404, path);
    } finally {
      server.close();
    }
  });
  it("refuses malformed keys", () => {
    assert.throws(() => compileRoute("FETCH /x", 1), ConfigError);
    assert.throws(() => compileRoute("no-slash", 1), ConfigError);
  });
});

describe("header encoding", () => {
  it("round-trips and decodes strictly", () => {
    assert.deepEqual(decodeHeader(encodeHeader({ a: 1 }), "X"), { a: 1 });
    for (const bad of ["%%%", "abc", Buffer.from("not json").toString("base64"), Buffer.from("[1]").toString("base64"), "A".repeat(9000)]) {
      assert.throws(() => decodeHeader(bad, "X-PAYMENT"), (e: unknown) => e instanceof PaymentError && e.reason === "invalid_payload" && /X-PAYMENT/.test(e.message));
    }
  });
});

describe("startup validation", () => {
  const settler = { kind: "test", settle: async () => { throw new Error("unused"); } };
  const payTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
  const cases: Array<[string, () => unknown, RegExp]> = [
    ["missing routes", () => paywall({ payTo, settler } as never), /routes.*at least one priced route/],
    ["bad payTo", () => paywall({ payTo: "0x123", settler, routes: { "/x": { price: "$1" } } }), /payTo.*not an EVM address/],
    ["unknown network", () => paywall({ payTo, settler, network: "base-mainnet", routes: { "/x": { price: "$1" } } }), /unknown network "base-mainnet".*base-sepolia/],
    ["too many decimals", () => paywall({ payTo, settler, routes: { "/x": { price: "$0.0000001" } } }), /routes\["\/x"\]\.price.*7 decimals but the asset has only 6/],
    ["no settler", () => paywall({ payTo, routes: { "/x": { price: "$1" } } } as never), /settler.*relayerSettler/],
    ["bad settlement", () => paywall({ payTo, settler, settlement: "later" as never, routes: { "/x": { price: "$1" } } }), /"after" or "before"/],
    ["bad route key", () => paywall({ payTo, settler, routes: { "FETCH /x": { price: "$1" } } }), /unknown HTTP method/],
    ["bad maxCalls", () => paywall({ payTo, settler, routes: { "/x": { price: "$1", maxCalls: 0 } } }), /maxCalls/],
    ["payments not an object", () => paywall({ payTo, settler, routes: { "/x": { price: "$1" } }, payments: true as never }), /payments.*as an object/],
    ["short payments.adminKey", () => paywall({ payTo, settler, routes: { "/x": { price: "$1" } }, payments: { adminKey: "short" } }), /payments\.adminKey.*at least 16 characters/],
    ["money price on a chain without USDC", () => requirePayment({ payTo, settler, network: "eip155:999", price: "$1" }), /default USDC/],
  ];
  for (const [label, make, msg] of cases) {
    it(`${label} throws a ConfigError that says how to fix it`, () => {
      assert.throws(make, (e: unknown) => e instanceof ConfigError && msg.test(e.message));
    });
  }
});
