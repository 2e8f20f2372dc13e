/**
 * The pages people use: the face-comparison page at `/`, a page per service
 * (at `/services/:id` and at the service's own URL, which the catalog links
 * to), and the operator dashboard at `/admin`. Pages are answered to
 * requests that prefer HTML; everything else falls through to the JSON API.
 */
import express, { type NextFunction, type Request, type Response, type Router } from "express";
import type { PaywallMiddleware, Store } from "server402";
import { describeServices, formatUsdCents, PATHS, type ServiceDescriptor, type ServiceSpec } from "../discovery/catalog.js";
import type { Metrics } from "../observability/metrics.js";
import type { Activity } from "./activity.js";
import { adminAuth, dashboardSummary } from "./admin.js";
import { ASSETS_PATH, webAssets, type WebAssets } from "./assets.js";
import { esc, layout, pageHeaders, sendPage } from "./html.js";

export interface WebDeps {
  services: readonly ServiceSpec[];
  paywall: PaywallMiddleware;
  store: Store;
  metrics: Metrics;
  activity: Activity;
  adminKey?: string;
  /** True when the embedded dev chain runs (read per request: it is attached after the app is built). */
  devchain(req: Request): boolean;
  /** Built assets (default: built on first use). */
  assets?: WebAssets;
}

/** The request prefers HTML over JSON (a browser navigation). */
export function wantsHtml(req: Request): boolean {
  return req.accepts(["json", "html"]) === "html";
}

function money(s: ServiceDescriptor): string {
  return `$${formatUsdCents(s.pricing.amountCents)}`;
}

function facePage(s: ServiceDescriptor, dev: boolean): string {
  const side = (x: "a" | "b", label: string) => `
    <fieldset class="photo">
      <legend>${label}</legend>
      <label class="drop" id="drop-${x}" for="file-${x}">
        <canvas id="preview-${x}" width="320" height="240" aria-hidden="true"></canvas>
        <span>Choose or drop a photo</span>
      </label>
      <input type="file" id="file-${x}" accept="image/jpeg,image/png,image/bmp,image/webp" class="visually-hidden">
      <label for="url-${x}">…or paste an image URL</label>
      <input type="url" id="url-${x}" inputmode="url" placeholder="https://example.com/${x}.jpg">
    </fieldset>`;
  return `<main id="face-app" data-endpoint="${esc(s.endpoint)}" data-price="${esc(money(s))}" data-devchain="${dev ? "1" : ""}">
  <h1>Are these the same person?</h1>
  <p class="lead">Two photos in, a similarity score out. <strong>${esc(money(s))}</strong> per comparison (${esc(s.pricing.amountDecimal.replace(/\.?0+$/, ""))} USDC on ${esc(s.pricing.asset.network)}), charged only when the comparison succeeds.</p>
  <form id="compare-form" novalidate>
    <div class="photos">${side("a", "Photo A")}${side("b", "Photo B")}</div>
    <fieldset class="pay">
      <legend>Pay with</legend>
      <label class="choice"><input type="radio" name="pay" value="wallet" checked> Browser wallet (EIP-1193)</label>
      <label class="choice"><input type="radio" name="pay" value="token"> Prepaid token</label>
      ${dev ? `<label class="choice dev"><input type="radio" name="pay" value="dev"> Dev wallet — embedded dev chain only: a public anvil test key, test USDC, worthless</label>` : ""}
      <div id="token-box" hidden>
        <label for="token">Payment token</label>
        <input id="token" autocomplete="off" spellcheck="false" placeholder="s402_…">
        <p class="hint">Buy one with <code>POST ${esc(PATHS.payments)}</code> (see the <a href="/services/${esc(s.id)}">API page</a>).</p>
      </div>
    </fieldset>
    <button type="submit" id="compare">Pay ${esc(money(s))} and compare</button>
  </form>
  <p id="status" role="status" aria-live="polite"></p>
  <section id="result" hidden aria-labelledby="result-h">
    <h2 id="result-h">Result</h2>
    <div class="photos">
      <figure><canvas id="out-a" width="320" height="240" role="img" aria-label="Photo A with the detected face"></canvas><figcaption id="cap-a"></figcaption></figure>
      <figure><canvas id="out-b" width="320" height="240" role="img" aria-label="Photo B with the detected face"></canvas><figcaption id="cap-b"></figcaption></figure>
    </div>
    <p id="verdict" class="verdict"></p>
    <div class="gauge" id="gauge" role="meter" aria-valuemin="0" aria-valuemax="100" aria-label="Confidence">
      <div class="fill" id="gauge-fill"></div>
    </div>
    <dl class="facts">
      <dt>Confidence</dt><dd id="confidence"></dd>
      <dt>Thresholds</dt><dd id="thresholds"></dd>
      <dt>Quality</dt><dd id="quality"></dd>
      <dt>Request id</dt><dd><code id="request-id"></code></dd>
      <dt>Paid by</dt><dd id="paid-by"></dd>
      <dt>Settlement transaction</dt><dd><code id="tx"></code></dd>
    </dl>
  </section>
</main>`;
}

