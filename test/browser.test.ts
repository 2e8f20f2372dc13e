/**
 * Issue 19, in a real browser (Debian's chromium via playwright-core): the
 * face-comparison page pays on the dev chain with the dev wallet, with an
 * injected EIP-1193 wallet and with a prepaid token; the library's paywall
 * page unlocks a paid GET route; the operator dashboard signs in and shows
 * the payments, the ledger and a chart point. Screenshots go to
 * test-artifacts/browser/.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { startDevChain, type DevChain } from "server402/devchain";
import { startExampleApp, type ExampleApp } from "./support/example-app.js";
import { startPaidApp, type PaidApp } from "./support/paid-app.js";
import { ARTIFACTS, CHROMIUM, injectWallet, launchBrowser, type TestBrowser } from "./support/browser.js";
import { v2Header } from "./support/sign.js";

const ADMIN_KEY = "browser-test-admin-key-0123456789";
const PRICE = 200_000n;
const FACE_A = new URL("./fixtures/faces/grace_hopper.jpg", import.meta.url).pathname;
const FACE_B = new URL("./fixtures/faces/camera.png", import.meta.url).pathname;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Pick both photos, choose how to pay, press the button, wait for the result. */
async function compareOnPage(page: Page, pay: "dev" | "wallet" | "token", token?: string): Promise<void> {
  await page.setInputFiles("#file-a", FACE_A);
  await page.setInputFiles("#file-b", FACE_B);
  await page.check(`input[name=pay][value=${pay}]`);
  if (token) await page.fill("#token", token);
  await page.click("#compare");
  await page.waitForSelector("#result:not([hidden])", { timeout: 30_000 }).catch(async (err) => {
    throw new Error(`no result; the page says: ${await page.textContent("#status")}`, { cause: err });
  });
}

/** The result as a person reads it, and whether a face box was drawn (the box colour is on the canvas). */
async function readResult(page: Page) {
  return page.evaluate(`(() => {
    const text = (id) => document.getElementById(id).textContent ?? "";
    const boxed = (id) => {
      const c = document.getElementById(id);
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let green = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 40 && d[i + 1] > 200 && d[i + 2] > 90 && d[i + 2] < 150) green++;
      return green;
    };
    return {
      verdict: text("verdict"),
      confidence: text("confidence"),
      thresholds: text("thresholds"),
      quality: text("quality"),
      requestId: text("request-id"),
      tx: text("tx"),
      ticks: document.querySelectorAll("#gauge .tick").length,
      boxPixelsA: boxed("out-a"),
      boxPixelsB: boxed("out-b"),
    };
  })()`) as Promise<{ verdict: string; confidence: string; thresholds: string; quality: string; requestId: string; tx: string; ticks: number; boxPixelsA: number; boxPixelsB: number }>;
}

