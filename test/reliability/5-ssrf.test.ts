/**
 * Reliability item 5: every SSRF target, sent as `ImageURLA` in a paid call
 * to the real example server process → refused (400 with a clear code), and
 * no connection: recording listeners on 127.0.0.1, 127.0.0.2 and [::1] (same
 * port) count none, and the server process's own connect log (net-probe.ts,
 * loaded with --import) shows no attempt to any target. Nothing is charged:
 * one 1-call token pays for every probe and still has its call at the end.
 *
 * DNS names resolving to private, link-local and metadata addresses come
 * from net-probe's host table (an /etc/hosts for the child); `localhost`
 * goes to the real system resolver.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startDevChain, type DevChain } from "server402/devchain";
import type { AlibabaEmulator } from "../support/alibaba-emulator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { startListenerSet, type ListenerSet } from "../support/ssrf-listeners.js";
import { buyToken, compare, freshPayTo, paymentOf, serverEnv, sleep, startEmulator, tempDir, TINY_JPEG, waitFor } from "./support.js";

const PROBE = fileURLToPath(new URL("./net-probe.ts", import.meta.url));

/** Host names the child's resolver answers (name → addresses). */
const HOSTS: Record<string, string[]> = {
  "loopback.evil.test": ["127.0.0.1"],
  "loopback6.evil.test": ["::1"],
  "mapped.evil.test": ["::ffff:127.0.0.1"],
  "private10.evil.test": ["10.0.0.1"],
  "private192.evil.test": ["192.168.0.10"],
  "linklocal.evil.test": ["169.254.1.1"],
  "linklocal6.evil.test": ["fe80::1"],
  "ula.evil.test": ["fd00::2"],
  "metadata.evil.test": ["169.254.169.254"],
  "metadata.google.internal": ["169.254.169.254"],
  "mixed.evil.test": ["93.184.215.14", "10.0.0.7"],
  "unspecified.evil.test": ["0.0.0.0"],
};

/** Direct targets (PORT = the listeners' port). */
const DIRECT = [
  // loopback v4 / v6 and their spellings
  "http://127.0.0.1:PORT/a.jpg",
  "https://127.0.0.1:PORT/a.jpg",
  "http://[::1]:PORT/a.jpg",
  "http://localhost:PORT/a.jpg",
  "http://LOCALHOST:PORT/a.jpg",
  "http://0.0.0.0:PORT/",
  "http://0:PORT/",
  "http://[::]:PORT/",
  "http://[::ffff:127.0.0.1]:PORT/",
  "http://[::ffff:7f00:1]:PORT/",
  "http://[::127.0.0.1]:PORT/",
  "http://127.1:PORT/",
  "http://127.0.0.1.:PORT/",
  // decimal, octal, hex spellings
  "http://2130706433:PORT/",
  "http://0177.0.0.1:PORT/",
  "http://017700000001:PORT/",
  "http://0x7f.1:PORT/",
  "http://0x7f000001:PORT/",
  // private ranges
  "http://10.0.0.1/",
  "http://10.255.255.255/",
  "http://172.16.0.1/",
  "http://172.31.255.254/",
  "http://192.168.1.1/",
  "http://100.64.0.1/",
  "http://[fc00::1]/",
  "http://[fd12:3456::1]/",
  "http://[64:ff9b::a00:1]/",
  // link-local
  "http://169.254.1.1/",
  "http://[fe80::1]/",
  // metadata endpoints
  "http://169.254.169.254/latest/meta-data/",
  "http://2852039166/latest/meta-data/",
  "http://0251.0376.0251.0376/latest/meta-data/",
  "http://[::ffff:169.254.169.254]/latest/meta-data/",
  "http://[fd00:ec2::254]/latest/meta-data/",
  "http://100.100.100.200/latest/meta-data/",
  "http://168.63.129.16/machine",
  // DNS names resolving to them
  "http://loopback.evil.test:PORT/",
  "http://loopback6.evil.test:PORT/",
  "http://mapped.evil.test:PORT/",
  "http://private10.evil.test/",
  "http://private192.evil.test/",
  "http://linklocal.evil.test/",
  "http://linklocal6.evil.test/",
  "http://ula.evil.test/",
  "http://metadata.evil.test/latest/meta-data/",
  "http://metadata.google.internal/computeMetadata/v1/",
  "http://mixed.evil.test/",
  "http://unspecified.evil.test:PORT/",
];

/** Non-http(s) schemes: refused by input validation, before payment. */
const SCHEMES = ["file:///etc/passwd", "ftp://127.0.0.1:PORT/a.jpg", "gopher://127.0.0.1:PORT/_GET%20/", "data:image/jpeg;base64,/9j/4A==", "javascript:alert(1)", "ws://127.0.0.1:PORT/", "dict://127.0.0.1:PORT/", "blob:http://127.0.0.1/x"];

/** Where the allowlisted redirector (127.0.0.2) sends the server. */
const REDIRECT_TARGETS = [
  "http://127.0.0.1:PORT/a.jpg",
  "http://[::1]:PORT/a.jpg",
  "http://localhost:PORT/a.jpg",
  "http://2130706433:PORT/a.jpg",
  "http://0177.0.0.1:PORT/a.jpg",
  "http://[::ffff:127.0.0.1]:PORT/a.jpg",
  "http://169.254.169.254/latest/meta-data/",
  "http://[fd00:ec2::254]/latest/meta-data/",
  "http://10.0.0.1/",
  "http://192.168.1.1/",
  "http://loopback.evil.test:PORT/",
  "http://metadata.evil.test/",
  "file:///etc/passwd",
  "gopher://127.0.0.1:PORT/",
  "ftp://127.0.0.1:PORT/",
];

