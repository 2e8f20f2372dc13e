/**
 * Hold a handler's whole response in memory until payment is settled, so no
 * byte of a paid answer leaves before the money does.
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
  let headArgs: unknown[] | undefined;
  let resolve!: (v: { closed: boolean }) => void;
  const done = new Promise<{ closed: boolean }>((r) => (resolve = r));
  const onClose = () => resolve({ closed: true });
  res.once("close", onClose);

  const push = (chunk: unknown, encoding?: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return;
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8"));
  };
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    headArgs = args;
    if (typeof args[0] === "number") res.statusCode = args[0];
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
      if (headArgs) (res.writeHead as (...a: unknown[]) => void)(...headArgs);
      res.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
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
      headArgs = undefined;
      for (const name of res.getHeaderNames()) res.removeHeader(name);
    },
  };
}
