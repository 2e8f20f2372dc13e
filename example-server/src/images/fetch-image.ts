/**
 * SSRF-hardened download of client-supplied image URLs (`ImageURLA/B`).
 *
 * Every hop (the first request and each redirect) goes through the same gate:
 * scheme http/https only, no credentials in the URL, no browser-"bad" port,
 * the host resolved here (never by the HTTP client) and refused if ANY of its
 * addresses is non-public (see ./address-policy.ts). The connection is then
 * opened to the vetted IP address itself — with the Host header and TLS SNI /
 * certificate name taken from the URL — so DNS is consulted exactly once per
 * hop and there is no rebinding window between check and connect.
 *
 * No proxy environment variables are honoured: requests use a private agent
 * and connect directly.
 */
import http from "node:http";
import https from "node:https";
import { lookup as dnsLookup } from "node:dns/promises";
import { isIP, type LookupFunction as NetLookupFunction } from "node:net";
import { FaceError } from "../engine/types.js";
import { addressKey, classifyAddress } from "./address-policy.js";
import { DEFAULT_MAX_IMAGE_PIXELS, IMAGE_MIME, sniffImageFormat, type ImageFormat } from "./image-format.js";
import { checkImagePixels, DEFAULT_MAX_IMAGE_BYTES } from "./image-data.js";

/** Default overall deadline of one {@link fetchImage} call (DNS, all redirects and the body): 10 s. */
export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
/** Default number of redirects followed (so at most 4 requests). */
export const DEFAULT_MAX_REDIRECTS = 3;
/** Longest image URL accepted, in characters. */
export const MAX_IMAGE_URL_LENGTH = 4096;

/** One address answered by a {@link ResolveHost} function. */
export interface ResolvedAddress {
  /** IP address literal (no brackets). */
  address: string;
  /** 4 or 6; derived from `address` when omitted. */
  family?: number;
}

/**
 * Resolves a host name to ALL its addresses. The default uses the system
 * resolver (`dns.lookup` with `all: true`); tests inject their own.
 */
export type ResolveHost = (hostname: string) => Promise<readonly ResolvedAddress[]>;

/** Options of {@link fetchImage}. */
export interface FetchImageOptions {
  /** Largest accepted body in bytes (default 5 MB); enforced on Content-Length and while streaming. */
  maxBytes?: number;
  /** Largest accepted pixel count, read from the image header before decoding (default 4096 × 4096). */
  maxPixels?: number;
  /** Overall deadline in ms across DNS, redirects and body (default 10 000). */
  timeoutMs?: number;
  /** Redirects followed before giving up (default 3). */
  maxRedirects?: number;
  /**
   * Host names or IP literals (e.g. "127.0.0.1", "::1", "img.test") exempt from
   * the non-public-address rule. A host name entry exempts every address it
   * resolves to; an IP entry exempts that address whatever name led to it.
   * Cloud metadata addresses stay refused even when listed. Scheme,
   * credential and port rules still apply. Meant for tests and controlled
   * deployments — never fill it from user input.
   */
  allowHosts?: readonly string[];
  /** Custom resolver, for tests. Called once per hop for non-IP hosts. */
  lookup?: ResolveHost;
  /** Aborts the fetch (rejects with `image_fetch_failed`, cause = the signal's reason). */
  signal?: AbortSignal;
}

/** A downloaded image accepted by {@link fetchImage}. */
export interface FetchedImage {
  /** The image bytes. */
  bytes: Buffer;
  /** MIME type derived from the magic bytes; the server's Content-Type header is ignored. */
  contentType: string;
  /** Format detected from the magic bytes. */
  format: ImageFormat;
  /** URL of the hop that returned the image (after redirects). */
  finalUrl: string;
}

/**
 * Ports browsers refuse to fetch from (the Fetch standard's "bad port" list),
 * plus 0. Blocks using this server to talk HTTP at SMTP, SSH, IRC, ... ports.
 */
const BAD_PORTS = new Set([
  0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109,
  110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531,
  532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060,
  5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
]);

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** Vetted addresses of one host tried in turn when connecting fails (e.g. AAAA without IPv6 route). */
const MAX_CONNECT_ATTEMPTS = 4;
/** Socket errors after which the next vetted address of the same host is tried. */
const CONNECT_ERRORS = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT", "ETIMEDOUT"]);

function isConnectError(err: unknown): boolean {
  if (!(err instanceof FaceError) || err.code !== "image_fetch_failed") return false;
  const cause = err.cause as { code?: unknown } | undefined;
  return typeof cause?.code === "string" && CONNECT_ERRORS.has(cause.code);
}

const defaultResolve: ResolveHost = (hostname) => dnsLookup(hostname, { all: true });

