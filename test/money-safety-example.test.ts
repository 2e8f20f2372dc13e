/**
 * Issue 14 (money safety), the example server's cases: image pixel bombs
 * refused before decoding (A5), unpaid big bodies answered from the headers
 * (A8), store outages answered 503 (B12), rate limits and forged hosts (C15)
 * and disclosure (C16). Real dev chain, real Alibaba SDK against its
 * emulator, real HTTP.
 */
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { deflateSync } from "node:zlib";
import express from "express";
import { MemoryStore, paywall, relayerSettler } from "server402";
import { RedisStore } from "server402/redis";
import { startDevChain, type DevChain } from "server402/devchain";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { paidToken, TEST_ADMIN_KEY as ADMIN_KEY } from "./support/paid-token.js";
import { v1Header } from "./support/sign.js";
import { clientMessage } from "../example-server/src/face/compare.js";
import { FaceError } from "../example-server/src/engine/types.js";
import { IMAGE_A, IMAGE_B, startExampleApp, type ExampleApp } from "./support/example-app.js";

const FACE = "/api/tools/face-comparison";
const json = (b: unknown, headers: Record<string, string> = {}) => ({ method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(b) });

/** A valid grayscale PNG of width × height black pixels: tiny on disk, huge once decoded. */
function pngBomb(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  const raw = Buffer.alloc((width + 1) * height); // filter byte 0 + zero pixels per row
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw, { level: 9 })), chunk("IEND", Buffer.alloc(0))]);
}

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const byte of buf) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Send only the headers and the first `sent` bytes of a body that claims
 * `length` bytes, and wait up to `ms` for an answer (the rest never comes).
 */
function partialPost(url: string, path: string, headers: Record<string, string>, length: number, sent: number, ms: number): Promise<{ status: number; body: string } | "no answer"> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json", "content-length": String(length), ...headers } });
    const timer = setTimeout(() => {
      req.destroy();
      resolve("no answer");
    }, ms);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode!, body });
      });
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.write(`{"ImageDataA":"${"A".repeat(Math.max(0, sent - 16))}`);
  });
}

describe("issue 14: money safety of the example server", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;
  let images: Server;
  let imagesUrl: string;
  const bomb = pngBomb(7000, 7000);

  before(async () => {
    chain = await startDevChain();
    images = createServer((req, res) => {
      if (req.url === "/bomb.png") return void res.writeHead(200, { "content-type": "image/png" }).end(bomb);
      if (req.url === "/teapot") return void res.writeHead(418, "internal-secret-banner").end("internal-secret-body");
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => images.listen(0, "127.0.0.1", r));
    imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
    app = await startExampleApp(chain, { env: { ADMIN_KEY, IMAGE_FETCH_ALLOW_HOSTS: "127.0.0.1" } });
  });
  after(async () => {
    await app?.close();
    images?.close();
    await chain?.stop();
  });

  it("A5 image pixel bomb: a 49-megapixel PNG is refused with 413 from its header, before any engine run, and the paid call is kept", async () => {
    assert.ok(bomb.length < 200_000, `the bomb is small (${bomb.length} bytes)`);
    const { token, paymentId } = await paidToken(app.url);
    const before = app.emulator.attempts().length;
    const inline = await fetch(`${app.url}${FACE}`, json({ ImageDataA: bomb.toString("base64"), ImageDataB: IMAGE_B }, { "x-payment-token": token }));
    const inlineBody = await inline.json();
    assert.equal(inline.status, 413, JSON.stringify(inlineBody));
    assert.equal(inlineBody.code, "image_too_large");
    assert.match(inlineBody.message, /ImageDataA.*7000×7000 pixels/);
    const byUrl = await fetch(`${app.url}${FACE}`, json({ ImageURLA: `${imagesUrl}/bomb.png`, ImageDataB: IMAGE_B }, { "x-payment-token": token }));
    const byUrlBody = await byUrl.json();
    assert.equal(byUrl.status, 413, JSON.stringify(byUrlBody));
    assert.equal(byUrlBody.code, "image_too_large");
    assert.equal(app.emulator.attempts().length, before, "the engine never ran");
    const state = await (await fetch(`${app.url}/api/payments/${paymentId}`)).json();
    assert.equal(state.callsRemaining, 1, "nothing was charged");
  });

  it("C16 disclosure: an image server's status line and body never reach the client", async () => {
    const { token } = await paidToken(app.url);
    const res = await fetch(`${app.url}${FACE}`, json({ ImageURLA: `${imagesUrl}/teapot`, ImageDataB: IMAGE_B }, { "x-payment-token": token }));
    const text = await res.text();
    assert.equal(res.status, 400, text);
    assert.equal(JSON.parse(text).code, "image_fetch_failed");
    assert.match(text, /HTTP 418/);
    assert.doesNotMatch(text, /internal-secret/);
  });

  it("A8 unpaid big bodies: an unpaid request is answered 402 from its headers without reading its body; 413 by Content-Length; a paid malformed request is still 400 and not charged", async () => {
    // 13 MB announced, 1 KB sent: the server can only answer if it does not wait for the body.
    const unpaid = await partialPost(app.url, FACE, {}, 13_000_000, 1024, 3000);
    assert.notEqual(unpaid, "no answer", "the unpaid request was answered without its body");
    assert.equal((unpaid as { status: number }).status, 402);
    const tooLarge = await partialPost(app.url, FACE, {}, 16 * 1024 * 1024, 1024, 3000);
    assert.notEqual(tooLarge, "no answer");
    assert.equal((tooLarge as { status: number }).status, 413);
    assert.equal(JSON.parse((tooLarge as { body: string }).body).error, "body_too_large");

    const { token, paymentId } = await paidToken(app.url);
    const bad = await fetch(`${app.url}${FACE}`, json({ ImageURLA: "ftp://x/a.jpg", ImageDataB: IMAGE_B }, { "x-payment-token": token }));
    assert.equal(bad.status, 400);
    const state = await (await fetch(`${app.url}/api/payments/${paymentId}`)).json();
    assert.equal(state.callsRemaining, 1, "a 400 is never charged");
    const good = await fetch(`${app.url}${FACE}`, json({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }, { "x-payment-token": token }));
    assert.equal(good.status, 200, await good.clone().text());
  });
});

