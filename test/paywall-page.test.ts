/**
 * Issue 19.2 over HTTP: who gets the library's HTML 402 page, its header and
 * security headers, the option that turns it off or replaces it, and its
 * assets served by the middleware. (The page paying in a browser is in
 * browser.test.ts.)
 */
import assert from "node:assert/strict";
import express from "express";
import request from "supertest";
import { paywall, relayerSettler, type PaywallOptions } from "server402";

const HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

function app(extra: Partial<PaywallOptions> = {}, mount = "/") {
  const pw = paywall({
    payTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    network: "base-sepolia",
    // never reached: these requests carry no payment
    settler: relayerSettler({ rpcUrl: "http://127.0.0.1:9", chainId: 84532, privateKey: `0x${"11".repeat(32)}` }),
    checker: false,
    routes: { "GET /report": { price: "$0.01", description: "a <b>report</b>" }, "POST /thing": { price: "$0.02", description: "thing" } },
    ...extra,
  });
  const a = express();
  const r = express.Router();
  r.use(pw);
  r.get("/report", (_req, res) => res.json({ ok: true }));
  r.post("/thing", (_req, res) => res.json({ ok: true }));
  a.use(mount, r);
  return a;
}

describe("issue 19.2: the library's HTML paywall page", () => {
  it("19.2b a browser GET gets HTML 402 with the same PAYMENT-REQUIRED header as a program, a CSP without inline scripts, and escaped text", async () => {
    const server = app().listen(0, "127.0.0.1");
    const [page, json] = await Promise.all([request(server).get("/report").set("Accept", HTML), request(server).get("/report")]).finally(() => server.close());
    assert.equal(page.status, 402);
    assert.match(page.headers["content-type"], /text\/html/);
    assert.equal(json.status, 402);
    assert.match(json.headers["content-type"], /application\/json/);
    assert.equal(page.headers["payment-required"], json.headers["payment-required"]);
    assert.match(page.headers["content-security-policy"], /script-src 'self';/);
    assert.match(page.headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.equal(page.headers["cache-control"], "no-store");
    assert.ok(!/<script>/.test(page.text), "no inline script");
    assert.ok(page.text.includes("a &#60;b&#62;report&#60;/b&#62;"), "the description is escaped");
    assert.ok(page.text.includes("0.01 USDC"));
  });

  it("19.2c its script and style sheet are served by the middleware (under the mount), immutable", async () => {
    const a = app({}, "/v1");
    const page = await request(a).get("/v1/report").set("Accept", HTML);
    const srcs = [...page.text.matchAll(/(?:src|href)="(\/v1\/__server402\/[^"]+)"/g)].map((m) => m[1]!);
    assert.equal(srcs.length, 2, page.text);
    for (const src of srcs) {
      const r = await request(a).get(src);
      assert.equal(r.status, 200, src);
      assert.match(r.headers["cache-control"], /immutable/);
      assert.ok(Number(r.headers["content-length"]) > 500);
    }
    assert.equal((await request(a).get("/v1/__server402/paywall-000000000000.js")).status, 404, "unknown asset names fall through");
  });

  it("19.2d only GET by default: a POST accepting HTML still gets the JSON 402", async () => {
    const r = await request(app()).post("/thing").set("Accept", HTML).send({});
    assert.equal(r.status, 402);
    assert.match(r.headers["content-type"], /application\/json/);
  });

  it("19.2e paywallPage: false answers browsers with the JSON 402", async () => {
    const r = await request(app({ paywallPage: false })).get("/report").set("Accept", HTML);
    assert.equal(r.status, 402);
    assert.match(r.headers["content-type"], /application\/json/);
  });

  it("19.2f paywallPage.html replaces the page (string or function of the offer), keeping status, header and CSP", async () => {
    const fixed = await request(app({ paywallPage: { html: "<p>pay me</p>" } })).get("/report").set("Accept", HTML);
    assert.equal(fixed.status, 402);
    assert.equal(fixed.text, "<p>pay me</p>");
    assert.ok(fixed.headers["payment-required"]);
    const fn = await request(app({ paywallPage: { html: (ctx) => `<p>${ctx.price} to ${ctx.offer.payTo}</p><script src="${ctx.assets.script}"></script>` } }))
      .get("/report")
      .set("Accept", HTML);
    assert.match(fn.text, /^<p>0\.01 USDC to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C<\/p><script src="\/__server402\/paywall-[0-9a-f]{12}\.js">/);
    assert.match(fn.headers["content-security-policy"], /default-src 'none'/);
  });

  it("19.2g paywallPage.methods widens it, e.g. to POST", async () => {
    const r = await request(app({ paywallPage: { methods: ["GET", "POST"] } })).post("/thing").set("Accept", HTML).send({});
    assert.equal(r.status, 402);
    assert.match(r.headers["content-type"], /text\/html/);
  });
});
