/**
 * Issue 19 over HTTP: the example server's pages answer only requests that
 * prefer HTML, carry the security headers, offer the dev wallet only while
 * the embedded dev chain runs, and keep the dashboard behind the admin key.
 * (Paying through the pages is in browser.test.ts.)
 */
import assert from "node:assert/strict";
import request from "supertest";
import { startDevChain, type DevChain } from "server402/devchain";
import { startExampleApp, type ExampleApp } from "./support/example-app.js";

const HTML = "text/html,application/xhtml+xml,*/*;q=0.8";
const ADMIN_KEY = "web-pages-test-admin-key-0123456789";

describe("issue 19: the example server's pages over HTTP", function () {
  this.timeout(60_000);
  let chain: DevChain;
  let server: ExampleApp;
  let noAdmin: ExampleApp;
  before(async () => {
    chain = await startDevChain();
    server = await startExampleApp(chain, { env: { ADMIN_KEY } });
    noAdmin = await startExampleApp(chain);
  });
  after(async () => {
    await server?.close();
    await noAdmin?.close();
    await chain?.stop();
  });

  it("19.4a every page carries a CSP without inline scripts, frame-ancestors 'none', nosniff; its assets are served from the server", async () => {
    for (const path of ["/", "/services/face-comparison", "/api/tools/face-comparison", "/admin"]) {
      const r = await request(server.url).get(path).set("Accept", HTML);
      assert.match(r.headers["content-type"], /text\/html/, path);
      const csp = r.headers["content-security-policy"] ?? "";
      assert.match(csp, /script-src 'self';/, path);
      assert.doesNotMatch(csp, /unsafe-inline/, path);
      assert.match(csp, /frame-ancestors 'none'/, path);
      assert.equal(r.headers["x-content-type-options"], "nosniff");
      assert.ok(!/<script>|<script [^>]*>[^<]/.test(r.text), `${path}: no inline script`);
      for (const [, src] of r.text.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)) {
        const a = await request(server.url).get(src!);
        assert.equal(a.status, 200, src);
      }
    }
  });

  it("19.4b programs asking for JSON (or sending no Accept) get the JSON 404 at / as before", async () => {
    const root = await request(server.url).get("/").set("Accept", "application/json");
    assert.equal(root.status, 404);
    assert.equal(root.body.error, "not_found");
    const any = await request(server.url).get("/");
    assert.equal(any.status, 404);
    assert.match(any.headers["content-type"], /json/);
  });

  it("19.4c the dev wallet is offered only while the embedded dev chain runs", async () => {
    const withChain = await request(server.url).get("/").set("Accept", HTML);
    assert.match(withChain.text, /value="dev"/);
    const chainOf = server.running.app.locals.devchain;
    delete server.running.app.locals.devchain;
    try {
      const without = await request(server.url).get("/").set("Accept", HTML);
      assert.equal(without.status, 200);
      assert.doesNotMatch(without.text, /value="dev"|Dev wallet/);
      assert.match(without.text, /value="wallet"/);
    } finally {
      server.running.app.locals.devchain = chainOf;
    }
  });

  it("19.4d the dashboard: 401 sign-in form, a wrong key refused, the right key sets an HttpOnly SameSite=Strict cookie on /admin; the summary needs the cookie or the bearer key", async () => {
    const first = await request(server.url).get("/admin").set("Accept", HTML);
    assert.equal(first.status, 401);
    assert.match(first.text, /<form method="post" action="\/admin\/login">/);
    const wrong = await request(server.url).post("/admin/login").type("form").send({ key: "not-the-key-not-the-key" });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers["set-cookie"], undefined);
    const ok = await request(server.url).post("/admin/login").type("form").send({ key: ADMIN_KEY });
    assert.equal(ok.status, 303);
    const cookie = String(ok.headers["set-cookie"]);
    assert.match(cookie, /s402_admin=[A-Za-z0-9_-]{40,}/);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Path=\/admin/);
    const session = cookie.split(";")[0]!;
    assert.equal((await request(server.url).get("/admin").set("Accept", HTML).set("Cookie", session)).status, 200);
    assert.equal((await request(server.url).get("/admin/api/summary").set("Cookie", session)).status, 200);
    assert.equal((await request(server.url).get("/admin/api/summary").set("Cookie", "s402_admin=forged")).status, 401);
    assert.equal((await request(server.url).get("/admin/api/summary").set("Authorization", "Bearer wrong-wrong-wrong-wrong")).status, 401);
    const bearer = await request(server.url).get("/admin/api/summary").set("Authorization", `Bearer ${ADMIN_KEY}`);
    assert.equal(bearer.status, 200);
    for (const k of ["counters", "revenue", "ledger", "recent", "pending"]) assert.ok(k in bearer.body, k);
    await request(server.url).post("/admin/logout").set("Cookie", session);
    assert.equal((await request(server.url).get("/admin/api/summary").set("Cookie", session)).status, 401, "signed out");
  });

  it("19.4e without ADMIN_KEY the dashboard is off: a page saying how to turn it on, 404 for the summary, and no key signs in", async () => {
    const page = await request(noAdmin.url).get("/admin").set("Accept", HTML);
    assert.equal(page.status, 404);
    assert.match(page.text, /ADMIN_KEY/);
    assert.equal((await request(noAdmin.url).get("/admin/api/summary").set("Authorization", "Bearer anything-anything-anything")).status, 404);
    assert.equal((await request(noAdmin.url).post("/admin/login").type("form").send({ key: "" })).status, 401);
  });
});
