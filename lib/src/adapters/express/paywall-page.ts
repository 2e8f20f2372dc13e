/**
 * The HTML 402 page for people in a browser: a request to a paid route that
 * accepts `text/html` and carries no payment gets this page (status 402, the
 * same `PAYMENT-REQUIRED` header as the JSON answer), where a person connects
 * an EIP-1193 wallet (or pastes a prepaid token), pays, and sees or downloads
 * the paid answer. Its script and style sheet are files of this package,
 * served by the paywall middleware itself (no CDN); the page runs under a CSP
 * without inline scripts.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { NextFunction, Request, Response } from "express";
import { formatUnitsExact } from "../../protocol/price.js";
import { NO_PAYMENT, type Offer } from "../../protocol/requirements.js";
import { HEADER } from "../../protocol/types.js";
import type { ResolvedRoute } from "../../core/options.js";
import { getTypesForEIP712Domain } from "viem";
import { TRANSFER_WITH_AUTHORIZATION_TYPES } from "../../protocol/verify.js";

/** What a custom page is rendered from. */
export interface PaywallPageContext {
  /** The route's offer (network, asset, amount, payTo, resource, description). */
  offer: Offer;
  /** The `PAYMENT-REQUIRED` header value (base64 JSON), also sent as the header. */
  paymentRequired: string;
  /** The v1 JSON body a non-browser client gets (with `prepaid` when tokens are accepted). */
  body: Record<string, unknown>;
  /** The price for people, e.g. "0.01 USDC". */
  price: string;
  /** URLs of the package's page script and style sheet, for a custom page that reuses them. */
  assets: { script: string; style: string };
}

/** Options of the HTML paywall page. */
export interface PaywallPageOptions {
  /** Your own page instead of the package's: HTML, or a function of the context. Served with status 402 and the same header. */
  html?: string | ((ctx: PaywallPageContext) => string);
  /** Methods answered with the page. Default ["GET"] (a browser navigation is a GET). */
  methods?: readonly string[];
  /** Mount-relative path prefix of the page's assets. Default "/__server402/". */
  assetsPath?: string;
}

/** The `paywallPage` option of `paywall()` and `requirePayment()`. */
export interface PaywallPageSetting {
  /** The HTML 402 page for browsers (`Accept: text/html`); on by default for GET routes, `false` turns it off. */
  paywallPage?: boolean | PaywallPageOptions;
}

/** @internal What the paywall middleware gives the page. */
export interface PaywallPageDeps {
  offerFor(route: ResolvedRoute<Request>, resource: string, req?: Request): Promise<Offer>;
  paymentRequired(offer: Offer, route: ResolvedRoute<Request>, error: string, base: string): { body: Record<string, unknown>; header: string };
  /** Record a 402 served (metrics). */
  served(resource: string): void;
}

/** @internal The page as the middleware uses it. */
export interface PaywallPage {
  /** Serve one of the page's assets when `path` (mount-relative) names one; true when it did. */
  asset(req: Request, res: Response, method: string, path: string): boolean;
  /** True when this unpaid request should get the page instead of the JSON 402. */
  wants(method: string, headers: Request["headers"]): boolean;
  /** Answer 402 with the page. */
  send(req: Request, res: Response, next: NextFunction, route: ResolvedRoute<Request>, resource: string, base: string): Promise<void>;
}

/** Content-Security-Policy of the page: no inline script, nothing from elsewhere, no framing. */
export const PAYWALL_PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; " +
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

interface Asset {
  file: string;
  body: Buffer;
  type: string;
}

let loaded: { script: Asset; style: Asset } | undefined;

/**
 * The page's files, read once. They live in `src/` (shipped with the package)
 * and are found from here both when running from `src/` and from `dist/`:
 * each is three levels below the package root.
 */
function assets(): { script: Asset; style: Asset } {
  if (loaded) return loaded;
  const read = (name: string, ext: string, type: string): Asset => {
    const body = readFileSync(new URL(`../../../src/adapters/express/paywall-page/${name}`, import.meta.url));
    const hash = createHash("sha256").update(body).digest("hex").slice(0, 12);
    return { file: `paywall-${hash}.${ext}`, body, type };
  };
  loaded = { script: read("client.js", "js", "text/javascript; charset=utf-8"), style: read("page.css", "css", "text/css; charset=utf-8") };
  return loaded;
}

