/**
 * Answers sent before the request body was read (issue 14 A8): an unpaid
 * request must cost about the same whatever its body.
 */
import type { IncomingMessage, ServerResponse } from "node:http";

/** Unread bodies up to this size are left to Node, which reads and discards them and keeps the connection. */
const SMALL_BODY_BYTES = 64 * 1024;

/** How long the client has to read the answer before the connection is closed under its unread body. */
const CLOSE_GRACE_MS = 2000;

/**
 * End `res` with `body` (its status and headers already set). When a large
 * body is still on its way, it is not read: the answer goes out complete
 * (Content-Length) with `Connection: close`, Node stops reading once the
 * request stream's buffer is full, and the connection is ended after a grace
 * period. Ending it at once would reset it (unread data) and a client still
 * sending could lose the answer it had not read yet.
 */
export function endBeforeBody(req: IncomingMessage, res: ServerResponse, body: string): void {
  // a request without Content-Length or Transfer-Encoding has no body (it may not be `complete` yet all the same)
  const chunked = req.headers["transfer-encoding"] !== undefined;
  if (req.complete || res.headersSent || (!chunked && Number(req.headers["content-length"] ?? 0) <= SMALL_BODY_BYTES)) return void res.end(body);
  res.setHeader("Connection", "close");
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.write(body);
  const timer = setTimeout(() => res.end(), CLOSE_GRACE_MS);
  timer.unref();
  res.once("close", () => clearTimeout(timer));
}