describe("issue 14: B12 store outage", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;
  before(async () => {
    chain = await startDevChain();
    app = await startExampleApp(chain, { env: { STORE: "redis", REDIS_URL: "redis://127.0.0.1:1", ADMIN_KEY } });
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("B12 store outage = 500: with Redis down the example server's payments API answers 503 store_unavailable with Retry-After", async () => {
    for (const [method, path, body] of [
      ["POST", "/api/payments", { serviceId: "face-comparison" }],
      ["GET", "/api/payments/pay_0123456789abcdef", undefined],
      ["POST", "/api/payments/pay_0123456789abcdef/pay", undefined],
    ] as const) {
      const res = await fetch(`${app.url}${path}`, { method, headers: { "content-type": "application/json", "x-payment": "e30=" }, body: body ? JSON.stringify(body) : undefined });
      const b = await res.json();
      assert.equal(res.status, 503, `${method} ${path}: ${JSON.stringify(b)}`);
      assert.equal(b.error, "store_unavailable");
      assert.equal(res.headers.get("retry-after"), "5");
    }
  });

  it("B12 store outage = 500: the library's payments API alone (no app error handler) answers 503, not Express's HTML 500", async () => {
    const store = new RedisStore({ url: "redis://127.0.0.1:1" });
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      store,
      checker: false,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey as `0x${string}` }),
      routes: { "POST /thing": { price: "$0.01", serviceId: "thing" } },
      payments: {},
    });
    const lib = express().use(pw);
    const server = lib.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api/payments`, json({ serviceId: "thing" }));
      assert.equal(res.status, 503, await res.clone().text());
      assert.equal((await res.json()).error, "store_unavailable");
      assert.equal(res.headers.get("retry-after"), "5");
    } finally {
      server.close();
      await store.close();
    }
  });
});

/** One HTTP request with headers fetch() cannot set (Host). */
function raw(url: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: { "content-type": "application/json", ...headers } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode!, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("issue 14: C15 rate limits and hosts, C16 metrics", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let app: ExampleApp;
  const METRICS_TOKEN = "metrics-token-0123456789abcdef";
  before(async () => {
    chain = await startDevChain();
    app = await startExampleApp(chain, { env: { ADMIN_KEY, METRICS_TOKEN } });
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  it("C15 rate limits behind trust proxy: random X-Forwarded-For values from one client do not bypass the creation limit (30 per minute)", async () => {
    let created = 0;
    let limited = 0;
    for (let i = 0; i < 40; i++) {
      const xff = `203.0.113.${i + 1}, 198.51.100.${i + 1}`;
      const res = await fetch(`${app.url}/api/payments`, json({ serviceId: "face-comparison" }, { "x-forwarded-for": xff }));
      if (res.status === 201) created++;
      else if (res.status === 429) limited++;
      await res.arrayBuffer();
    }
    assert.equal(created, 30, `created ${created}, limited ${limited}`);
    assert.equal(limited, 10);
  });

  it("C15 forged Host: without PUBLIC_URL a forged Host or X-Forwarded-Host never reaches the 402 resource or pay.url", async () => {
    for (const headers of [{ host: "evil.example" }, { "x-forwarded-host": "evil.example", "x-forwarded-proto": "https" }] as Array<Record<string, string>>) {
      const r402 = await raw(app.url, "POST", FACE, headers, JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }));
      assert.doesNotMatch(r402.text, /evil/, `${JSON.stringify(headers)} → ${r402.status} ${r402.text.slice(0, 300)}`);
      const created = await raw(app.url, "POST", "/api/payments", headers, JSON.stringify({ serviceId: "face-comparison" }));
      assert.doesNotMatch(created.text, /evil/, `${JSON.stringify(headers)} → ${created.status}`);
      if (headers.host) {
        assert.equal(r402.status, 400);
        assert.equal(JSON.parse(r402.text).error, "invalid_host");
      }
    }
    const ok = await raw(app.url, "POST", FACE, {}, JSON.stringify({ ImageDataA: IMAGE_A, ImageDataB: IMAGE_B }));
    assert.equal(ok.status, 402, "the server's own name is answered");
  });

  it("C15 forged Host: outside the dev chain a server listening for other machines needs PUBLIC_URL or ALLOWED_HOSTS, and TRUST_PROXY=true is refused", async () => {
    const { loadConfig, ConfigurationError } = await import("../example-server/src/config.js");
    const prod = { DEVCHAIN: "off", RPC_URL: "http://127.0.0.1:8545", PAY_TO: chain.accounts.payTo.address, RELAYER_PRIVATE_KEY: chain.accounts.relayer.privateKey, HOST: "0.0.0.0" };
    assert.throws(() => loadConfig(prod), (e: unknown) => e instanceof ConfigurationError && e.problems.some((p) => /PUBLIC_URL/.test(p)));
    assert.equal(loadConfig({ ...prod, PUBLIC_URL: "https://faces.example.com" }).allowedHosts, undefined);
    assert.deepEqual(loadConfig({ ...prod, ALLOWED_HOSTS: "Faces.example.com" }).allowedHosts, ["faces.example.com"]);
    assert.throws(() => loadConfig({ ...prod, PUBLIC_URL: "https://faces.example.com", TRUST_PROXY: "true" }), (e: unknown) => e instanceof ConfigurationError && e.problems.some((p) => /TRUST_PROXY/.test(p)));
    assert.equal(loadConfig({ ...prod, PUBLIC_URL: "https://faces.example.com", TRUST_PROXY: "1" }).trustProxy, 1);
  });

  it("C16 disclosure: /metrics (revenue) needs Authorization: Bearer <METRICS_TOKEN>", async () => {
    const anonymous = await fetch(`${app.url}/metrics`);
    assert.equal(anonymous.status, 401);
    assert.doesNotMatch(await anonymous.text(), /revenue/);
    const wrong = await fetch(`${app.url}/metrics`, { headers: { authorization: "Bearer not-the-metrics-token-at-all" } });
    assert.equal(wrong.status, 401);
    const scraper = await fetch(`${app.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(scraper.status, 200);
    assert.match(await scraper.text(), /server402_revenue_atomic_total/);
  });
});

