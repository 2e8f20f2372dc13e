/**
 * SSRF-hardened image intake: fetchImage() and decodeImageData().
 *
 * Every refused target is checked two ways:
 *  - real recording listeners on 127.0.0.1, 127.0.0.2 and [::1], all on the
 *    SAME port, so a guard bug that connects to a loopback target (directly,
 *    via a numeric spelling, an IPv4-mapped form, a redirect or a rebinding
 *    lookup) lands on a listener and is counted — and gets a valid JPEG back,
 *    so the fetch would also wrongly succeed;
 *  - an outbound-connect monitor (net.Socket#connect, scoped with
 *    AsyncLocalStorage) for targets no test can bind (10/8, 169.254.169.254,
 *    fd00:ec2::254, ...).
 * A first test proves both detectors do see a connection when one is made.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { FaceError, type FaceErrorCode } from "../example-server/src/engine/types.js";
import {
  classifyAddress,
  decodeImageData,
  fetchImage,
  sniffImageFormat,
  type FetchImageOptions,
  type ResolveHost,
} from "../example-server/src/images/index.js";
import {
  startConnectMonitor,
  startListenerSet,
  TRAP_BODY,
  type ConnectMonitor,
  type ListenerSet,
  type RecordingServer,
} from "./support/ssrf-listeners.js";
import { startTlsListener } from "./support/ssrf-tls.js";

const JPEG = readFileSync(new URL("./fixtures/faces/grace_hopper.jpg", import.meta.url));
const PNG = readFileSync(new URL("./fixtures/faces/camera.png", import.meta.url));
const GIF = Buffer.concat([Buffer.from("GIF89a"), Buffer.alloc(32)]);
/** Minimal BMP header: "BM", file size, reserved, pixel offset, BITMAPINFOHEADER size 40. */
const BMP = Buffer.concat([Buffer.from("BM"), Buffer.from([0x3a, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 40, 0, 0, 0]), Buffer.alloc(40)]);
const WEBP = Buffer.concat([Buffer.from("RIFF"), Buffer.from([0x1a, 0, 0, 0]), Buffer.from("WEBPVP8 "), Buffer.alloc(18)]);

const tick = (ms = 30) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function expectFaceError(promise: Promise<unknown>, code: FaceErrorCode, message?: RegExp): Promise<FaceError> {
  let result: unknown;
  try {
    result = await promise;
  } catch (err) {
    assert.ok(err instanceof FaceError, `expected a FaceError, got ${String(err)}`);
    assert.equal(err.code, code, `wrong code; message: ${err.message}`);
    if (message) assert.match(err.message, message);
    return err;
  }
  const got = result as { format?: string; bytes?: Buffer; finalUrl?: string };
  assert.fail(`expected ${code}, but the fetch succeeded (${got?.format}, ${got?.bytes?.length} bytes from ${got?.finalUrl})`);
}

/** A resolver answering fixed addresses, recording the names it was asked for. */
function fixedLookup(...addresses: string[]): ResolveHost & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (hostname: string) => {
    calls.push(hostname);
    return addresses.map((address) => ({ address }));
  };
  return Object.assign(fn, { calls });
}

/** Resolves when the server side of the first accepted socket has closed. */
function serverSocketClosed(rec: RecordingServer, timeoutMs = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const s = rec.sockets[0];
      if (s && (s.destroyed || s.closed)) return resolve();
      if (Date.now() - started > timeoutMs) return reject(new Error("server socket still open"));
      setTimeout(poll, 5);
    };
    poll();
  });
}

