/**
 * The example server end to end: validation before payment, paid comparisons
 * with both engines, error envelopes, and no charge for any failed comparison,
 * on a real chain.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { startDevChain, type DevChain } from "server402/devchain";
import { loadConfig } from "../example-server/src/config.js";
import { startServer, type RunningServer } from "../example-server/src/server.js";
import { behave, startAlibabaEmulator, type AlibabaEmulator } from "./support/alibaba-emulator.js";

const FIXTURES = new URL("./fixtures/faces/", import.meta.url);
const grace = readFileSync(new URL("grace_hopper.jpg", FIXTURES));
const astronaut = readFileSync(new URL("astronaut.png", FIXTURES));
const AK = { id: "test-ak", secret: "test-secret-do-not-log" };

describe("example server: paid face comparison end to end", function () {
  let chain: DevChain;
  let emu: AlibabaEmulator;
  let srv: RunningServer;
  let url: string;
  let images: Server;
  let imagesUrl: string;

  before(async () => {
    chain = await startDevChain();
    emu = await startAlibabaEmulator({ accessKeyId: AK.id, accessKeySecret: AK.secret });
    images = createServer((req, res) => {
      if (req.url === "/grace.jpg") return void res.writeHead(200, { "content-type": "image/jpeg" }).end(grace);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => images.listen(0, "127.0.0.1", r));
    imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
    const config = loadConfig({
      PORT: "0",
      STORE: "memory",
      DEVCHAIN: "off",
      RPC_URL: chain.rpcUrl,
      PAY_TO: chain.accounts.payTo.address,
      RELAYER_PRIVATE_KEY: chain.accounts.relayer.privateKey,
      ALIBABA_CLOUD_ACCESS_KEY_ID: AK.id,
      ALIBABA_CLOUD_ACCESS_KEY_SECRET: AK.secret,
      ALIBABA_ENDPOINT: emu.endpoint,
      ALIBABA_PROTOCOL: "http",
      ALIBABA_TIMEOUT_MS: "1500",
      IMAGE_FETCH_ALLOW_HOSTS: "127.0.0.1",
      BODY_LIMIT_BYTES: "2000000",
      ADMIN_KEY: "admin-key-0123456789abcdef",
    });
    srv = await startServer(config, pino({ level: "silent" }));
    url = `http://127.0.0.1:${(srv.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await srv?.close();
    await emu?.close();
    images?.close();
    await chain?.stop();
  });
  beforeEach(() => emu.reset());

  const payer = (i: number) => chain.accounts.payers[i]!;
  const payingFetch = (i: number) => wrapFetchWithPayment(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(payer(i).privateKey))));
  const body = (b: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: typeof b === "string" ? b : JSON.stringify(b) });
  const pair = { ImageDataA: grace.toString("base64"), ImageDataB: astronaut.toString("base64") };

  it("refuses malformed input of a paying request with 400 naming the keys, before the paywall (an unpaid one gets 402 from its headers)", async () => {
    const paying = (b: unknown) => {
      const r = body(b);
      return { ...r, headers: { ...r.headers, "x-payment-token": "tok_not_checked_before_validation" } };
    };
    const cases: Array<[unknown, RegExp]> = [
      [{ imageUrlA: "https://x/a.jpg", ImageURLB: "https://x/b.jpg" }, /imageUrlA \(did you mean ImageURLA\?\).*expected keys are ImageURLA, ImageURLB, ImageDataA, ImageDataB, QualityScoreThreshold/],
      [{ ImageURLA: "https://x/a.jpg" }, /image B is missing/],
      [{ ImageURLA: "https://x/a.jpg", ImageDataA: "AAAA", ImageURLB: "https://x/b.jpg" }, /not both/],
      [{ ...pair, QualityScoreThreshold: 101 }, /QualityScoreThreshold/],
      [{ ...pair, QualityScoreThreshold: "50" }, /QualityScoreThreshold/],
      [{ ImageDataA: `data:image/jpeg;base64,${grace.toString("base64")}`, ImageDataB: pair.ImageDataB }, /ImageDataA: .*data:/],
      [{ ImageDataA: Buffer.from("not an image at all").toString("base64"), ImageDataB: pair.ImageDataB }, /ImageDataA/],
      [{ ImageURLA: "ftp://x/a.jpg", ImageURLB: "https://x/b.jpg" }, /http or https/],
      [[1, 2], /JSON object/],
    ];
    for (const [b, msg] of cases) {
      const res = await fetch(`${url}/api/tools/face-comparison`, paying(b));
      const json = await res.json();
      assert.equal(res.status, 400, JSON.stringify(json));
      assert.match(json.message, msg);
      assert.equal(res.headers.get("payment-required"), null, "a malformed request is never asked to pay");
      assert.ok(json.requestId);
    }
    const bad = await fetch(`${url}/api/tools/face-comparison`, paying("{not json"));
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error, "invalid_json");
    assert.equal((await fetch(`${url}/api/tools/face-comparison`, body("{not json"))).status, 402, "unpaid: answered from the headers");
    for (const send of [paying, body]) {
      const big = await fetch(`${url}/api/tools/face-comparison`, send({ ImageDataA: "A".repeat(2_100_000), ImageDataB: "AAAA" }));
      assert.equal(big.status, 413);
    }
    assert.equal(emu.attempts().length, 0);
  });

  it("answers 402 for a valid unpaid request, naming the path called (also the legacy endpoint)", async () => {
    for (const path of ["/api/tools/face-comparison", "/api/tools/aliyun-facebody-compare-face"]) {
      const res = await fetch(`${url}${path}`, body(pair));
      assert.equal(res.status, 402);
      const json = await res.json();
      assert.equal(json.accepts[0].resource, `${url}${path}`);
      assert.equal(json.accepts[0].maxAmountRequired, "200000");
      assert.equal(json.prepaid.serviceId, "face-comparison");
    }
  });

  it("a paid call returns Alibaba's envelope and charges exactly USD 0.20", async () => {
    const before = await chain.balanceOf(chain.accounts.payTo.address);
    const res = await payingFetch(0)(`${url}/api/tools/face-comparison`, body(pair));
    const json = await res.json();
    assert.equal(res.status, 200, JSON.stringify(json));
    assert.equal(json.code, "200");
    assert.equal(json.message, "success");
    assert.equal(json.content, "");
    assert.equal(json.data.Action, "CompareFace");
    for (const k of ["Confidence", "Thresholds", "RectAList", "RectBList", "QualityScoreA", "QualityScoreB"]) assert.ok(k in json.data.Result, k);
    assert.ok(json.requestId);
    assert.equal((await chain.balanceOf(chain.accounts.payTo.address)) - before, 200000n);
    const sent = emu.attempts()[0]!;
    assert.ok(sent.params.ImageDataA && sent.params.ImageDataB, "the SDK sends image data, never the user's URLs");
  });

  it("fetches ImageURL sides itself (allowlisted test host) and refuses private addresses", async () => {
    const ok = await payingFetch(1)(`${url}/api/tools/face-comparison`, body({ ImageURLA: `${imagesUrl}/grace.jpg`, ImageDataB: pair.ImageDataB }));
    assert.equal(ok.status, 200, await ok.text());
    const before = await chain.balanceOf(payer(1).address);
    const refused = await payingFetch(1)(`${url}/api/tools/face-comparison`, body({ ImageURLA: "http://10.1.2.3/a.jpg", ImageDataB: pair.ImageDataB }));
    const json = await refused.json();
    assert.equal(refused.status, 400);
    assert.equal(json.code, "image_url_forbidden");
    assert.equal(await chain.balanceOf(payer(1).address), before, "a refused image is not charged");
  });

  const failures: Array<[string, () => void, number, string]> = [
    ["no face", () => emu.script(behave.error("InvalidImage.NotFoundFace")), 422, "no_face"],
    ["upstream 5xx", () => emu.setDefault(behave.serverError(503, "ServiceUnavailable")), 502, "upstream_error"],
    ["upstream garbage", () => emu.setDefault(behave.garbage()), 502, "upstream_error"],
    ["upstream hang", () => emu.setDefault(behave.hang()), 504, "upstream_timeout"],
    ["throttled", () => emu.setDefault(behave.error("Throttling.User")), 503, "upstream_throttled"],
    ["bad credentials", () => emu.setDefault(behave.error("InvalidAccessKeyId.NotFound", { status: 404 })), 502, "engine_misconfigured"],
  ];
  for (const [label, arrange, status, code] of failures) {
    it(`${label} → ${status} ${code}, and the payer is not charged`, async () => {
      arrange();
      const before = await chain.balanceOf(payer(2).address);
      const payTo = await chain.balanceOf(chain.accounts.payTo.address);
      const res = await payingFetch(2)(`${url}/api/tools/face-comparison`, body(pair));
      const json = await res.json();
      assert.equal(res.status, status, JSON.stringify(json));
      assert.equal(json.code, code);
      assert.equal(json.data, null);
      assert.ok(!JSON.stringify(json).includes(AK.secret));
      assert.equal(res.headers.get("payment-response"), null);
      assert.equal(await chain.balanceOf(payer(2).address), before);
      assert.equal(await chain.balanceOf(chain.accounts.payTo.address), payTo);
    });
  }

  it("a prepaid token whose call fails upstream keeps its call", async () => {
    const created = await (await fetch(`${url}/api/payments`, body({ serviceId: "face-comparison" }))).json();
    const paid = await payingFetch(3)(created.pay.url, { method: "POST" });
    assert.equal(paid.status, 200, await paid.text());
    emu.script(behave.serverError(500), behave.serverError(500), behave.serverError(500)); // first try + 2 retries
    const withToken = { ...body(pair), headers: { "content-type": "application/json", "x-payment-token": created.token } };
    assert.equal((await fetch(`${url}/api/tools/face-comparison`, withToken)).status, 502);
    const state = await (await fetch(`${url}/api/payments/${created.paymentId}`)).json();
    assert.equal(state.callsRemaining, 1);
    // a reservation still held would make this one-call token answer 402 "exhausted"
    const ok = await fetch(`${url}/api/tools/face-comparison`, withToken);
    assert.equal(ok.status, 200);
  });

  it("unknown routes and methods get JSON 404", async () => {
    const res = await fetch(`${url}/nope`);
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error, "not_found");
  });
});

describe("example server with the embedded local engine", function () {
  let chain: DevChain;
  let srv: RunningServer;
  let url: string;
  before(async () => {
    chain = await startDevChain();
    srv = await startServer(
      loadConfig({ PORT: "0", STORE: "memory", DEVCHAIN: "off", RPC_URL: chain.rpcUrl, PAY_TO: chain.accounts.payTo.address, RELAYER_PRIVATE_KEY: chain.accounts.relayer.privateKey, FACE_WORKERS: "1" }),
      pino({ level: "silent" }),
    );
    url = `http://127.0.0.1:${(srv.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await srv?.close();
    await chain?.stop();
  });

  it("same person above the threshold, different people below; a picture with no face is not charged", async () => {
    const pay = wrapFetchWithPayment(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(chain.accounts.payers[4]!.privateKey))));
    const post = (b: unknown) => pay(`${url}/api/tools/face-comparison`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(b) });
    const same = await post({ ImageDataA: grace.toString("base64"), ImageDataB: grace.toString("base64") });
    const sj = await same.json();
    assert.equal(same.status, 200, JSON.stringify(sj));
    assert.ok(sj.data.Result.Confidence > sj.data.Result.Thresholds[1]);
    const diff = await post({ ImageDataA: grace.toString("base64"), ImageDataB: astronaut.toString("base64") });
    const dj = await diff.json();
    assert.equal(diff.status, 200);
    assert.ok(dj.data.Result.Confidence < dj.data.Result.Thresholds[0]);
    const before = await chain.balanceOf(chain.accounts.payers[4]!.address);
    const blank = (await import("sharp")).default({ create: { width: 320, height: 320, channels: 3, background: "#808080" } });
    const none = await post({ ImageDataA: (await blank.png().toBuffer()).toString("base64"), ImageDataB: grace.toString("base64") });
    assert.equal(none.status, 422);
    assert.equal((await none.json()).code, "no_face");
    assert.equal(await chain.balanceOf(chain.accounts.payers[4]!.address), before);
  });
});