function schemaRows(schema: Record<string, unknown>): string {
  const props = (schema.properties ?? {}) as Record<string, { type?: string; description?: string }>;
  return Object.entries(props)
    .map(([k, v]) => `<tr><th scope="row"><code>${esc(k)}</code></th><td>${esc(v.type ?? "")}</td><td>${esc(v.description ?? "")}</td></tr>`)
    .join("");
}

function servicePage(s: ServiceDescriptor): string {
  const body = JSON.stringify(s.exampleRequest);
  return `<main class="doc">
  <h1>${esc(s.name)}</h1>
  <p class="lead">${esc(s.description)}</p>
  <p><a class="button" href="/">Try it in the browser</a></p>
  <h2>Price</h2>
  <p><strong>${esc(money(s))}</strong> per call: ${esc(s.pricing.amount)} atomic units of ${esc(s.pricing.asset.name)} (<code>${esc(s.pricing.asset.address)}</code>) on ${esc(s.pricing.asset.network)}, paid to <code>${esc(s.pricing.payTo)}</code>.
  Settled ${s.pricing.settlement === "after" ? "after the call succeeds; a failed call costs nothing" : "before the work starts"}.</p>
  <h2>Request</h2>
  <p><code>${esc(s.method)} ${esc(s.url)}</code> with a JSON body:</p>
  <table><thead><tr><th scope="col">Key</th><th scope="col">Type</th><th scope="col">Meaning</th></tr></thead><tbody>${schemaRows(s.inputSchema)}</tbody></table>
  <h2>How to pay</h2>
  <ul>
    <li><strong>x402</strong> (v1 <code>X-PAYMENT</code> or v2 <code>PAYMENT-SIGNATURE</code>): call without payment, read the 402 answer's <code>PAYMENT-REQUIRED</code> header (or its JSON body), sign the EIP-3009 transfer it describes, and repeat the call with the header. Any x402 client library does this for you.</li>
    <li><strong>Prepaid token</strong>: <code>POST ${esc(PATHS.payments)}</code> with <code>{"serviceId":"${esc(s.id)}"}</code>, pay the payment object once with x402, then send <code>X-Payment-Token</code>; each token buys ${esc(s.pricing.maxCalls)} call(s).</li>
    <li><strong>MCP</strong>: tool <code>${esc(s.mcpToolName)}</code> at <code>${esc(s.mcp.endpoint)}</code>.</li>
  </ul>
  <h2>Example</h2>
  <pre><code>curl -X ${esc(s.method)} ${esc(s.url)} \\
  -H 'Content-Type: application/json' \\
  -H 'X-Payment-Token: s402_…' \\
  -d '${esc(body)}'</code></pre>
  <p>Answer:</p>
  <pre><code>${esc(JSON.stringify(s.exampleResponse, null, 2))}</code></pre>
  <p>Machine-readable: <a href="${esc(s.links.self)}">catalog entry</a> · <a href="${esc(s.links.openapi)}">OpenAPI</a> · <a href="${esc(s.links.llms)}">llms.txt</a></p>
</main>`;
}

function loginPage(message?: string): string {
  return `<main class="narrow">
  <h1>Operator sign-in</h1>
  ${message ? `<p class="error" role="alert">${esc(message)}</p>` : ""}
  <form method="post" action="/admin/login">
    <label for="key">Admin key</label>
    <input id="key" name="key" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
  </form>
</main>`;
}

function dashboardPage(): string {
  const counter = (id: string, label: string) => `<div class="counter"><span class="value" id="c-${id}">–</span><span class="label">${label}</span></div>`;
  return `<main id="admin-app" class="wide">
  <div class="titlebar"><h1>Operator dashboard</h1><form method="post" action="/admin/logout"><button type="submit" class="secondary">Sign out</button></form></div>
  <p id="updated" class="hint" role="status" aria-live="polite"></p>
  <section aria-labelledby="counters-h"><h2 id="counters-h">Live counters</h2>
    <div class="counters">${counter("revenue", "revenue settled on chain (USDC)")}${counter("settled", "payments settled")}${counter("verified", "payments verified")}${counter("failed", "payments failed")}${counter("required", "402s served")}</div>
  </section>
  <section aria-labelledby="chart-h"><h2 id="chart-h">Revenue</h2>
    <div class="toolbar" role="group" aria-label="Bucket size"><button type="button" id="by-hour" aria-pressed="true">Per hour</button><button type="button" id="by-day" aria-pressed="false">Per day</button></div>
    <p id="totals"></p>
    <div id="chart"></div>
  </section>
  <section aria-labelledby="recent-h"><h2 id="recent-h">Recent payments</h2>
    <div class="scroll"><table id="recent"><thead><tr><th scope="col">Time</th><th scope="col">Method</th><th scope="col">Status</th><th scope="col">Amount</th><th scope="col">Resource</th><th scope="col">Reason</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section aria-labelledby="pending-h"><h2 id="pending-h">Pending settlements</h2><p id="pending"></p>
    <div class="scroll"><table id="pending-list"><thead><tr><th scope="col">Time</th><th scope="col">Resource</th><th scope="col">Reason</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section aria-labelledby="ledger-h"><h2 id="ledger-h">Ledger</h2>
    <div class="scroll"><table id="ledger"><thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Amount</th><th scope="col">Payer</th><th scope="col">Transaction</th><th scope="col">Resource</th></tr></thead><tbody></tbody></table></div>
  </section>
</main>`;
}

