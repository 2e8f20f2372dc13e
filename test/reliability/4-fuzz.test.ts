/**
 * Reliability item 4: 10,000 fuzzed requests against the real example server
 * process — random and mutated x402 headers (v1 and v2), payment tokens,
 * bodies, content types and encodings, sizes, methods and paths — then:
 * zero 5xx, zero crashes (the process is alive, nothing logged as
 * unexpected), every answer valid JSON, and the server still serves paid
 * calls (x402 and token).
 *
 * Deterministic: a seeded PRNG (RELIABILITY_FUZZ_SEED, printed) generates
 * every request; RELIABILITY_FUZZ_REQUESTS sets the count (default 10000).
 * No request can make the server reach outside loopback: image URLs only
 * name loopback / private / metadata addresses, which it refuses before
 * connecting.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { startDevChain, type DevChain } from "server402/devchain";
import type { AlibabaEmulator } from "../support/alibaba-emulator.js";
import { startServerProcess, type ServerProcess } from "../support/server-process.js";
import { ADMIN_KEY, buyToken, compare, FACE_BODY, FACE_PATH, freshPayTo, PRICE, serverEnv, startEmulator, tempDir, TINY_JPEG, x402Headers } from "./support.js";

const TOTAL = Number(process.env.RELIABILITY_FUZZ_REQUESTS ?? 10_000);
const SEED = Number(process.env.RELIABILITY_FUZZ_SEED ?? 402_2026);
const CONCURRENCY = 16;
const BODY_LIMIT = 65_536;
/** Bytes of request line + headers the fuzzer stays under (Node refuses more than 16 KB itself). */
const HEADER_BUDGET = 14_000;

/** mulberry32: small, fast, good enough to drive a fuzzer reproducibly. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const str = (n: number, alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=:@/?%") =>
    Array.from({ length: n }, () => alphabet[int(alphabet.length)]).join("");
  return { next, int, pick, bytes, str, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof prng>;

interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  kind: string;
}

interface Seeds {
  v1: string[];
  v2: string[];
  tokens: string[];
  paymentIds: string[];
}

const METHODS = ["GET", "POST", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"] as const;
const KNOWN_PATHS = [
  FACE_PATH,
  "/api/tools/aliyun-facebody-compare-face",
  "/api/payments",
  "/api/payments/PAY",
  "/api/payments/PAY/pay",
  "/api/payments/PAY/confirm",
  "/api/ledger",
  "/api/devchain",
  "/api/services",
  "/openapi.json",
  "/mcp",
  "/.well-known/x402",
  "/",
];
const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/json; charset=utf-16",
  "application/json; charset=utf-7",
  "application/json; charset=bogus",
  "text/plain",
  "text/html",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "application/octet-stream",
  "image/jpeg",
  "application/vnd.api+json",
  "*/*",
  "",
  ";;;",
  "application/json;;charset=",
];
const ENCODINGS = ["gzip", "deflate", "br", "identity", "gzip, gzip", "bogus", "x-gzip", ""];
/** Image URL hosts the server refuses before connecting (no traffic can leave loopback). */
const URL_HOSTS = ["127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "localhost", "0x7f.1", "2130706433", "192.168.1.1", "[fd00:ec2::254]", "0.0.0.0"];

function randomJsonValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 7 : 9)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick([0, -1, 1e308, -1e308, 2 ** 53 + 1, 0.1, 100, 101, -0, 1e-320]);
    case 3:
      return r.str(r.int(40));
    case 4:
      return "";
    case 5:
      return r.pick(["0x", "0x00", `0x${"f".repeat(64)}`, `0x${"0".repeat(130)}`, "NaN", "Infinity", "__proto__", "constructor", "$0.20", "base-sepolia", "eip155:84532", "exact"]);
    case 6:
      return "x".repeat(r.pick([1000, 5000, 20_000]));
    case 7:
      return Array.from({ length: r.int(5) }, () => randomJsonValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) o[r.pick(["a", "from", "to", "value", "nonce", "x402Version", "payload", "__proto__", "constructor", r.str(8)])] = randomJsonValue(r, depth + 1);
      return o;
    }
  }
}

