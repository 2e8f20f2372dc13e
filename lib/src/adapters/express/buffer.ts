/**
 * Hold a handler's whole response in memory until payment is settled, so no
 * byte of a paid answer leaves before the money does. When the final answer
 * is an error (status ≥ 400) but the handler had begun a successful one
 * (`writeHead(200)`, `write(...)`, then `next(err)`), only the error is sent:
 * what was written while the status was below 400 is unpaid content, and so
 * are the headers the handler had set by then that the error answer left as
 * they were.
 */
import type { ServerResponse } from "node:http";

export interface BufferedResponse {
  /** Resolves when the handler called `end()` (or the client went away: `closed` is then true). */
  readonly done: Promise<{ closed: boolean }>;
  /** Status the handler chose. */
  status(): number;
  /** Send what the handler wrote. */
  flush(): void;
  /** Drop what the handler wrote (and its headers) so another answer can be sent. */
  discard(): void;
  /** A copy of what the handler wrote (status, headers, body), to keep for a retry while settlement is pending (issue 14 B10). */
  held(): { status: number; headers: Record<string, string | string[]>; body: Buffer };
}

type WriteHead = ServerResponse["writeHead"];

/** Start buffering `res`. */
export function bufferResponse(res: ServerResponse): BufferedResponse {
  const orig = { writeHead: res.writeHead, write: res.write, end: res.end, flushHeaders: res.flushHeaders };
  const chunks: Buffer[] = [];
  /** Per chunk: written while the status was ≥ 400 (part of an error answer). */
  const asError: boolean[] = [];
  let headArgs: unknown[] | undefined;
  /** Headers set before the handler ran (kept), and when it began a successful answer. */
  const headersBefore = res.getHeaders();
  let headersAtSuccess: ReturnType<ServerResponse["getHeaders"]> | undefined;
  let resolve!: (v: { closed: boolean }) => void;
  const done = new Promise<{ closed: boolean }>((r) => (resolve = r));
  const onClose = () => resolve({ closed: true });
  res.once("close", onClose);

  const push = (chunk: unknown, encoding?: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return;
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8"));
    asError.push(res.statusCode >= 400);
    if (res.statusCode < 400) headersAtSuccess ??= res.getHeaders();
  };
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    headArgs = args;
    if (typeof args[0] === "number") res.statusCode = args[0];
    if (res.statusCode < 400) headersAtSuccess ??= res.getHeaders();
    return this;
  } as WriteHead;
  res.flushHeaders = () => {};
  res.write = function (chunk: unknown, encoding?: unknown, cb?: unknown) {
    push(chunk, encoding);
    const callback = typeof encoding === "function" ? encoding : cb;
    if (typeof callback === "function") process.nextTick(callback as () => void);
    return true;
  } as ServerResponse["write"];
  res.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    push(chunk, encoding);
    const callback = [chunk, encoding, cb].find((a) => typeof a === "function");
    if (callback) process.nextTick(callback as () => void);
    res.off("close", onClose);
    resolve({ closed: false });
    return this;
  } as ServerResponse["end"];

  const restore = () => {
    res.writeHead = orig.writeHead;
    res.write = orig.write;
    res.end = orig.end;
    res.flushHeaders = orig.flushHeaders;
  };
  return {
    done,
    status: () => res.statusCode,
    flush() {
      restore();
      let body = chunks;
      if (res.statusCode >= 400 && (asError.includes(false) || (typeof headArgs?.[0] === "number" && headArgs[0] < 400))) {
        // an error replaced a successful answer: drop that answer's head and bytes, send the error alone
        body = chunks.filter((_, i) => asError[i]);
        headArgs = undefined;
        res.removeHeader("Content-Length");
        for (const [name, value] of Object.entries(headersAtSuccess ?? {})) {
          if (!(name in headersBefore) && res.getHeader(name) === value) res.removeHeader(name);
        }
      }
      if (headArgs) (res.writeHead as (...a: unknown[]) => void)(...headArgs);
      res.end(body.length === 1 ? body[0] : Buffer.concat(body));
    },
    held() {
      const headers: Record<string, string | string[]> = {};
      const given = headArgs?.find((a) => a !== null && typeof a === "object") as Record<string, unknown> | unknown[] | undefined;
      const add = (name: string, v: unknown) => {
        if (v !== undefined && name.toLowerCase() !== "content-length") headers[name.toLowerCase()] = Array.isArray(v) ? v.map(String) : String(v);
      };
      for (const [name, v] of Object.entries(res.getHeaders())) add(name, v);
      if (Array.isArray(given)) for (let i = 0; i + 1 < given.length; i += 2) add(String(given[i]), given[i + 1]);
      else if (given) for (const [name, v] of Object.entries(given)) add(name, v);
      return { status: res.statusCode, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) };
    },
    discard() {
      restore();
      chunks.length = 0;
      asError.length = 0;
      headArgs = undefined;
      for (const name of res.getHeaderNames()) res.removeHeader(name);
    },
  };
}