describe("image intake: fetchImage (SSRF rules)", function () {
  this.timeout(10_000);
  let L: ListenerSet;
  let monitor: ConnectMonitor;
  /** Origin of an allowlisted test server: 127.0.0.2 when bindable, else 127.0.0.1. */
  let allowedHost: string;
  let allowedServer: RecordingServer;

  before(async () => {
    L = await startListenerSet();
    allowedHost = L.alt ? "127.0.0.2" : "127.0.0.1";
    allowedServer = L.alt ?? L.v4;
  });
  after(async () => {
    await L.close();
  });
  beforeEach(() => {
    L.reset();
    monitor = startConnectMonitor();
  });
  afterEach(() => {
    monitor.stop();
  });

  const run = (url: string, opts: FetchImageOptions = {}) => monitor.run(() => fetchImage(url, { timeoutMs: 3000, ...opts }));

  /** Refused without a single connection attempt anywhere. */
  async function refused(url: string, message: RegExp, opts: FetchImageOptions = {}, code: FaceErrorCode = "image_url_forbidden") {
    const err = await expectFaceError(run(url, opts), code, message);
    await tick();
    assert.equal(L.totalConnections(), 0, `a listener saw a connection for ${url}`);
    assert.deepEqual(monitor.attempts, [], `an outbound connect was attempted for ${url}`);
    return err;
  }

  describe("the detectors work", () => {
    it("an allowlisted fetch to each loopback listener is seen by the listener and the monitor", async () => {
      for (const rec of L.all()) {
        L.reset();
        monitor.attempts.length = 0;
        const host = rec.host.includes(":") ? `[${rec.host}]` : rec.host;
        const out = await run(`http://${host}:${L.port}/probe`, { allowHosts: [rec.host] });
        assert.deepEqual(out.bytes, TRAP_BODY);
        assert.equal(rec.connections, 1, rec.host);
        assert.equal(L.totalConnections(), 1);
        assert.deepEqual(monitor.attempts.map((a) => a.host), [rec.host]);
      }
      assert.ok(L.alt, "127.0.0.2 should be bindable on Linux (tests needing it are skipped otherwise)");
    });
  });

  describe("refused before connecting: loopback and numeric spellings", () => {
    const cases: Array<[string, RegExp]> = [
      ["http://127.0.0.1:PORT/img.jpg", /host 127\.0\.0\.1 is not a public address \(loopback\)/],
      ["https://127.0.0.1:PORT/img.jpg", /loopback/],
      ["http://127.0.0.2:PORT/", /loopback/],
      ["http://[::1]:PORT/", /host \[::1\] is not a public address \(loopback\)/],
      ["http://localhost:PORT/", /host "localhost" resolves to a non-public address \(loopback\)/], // real system resolver
      ["http://2130706433:PORT/", /127\.0\.0\.1.*loopback/], // decimal
      ["http://0177.0.0.1:PORT/", /127\.0\.0\.1.*loopback/], // octal
      ["http://0x7f.1:PORT/", /127\.0\.0\.1.*loopback/], // hex + short form
      ["http://0x7f000001:PORT/", /loopback/],
      ["http://017700000001:PORT/", /loopback/],
      ["http://127.1:PORT/", /loopback/],
      ["http://0177.0.0.02:PORT/", /127\.0\.0\.2.*loopback/],
      ["http://127.0.0.1.:PORT/", /loopback/], // trailing dot
      ["http://0.0.0.0:PORT/", /unspecified/], // Linux routes 0.0.0.0 to loopback
      ["http://0:PORT/", /unspecified/],
      ["http://[::]:PORT/", /unspecified/],
      ["http://[::ffff:127.0.0.1]:PORT/", /IPv4-mapped IPv6 form of a loopback address/],
      ["http://[::ffff:7f00:2]:PORT/", /IPv4-mapped IPv6 form of a loopback address/],
      ["http://[0:0:0:0:0:ffff:127.0.0.1]:PORT/", /IPv4-mapped/],
      ["http://[::127.0.0.1]:PORT/", /IPv4-compatible/],
    ];
    for (const [template, message] of cases) {
      it(template, async () => {
        await refused(template.replace("PORT", String(L.port)), message);
      });
    }
  });

  describe("refused before connecting: private, link-local, metadata and other special ranges", () => {
    const cases: Array<[string, RegExp]> = [
      ["http://10.0.0.1/", /private/],
      ["http://10.255.255.255/", /private/],
      ["http://172.16.0.1/", /private/],
      ["http://172.31.255.254/", /private/],
      ["http://192.168.1.1/", /private/],
      ["http://169.254.1.1/", /link-local/],
      ["http://[fe80::1]/", /link-local/],
      ["http://169.254.169.254/latest/meta-data/", /cloud metadata endpoint/],
      ["http://[::ffff:169.254.169.254]/latest/meta-data/", /IPv4-mapped IPv6 form of a cloud metadata endpoint/],
      ["http://2852039166/latest/meta-data/", /169\.254\.169\.254.*cloud metadata/], // decimal 169.254.169.254
      ["http://[fd00:ec2::254]/latest/meta-data/", /cloud metadata endpoint/],
      ["http://100.100.100.200/latest/meta-data/", /cloud metadata endpoint/],
      ["http://168.63.129.16/machine", /cloud metadata endpoint/],
      ["http://100.64.0.1/", /carrier-grade NAT/],
      ["http://100.127.255.254/", /carrier-grade NAT/],
      ["http://255.255.255.255/", /broadcast/],
      ["http://224.0.0.1/", /multicast/],
      ["http://[ff02::1]/", /multicast/],
      ["http://240.0.0.1/", /reserved/],
      ["http://192.0.2.10/", /documentation/],
      ["http://198.51.100.10/", /documentation/],
      ["http://203.0.113.10/", /documentation/],
      ["http://198.18.0.1/", /benchmarking/],
      ["http://[fc00::1]/", /unique local/],
      ["http://[fd12:3456::1]/", /unique local/],
      ["http://[fec0::1]/", /site-local/],
      ["http://[2001:db8::1]/", /documentation/],
      ["http://[64:ff9b::a00:1]/", /NAT64 IPv6 form of a private address/], // 10.0.0.1 via NAT64
      ["http://[64:ff9b::7f00:1]/", /NAT64 IPv6 form of a loopback address/],
      ["http://[2002:c0a8:101::1]/", /6to4 IPv6 form of a private address/], // 192.168.1.1 via 6to4
      ["http://[2001::1]/", /Teredo/],
    ];
    for (const [url, message] of cases) {
      it(url, async () => {
        await refused(url, message);
      });
    }

    it("metadata endpoints stay refused even when explicitly allowlisted", async () => {
      await refused("http://169.254.169.254/latest/meta-data/", /metadata/, { allowHosts: ["169.254.169.254"] });
      await refused("http://100.100.100.200/", /metadata/, { allowHosts: ["100.100.100.200"] });
      await refused("http://[fd00:ec2::254]/", /metadata/, { allowHosts: ["fd00:ec2::254"] });
      const lookup = fixedLookup("169.254.169.254");
      await refused("http://metadata.google.internal/computeMetadata/v1/", /metadata/, {
        lookup,
        allowHosts: ["metadata.google.internal"],
      });
    });

    it("allowlisting 127.0.0.2 does not open 127.0.0.1 or ::1", async () => {
      await refused(`http://127.0.0.1:${L.port}/`, /loopback/, { allowHosts: ["127.0.0.2"] });
      await refused(`http://[::1]:${L.port}/`, /loopback/, { allowHosts: ["127.0.0.2"] });
    });
  });

  describe("refused before connecting: scheme, credentials, port, malformed", () => {
    const schemes: Array<[string, string]> = [
      ["file:///etc/passwd", "file"],
      ["ftp://127.0.0.1:PORT/img.jpg", "ftp"],
      ["data:image/png;base64,iVBORw0KGgo=", "data"],
      ["gopher://127.0.0.1:PORT/_GET%20/", "gopher"],
      ["javascript:alert(1)", "javascript"],
      ["ws://127.0.0.1:PORT/", "ws"],
      ["blob:http://127.0.0.1/uuid", "blob"],
    ];
    for (const [template, scheme] of schemes) {
      it(`scheme ${scheme}:`, async () => {
        await refused(template.replace("PORT", String(L.port)), new RegExp(`scheme "${scheme}" is not allowed`), {
          allowHosts: ["127.0.0.1"],
        });
      });
    }

    for (const creds of ["user:pass@", "user@", ":pass@"]) {
      it(`credentials ${creds} on an otherwise allowed host`, async () => {
        await refused(`http://${creds}${allowedHost}:${L.port}/img.jpg`, /credentials/, { allowHosts: [allowedHost] });
      });
    }

    it("bad ports (Fetch standard list) even on an allowed host", async () => {
      for (const port of [25, 22, 6667, 0]) {
        await refused(`http://${allowedHost}:${port}/`, new RegExp(`port ${port} is not allowed`), { allowHosts: [allowedHost] });
      }
    });

    it("malformed or relative URLs are invalid_input", async () => {
      for (const url of ["", "not a url", "/relative/img.jpg", "http://", "http://exa mple.com/", `http://a.test/${"x".repeat(5000)}`]) {
        await refused(url, /image URL/, {}, "invalid_input");
      }
    });
  });

  describe("refused before connecting: DNS answers", () => {
    it("a name resolving to loopback", async () => {
      const lookup = fixedLookup("127.0.0.1");
      const err = await refused(`http://evil.test:${L.port}/`, /host "evil\.test" resolves to a non-public address \(loopback\)/, { lookup });
      assert.deepEqual(lookup.calls, ["evil.test"]);
      assert.doesNotMatch(err.message, /127\.0\.0\.1/, "resolved addresses are not echoed");
    });

    it("a name resolving to a private, link-local, metadata or IPv4-mapped address", async () => {
      for (const address of ["10.1.2.3", "192.168.0.10", "169.254.169.254", "fd00::2", "::ffff:127.0.0.1", "::1"]) {
        await refused(`http://evil.test:${L.port}/`, /resolves to a non-public address/, { lookup: fixedLookup(address) });
      }
    });

    it("a name resolving to a public AND a private address is refused (no connection to either)", async () => {
      // 127.0.0.2 plays the public address (allowlisted, reachable); 127.0.0.1 is the private one.
      // Picking "the first safe answer" would connect to 127.0.0.2: the listener would count it.
      await refused(`http://mixed.test:${L.port}/`, /non-public address \(loopback\)/, {
        lookup: fixedLookup(allowedHost, "127.0.0.1"),
        allowHosts: [allowedHost],
      });
      await refused(`http://mixed.test:${L.port}/`, /non-public/, {
        lookup: fixedLookup("93.184.215.14", "10.0.0.7"),
      });
      // Order does not matter.
      await refused(`http://mixed.test:${L.port}/`, /non-public/, {
        lookup: fixedLookup("127.0.0.1", allowedHost),
        allowHosts: [allowedHost],
      });
    });

    it("garbage, scoped or empty DNS answers are refused / fail", async () => {
      await refused(`http://weird.test:${L.port}/`, /non-public/, { lookup: fixedLookup("fe80::1%eth0") });
      await refused(`http://weird.test:${L.port}/`, /non-public/, { lookup: fixedLookup("not-an-ip") });
      await refused(`http://empty.test:${L.port}/`, /could not resolve host "empty\.test"/, { lookup: fixedLookup() }, "image_fetch_failed");
      const failing: ResolveHost = async () => {
        throw Object.assign(new Error("getaddrinfo ENOTFOUND"), { code: "ENOTFOUND" });
      };
      await refused(`http://nx.test:${L.port}/`, /could not resolve host/, { lookup: failing }, "image_fetch_failed");
    });
  });

  describe("DNS rebinding", () => {
    it("connects only to the address it vetted (the resolver is asked once)", async function () {
      if (!L.alt) this.skip();
      const alt = L.alt!;
      alt.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "application/octet-stream" });
        res.end(PNG);
      };
      // 127.0.0.1 keeps the trap handler (a JPEG) on the same port: a second
      // resolution at connect time would land there, be counted, and return JPEG.
      const calls: string[] = [];
      const lookup: ResolveHost = async (hostname) => {
        calls.push(hostname);
        return calls.length === 1 ? [{ address: "127.0.0.2" }] : [{ address: "127.0.0.1" }];
      };
      const out = await run(`http://rebind.test:${L.port}/face.png`, { lookup, allowHosts: ["127.0.0.2"] });
      assert.equal(out.format, "png");
      assert.deepEqual(out.bytes, PNG);
      assert.deepEqual(calls, ["rebind.test"], "resolved exactly once");
      assert.equal(alt.connections, 1);
      assert.equal(L.v4.connections, 0, "no connection to the rebinding target");
      assert.deepEqual(monitor.attempts.map((a) => a.host), ["127.0.0.2"]);
      assert.equal(alt.requests[0].host, `rebind.test:${L.port}`, "Host header keeps the name");
    });

    it("re-resolves and re-checks on a same-host redirect", async function () {
      if (!L.alt) this.skip();
      const alt = L.alt!;
      alt.handler = (_req, res) => {
        res.writeHead(302, { Location: "/second.png" });
        res.end();
      };
      const calls: string[] = [];
      const lookup: ResolveHost = async (hostname) => {
        calls.push(hostname);
        return calls.length === 1 ? [{ address: "127.0.0.2" }] : [{ address: "127.0.0.1" }];
      };
      await expectFaceError(
        run(`http://rebind.test:${L.port}/first.png`, { lookup, allowHosts: ["127.0.0.2"] }),
        "image_url_forbidden",
        /redirect 1.*resolves to a non-public address \(loopback\)/,
      );
      await tick();
      assert.equal(calls.length, 2);
      assert.equal(alt.connections, 1);
      assert.equal(L.v4.connections, 0);
      assert.deepEqual(monitor.attempts.map((a) => a.host), ["127.0.0.2"]);
    });
  });

  describe("redirects", () => {
    const redirectTo = (location: string) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(302, { Location: location });
      res.end();
    };

    const forbiddenTargets: Array<[string, RegExp]> = [
      ["http://127.0.0.1:PORT/", /redirect 1\) refused: host 127\.0\.0\.1 is not a public address \(loopback\)/],
      ["http://[::1]:PORT/", /redirect 1.*loopback/],
      ["http://2130706433:PORT/", /redirect 1.*loopback/],
      ["http://[::ffff:127.0.0.1]:PORT/", /redirect 1.*IPv4-mapped/],
      ["http://169.254.169.254/latest/meta-data/iam/", /redirect 1.*cloud metadata endpoint/],
      ["http://[fd00:ec2::254]/latest/meta-data/", /redirect 1.*cloud metadata endpoint/],
      ["http://10.0.0.1/", /redirect 1.*private/],
      ["file:///etc/passwd", /redirect 1.*scheme "file"/],
      ["gopher://127.0.0.1:PORT/", /redirect 1.*scheme "gopher"/],
      ["http://user:pw@ALLOWED:PORT/x.jpg", /redirect 1.*credentials/],
      ["http://ALLOWED:25/", /redirect 1.*port 25/],
    ];
    for (const [template, message] of forbiddenTargets) {
      it(`from an allowed server to ${template}: refused, no connection to the target`, async function () {
        if (!L.alt && /127\.0\.0\.1|\[::1\]|2130706433/.test(template)) this.skip();
        const location = template.replace(/PORT/g, String(L.port)).replace("ALLOWED", allowedHost);
        allowedServer.handler = redirectTo(location);
        await expectFaceError(
          run(`http://${allowedHost}:${L.port}/start.jpg`, { allowHosts: [allowedHost] }),
          "image_url_forbidden",
          message,
        );
        await tick();
        assert.equal(allowedServer.connections, 1, "only the allowed server was contacted");
        assert.equal(L.totalConnections(), 1, "the redirect target saw no connection");
        assert.deepEqual(monitor.attempts.map((a) => a.host), [allowedHost]);
      });
    }

    it("relative Location headers are resolved against the current URL", async () => {
      allowedServer.handler = (req, res) => {
        if (req.url === "/a/start") return redirectTo("/a/b/next")(req, res); // absolute path
        if (req.url === "/a/b/next") return redirectTo("../final.jpg")(req, res); // relative path
        if (req.url === "/a/final.jpg") {
          res.writeHead(200);
          return res.end(JPEG);
        }
        res.writeHead(404);
        res.end();
      };
      const out = await run(`http://${allowedHost}:${L.port}/a/start`, { allowHosts: [allowedHost] });
      assert.equal(out.format, "jpeg");
      assert.equal(out.finalUrl, `http://${allowedHost}:${L.port}/a/final.jpg`);
      assert.deepEqual(allowedServer.requests.map((r) => r.url), ["/a/start", "/a/b/next", "/a/final.jpg"]);
    });

    it("follows exactly maxRedirects (3) and refuses the 4th", async () => {
      const hopServer = (imageAfter: number) => (req: http.IncomingMessage, res: http.ServerResponse) => {
        const n = Number(new URL(req.url ?? "/", "http://x").searchParams.get("n") ?? "0");
        if (n >= imageAfter) {
          res.writeHead(200);
          return res.end(JPEG);
        }
        redirectTo(`/hop?n=${n + 1}`)(req, res);
      };
      allowedServer.handler = hopServer(3);
      const ok = await run(`http://${allowedHost}:${L.port}/hop?n=0`, { allowHosts: [allowedHost] });
      assert.equal(ok.format, "jpeg");
      assert.equal(allowedServer.connections, 4);

      L.reset();
      allowedServer.handler = hopServer(4);
      await expectFaceError(
        run(`http://${allowedHost}:${L.port}/hop?n=0`, { allowHosts: [allowedHost] }),
        "image_fetch_failed",
        /too many redirects/,
      );
      await tick();
      assert.equal(allowedServer.connections, 4, "the 4th redirect target was never requested");

      L.reset();
      allowedServer.handler = hopServer(1);
      await expectFaceError(
        run(`http://${allowedHost}:${L.port}/hop?n=0`, { allowHosts: [allowedHost], maxRedirects: 0 }),
        "image_fetch_failed",
        /too many redirects/,
      );
    });
  });

  describe("size cap", () => {
    it("streams at most maxBytes and closes the connection as soon as the cap is crossed (no Content-Length)", async () => {
      const total = 64 * 1024 * 1024;
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      JPEG.copy(chunk, 0, 0, 16);
      let written = 0;
      let finished = false;
      let serverClosedAt = 0;
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "image/jpeg" }); // chunked: nothing to check up front
        res.on("close", () => {
          serverClosedAt = Date.now();
        });
        const pump = () => {
          while (written < total && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
          if (!res.destroyed) res.end(() => (finished = true));
        };
        pump();
      };
      const maxBytes = 256 * 1024;
      const err = await expectFaceError(run(`http://127.0.0.1:${L.port}/big.jpg`, { allowHosts: ["127.0.0.1"], maxBytes }), "image_too_large", /limit of 262144 bytes/);
      const rejectedAt = Date.now();
      assert.ok(err);
      await serverSocketClosed(L.v4);
      await tick(50);
      assert.equal(finished, false, "the server never got to finish the body");
      assert.ok(serverClosedAt > 0 && serverClosedAt - rejectedAt < 1000, "the server saw the close right away");
      if (process.env.SSRF_DEBUG) console.log(`server wrote ${written} bytes`);
      assert.ok(written < total / 4, `server pushed ${written} of ${total} bytes before the client hung up`);
    });

    it("refuses a too-large Content-Length up front without waiting for the body", async () => {
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": String(6 * 1024 * 1024) });
        res.write(JPEG.subarray(0, 64)); // ...and then stall forever
      };
      const started = Date.now();
      await expectFaceError(
        run(`http://127.0.0.1:${L.port}/huge.jpg`, { allowHosts: ["127.0.0.1"], timeoutMs: 5000 }),
        "image_too_large",
        /declares 6291456 bytes; the limit is 5242880 bytes/,
      );
      assert.ok(Date.now() - started < 1000, "did not wait for the body or the deadline");
      await serverSocketClosed(L.v4);
    });

    it("accepts a body of exactly maxBytes, refuses one byte more", async () => {
      const body = Buffer.alloc(4096, 0);
      JPEG.copy(body, 0, 0, 16);
      L.v4.handler = (req, res) => {
        res.writeHead(200);
        res.end(req.url === "/exact" ? body : Buffer.concat([body, Buffer.from([0])]));
      };
      const ok = await run(`http://127.0.0.1:${L.port}/exact`, { allowHosts: ["127.0.0.1"], maxBytes: 4096 });
      assert.equal(ok.bytes.length, 4096);
      await expectFaceError(run(`http://127.0.0.1:${L.port}/over`, { allowHosts: ["127.0.0.1"], maxBytes: 4096 }), "image_too_large");
    });
  });

  describe("deadline", () => {
    it("a slow server exceeding the deadline fails with image_fetch_failed and the socket is closed", async () => {
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "image/jpeg" });
        res.write(JPEG.subarray(0, 32)); // trickle, never finish
      };
      const started = Date.now();
      await expectFaceError(
        run(`http://127.0.0.1:${L.port}/slow.jpg`, { allowHosts: ["127.0.0.1"], timeoutMs: 300 }),
        "image_fetch_failed",
        /no complete answer within 300 ms/,
      );
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 280 && elapsed < 1500, `elapsed ${elapsed} ms`);
      await serverSocketClosed(L.v4);
    });

    it("the deadline spans all redirects (each hop is fast enough alone)", async () => {
      L.v4.handler = (req, res) => {
        setTimeout(() => {
          if (req.url === "/r3") {
            res.writeHead(200);
            return res.end(JPEG);
          }
          res.writeHead(302, { Location: req.url === "/r1" ? "/r2" : "/r3" });
          res.end();
        }, 200);
      };
      const opts = { allowHosts: ["127.0.0.1"] };
      await expectFaceError(run(`http://127.0.0.1:${L.port}/r1`, { ...opts, timeoutMs: 450 }), "image_fetch_failed", /redirect 2\): no complete answer within 450 ms/);
      const ok = await run(`http://127.0.0.1:${L.port}/r1`, { ...opts, timeoutMs: 3000 });
      assert.equal(ok.format, "jpeg");
    });

    it("a hanging DNS lookup is covered by the deadline", async () => {
      const lookup: ResolveHost = () => new Promise(() => {});
      await refused(`http://hang.test:${L.port}/`, /within 150 ms/, { lookup, timeoutMs: 150 }, "image_fetch_failed");
    });

    it("the caller's AbortSignal stops the fetch", async () => {
      L.v4.handler = (_req, res) => {
        res.writeHead(200);
        res.write(JPEG.subarray(0, 16));
      };
      const ac = new AbortController();
      setTimeout(() => ac.abort(new Error("client went away")), 50);
      const err = await expectFaceError(
        run(`http://127.0.0.1:${L.port}/slow.jpg`, { allowHosts: ["127.0.0.1"], signal: ac.signal }),
        "image_fetch_failed",
        /aborted by the caller/,
      );
      assert.match(String((err.cause as Error).message), /client went away/);
      await serverSocketClosed(L.v4);
      L.reset();
      monitor.attempts.length = 0;
      const already = AbortSignal.abort();
      await refused(`http://127.0.0.1:${L.port}/`, /aborted/, { allowHosts: ["127.0.0.1"], signal: already }, "image_fetch_failed");
    });
  });

  describe("responses", () => {
    it("non-2xx statuses fail with the status in the message", async () => {
      for (const [status, body] of [[404, "nope"], [500, "boom"], [304, ""], [302, ""]] as const) {
        L.v4.handler = (_req, res) => {
          res.writeHead(status); // 302 without Location is just a non-2xx
          res.end(body);
        };
        await expectFaceError(run(`http://127.0.0.1:${L.port}/x`, { allowHosts: ["127.0.0.1"] }), "image_fetch_failed", new RegExp(`HTTP ${status}`));
      }
    });

    it("refuses wrong magic bytes whatever the Content-Type says", async () => {
      for (const body of [Buffer.from("<html><body>not an image</body></html>"), GIF, Buffer.from("BM but not a bitmap at all"), Buffer.from("RIFF\0\0\0\0WAVEfmt ")]) {
        L.v4.handler = (_req, res) => {
          res.writeHead(200, { "Content-Type": "image/jpeg" });
          res.end(body);
        };
        await expectFaceError(run(`http://127.0.0.1:${L.port}/x.jpg`, { allowHosts: ["127.0.0.1"] }), "invalid_image", /not a JPEG, PNG, BMP or WEBP/);
      }
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "image/png" });
        res.end();
      };
      await expectFaceError(run(`http://127.0.0.1:${L.port}/empty.png`, { allowHosts: ["127.0.0.1"] }), "invalid_image", /empty body/);
    });

    it("a truncated body (fewer bytes than Content-Length) fails", async () => {
      L.v4.handler = (req, res) => {
        res.writeHead(200, { "Content-Length": "5000" });
        res.write(JPEG.subarray(0, 100));
        setTimeout(() => req.socket.destroy(), 20);
      };
      await expectFaceError(run(`http://127.0.0.1:${L.port}/cut.jpg`, { allowHosts: ["127.0.0.1"] }), "image_fetch_failed", /closed before the image was complete|connection reset/);
    });

    it("a refused connection is image_fetch_failed without echoing the resolved address", async () => {
      const probe = await startListenerSet();
      const closedPort = probe.port;
      await probe.close();
      const err = await expectFaceError(
        run(`http://closed.test:${closedPort}/`, { allowHosts: ["closed.test"], lookup: fixedLookup("127.0.0.1") }),
        "image_fetch_failed",
        /connection refused/,
      );
      assert.doesNotMatch(err.message, /127\.0\.0\.1/);
    });
  });

  describe("success", () => {
    it("JPEG from an allowlisted 127.0.0.1 (type from magic bytes, not Content-Type)", async () => {
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "text/plain" });
        res.end(JPEG);
      };
      const out = await run(`http://127.0.0.1:${L.port}/face.jpg?x=1#frag`, { allowHosts: ["127.0.0.1"] });
      assert.deepEqual(out.bytes, JPEG);
      assert.equal(out.format, "jpeg");
      assert.equal(out.contentType, "image/jpeg");
      assert.equal(out.finalUrl, `http://127.0.0.1:${L.port}/face.jpg?x=1#frag`);
      assert.deepEqual(L.v4.requests, [{ method: "GET", url: "/face.jpg?x=1", host: `127.0.0.1:${L.port}` }]);
    });

    it("PNG from an allowlisted 127.0.0.1", async () => {
      L.v4.handler = (_req, res) => {
        res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": PNG.length });
        res.end(PNG);
      };
      const out = await run(`http://127.0.0.1:${L.port}/face.png`, { allowHosts: ["127.0.0.1"] });
      assert.deepEqual(out.bytes, PNG);
      assert.equal(out.format, "png");
      assert.equal(out.contentType, "image/png");
    });

    it("BMP and WEBP are accepted", async () => {
      for (const [body, format] of [[BMP, "bmp"], [WEBP, "webp"]] as const) {
        L.v4.handler = (_req, res) => {
          res.writeHead(200);
          res.end(body);
        };
        const out = await run(`http://127.0.0.1:${L.port}/img`, { allowHosts: ["127.0.0.1"] });
        assert.equal(out.format, format);
      }
    });

    it("IPv6 loopback when allowlisted as ::1", async function () {
      if (!L.v6) this.skip();
      L.v6!.handler = (_req, res) => {
        res.writeHead(200);
        res.end(PNG);
      };
      const out = await run(`http://[::1]:${L.port}/face.png`, { allowHosts: ["[::1]"] });
      assert.equal(out.format, "png");
      assert.equal(L.v6!.connections, 1);
      assert.equal(L.v6!.requests[0].host, `[::1]:${L.port}`);
    });

    it("an allowlisted host NAME: connects to its vetted address with the name in the Host header", async () => {
      allowedServer.handler = (_req, res) => {
        res.writeHead(200);
        res.end(JPEG);
      };
      const lookup = fixedLookup(allowedHost);
      const out = await run(`http://IMG.Test:${L.port}/face.jpg`, { lookup, allowHosts: ["img.test"] });
      assert.equal(out.format, "jpeg");
      assert.deepEqual(lookup.calls, ["img.test"]);
      assert.equal(allowedServer.requests[0].host, `img.test:${L.port}`);
    });

    it("falls back to the host's next vetted address when connecting fails", async function () {
      if (!L.alt) this.skip();
      // Only 127.0.0.1 listens on this port, so connecting to 127.0.0.2 is refused.
      const only = http.createServer((_req, res) => {
        res.writeHead(200);
        res.end(JPEG);
      });
      await new Promise<void>((resolve) => only.listen(0, "127.0.0.1", () => resolve()));
      const port = (only.address() as { port: number }).port;
      try {
        const lookup = fixedLookup("127.0.0.2", "127.0.0.1");
        const out = await run(`http://two.test:${port}/face.jpg`, { lookup, allowHosts: ["two.test"] });
        assert.equal(out.format, "jpeg");
        assert.deepEqual(lookup.calls, ["two.test"], "no second resolution for the fallback");
        assert.deepEqual(monitor.attempts.map((a) => a.host), ["127.0.0.2", "127.0.0.1"]);
        // A bad address anywhere in the answer still refuses the whole host.
        monitor.attempts.length = 0;
        await expectFaceError(
          run(`http://two.test:${port}/face.jpg`, { lookup: fixedLookup("127.0.0.2", "10.0.0.1"), allowHosts: ["127.0.0.2"] }),
          "image_url_forbidden",
        );
        assert.deepEqual(monitor.attempts, []);
      } finally {
        only.closeAllConnections();
        await new Promise<void>((resolve) => only.close(() => resolve()));
      }
    });

    it("ignores proxy environment variables", async () => {
      const saved = { ...process.env };
      const trap = `http://127.0.0.1:${L.port}`;
      Object.assign(process.env, { HTTP_PROXY: trap, http_proxy: trap, HTTPS_PROXY: trap, https_proxy: trap, ALL_PROXY: trap, NO_PROXY: "" });
      try {
        allowedServer.handler = (_req, res) => {
          res.writeHead(200);
          res.end(PNG);
        };
        const out = await run(`http://${allowedHost}:${L.port}/face.png`, { allowHosts: [allowedHost] });
        assert.equal(out.format, "png");
        assert.deepEqual(monitor.attempts.map((a) => a.host), [allowedHost]);
        if (L.alt) assert.equal(L.v4.connections, 0, "nothing went to the 'proxy'");
      } finally {
        for (const k of ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY"]) {
          if (k in saved) process.env[k] = saved[k];
          else delete process.env[k];
        }
      }
    });
  });

  describe("https", () => {
    it("sends the URL's host name as SNI, connects to the vetted IP, and verifies the certificate", async () => {
      const tlsServer = await startTlsListener(allowedHost);
      try {
        const lookup = fixedLookup(allowedHost);
        // The test certificate is self-signed, so verification MUST fail: proves it is on.
        await expectFaceError(
          run(`https://img.test:${tlsServer.port}/face.jpg`, { lookup, allowHosts: [allowedHost] }),
          "image_fetch_failed",
          /TLS handshake or certificate verification failed/,
        );
        assert.equal(tlsServer.connections, 1);
        assert.deepEqual(tlsServer.serverNames, ["img.test"]);
        assert.deepEqual(monitor.attempts.map((a) => a.host), [allowedHost]);

        // IP-literal URL: no SNI at all (an IP in SNI is not allowed).
        await expectFaceError(
          run(`https://${allowedHost}:${tlsServer.port}/face.jpg`, { allowHosts: [allowedHost] }),
          "image_fetch_failed",
          /TLS/,
        );
        assert.equal(tlsServer.connections, 2);
        assert.deepEqual(tlsServer.serverNames, ["img.test"]);
      } finally {
        await tlsServer.close();
      }
    });
  });
});