/** Mutate one leaf of a JSON object (in place), possibly deep. */
function mutateJson(r: Rng, obj: Record<string, unknown>): void {
  let node: Record<string, unknown> = obj;
  for (let depth = 0; depth < 4; depth++) {
    const keys = Object.keys(node);
    if (!keys.length) break;
    const k = r.pick(keys);
    const v = node[k];
    if (v && typeof v === "object" && !Array.isArray(v) && r.chance(0.7)) {
      node = v as Record<string, unknown>;
      continue;
    }
    const op = r.int(5);
    if (op === 0) delete node[k];
    else if (op === 1 && typeof v === "string" && v.length) node[k] = v.slice(0, -1) + r.pick(["0", "f", "F", "x", ""]);
    else if (op === 2) node[k] = randomJsonValue(r);
    else if (op === 3) node[r.str(6)] = randomJsonValue(r);
    else node[k] = typeof v === "string" && /^\d+$/.test(v) ? (BigInt(v) + BigInt(r.pick([-1, 1, 10 ** 6]))).toString() : randomJsonValue(r);
    return;
  }
}

function mutateBase64(r: Rng, s: string): string {
  switch (r.int(6)) {
    case 0:
      return s.slice(0, r.int(s.length));
    case 1: {
      const i = r.int(s.length);
      return s.slice(0, i) + r.pick(["A", "/", "+", "=", "-", "_", "!"]) + s.slice(i + 1);
    }
    case 2:
      return s + r.str(r.int(10) + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=");
    case 3:
      return Buffer.from(s, "base64").toString("base64url");
    case 4:
      return s.replace(/=+$/, "");
    default:
      return ` ${s} `;
  }
}

function paymentHeader(r: Rng, seeds: Seeds): Record<string, string> {
  const v2 = r.chance(0.5);
  const name = v2 ? "payment-signature" : "x-payment";
  const valid = r.pick(v2 ? seeds.v2 : seeds.v1);
  let value: string;
  switch (r.int(6)) {
    case 0:
      value = r.bytes(r.int(300)).toString("base64");
      break;
    case 1:
      value = Buffer.from(JSON.stringify(randomJsonValue(r))).toString("base64");
      break;
    case 2:
      value = mutateBase64(r, valid);
      break;
    case 3:
      value = r.str(r.int(200));
      break;
    default: {
      const json = JSON.parse(Buffer.from(valid, "base64").toString("utf8"));
      for (let i = 1 + r.int(3); i > 0; i--) mutateJson(r, json);
      value = Buffer.from(JSON.stringify(json)).toString("base64");
    }
  }
  const headers: Record<string, string> = { [name]: value };
  if (r.chance(0.1)) headers[v2 ? "x-payment" : "payment-signature"] = r.pick([...seeds.v1, ...seeds.v2]);
  return headers;
}

function tokenHeader(r: Rng, seeds: Seeds): Record<string, string> {
  const v = r.pick([
    () => `s402_${r.bytes(32).toString("base64url")}`, // well-formed, unknown
    () => r.pick(seeds.tokens), // paid, maybe already used
    () => mutateBase64(r, r.pick(seeds.tokens)),
    () => r.str(r.int(100)),
    () => "s402_",
    () => `s402_${"A".repeat(43)}`,
  ])();
  return { "x-payment-token": v };
}

function faceBody(r: Rng): Buffer {
  const b64 = TINY_JPEG.toString("base64");
  const url = () => `${r.pick(["http", "https", "ftp", "file", "gopher", "data"])}://${r.pick(URL_HOSTS)}${r.pick(["", ":80", ":8545", ":6379"])}/${r.str(r.int(20))}`;
  const options: Array<() => unknown> = [
    () => ({ ImageDataA: b64, ImageDataB: b64 }),
    () => ({ ImageDataA: b64, ImageDataB: b64, QualityScoreThreshold: randomJsonValue(r) }),
    () => ({ ImageURLA: url(), ImageURLB: url() }),
    () => ({ ImageURLA: url(), ImageDataB: b64 }),
    () => ({ ImageDataA: mutateBase64(r, b64), ImageDataB: r.bytes(r.int(64)).toString("base64") }),
    () => ({ ImageDataA: `data:image/jpeg;base64,${b64}`, ImageDataB: b64 }),
    () => ({ ImageDataA: b64, ImageURLA: url(), ImageDataB: b64 }),
    () => ({ imagedataa: b64, ImageDataB: b64 }),
    () => randomJsonValue(r),
    () => {
      const o: Record<string, unknown> = { ImageDataA: b64, ImageDataB: b64 };
      mutateJson(r, o);
      return o;
    },
  ];
  return Buffer.from(JSON.stringify(r.pick(options)()));
}

function randomBody(r: Rng): Buffer | undefined {
  switch (r.int(9)) {
    case 0:
      return undefined;
    case 1:
      return Buffer.alloc(0);
    case 2:
      return r.bytes(r.int(2000));
    case 3:
      return Buffer.from(JSON.stringify(randomJsonValue(r)));
    case 4:
      return Buffer.from(`${"[".repeat(r.pick([10, 1000, 5000]))}${"]".repeat(r.int(3) ? 0 : 5000)}`);
    case 5:
      return Buffer.from(r.pick(['{"a":', "{", "null", "1", '"x"', "[]", "{}", '{"serviceId":"face-comparison"', "\u0000\u0001", "\ufeff{}", '{"__proto__":{"x":1}}']));
    case 6:
      return Buffer.alloc(BODY_LIMIT + 1 + r.int(100_000), 0x41); // over the limit
    case 7:
      return Buffer.from(JSON.stringify({ serviceId: r.pick(["face-comparison", "FACE-COMPARISON", "", "x".repeat(100), 1]), providerId: randomJsonValue(r) }));
    default:
      return faceBody(r);
  }
}

function randomPath(r: Rng, seeds: Seeds): string {
  const id = r.pick([r.pick(seeds.paymentIds), `pay_${r.str(12, "abcdefABCDEF0123456789_-")}`, r.str(r.int(30)), "..", "%2e%2e", "pay_%00", "x".repeat(3000)]);
  let p = r.pick(KNOWN_PATHS).replace("PAY", encodeURIComponent(id).replace(/%25/g, r.chance(0.5) ? "%" : "%25"));
  switch (r.int(8)) {
    case 0:
      p = `/${r.str(r.int(50))}`.replace(/[?#]/g, "");
      break;
    case 1:
      p += `?${r.str(r.int(100))}`;
      break;
    case 2:
      p = p.toUpperCase();
      break;
    case 3:
      p += r.pick(["/", "//", "/.", "/..", "%2F", "%00", "%", "%zz", "%c0%ae", "%E2%82", ";x=1", "/extra"]);
      break;
    case 4:
      p = p.replace(/\//g, r.pick(["//", "/./", "/%2f"]));
      break;
    default:
      break;
  }
  return p.replace(/[\s#]/g, "") || "/";
}

function generate(r: Rng, seeds: Seeds): FuzzRequest {
  const headers: Record<string, string> = {};
  const kind = r.pick(["face-payment", "face-payment", "face-token", "face-unpaid", "payments-api", "random", "random", "oversize", "encoding"] as const);
  let method: string = r.pick(METHODS);
  let path = randomPath(r, seeds);
  let body = randomBody(r);
  if (kind.startsWith("face")) {
    method = r.chance(0.9) ? "POST" : method;
    path = r.chance(0.9) ? FACE_PATH : "/api/tools/aliyun-facebody-compare-face";
    body = r.chance(0.8) ? faceBody(r) : body;
    if (kind === "face-payment") Object.assign(headers, paymentHeader(r, seeds));
    if (kind === "face-token") Object.assign(headers, tokenHeader(r, seeds));
  } else if (kind === "payments-api") {
    path = r.pick(KNOWN_PATHS.filter((p) => p.startsWith("/api/payments") || p === "/api/ledger")).replace("PAY", r.pick(seeds.paymentIds));
    if (r.chance(0.3)) path += `?afterId=${r.pick(["0", "-1", "1e3", "abc", "99999999999999999999", ""])}&limit=${r.pick(["1", "0", "1001", "x", "100"])}`;
    if (r.chance(0.5)) headers.authorization = r.pick([`Bearer ${ADMIN_KEY}`, "Bearer wrong-key-wrong-key-1234", "Bearer", "Basic Zm9vOmJhcg==", `bearer ${ADMIN_KEY} extra`, r.str(40)]);
    if (r.chance(0.4)) Object.assign(headers, paymentHeader(r, seeds));
  } else if (kind === "oversize") {
    body = Buffer.alloc(BODY_LIMIT + r.int(200_000), r.pick([0x20, 0x7b, 0x41]));
    if (r.chance(0.5)) headers["x-fuzz-big"] = "y".repeat(r.int(HEADER_BUDGET / 2));
  } else if (kind === "encoding") {
    headers["content-encoding"] = r.pick(ENCODINGS);
  }
  if (r.chance(0.8)) headers["content-type"] = r.pick(CONTENT_TYPES);
  if (r.chance(0.1)) headers.accept = r.pick(["text/html", "text/html,application/xhtml+xml", "*/*", "application/json", "text/event-stream", "image/png"]);
  if (r.chance(0.1)) headers["user-agent"] = r.pick(["Mozilla/5.0 (X11; Linux x86_64)", "curl/8", r.str(30)]);
  if (r.chance(0.05)) headers["x-forwarded-for"] = r.pick(["1.2.3.4", "::1", "garbage", "1.2.3.4, 5.6.7.8", "999.999.999.999"]);
  if (r.chance(0.05)) headers["x-forwarded-proto"] = r.pick(["https", "gopher", ""]);
  if (method === "HEAD" || method === "GET") body = r.chance(0.2) ? body : undefined;
  // Stay under Node's 16 KB header limit (answers beyond it are Node's own; see the dedicated test below).
  let size = Object.entries(headers).reduce((n, [k, v]) => n + k.length + v.length + 4, path.length);
  while (size > HEADER_BUDGET) {
    const [k, v] = Object.entries(headers).sort((a, b) => b[1].length - a[1].length)[0]!;
    const cut = Math.min(v.length, size - HEADER_BUDGET + 1);
    headers[k] = v.slice(0, v.length - cut);
    size -= cut;
  }
  return { method, path, headers, body, kind };
}

interface Outcome {
  status: number;
  contentType: string;
  body: Buffer;
}

function send(agent: http.Agent, base: URL, req: FuzzRequest): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...req.headers };
    if (req.body) headers["content-length"] = String(req.body.length);
    const r = http.request({ agent, host: base.hostname, port: base.port, method: req.method, path: req.path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    r.setTimeout(30_000, () => r.destroy(new Error("no answer within 30 s")));
    r.on("error", reject);
    r.end(req.body);
  });
}

describe("reliability 4: fuzzed requests against the example server process", function () {
  this.timeout(600_000);
  let chain: DevChain;
  let emulator: AlibabaEmulator;
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  const payTo = freshPayTo();

  before(async () => {
    dir = tempDir("r4");
    chain = await startDevChain();
    emulator = await startEmulator();
    server = await startServerProcess({
      name: "r4",
      env: serverEnv({ chain, emulator, payTo, store: "sqlite", dataDir: dir.path, extra: { BODY_LIMIT_BYTES: String(BODY_LIMIT), IMAGE_MAX_BYTES: "32768" } }),
    });
  });
  after(async () => {
    await server?.stop();
    await emulator?.close();
    await chain?.stop();
    dir?.remove();
  });

  it(`${TOTAL.toLocaleString("en-US")} fuzzed requests → zero 5xx, zero crashes, every answer valid JSON, still serving paid calls after`, async () => {
    const r = prng(SEED);
    const payers = chain.accounts.payers;
    const seeds: Seeds = { v1: [], v2: [], tokens: [], paymentIds: [] };
    for (let i = 0; i < 8; i++) {
      seeds.v1.push((await x402Headers(chain, payers[i % 4]!.privateKey, payTo, 1))["x-payment"]!);
      seeds.v2.push((await x402Headers(chain, payers[4 + (i % 4)]!.privateKey, payTo, 2))["payment-signature"]!);
    }
    for (let i = 0; i < 5; i++) {
      const t = await buyToken(server.url, `10.4.0.${i + 1}`);
      seeds.tokens.push(t.token);
      seeds.paymentIds.push(t.paymentId);
    }
    const requests = Array.from({ length: TOTAL }, () => generate(r, seeds));

    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const base = new URL(server.url);
    const statuses = new Map<number, number>();
    const kinds = new Map<string, number>();
    const failures: string[] = [];
    let next = 0;
    let resets = 0;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < requests.length) {
          const req = requests[next++]!;
          const where = `${req.kind} ${req.method} ${req.path.slice(0, 80)} (${Object.keys(req.headers).join(",")}; ${req.body?.length ?? "no"} body bytes)`;
          let out: Outcome;
          try {
            out = await send(agent, base, req);
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            // An over-limit body is answered (413) before it is read; the client may then see its write reset.
            if ((req.body?.length ?? 0) > BODY_LIMIT && (code === "ECONNRESET" || code === "EPIPE")) {
              resets++;
              continue;
            }
            failures.push(`${where}: transport error ${(err as Error).message}`);
            if (!server.alive()) return;
            continue;
          }
          statuses.set(out.status, (statuses.get(out.status) ?? 0) + 1);
          if (out.status === 200) kinds.set(req.kind, (kinds.get(req.kind) ?? 0) + 1);
          if (out.status >= 500) failures.push(`${where}: ${out.status} ${out.body.toString("utf8", 0, 200)}`);
          const bodyless = req.method === "HEAD" || out.status === 204 || out.status === 304;
          if (bodyless) continue;
          // Pages for people (issue 19) answer requests that prefer HTML.
          if (/text\/html/.test(req.headers.accept ?? "") && out.contentType.startsWith("text/html")) continue;
          try {
            JSON.parse(out.body.toString("utf8"));
          } catch {
            failures.push(`${where}: ${out.status} ${out.contentType} body is not JSON: ${JSON.stringify(out.body.toString("utf8", 0, 120))}`);
          }
        }
      }),
    );
    agent.destroy();
    const seconds = (Date.now() - started) / 1000;
    console.log(`      seed ${SEED}: ${TOTAL} requests in ${seconds.toFixed(1)} s; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; 200s by kind ${JSON.stringify(Object.fromEntries(kinds))}; over-limit uploads reset after their 413: ${resets}`);

    assert.ok(server.alive(), `the server process died:\n${server.output().slice(-3000)}`);
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} bad answers (first 20 shown)`);
    const unexpected = server.output().split("\n").filter((l) => /unexpected error/.test(l));
    assert.deepEqual(unexpected.slice(0, 5), [], "the server logged unexpected errors");

    // Still serving paid calls: a fresh x402 payment and a fresh token.
    const payer = payers[8]!;
    const before = await chain.balanceOf(payer.address);
    const paid = await compare(server.url, await x402Headers(chain, payer.privateKey, payTo, 2));
    assert.equal(paid.status, 200, paid.text);
    assert.equal(before - (await chain.balanceOf(payer.address)), PRICE);
    const { token } = await buyToken(server.url, "10.4.1.1");
    const byToken = await compare(server.url, { "x-payment-token": token }, FACE_BODY);
    assert.equal(byToken.status, 200, byToken.text);
  });

  // Found by the fuzzer; kept as named regressions.
  it("a path parameter with invalid percent-encoding (POST /api/payments/pay_%zz, /api/payments/%E2%82/confirm) → 400 JSON, not 500", async () => {
    const agent = new http.Agent();
    try {
      for (const path of ["/api/payments/pay_%zz", "/api/payments/%E2%82/confirm", "/api/payments/pay_%/pay"]) {
        for (const method of ["GET", "POST"]) {
          const out = await send(agent, new URL(server.url), { method, path, headers: { "content-type": "application/json" }, body: Buffer.from("{}"), kind: "regression" });
          assert.equal(out.status, 400, `${method} ${path} → ${out.status} ${out.body.toString()}`);
          assert.equal(typeof JSON.parse(out.body.toString()).error, "string");
        }
      }
    } finally {
      agent.destroy();
    }
  });

  it("request headers over Node's 16 KB limit → 431 with a JSON body (not Node's empty answer)", async () => {
    const agent = new http.Agent();
    try {
      const out = await send(agent, new URL(server.url), { method: "POST", path: FACE_PATH, headers: { "payment-signature": "A".repeat(20_000) }, body: Buffer.from(FACE_BODY), kind: "regression" });
      assert.equal(out.status, 431);
      assert.ok(server.alive());
      let json: { error?: unknown } | undefined;
      try {
        json = JSON.parse(out.body.toString());
      } catch {
        assert.fail(`431 body is not JSON: ${JSON.stringify(out.body.toString())} (content-type ${JSON.stringify(out.contentType)})`);
      }
      assert.equal(typeof json?.error, "string");
    } finally {
      agent.destroy();
    }
  });
});