/** Escape text for HTML element content and double-quoted attributes. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** @internal Build the page for a paywall's options; undefined when turned off. */
export function createPaywallPage(setting: PaywallPageSetting["paywallPage"], deps: PaywallPageDeps): PaywallPage | undefined {
  if (setting === false) return undefined;
  const opts: PaywallPageOptions = typeof setting === "object" && setting !== null ? setting : {};
  const methods = new Set((opts.methods ?? ["GET"]).map((m) => m.toUpperCase()));
  const prefix = opts.assetsPath ?? "/__server402/";
  const files = assets();

  function asset(req: Request, res: Response, method: string, path: string): boolean {
    if (!path.startsWith(prefix) || (method !== "GET" && method !== "HEAD")) return false;
    const name = path.slice(prefix.length);
    const a = name === files.script.file ? files.script : name === files.style.file ? files.style : undefined;
    if (!a) return false;
    res.statusCode = 200;
    res.setHeader("Content-Type", a.type);
    res.setHeader("Content-Length", a.body.length);
    res.setHeader("Cache-Control", "public, max-age=31536000, immutable");
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.end(req.method === "HEAD" ? undefined : a.body);
    return true;
  }

  function wants(method: string, headers: Request["headers"]): boolean {
    if (!methods.has(method)) return false;
    const accept = headers.accept;
    return typeof accept === "string" && accept.includes("text/html");
  }

  async function send(req: Request, res: Response, next: NextFunction, route: ResolvedRoute<Request>, resource: string, base: string): Promise<void> {
    let offer: Offer;
    try {
      offer = await deps.offerFor(route, resource, req);
    } catch (err) {
      return next(err);
    }
    const { body, header } = deps.paymentRequired(offer, route, NO_PAYMENT, base);
    const mount = req.baseUrl ?? "";
    const ctx: PaywallPageContext = {
      offer,
      paymentRequired: header,
      body,
      price: `${trimZeros(formatUnitsExact(offer.amount, offer.asset.decimals))} ${offer.asset.eip712Name}`,
      assets: { script: `${mount}${prefix}${files.script.file}`, style: `${mount}${prefix}${files.style.file}` },
    };
    let html: string;
    try {
      html = typeof opts.html === "function" ? opts.html(ctx) : (opts.html ?? defaultPage(ctx, req.originalUrl));
    } catch (err) {
      return next(err);
    }
    deps.served(offer.resource);
    res.statusCode = 402;
    res.setHeader("Content-Type", "text/html; charset=utf-8");
    res.setHeader("Cache-Control", "no-store");
    res.setHeader(HEADER.v2Required, header);
    res.setHeader("Content-Security-Policy", PAYWALL_PAGE_CSP);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("Referrer-Policy", "no-referrer");
    res.setHeader("Vary", "Accept");
    res.end(html);
  }

  return { asset, wants, send };
}

/** The EIP-712 types the page's script signs with (the domain's fields, then the transfer's). */
function typedTypes(offer: Offer) {
  const domain = { name: offer.asset.eip712Name, version: offer.asset.eip712Version, chainId: offer.network.chainId, verifyingContract: offer.asset.address as `0x${string}` };
  return { EIP712Domain: getTypesForEIP712Domain({ domain }), ...TRANSFER_WITH_AUTHORIZATION_TYPES };
}

/** "0.010000" → "0.01"; "5.000000" → "5". */
function trimZeros(decimal: string): string {
  return decimal.includes(".") ? decimal.replace(/0+$/, "").replace(/\.$/, "") : decimal;
}

/** The package's page: what is sold, the price, the networks, the wallet and token controls; the script does the rest. */
function defaultPage(ctx: PaywallPageContext, currentUrl: string): string {
  const { offer } = ctx;
  const title = offer.description || "Payment required";
  const prepaid = ctx.body.prepaid !== undefined;
  const network = offer.network.v1Name ? `${offer.network.v1Name} (${offer.network.caip2})` : offer.network.caip2;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Payment required: ${escapeHtml(title)}</title>
<link rel="stylesheet" href="${escapeHtml(ctx.assets.style)}">
<script type="module" src="${escapeHtml(ctx.assets.script)}"></script>
</head>
<body>
<main id="x402-paywall" data-payment-required="${escapeHtml(ctx.paymentRequired)}" data-url="${escapeHtml(currentUrl)}" data-prepaid="${prepaid ? "1" : ""}" data-typed-types="${escapeHtml(JSON.stringify(typedTypes(offer)))}">
  <h1>Payment required</h1>
  <p class="what">${escapeHtml(title)}</p>
  <p class="price"><span class="amount">${escapeHtml(ctx.price)}</span> per request</p>
  <dl class="terms">
    <dt>Network</dt><dd>${escapeHtml(network)}</dd>
    <dt>Pay to</dt><dd><code>${escapeHtml(offer.payTo)}</code></dd>
    <dt>Resource</dt><dd><code>${escapeHtml(offer.resource)}</code></dd>
  </dl>
  <section aria-labelledby="wallet-h">
    <h2 id="wallet-h">Pay with a browser wallet</h2>
    <label for="x402-option">Pay on</label>
    <select id="x402-option"></select>
    <button type="button" id="x402-pay">Connect wallet and pay</button>
  </section>
  ${
    prepaid
      ? `<section aria-labelledby="token-h">
    <h2 id="token-h">Or use a prepaid token</h2>
    <form id="x402-token-form">
      <label for="x402-token">Payment token</label>
      <input id="x402-token" name="token" autocomplete="off" spellcheck="false" required>
      <button type="submit">Use token</button>
    </form>
  </section>`
      : ""
  }
  <p id="x402-status" role="status" aria-live="polite"></p>
  <section id="x402-result" hidden aria-labelledby="result-h">
    <h2 id="result-h">Your answer</h2>
    <p id="x402-receipt"></p>
    <div id="x402-content"></div>
    <p><a id="x402-download" download>Download</a></p>
  </section>
  <noscript><p>This page needs JavaScript to pay. Programs can pay with x402: the <code>PAYMENT-REQUIRED</code> header of this answer says how.</p></noscript>
</main>
</body>
</html>
`;
}