describe("issue 14: C15 unpaid payments per client (library)", function () {
  this.timeout(30_000);
  let chain: DevChain;
  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
  });

  it("C15 rate limits behind trust proxy: one client (an IPv6 /64 counts as one) cannot hold more than maxPendingPerClient unpaid payments; paying one frees a place", async () => {
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      store: new MemoryStore(),
      checker: false,
      settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey as `0x${string}` }),
      routes: { "POST /thing": { price: "$0.01", serviceId: "thing" } },
      payments: { adminKey: ADMIN_KEY, maxPendingPerClient: 3, createLimit: { max: 1000, windowMs: 60_000 } },
    });
    const lib = express().set("trust proxy", true).use(pw);
    const server = lib.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const create = (ip: string) => fetch(`${base}/api/payments`, json({ serviceId: "thing" }, { "x-forwarded-for": ip }));
    try {
      const first = [];
      for (const ip of ["2001:db8:1:2::a", "2001:db8:1:2:ffff::b", "2001:0db8:0001:0002::c"]) first.push(await create(ip));
      assert.deepEqual(first.map((r) => r.status), [201, 201, 201]);
      const fourth = await create("2001:db8:1:2::d");
      assert.equal(fourth.status, 429);
      assert.equal((await fourth.json()).error, "too_many_pending_for_client");
      assert.equal((await create("2001:db8:1:3::a")).status, 201, "another /64 is another client");
      const paid = await first[0]!.json();
      const confirm = await fetch(`${base}/api/payments/${paid.paymentId}/confirm`, json({}, { authorization: `Bearer ${ADMIN_KEY}` }));
      assert.equal(confirm.status, 200);
      assert.equal((await create("2001:db8:1:2::e")).status, 201, "a paid payment no longer counts");
    } finally {
      server.close();
    }
  });
});

