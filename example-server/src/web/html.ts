/**
 * Server-rendered HTML for the example server's pages: escaping, the shared
 * layout, and the security headers every page carries (a CSP without inline
 * scripts or styles, no framing).
 */
import type { Response } from "express";

/** Content-Security-Policy of every page. Photos given by URL may come from any https/http host. */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; connect-src 'self'; " +
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** Escape text for element content and double-quoted attribute values. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Set the security headers of a page. */
export function pageHeaders(res: Response): void {
  res.set({
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    Vary: "Accept",
  });
}

/** A whole page around `body`. */
export function layout(opts: { title: string; body: string; styles: string[]; script?: string; nav?: "home" | "service" | "admin" }): string {
  const link = (href: string, label: string, here: boolean) => `<a href="${href}"${here ? ' aria-current="page"' : ""}>${label}</a>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(opts.title)}</title>
${opts.styles.map((s) => `<link rel="stylesheet" href="${esc(s)}">`).join("\n")}
${opts.script ? `<script type="module" src="${esc(opts.script)}"></script>` : ""}
</head>
<body>
<header class="site"><nav aria-label="Site">${link("/", "Face comparison", opts.nav === "home")}${link("/services/face-comparison", "API", opts.nav === "service")}${link("/admin", "Operator", opts.nav === "admin")}</nav></header>
${opts.body}
<footer class="site"><p>Paid per call with <a href="/openapi.json">x402</a> or a prepaid token · <a href="/api/services">catalog</a> · <a href="/llms.txt">llms.txt</a></p></footer>
</body>
</html>
`;
}

/** Send a page. */
export function sendPage(res: Response, status: number, html: string): void {
  pageHeaders(res);
  res.status(status).type("text/html; charset=utf-8").send(html);
}