interface Context {
  maxBytes: number;
  maxRedirects: number;
  timeoutMs: number;
  allowNames: Set<string>;
  allowAddresses: Set<string>;
  resolve: ResolveHost;
  /** Aborted on deadline or caller abort; its reason is the error to throw. */
  signal: AbortSignal;
  /** 0 for the URL the client gave, n after n redirects. */
  hop: number;
}

/** A connection target that passed the address policy. */
interface VettedTarget {
  address: string;
  family: 4 | 6;
}

type HopOutcome = { kind: "redirect"; location: string } | { kind: "body"; bytes: Buffer };

function forbidden(ctx: Context, rule: string): FaceError {
  return new FaceError("image_url_forbidden", `${where(ctx)} refused: ${rule}`);
}

function fetchFailed(ctx: Context, what: string, cause?: unknown): FaceError {
  return new FaceError("image_fetch_failed", `${where(ctx)}: ${what}`, { cause });
}

function where(ctx: Context): string {
  return ctx.hop === 0 ? "image URL" : `image URL (redirect ${ctx.hop})`;
}

function stripBrackets(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

function normaliseHostName(name: string): string {
  return stripBrackets(name.trim().toLowerCase()).replace(/\.$/, "");
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) throw new TypeError(`fetchImage: ${name} must be an integer >= ${min}`);
  return value;
}

/** Rejects with the signal's reason as soon as it aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Applies scheme, credential, port and address rules; returns the vetted
 * addresses to connect to, in resolver order (at most {@link MAX_CONNECT_ATTEMPTS}).
 */
async function vetUrl(url: URL, ctx: Context): Promise<VettedTarget[]> {
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw forbidden(ctx, `scheme "${url.protocol.replace(/:$/, "")}" is not allowed (only http and https)`);
  }
  if (url.username !== "" || url.password !== "") {
    throw forbidden(ctx, "credentials (user:password@) in the URL are not allowed");
  }
  const port = url.port === "" ? (url.protocol === "https:" ? 443 : 80) : Number(url.port);
  if (BAD_PORTS.has(port)) throw forbidden(ctx, `port ${port} is not allowed`);

  const host = stripBrackets(url.hostname);
  if (host === "") throw forbidden(ctx, "the URL has no host");
  const hostAllowed = ctx.allowNames.has(normaliseHostName(host));

  const literal = isIP(host);
  if (literal !== 0) {
    const verdict = classifyAddress(host);
    const listed = hostAllowed || ctx.allowAddresses.has(addressKey(host) ?? "");
    if (verdict && (verdict.alwaysForbidden || !listed)) {
      // The address was supplied in the URL itself, so naming it leaks nothing.
      throw forbidden(ctx, `host ${url.hostname} is not a public address (${verdict.reason})`);
    }
    return [{ address: host, family: literal as 4 | 6 }];
  }

  let answers: readonly ResolvedAddress[];
  try {
    answers = await raceAbort(
      Promise.resolve().then(() => ctx.resolve(host)),
      ctx.signal,
    );
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    throw fetchFailed(ctx, `could not resolve host "${host}"`, err);
  }
  if (!Array.isArray(answers) || answers.length === 0) throw fetchFailed(ctx, `could not resolve host "${host}"`);

  // Refuse if ANY answer is non-public: the client must not get to pick.
  // Resolved addresses are not echoed back (they may describe our internal network).
  for (const answer of answers) {
    const address = String(answer?.address ?? "");
    const verdict = classifyAddress(address);
    if (!verdict) continue;
    const listed = hostAllowed || ctx.allowAddresses.has(addressKey(address) ?? "");
    if (verdict.alwaysForbidden || !listed) {
      throw forbidden(ctx, `host "${host}" resolves to a non-public address (${verdict.reason})`);
    }
  }
  const distinct = [...new Set(answers.map((a) => String(a.address)))];
  return distinct
    .slice(0, MAX_CONNECT_ATTEMPTS)
    .map((address) => ({ address, family: isIP(address) === 6 ? (6 as const) : (4 as const) }));
}

/** Maps a socket/TLS/parser error to a message that does not echo addresses. */
function describeNetworkError(err: unknown): string {
  const code = typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : "";
  switch (code) {
    case "ECONNREFUSED":
      return "connection refused";
    case "ECONNRESET":
    case "EPIPE":
      return "connection reset by the server";
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EHOSTDOWN":
      return "host unreachable";
    default:
      break;
  }
  if (code.startsWith("HPE_")) return "the server sent an invalid HTTP response";
  if (/CERT|SELF_SIGNED|UNABLE_TO_|ERR_TLS|ERR_SSL|SSL_/.test(code)) return `TLS handshake or certificate verification failed (${code})`;
  return code ? `connection failed (${code})` : "connection failed";
}