describe("image intake: address policy table", () => {
  it("classifies boundaries of each range", () => {
    const refusedAddrs = ["0.1.2.3", "10.255.255.255", "100.64.0.0", "100.127.255.255", "127.255.255.255", "172.16.0.0", "172.31.255.255", "192.168.255.255", "169.254.0.0", "224.0.0.0", "239.255.255.255", "::ffff:10.0.0.1", "::ffff:0:10.0.0.1", "fe80::", "febf:ffff::1", "fc00::", "fdff:ffff::1", "2001:db8:ffff::1", "3fff::1", "::2"];
    const allowedAddrs = ["1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255", "128.0.0.0", "172.15.255.255", "172.32.0.0", "169.253.255.255", "169.255.0.0", "192.167.255.255", "192.169.0.0", "223.255.255.255", "::ffff:8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::200e", "64:ff9b::808:808", "2002:808:808::1"];
    for (const a of refusedAddrs) assert.ok(classifyAddress(a), `${a} should be refused`);
    for (const a of allowedAddrs) assert.equal(classifyAddress(a), undefined, `${a} should be allowed`);
  });
});

describe("image intake: decodeImageData", () => {
  it("decodes strict base64 JPEG and PNG", () => {
    const jpeg = decodeImageData(JPEG.toString("base64"));
    assert.deepEqual(jpeg.bytes, JPEG);
    assert.equal(jpeg.format, "jpeg");
    assert.equal(jpeg.contentType, "image/jpeg");
    const png = decodeImageData(PNG.toString("base64"));
    assert.equal(png.format, "png");
    assert.equal(decodeImageData(BMP.toString("base64")).format, "bmp");
    assert.equal(decodeImageData(WEBP.toString("base64")).format, "webp");
  });

  it("refuses a data: URL prefix and says to strip it", () => {
    for (const prefix of ["data:image/jpeg;base64,", "DATA:image/png;base64,", " data:;base64,"]) {
      assert.throws(
        () => decodeImageData(prefix + JPEG.toString("base64")),
        (e: unknown) => e instanceof FaceError && e.code === "invalid_image" && /strip the "data:/.test(e.message),
      );
    }
  });

  it("checks the size before decoding", () => {
    // Not even valid base64: the size rule still answers first, so nothing was decoded.
    const huge = "!".repeat(8 * 1024 * 1024);
    assert.throws(() => decodeImageData(huge), (e: unknown) => e instanceof FaceError && e.code === "image_too_large");
    const b64 = Buffer.concat([JPEG.subarray(0, 16), Buffer.alloc(1000 - 16)]).toString("base64");
    assert.equal(decodeImageData(b64, 1000).bytes.length, 1000);
    assert.throws(() => decodeImageData(b64, 999), (e: unknown) => e instanceof FaceError && e.code === "image_too_large" && /limit is 999/.test(e.message));
  });

  it("refuses non-strict base64 with a precise message", () => {
    const good = JPEG.subarray(0, 300).toString("base64");
    const cases: Array<[string, RegExp]> = [
      ["", /empty/],
      [good.slice(0, 76) + "\n" + good.slice(76), /whitespace or line breaks/],
      [` ${good}`, /whitespace/],
      [good.replace(/\+/g, "-").replace(/\//g, "_") + "-_", /base64url/],
      [good.slice(0, 40) + "*" + good.slice(41), /outside the base64 alphabet/],
      [good.replace(/=+$/, "") + "A", /padded with '='|invalid length/],
      [good.slice(0, -1), /invalid length|padded/],
      [good + "===", /outside the base64 alphabet|invalid length/],
      ["A=B=", /outside the base64 alphabet/],
    ];
    for (const [input, message] of cases) {
      assert.throws(
        () => decodeImageData(input),
        (e: unknown) => e instanceof FaceError && e.code === "invalid_image" && message.test(e.message),
        JSON.stringify(input.slice(0, 30)),
      );
    }
  });

  it("refuses valid base64 that is not an accepted image", () => {
    for (const body of [GIF, Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'/>"), Buffer.from("BM hello world, not a bitmap")]) {
      assert.throws(
        () => decodeImageData(body.toString("base64")),
        (e: unknown) => e instanceof FaceError && e.code === "invalid_image" && /not a JPEG, PNG, BMP or WEBP/.test(e.message),
      );
    }
    assert.throws(() => decodeImageData(42 as unknown as string), (e: unknown) => e instanceof FaceError && e.code === "invalid_input");
  });

  it("sniffImageFormat needs the full signatures", () => {
    assert.equal(sniffImageFormat(Buffer.from([0xff, 0xd8])), undefined);
    assert.equal(sniffImageFormat(PNG.subarray(0, 7)), undefined);
    assert.equal(sniffImageFormat(Buffer.from("RIFF\0\0\0\0WEBP")), "webp");
    assert.equal(sniffImageFormat(BMP.subarray(0, 17)), undefined);
  });
});