/** Build the pages' router. */
export function webRouter(deps: WebDeps): Router {
  const router = express.Router();
  const assets = deps.assets ?? webAssets();
  const auth = adminAuth(deps.adminKey);
  const catalog = (req: Request) => describeServices(deps.services, deps.paywall, deps.paywall.origin(req));
  const page = async (res: Response, status: number, title: string, body: string, nav: "home" | "service" | "admin", script?: "face" | "admin") => {
    const e = await assets.entries();
    const styles = [`${ASSETS_PATH}${e.style}`, ...(script === "admin" ? [`${ASSETS_PATH}${e.uplot}`] : [])];
    sendPage(res, status, layout({ title, body, nav, styles, script: script ? `${ASSETS_PATH}${e[script]}` : undefined }));
  };
  const html = (fn: (req: Request, res: Response) => Promise<void>) => async (req: Request, res: Response, next: NextFunction) => {
    if (!wantsHtml(req)) return next();
    try {
      await fn(req, res);
    } catch (err) {
      next(err);
    }
  };

  router.get(`${ASSETS_PATH}:file`, assets.handler);

  router.get(
    "/",
    html(async (req, res) => {
      const s = catalog(req)[0]!;
      await page(res, 200, `${s.name} — server402 example`, facePage(s, deps.devchain(req)), "home", "face");
    }),
  );

  const serviceHandler = html(async (req, res) => {
    const all = catalog(req);
    const id = req.params.id === undefined ? undefined : String(req.params.id);
    const s = id === undefined ? all.find((x) => x.endpoint === req.path || x.legacyEndpoints.includes(req.path)) : all.find((x) => x.id === id || x.aliases.includes(id));
    if (!s) return page(res, 404, "Not found", `<main class="narrow"><h1>No such service</h1><p><a href="/">Back</a></p></main>`, "service");
    await page(res, 200, `${s.name} API — server402 example`, servicePage(s), "service");
  });
  router.get("/services/:id", serviceHandler);
  for (const s of deps.services) router.get([s.endpoint, ...s.legacyEndpoints], serviceHandler);

  router.get(
    "/admin",
    html(async (req, res) => {
      if (!auth.enabled) {
        return page(res, 404, "Dashboard disabled", `<main class="narrow"><h1>Dashboard disabled</h1><p>Set <code>ADMIN_KEY</code> (16+ characters) to turn on the operator dashboard.</p></main>`, "admin");
      }
      if (!auth.allowed(req)) return page(res, 401, "Operator sign-in", loginPage(), "admin");
      await page(res, 200, "Operator dashboard — server402 example", dashboardPage(), "admin", "admin");
    }),
  );
  router.post("/admin/login", express.urlencoded({ extended: false, limit: "4kb", parameterLimit: 5 }), async (req, res, next) => {
    try {
      const key = typeof req.body?.key === "string" ? req.body.key : "";
      if (!auth.enabled || !auth.check(key)) return await page(res, 401, "Operator sign-in", loginPage(auth.enabled ? "That key is wrong." : "The dashboard is disabled: set ADMIN_KEY."), "admin");
      auth.login(res, req.secure);
      pageHeaders(res);
      res.redirect(303, "/admin");
    } catch (err) {
      next(err);
    }
  });
  router.post("/admin/logout", (req, res) => {
    auth.logout(req, res);
    pageHeaders(res);
    res.redirect(303, "/admin");
  });
  router.get("/admin/api/summary", async (req, res, next) => {
    res.set("Cache-Control", "no-store");
    if (!auth.allowed(req)) {
      return void res.status(auth.enabled ? 401 : 404).json({ error: auth.enabled ? "unauthorized" : "not_found", message: auth.enabled ? "sign in at /admin or send Authorization: Bearer <admin key>." : "the dashboard is disabled: set ADMIN_KEY." });
    }
    try {
      res.json(await dashboardSummary(deps));
    } catch (err) {
      next(err);
    }
  });
  return router;
}