describe("issue 19: people in a browser (chromium)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let server: ExampleApp;
  let browser: TestBrowser;
  const settledTx: string[] = [];

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      // CI installs it (.ci/run) and must run these tests; elsewhere say how to get them and skip.
      if (process.env.CI) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`);
      console.log(`    browser tests skipped: ${CHROMIUM} is missing (apt-get install -y chromium to run them)`);
      return this.skip();
    }
    chain = await startDevChain();
    server = await startExampleApp(chain, { env: { ADMIN_KEY } });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await chain?.stop();
  });

  it("19.1a face page, dev wallet: pays on the dev chain and shows boxes, Confidence against the Thresholds, quality, request id, transaction", async () => {
    const page = await browser.context.newPage();
    const payTo = server.running.payTo as `0x${string}`;
    const before = await chain.balanceOf(payTo);
    const res = await page.goto(server.url + "/");
    assert.equal(res?.status(), 200);
    const csp = res!.headers()["content-security-policy"] ?? "";
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(await page.textContent(".choice.dev") ?? "", /dev chain only/i);
    await compareOnPage(page, "dev");
    const r = await readResult(page);
    await shot(page, "face-dev-wallet");
    assert.match(r.confidence, /^\d+\.\d\d \/ 100$/);
    assert.match(r.thresholds, /FAR 1e-3/);
    assert.match(r.verdict, /person/);
    assert.equal(r.ticks, 3);
    assert.match(r.quality, /^A \d/);
    assert.ok(r.requestId.length > 8, r.requestId);
    assert.match(r.tx, /^0x[0-9a-f]{64}$/);
    assert.ok(r.boxPixelsA > 100 && r.boxPixelsB > 100, `face boxes drawn: ${r.boxPixelsA}, ${r.boxPixelsB}`);
    assert.equal((await chain.balanceOf(payTo)) - before, PRICE, "the payee got exactly the price");
    settledTx.push(r.tx);
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, "face-dev-wallet-phone");
    await page.close();
  });

  it("19.1b face page, injected EIP-1193 wallet: switches chain, signs typed data, pays", async () => {
    const page = await browser.context.newPage();
    const payer = chain.accounts.payers[3]!;
    const wallet = await injectWallet(page, payer.privateKey, 1);
    const payTo = server.running.payTo as `0x${string}`;
    const [payeeBefore, payerBefore] = [await chain.balanceOf(payTo), await chain.balanceOf(payer.address)];
    await page.goto(server.url + "/");
    await compareOnPage(page, "wallet");
    const r = await readResult(page);
    await shot(page, "face-injected-wallet");
    assert.equal(wallet.switchedTo, chain.chainId, "the page asked the wallet to switch to the route's chain");
    assert.ok(wallet.methods.includes("eth_signTypedData_v4"), wallet.methods.join(","));
    assert.match(r.tx, /^0x[0-9a-f]{64}$/);
    assert.match(await page.textContent("#paid-by") ?? "", new RegExp(payer.address, "i"));
    assert.equal((await chain.balanceOf(payTo)) - payeeBefore, PRICE);
    assert.equal(payerBefore - (await chain.balanceOf(payer.address)), PRICE);
    settledTx.push(r.tx);
    await page.close();
  });

  it("19.1c face page, prepaid token pasted in: compares without a wallet", async () => {
    const payer = chain.accounts.payers[4]!;
    const payTo = server.running.payTo as `0x${string}`;
    const created = await fetch(`${server.url}/api/payments`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ serviceId: "face-comparison" }) });
    const { token, paymentId } = (await created.json()) as { token: string; paymentId: string };
    const paid = await fetch(`${server.url}/api/payments/${paymentId}/pay`, {
      method: "POST",
      headers: { "payment-signature": await v2Header({ privateKey: payer.privateKey, asset: chain.usdc, payTo, value: PRICE }) },
    });
    assert.equal(paid.status, 200, await paid.text());
    const page = await browser.context.newPage();
    await page.goto(server.url + "/");
    await compareOnPage(page, "token", token);
    const r = await readResult(page);
    assert.match(r.tx, /prepaid token/);
    assert.match(r.confidence, /\/ 100/);
    await page.close();
  });

  it("19.1d the catalog's link opens a page about the service (price, inputs, how to pay, curl)", async () => {
    const catalog = (await (await fetch(`${server.url}/api/services`)).json()) as { services: { url: string }[] };
    const page = await browser.context.newPage();
    const res = await page.goto(catalog.services[0]!.url);
    assert.equal(res?.status(), 200);
    const text = (await page.textContent("main")) ?? "";
    for (const want of ["$0.20", "ImageURLA", "X-Payment-Token", "PAYMENT-SIGNATURE", "curl -X POST"]) assert.ok(text.includes(want), `service page mentions ${want}`);
    await shot(page, "service-page");
    const json = await fetch(catalog.services[0]!.url, { headers: { accept: "application/json" } });
    assert.equal(json.status, 404, "programs asking for JSON still get the JSON answer");
    await page.close();
  });

  it("19.3 dashboard: login sets an HttpOnly SameSite=Strict cookie; shows the payments, ledger tx hashes, a chart point, counters", async () => {
    const page = await browser.context.newPage();
    let res = await page.goto(server.url + "/admin");
    assert.equal(res?.status(), 401);
    await page.fill("#key", "wrong-wrong-wrong-wrong");
    await page.click("button[type=submit]");
    assert.match((await page.textContent("[role=alert]")) ?? "", /wrong/);
    await page.fill("#key", ADMIN_KEY);
    [res] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    assert.equal(res?.status(), 200);
    const cookie = (await browser.context.cookies(`${server.url}/admin`)).find((c) => c.name === "s402_admin");
    assert.ok(cookie, "session cookie set");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, "Strict");
    await page.waitForFunction(`document.querySelectorAll("#ledger tbody tr td.tx").length > 0`);
    const ledgerText = (await page.textContent("#ledger")) ?? "";
    for (const tx of settledTx) assert.ok(ledgerText.includes(tx), `ledger shows ${tx}`);
    assert.match((await page.textContent("#recent")) ?? "", /settled/);
    const points = Number(await page.getAttribute("#chart", "data-points"));
    assert.ok(points >= 1, `the chart has a point (${points})`);
    assert.ok(await page.$("#chart canvas"), "uPlot drew its canvas");
    assert.ok(Number(await page.textContent("#c-settled")) >= 3, "live counter of settled payments");
    assert.match((await page.textContent("#totals")) ?? "", /\$0\.40 from x402 calls, \$0\.20 from prepaid/);
    await shot(page, "admin-dashboard");
    await page.click("#by-day");
    assert.ok(Number(await page.getAttribute("#chart", "data-points")) >= 1);
    const bearer = await fetch(`${server.url}/admin/api/summary`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(bearer.status, 200);
    assert.equal((await fetch(`${server.url}/admin/api/summary`)).status, 401);
    await page.click("text=Sign out");
    assert.equal((await page.goto(server.url + "/admin"))?.status(), 401);
    await page.close();
  });

  describe("19.2 the library's paywall page", () => {
    let paid: PaidApp;
    before(async () => {
      paid = await startPaidApp(chain);
    });
    after(async () => paid?.close());

    it("19.2a a browser GET of a paid route gets the HTML 402 page with the same PAYMENT-REQUIRED header, and unlocks the content after paying", async () => {
      const page = await browser.context.newPage();
      const payer = chain.accounts.payers[5]!;
      await injectWallet(page, payer.privateKey, 1);
      const payTo = chain.accounts.payTo.address;
      const before = await chain.balanceOf(payTo);
      const res = await page.goto(`${paid.url}/weather`);
      assert.equal(res?.status(), 402);
      const headers = res!.headers();
      assert.match(headers["content-type"] ?? "", /text\/html/);
      const jsonAnswer = await fetch(`${paid.url}/weather`);
      assert.equal(jsonAnswer.status, 402);
      assert.equal(headers["payment-required"], jsonAnswer.headers.get("payment-required"), "the same PAYMENT-REQUIRED header");
      assert.match(headers["content-security-policy"] ?? "", /script-src 'self'/);
      await shot(page, "paywall-page");
      await page.click("#x402-pay");
      await page.waitForSelector("#x402-result:not([hidden])", { timeout: 30_000 }).catch(async (err) => {
        throw new Error(`not unlocked; the page says: ${await page.textContent("#x402-status")}`, { cause: err });
      });
      assert.match((await page.textContent("#x402-content")) ?? "", /"weather": "sunny"/);
      assert.match((await page.textContent("#x402-receipt")) ?? "", /Transaction 0x[0-9a-f]{64}/);
      assert.ok(await page.getAttribute("#x402-download", "href"), "the answer can be downloaded");
      assert.equal((await chain.balanceOf(payTo)) - before, 10_000n, "the payee got exactly the price ($0.01)");
      await shot(page, "paywall-page-unlocked");
      await page.close();
    });
  });
});