/** Performs one GET against the vetted address. Never follows redirects itself. */
function requestOnce(url: URL, target: VettedTarget, ctx: Context): Promise<HopOutcome> {
  return new Promise<HopOutcome>((resolve, reject) => {
    const isHttps = url.protocol === "https:";
    const hostname = stripBrackets(url.hostname);
    // Defensive: with an IP literal as `host`, Node does not call `lookup` at all;
    // should it ever, it can only get the vetted address.
    const pinnedLookup = ((_name: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
      if (options?.all) callback(null, [{ address: target.address, family: target.family }]);
      else callback(null, target.address, target.family);
    }) as unknown as NetLookupFunction;

    const options: https.RequestOptions = {
      host: target.address,
      family: target.family,
      port: url.port === "" ? (isHttps ? 443 : 80) : Number(url.port),
      path: `${url.pathname}${url.search}`,
      method: "GET",
      setHost: false,
      headers: {
        Host: url.host,
        "User-Agent": "server402-image-fetch/1.0",
        Accept: "image/jpeg, image/png, image/bmp, image/webp",
        "Accept-Encoding": "identity",
        Connection: "close",
      },
      agent: false, // private agent: no pooling, no proxy
      lookup: pinnedLookup,
      insecureHTTPParser: false,
    };
    // Certificate is verified against the URL's host name (SNI too). For an
    // IP-literal URL no SNI is sent and the certificate must name that IP.
    if (isHttps && isIP(hostname) === 0) options.servername = hostname;

    let settled = false;
    let req: http.ClientRequest | undefined;
    const settle = (err: unknown, outcome?: HopOutcome) => {
      if (settled) return;
      settled = true;
      ctx.signal.removeEventListener("abort", onAbort);
      // Closing the socket stops the transfer immediately (oversize bodies, redirects, errors).
      req?.destroy();
      if (err !== undefined) reject(err);
      else resolve(outcome as HopOutcome);
    };
    const onAbort = () => settle(ctx.signal.reason);
    if (ctx.signal.aborted) {
      onAbort();
      return;
    }
    ctx.signal.addEventListener("abort", onAbort, { once: true });

    req = (isHttps ? https : http).request(options);
    req.on("error", (err) => settle(ctx.signal.aborted ? ctx.signal.reason : fetchFailed(ctx, describeNetworkError(err), err)));
    req.on("response", (res) => {
      const status = res.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status) && typeof res.headers.location === "string" && res.headers.location !== "") {
        settle(undefined, { kind: "redirect", location: res.headers.location });
        return;
      }
      if (status < 200 || status > 299) {
        // Only the status code: the reason phrase and body are the image server's text, not ours to relay.
        settle(fetchFailed(ctx, `the server answered HTTP ${status}`));
        return;
      }
      const declared = res.headers["content-length"];
      if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > ctx.maxBytes) {
        settle(
          new FaceError(
            "image_too_large",
            `${where(ctx)}: the server declares ${declared} bytes; the limit is ${ctx.maxBytes} bytes`,
          ),
        );
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      res.on("data", (chunk: Buffer) => {
        if (settled) return;
        total += chunk.length;
        if (total > ctx.maxBytes) {
          settle(new FaceError("image_too_large", `${where(ctx)}: the image exceeds the limit of ${ctx.maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => {
        if (!res.complete) settle(fetchFailed(ctx, "the connection closed before the image was complete"));
        else settle(undefined, { kind: "body", bytes: Buffer.concat(chunks, total) });
      });
      res.on("error", (err) => settle(ctx.signal.aborted ? ctx.signal.reason : fetchFailed(ctx, describeNetworkError(err), err)));
      res.on("close", () => settle(fetchFailed(ctx, "the connection closed before the image was complete")));
    });
    req.end();
  });
}

/**
 * Downloads a client-supplied image URL under SSRF rules and returns its bytes.
 *
 * Per hop (the URL itself and every redirect, at most `maxRedirects`):
 * 1. scheme must be http or https; credentials in the URL are refused; ports
 *    on the Fetch standard's "bad port" list (SMTP, SSH, ...) are refused;
 * 2. numeric host spellings (decimal, octal, hex, short forms) are normalised
 *    by the WHATWG URL parser before any check;
 * 3. a host name is resolved here, once, and refused if ANY address is
 *    loopback, private, link-local, CGNAT, multicast, unspecified, broadcast,
 *    reserved, documentation/benchmarking, IPv6 ULA/site-local, a cloud
 *    metadata endpoint, or an IPv6 form embedding such an IPv4 address;
 * 4. the TCP connection goes to a vetted address only (Host header and TLS
 *    name from the URL), so DNS rebinding cannot swap the target; if
 *    connecting fails, the host's next vetted address is tried (up to 4).
 * The body is capped at `maxBytes` (Content-Length checked up front, then
 * enforced while streaming: the socket is closed as soon as the cap is
 * crossed) and must be JPEG/PNG/BMP/WEBP by magic bytes.
 *
 * Error codes (all failures reject with {@link FaceError}):
 * - `invalid_input`: not a string / not an absolute URL / longer than 4096 chars;
 * - `image_url_forbidden`: scheme, credentials, port or address rule refused
 *   (on the first hop or a redirect); the message names the rule;
 * - `image_fetch_failed`: DNS failure, connection/TLS error, non-2xx status
 *   (named in the message), too many redirects, truncated body, deadline
 *   exceeded (deliberately not `upstream_timeout`: that code is reserved for
 *   the face engine, and a slow image host is the client's problem — 400 not
 *   504), or caller abort;
 * - `image_too_large`: declared or streamed size above `maxBytes`;
 * - `invalid_image`: the bytes are not JPEG, PNG, BMP or WEBP.
 *
 * Messages never contain addresses the client did not supply itself
 * (resolved addresses and low-level socket errors are kept in `cause` only).
 */
export async function fetchImage(url: string, opts: FetchImageOptions = {}): Promise<FetchedImage> {
  const maxBytes = positiveInt("maxBytes", opts.maxBytes, DEFAULT_MAX_IMAGE_BYTES);
  const timeoutMs = positiveInt("timeoutMs", opts.timeoutMs, DEFAULT_FETCH_TIMEOUT_MS);
  const maxRedirects = positiveInt("maxRedirects", opts.maxRedirects, DEFAULT_MAX_REDIRECTS, 0);

  if (typeof url !== "string") throw new FaceError("invalid_input", "image URL must be a string");
  if (url.length > MAX_IMAGE_URL_LENGTH) {
    throw new FaceError("invalid_input", `image URL is longer than ${MAX_IMAGE_URL_LENGTH} characters`);
  }
  let current: URL;
  try {
    current = new URL(url);
  } catch {
    throw new FaceError("invalid_input", "image URL is not a valid absolute URL");
  }

  const allowNames = new Set<string>();
  const allowAddresses = new Set<string>();
  for (const entry of opts.allowHosts ?? []) {
    const name = normaliseHostName(entry);
    const key = addressKey(name);
    if (key !== undefined) allowAddresses.add(key);
    else if (name !== "") allowNames.add(name);
  }

  const controller = new AbortController();
  const ctx: Context = {
    maxBytes,
    maxRedirects,
    timeoutMs,
    allowNames,
    allowAddresses,
    resolve: opts.lookup ?? defaultResolve,
    signal: controller.signal,
    hop: 0,
  };
  const timer = setTimeout(() => {
    controller.abort(
      fetchFailed(ctx, `no complete answer within ${timeoutMs} ms (the deadline covers DNS, redirects and the body)`),
    );
  }, timeoutMs);
  const callerSignal = opts.signal;
  const onCallerAbort = () => {
    controller.abort(new FaceError("image_fetch_failed", "image fetch aborted by the caller", { cause: callerSignal?.reason }));
  };
  if (callerSignal?.aborted) onCallerAbort();
  else callerSignal?.addEventListener("abort", onCallerAbort, { once: true });

  try {
    for (;;) {
      if (controller.signal.aborted) throw controller.signal.reason;
      const targets = await vetUrl(current, ctx);
      let outcome: HopOutcome | undefined;
      for (let i = 0; outcome === undefined; i++) {
        try {
          outcome = await requestOnce(current, targets[i], ctx);
        } catch (err) {
          // Only a failed connect moves on to the host's next (already vetted) address.
          if (i + 1 < targets.length && isConnectError(err) && !controller.signal.aborted) continue;
          throw err;
        }
      }
      if (outcome.kind === "redirect") {
        if (ctx.hop >= maxRedirects) throw fetchFailed(ctx, `too many redirects (at most ${maxRedirects} are followed)`);
        let next: URL;
        try {
          next = new URL(outcome.location, current);
        } catch {
          throw fetchFailed(ctx, "the server redirected to an invalid URL");
        }
        ctx.hop += 1;
        current = next;
        continue;
      }
      const format = sniffImageFormat(outcome.bytes);
      if (!format) {
        throw new FaceError(
          "invalid_image",
          outcome.bytes.length === 0
            ? `${where(ctx)}: the server returned an empty body`
            : `${where(ctx)}: the content is not a JPEG, PNG, BMP or WEBP image`,
        );
      }
      checkImagePixels(outcome.bytes, format, opts.maxPixels ?? DEFAULT_MAX_IMAGE_PIXELS, where(ctx));
      return { bytes: outcome.bytes, contentType: IMAGE_MIME[format], format, finalUrl: current.href };
    }
  } finally {
    clearTimeout(timer);
    callerSignal?.removeEventListener("abort", onCallerAbort);
  }
}