describe("issue 14: C16 disclosure (library)", function () {
  this.timeout(60_000);
  let chain: DevChain;
  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
  });

  /** A paid request to a one-route app settled by `settler`: status and body text. */
  async function paidThrough(rpcUrl: string, relayerKey: `0x${string}`, payer: number): Promise<{ status: number; text: string }> {
    const pw = paywall({
      payTo: chain.accounts.payTo.address,
      network: "base-sepolia",
      store: new MemoryStore(),
      checker: false,
      settler: relayerSettler({ rpcUrl, chainId: chain.chainId, privateKey: relayerKey }),
      routes: { "GET /thing": { price: "$0.01" } },
    });
    const server = express().use(pw).get("/thing", (_req, res) => void res.json({ ok: true })).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    try {
      const header = await v1Header({ privateKey: chain.accounts.payers[payer]!.privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: 10_000n });
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/thing`, { headers: { "X-PAYMENT": header } });
      return { status: res.status, text: await res.text() };
    } finally {
      server.close();
    }
  }

  it("C16 disclosure: decoder or upstream text wrapped in a FaceError (libvips, Alibaba) reaches clients only as a plain message per code", () => {
    const vips = new FaceError("invalid_image", "image A is not a valid image: VipsJpeg: Corrupt JPEG data: premature end of data segment", { cause: new Error("VipsJpeg: Corrupt JPEG data") });
    assert.doesNotMatch(clientMessage(vips), /Vips|Corrupt/);
    assert.match(clientMessage(vips), /could not be decoded/);
    const ours = new FaceError("image_fetch_failed", "ImageURLA: the server answered HTTP 404", { cause: new FaceError("image_fetch_failed", "the server answered HTTP 404") });
    assert.equal(clientMessage(ours), ours.message, "this server's own messages pass");
  });

  it("C16 disclosure: a relayer out of gas answers 503 relayer_low_funds (issue 20) without its address or the node's \"insufficient funds for gas\"", async () => {
    const key = generatePrivateKey();
    const r = await paidThrough(chain.rpcUrl, key, 6);
    assert.equal(r.status, 503, r.text);
    assert.equal((JSON.parse(r.text) as { error?: string }).error, "relayer_low_funds", r.text);
    assert.doesNotMatch(r.text, new RegExp(privateKeyToAccount(key).address.slice(2), "i"));
    assert.doesNotMatch(r.text, /insufficient funds/i);
  });

  it("C16 disclosure: an unreachable RPC answers without naming the RPC origin", async () => {
    const r = await paidThrough("http://127.0.0.1:1/secret-path", chain.accounts.relayer.privateKey as `0x${string}`, 7);
    assert.ok(r.status === 502 || r.status === 504, `${r.status} ${r.text}`);
    assert.doesNotMatch(r.text, /127\.0\.0\.1:1|secret-path/);
  });
});