describe("reliability 5: SSRF targets through the example server process", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let emulator: AlibabaEmulator;
  let server: ServerProcess;
  let L: ListenerSet;
  let dir: ReturnType<typeof tempDir>;
  let netLog: string;
  let token: string;
  let paymentId: string;
  const payTo = freshPayTo();
  const refusals: string[] = [];

  const connects = (): Array<{ host?: string; port?: number }> =>
    readFileSync(netLog, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l));

  before(async () => {
    dir = tempDir("r5");
    netLog = join(dir.path, "connects.jsonl");
    writeFileSync(netLog, "");
    L = await startListenerSet();
    chain = await startDevChain();
    emulator = await startEmulator();
    server = await startServerProcess({
      name: "r5",
      preload: [PROBE],
      env: serverEnv({
        chain,
        emulator,
        payTo,
        store: "sqlite",
        dataDir: dir.path,
        // one token pays for every refused target here: its failed calls must not lock it out (abuse limit A5)
        extra: { PAYMENT_MAX_RETRIES: "100", IMAGE_FETCH_ALLOW_HOSTS: L.alt ? "127.0.0.2" : undefined, IMAGE_FETCH_TIMEOUT_MS: "3000", NET_PROBE_LOG: netLog, NET_PROBE_HOSTS: JSON.stringify(HOSTS) },
      }),
    });
    ({ token, paymentId } = await buyToken(server.url));
  });
  after(async () => {
    await server?.stop();
    await emulator?.close();
    await chain?.stop();
    await L?.close();
    dir?.remove();
  });

  /** One probe: refused with `code`, no listener connection, no connect attempt except `allowed` ones, nothing upstream. */
  async function probe(url: string, code: string, allowed: Array<{ host: string; port: number }> = [], setup?: () => void) {
    L.reset();
    setup?.();
    const before = connects().length;
    const upstream = emulator.attempts().length;
    const res = await compare(server.url, { "x-payment-token": token }, JSON.stringify({ ImageURLA: url, ImageDataB: TINY_JPEG.toString("base64") }));
    await sleep(30);
    assert.equal(res.status, 400, `${url}: ${res.text}`);
    assert.equal(res.json.code, code, `${url}: ${res.text}`);
    const attempts = connects().slice(before);
    const stray = attempts.filter((a) => !allowed.some((x) => x.host === a.host && x.port === a.port));
    assert.deepEqual(stray, [], `${url}: the server attempted a connection`);
    const seen = L.all().reduce((n, r) => n + r.connections, 0);
    assert.equal(seen, allowed.length, `${url}: a listener saw a connection`);
    assert.equal(emulator.attempts().length, upstream, `${url}: the face engine was called`);
    refusals.push(`${url} → ${res.json.message}`);
  }

  it(`${DIRECT.length} direct targets (loopback v4/v6, private, link-local, metadata, decimal/octal/hex spellings, DNS names resolving to them) → refused, 0 connections`, async () => {
    for (const t of DIRECT) await probe(t.replace("PORT", String(L.port)), "image_url_forbidden");
  });

  it(`${SCHEMES.length} non-http schemes → refused before payment, 0 connections`, async () => {
    for (const t of SCHEMES) await probe(t.replace("PORT", String(L.port)), "image_url_forbidden");
  });

  it(`${REDIRECT_TARGETS.length} redirects from an allowlisted host to those targets → refused, 0 connections to any target`, async function () {
    if (!L.alt) {
      console.log("      skipped: 127.0.0.2 is not bindable here, so there is no allowlisted redirector");
      return this.skip();
    }
    for (const t of REDIRECT_TARGETS) {
      const location = t.replace("PORT", String(L.port));
      const redirector = L.alt;
      await probe(`http://127.0.0.2:${L.port}/start.jpg`, "image_url_forbidden", [{ host: "127.0.0.2", port: L.port }], () => {
        redirector.handler = (_req: http.IncomingMessage, res: http.ServerResponse) => {
          res.writeHead(302, { Location: location });
          res.end();
        };
      });
    }
  });

  it("nothing was charged: the token still has its call, and the detectors do see a real fetch (allowlisted 127.0.0.2 → 200)", async () => {
    const p = await paymentOf(server.url, paymentId);
    assert.equal(p.status, "paid");
    assert.equal(p.callsRemaining, 1);
    L.reset();
    const before = connects().length;
    const body = L.alt ? { ImageURLA: `http://127.0.0.2:${L.port}/ok.jpg`, ImageDataB: TINY_JPEG.toString("base64") } : { ImageDataA: TINY_JPEG.toString("base64"), ImageDataB: TINY_JPEG.toString("base64") };
    const ok = await compare(server.url, { "x-payment-token": token }, JSON.stringify(body));
    assert.equal(ok.status, 200, ok.text);
    if (L.alt) {
      assert.equal(L.alt.connections, 1, "the allowlisted listener saw the fetch");
      assert.ok(connects().slice(before).some((a) => a.host === "127.0.0.2" && a.port === L.port), "the connect log saw the fetch");
    }
    await waitFor("the call to be committed", async () => (await paymentOf(server.url, paymentId)).status === "exhausted", 5000);
    if (process.env.RELIABILITY_VERBOSE) console.log(refusals.map((r) => `      ${r}`).join("\n"));
  });
});
