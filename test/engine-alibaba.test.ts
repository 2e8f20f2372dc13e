/**
 * The Alibaba CompareFace engine, exercised through the real
 * `@alicloud/facebody20191230` SDK against the local signature-verifying
 * emulator (test/support/alibaba-emulator.ts).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { inspect } from "node:util";
import { createAlibabaEngine, fromSdkData, toSdkData, type AlibabaEngineOptions } from "../example-server/src/engine/alibaba.js";
import { FaceError, FACE_ERROR_STATUS, type FaceErrorCode, type FaceEngine } from "../example-server/src/engine/types.js";
import { behave, SAMPLE_COMPARE_FACE_DATA, startAlibabaEmulator, type AlibabaEmulator } from "./support/alibaba-emulator.js";

const AK = "LTAI5tTestAccessKeyId";
const SK = "TestSecret-7f3c9a1e-do-not-leak";
const STS = "CAIS-test-sts-token-do-not-leak";
const fixture = (name: string) => readFileSync(new URL(`./fixtures/faces/${name}`, import.meta.url));
const IMAGE_A = fixture("grace_hopper.jpg");
const IMAGE_B = fixture("camera.png");
/** Budget used by most tests; keeps the suite fast. */
const BUDGET = 500;
/** Allowed lateness of a timeout beyond the budget. */
const MARGIN = 150;

describe("alibaba engine (real SDK ⇄ emulator)", function () {
  this.timeout(10_000);
  let emu: AlibabaEmulator;
  const engines: FaceEngine[] = [];
  /** Every error and log line produced in this suite: checked for the secret at the end. */
  const produced: unknown[] = [];
  const logger = {
    warn: (obj: Record<string, unknown>, msg: string) => void produced.push({ level: "warn", msg, ...obj }),
    error: (obj: Record<string, unknown>, msg: string) => void produced.push({ level: "error", msg, ...obj }),
  };

  function engine(over: Partial<AlibabaEngineOptions> = {}): FaceEngine {
    const e = createAlibabaEngine({
      accessKeyId: AK,
      accessKeySecret: SK,
      endpoint: emu.endpoint,
      protocol: "http",
      timeoutMs: BUDGET,
      retries: 2,
      retryBaseMs: 10,
      logger,
      ...over,
    });
    engines.push(e);
    return e;
  }

  async function rejectsWith(p: Promise<unknown>, code: FaceErrorCode): Promise<FaceError> {
    try {
      await p;
    } catch (err) {
      produced.push(err);
      assert.ok(err instanceof FaceError, `expected FaceError, got ${inspect(err)}`);
      assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
      assert.equal(err.status, FACE_ERROR_STATUS[code]);
      return err;
    }
    assert.fail(`expected rejection with ${code}`);
  }

  const compare = (e: FaceEngine, extra: { qualityScoreThreshold?: number; signal?: AbortSignal } = {}) =>
    e.compare({ imageA: IMAGE_A, imageB: IMAGE_B, ...extra });

  before(async () => {
    emu = await startAlibabaEmulator({ accessKeyId: AK, accessKeySecret: SK });
  });
  beforeEach(() => emu.reset());
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await emu.close();
  });

  describe("success", () => {
    it("sends a signed V3 CompareFace with Base64 images and maps Data to Alibaba field names", async () => {
      const { result, requestId } = await compare(engine(), { qualityScoreThreshold: 60 });
      assert.equal(emu.requests.length, 1);
      const req = emu.requests[0];
      assert.equal(req.method, "POST");
      assert.equal(req.url, "/");
      assert.equal(req.action, "CompareFace");
      assert.equal(req.version, "2019-12-30");
      assert.equal(req.accessKeyId, AK);
      assert.equal(req.signatureVerified, true);
      assert.equal(req.contentHashVerified, true);
      assert.match(String(req.headers.authorization), /^ACS3-HMAC-SHA256 Credential=/);
      assert.equal(req.headers["content-type"], "application/x-www-form-urlencoded");
      assert.deepEqual(Object.keys(req.params).sort(), ["ImageDataA", "ImageDataB", "QualityScoreThreshold"]);
      assert.equal(req.params.ImageDataA, IMAGE_A.toString("base64"));
      assert.equal(req.params.ImageDataB, IMAGE_B.toString("base64"));
      assert.equal(req.params.QualityScoreThreshold, "60");
      assert.equal(requestId, req.requestId);
      assert.deepEqual(result, { ...SAMPLE_COMPARE_FACE_DATA });
    });

    it("keeps MessageTips that are not a quality refusal, omits absent optional fields", async () => {
      emu.script(
        behave.success({
          MessageTips: "face in imageA is too small",
          LandmarksAList: undefined,
          LandmarksBList: undefined,
          IsMaskA: undefined,
          IsMaskB: undefined,
        }),
      );
      const { result } = await compare(engine());
      assert.equal(result.MessageTips, "face in imageA is too small");
      assert.ok(!("LandmarksAList" in result) && !("IsMaskA" in result));
    });

    it("translates SDK camelCase and Alibaba names both ways", () => {
      const sdk = toSdkData({ ...SAMPLE_COMPARE_FACE_DATA, Thresholds: [61, 69, 75], MessageTips: "x" });
      assert.equal(sdk.confidence, SAMPLE_COMPARE_FACE_DATA.Confidence);
      assert.deepEqual(fromSdkData(sdk), { ...SAMPLE_COMPARE_FACE_DATA, MessageTips: "x" });
      assert.equal(fromSdkData({ thresholds: [1, 2, 3] } as never), undefined);
    });

    it("refuses a comparison whose quality is below the threshold (low_quality, not charged)", async () => {
      emu.script(behave.success({ QualityScoreA: 42.5 }));
      const err = await rejectsWith(compare(engine(), { qualityScoreThreshold: 60 }), "low_quality");
      assert.equal(err.upstreamRequestId, emu.requests[0].requestId);
      assert.equal(emu.requests.length, 1);
    });

    it("treats a 200 without a usable Data object as upstream_error", async () => {
      emu.script(behave.success({ Confidence: undefined }));
      const err = await rejectsWith(compare(engine()), "upstream_error");
      assert.equal(err.upstreamRequestId, emu.requests[0].requestId);
      assert.match(err.message, /malformed/);
      // A wrongly typed list makes the SDK's own model cast throw: still upstream_error (RequestId lost).
      emu.script(behave.success({ Thresholds: "61,69,75" }));
      await rejectsWith(compare(engine()), "upstream_error");
      assert.equal(emu.attempts().length, 2);
    });

    it("signs STS requests (x-acs-security-token) correctly", async () => {
      const stsEmu = await startAlibabaEmulator({ accessKeyId: AK, accessKeySecret: SK, securityToken: STS });
      try {
        const e = engine({ endpoint: stsEmu.endpoint, securityToken: STS });
        await compare(e);
        assert.equal(stsEmu.requests[0].signatureVerified, true);
        assert.equal(stsEmu.requests[0].headers["x-acs-security-token"], STS);
        const bad = engine({ endpoint: stsEmu.endpoint, securityToken: "CAIS-other" });
        await rejectsWith(compare(bad), "engine_misconfigured");
      } finally {
        await stsEmu.close();
      }
    });
  });

  describe("signature and credentials", () => {
    it("wrong secret → SignatureDoesNotMatch → engine_misconfigured, not retried, logged without the secret", async () => {
      const before = produced.length;
      const err = await rejectsWith(compare(engine({ accessKeySecret: "wrong-secret-value" })), "engine_misconfigured");
      assert.equal(emu.requests.length, 1);
      assert.equal(emu.requests[0].signatureVerified, false);
      assert.equal(emu.requests[0].outcome, "SignatureDoesNotMatch");
      assert.equal(err.upstreamRequestId, emu.requests[0].requestId);
      assert.match(err.message, /SignatureDoesNotMatch/);
      const logged = produced.slice(before).filter((p) => (p as { level?: string }).level === "error");
      assert.equal(logged.length, 1);
      assert.equal((logged[0] as { code?: string }).code, "SignatureDoesNotMatch");
      assert.ok(!inspect(err, { depth: 10 }).includes("wrong-secret-value"));
    });

    it("unknown AccessKey id → InvalidAccessKeyId.NotFound (404) → engine_misconfigured", async () => {
      const err = await rejectsWith(compare(engine({ accessKeyId: "LTAI-unknown" })), "engine_misconfigured");
      assert.equal(emu.requests[0].outcome, "InvalidAccessKeyId.NotFound");
      assert.match(err.message, /InvalidAccessKeyId\.NotFound/);
      assert.equal(emu.requests.length, 1);
    });

    it("emulator refuses an unsigned request and one whose body does not match x-acs-content-sha256", async () => {
      const post = (headers: Record<string, string>) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const [host, port] = emu.endpoint.split(":");
          const r = http.request({ host, port: Number(port), method: "POST", path: "/", headers }, (res) => {
            let body = "";
            res.on("data", (c) => (body += c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          });
          r.on("error", reject);
          r.end("ImageDataA=AAAA");
        });
      const unsigned = await post({ "content-type": "application/x-www-form-urlencoded", "x-acs-action": "CompareFace" });
      assert.equal(unsigned.status, 400);
      assert.equal(JSON.parse(unsigned.body).Code, "IncompleteSignature");
      // Replay the SDK's real headers (valid signature) with a different body.
      await compare(engine());
      const real = emu.requests[emu.requests.length - 1].headers;
      const replay = Object.fromEntries(Object.entries(real).filter(([k]) => k !== "transfer-encoding" && k !== "content-length")) as Record<string, string>;
      const tampered = await post(replay);
      assert.equal(tampered.status, 400);
      assert.equal(JSON.parse(tampered.body).Code, "SignatureDoesNotMatch");
      assert.equal(emu.requests[emu.requests.length - 1].contentHashVerified, false);
    });
  });

  describe("error mapping (4xx never retried)", () => {
    const cases: Array<[code: string, status: number | undefined, expected: FaceErrorCode]> = [
      ["InvalidImage.NotFoundFace", 400, "no_face"],
      ["InvalidImage.NotFoundFace", 404, "no_face"],
      ["InvalidImage.Format", undefined, "invalid_image"],
      ["InvalidImage.DecodeError", undefined, "invalid_image"],
      ["InvalidImage.Download", undefined, "invalid_image"],
      ["InvalidFile.Content", undefined, "invalid_image"],
      ["InvalidFile.Decode", undefined, "invalid_image"],
      ["InvalidImage.Resolution", undefined, "image_too_large"],
      ["InvalidFile.Resolution", undefined, "image_too_large"],
      ["InvalidParameter", undefined, "invalid_input"],
      ["ParameterError", undefined, "invalid_input"],
      ["MissingParameter", undefined, "invalid_input"],
      ["ClientError.IllegalArgument", undefined, "invalid_input"],
      ["IllegalUrlParameter", undefined, "invalid_input"],
      ["AuthFailed", 403, "engine_misconfigured"],
      ["InvalidApi.NotPurchase", 403, "engine_misconfigured"],
      ["InvalidApi.ForbiddenInvoke", undefined, "engine_misconfigured"],
      ["InvalidAccessKeyId.Inactive", undefined, "engine_misconfigured"],
      ["InvalidAccessKeySecret", undefined, "engine_misconfigured"],
      ["EntityNotExist.Role", undefined, "engine_misconfigured"],
      ["InvalidAction.NotFound", undefined, "engine_misconfigured"],
      ["InvalidTimeStamp.Expired", undefined, "engine_misconfigured"],
      ["SignatureNonceUsed", undefined, "upstream_error"],
      ["SomethingNew.Unknown", 400, "upstream_error"],
    ];
    for (const [code, status, expected] of cases) {
      it(`${code}${status ? ` (${status})` : ""} → ${expected}, 1 attempt, RequestId carried`, async () => {
        emu.setDefault(behave.error(code, { status }));
        const err = await rejectsWith(compare(engine()), expected);
        assert.equal(emu.attempts().length, 1);
        assert.ok(err.upstreamRequestId && err.upstreamRequestId === emu.requests[0].requestId);
      });
    }

    it("a resolution error that says 'too small' is invalid_image, not image_too_large", async () => {
      emu.script(behave.error("InvalidImage.Resolution", { message: "image resolution is too small, should be larger than 32x32" }));
      await rejectsWith(compare(engine()), "invalid_image");
    });

    it("strips the [pk=…] routing prefix from upstream messages", async () => {
      emu.script(behave.error("InvalidImage.Format", { message: "[pk=123,tag=viapi:default] image format is not supported" }));
      const err = await rejectsWith(compare(engine()), "invalid_image");
      assert.ok(!err.message.includes("[pk="));
      assert.match(err.message, /image format is not supported/);
    });
  });

  describe("retries", () => {
    it("Throttling.User (400) then success → succeeds on the 2nd attempt", async () => {
      emu.script(behave.error("Throttling.User"), behave.success());
      const { requestId } = await compare(engine());
      assert.equal(emu.attempts().length, 2);
      assert.equal(requestId, emu.requests[1].requestId);
    });

    it("Throttling (503) on every attempt → upstream_throttled after retries+1 attempts", async () => {
      emu.setDefault(behave.error("Throttling"));
      const err = await rejectsWith(compare(engine()), "upstream_throttled");
      assert.equal(emu.attempts().length, 3);
      assert.equal(err.upstreamRequestId, emu.requests[2].requestId);
    });

    it("5xx three times → upstream_error after retries+1 = 3 attempts, with backoff between them", async () => {
      emu.setDefault(behave.serverError(500));
      const t0 = Date.now();
      const err = await rejectsWith(compare(engine({ retryBaseMs: 40 })), "upstream_error");
      assert.equal(emu.attempts().length, 3);
      assert.equal(err.upstreamRequestId, emu.requests[2].requestId);
      const gaps = [emu.requests[1].receivedAt - emu.requests[0].receivedAt, emu.requests[2].receivedAt - emu.requests[1].receivedAt];
      // backoff n = 40·2^(n-1)·[0.5,1): ≥ 20 ms then ≥ 40 ms
      assert.ok(gaps[0] >= 18 && gaps[1] >= 38, `gaps ${gaps}`);
      assert.ok(Date.now() - t0 < BUDGET);
    });

    it("retries = 0 means exactly one attempt", async () => {
      emu.setDefault(behave.serverError(503, "ServiceUnavailable"));
      await rejectsWith(compare(engine({ retries: 0 })), "upstream_error");
      assert.equal(emu.attempts().length, 1);
    });

    it("500 InternalError.Timeout then success → succeeds; exhausted → upstream_timeout", async () => {
      emu.script(behave.serverError(500, "InternalError.Timeout"), behave.success());
      await compare(engine());
      assert.equal(emu.attempts().length, 2);
      emu.reset();
      emu.setDefault(behave.serverError(500, "InternalError.Timeout"));
      await rejectsWith(compare(engine()), "upstream_timeout");
      assert.equal(emu.attempts().length, 3);
    });

    it("dropped connection is retried once: drop+success → ok, drop+drop → upstream_error after 2 attempts", async () => {
      emu.script(behave.drop(), behave.success());
      await compare(engine());
      assert.equal(emu.attempts().length, 2);
      emu.reset();
      emu.setDefault(behave.drop());
      const err = await rejectsWith(compare(engine()), "upstream_error");
      assert.equal(emu.attempts().length, 2);
      assert.match(err.message, /ECONNRESET/);
    });

    it("non-JSON garbage (200 or HTML 502) → upstream_error, not retried", async () => {
      emu.setDefault(behave.garbage(200));
      await rejectsWith(compare(engine()), "upstream_error");
      assert.equal(emu.attempts().length, 1);
      emu.reset();
      emu.setDefault(behave.garbage(502));
      const err = await rejectsWith(compare(engine()), "upstream_error");
      assert.match(err.message, /unparseable/);
      assert.equal(emu.attempts().length, 1);
    });

    it("does not retry when the backoff would not fit in the budget (last real error is reported)", async () => {
      emu.setDefault(behave.slow(350, behave.serverError(500)));
      const t0 = Date.now();
      // 350 ms reply + backoff in [200, 400) ms leaves no room before 500 ms.
      await rejectsWith(compare(engine({ retryBaseMs: 400 })), "upstream_error");
      assert.equal(emu.attempts().length, 1);
      assert.ok(Date.now() - t0 < BUDGET);
    });

    it("a retry that runs into the deadline ends as upstream_timeout at the budget", async () => {
      emu.script(behave.error("Throttling.User"), behave.hang());
      const t0 = Date.now();
      await rejectsWith(compare(engine()), "upstream_timeout");
      const took = Date.now() - t0;
      assert.equal(emu.attempts().length, 2);
      assert.ok(took >= BUDGET - 5 && took < BUDGET + MARGIN, `took ${took} ms`);
    });
  });

  describe("timeouts", () => {
    it(`hang → upstream_timeout within ${BUDGET} ms + margin, single attempt`, async () => {
      emu.setDefault(behave.hang());
      const t0 = Date.now();
      const err = await rejectsWith(compare(engine()), "upstream_timeout");
      const took = Date.now() - t0;
      assert.ok(took >= BUDGET - 5 && took < BUDGET + MARGIN, `took ${took} ms`);
      assert.equal(emu.attempts().length, 1);
      assert.match(err.message, new RegExp(`${BUDGET} ms`));
    });

    it("headers then a stalled body → upstream_timeout within budget", async () => {
      emu.setDefault(behave.stall());
      const t0 = Date.now();
      await rejectsWith(compare(engine()), "upstream_timeout");
      assert.ok(Date.now() - t0 < BUDGET + MARGIN);
    });

    it("slow reply inside the budget succeeds; beyond it times out", async () => {
      emu.script(behave.slow(300));
      await compare(engine());
      emu.script(behave.slow(BUDGET + 300));
      const t0 = Date.now();
      await rejectsWith(compare(engine()), "upstream_timeout");
      assert.ok(Date.now() - t0 < BUDGET + MARGIN);
    });

    it("keep-alive gotcha: a success followed shortly by a hang still times out at the budget", async () => {
      const e = engine();
      for (const gap of [20, 250]) {
        emu.reset();
        emu.script(behave.success(), behave.hang());
        await compare(e);
        await new Promise((r) => setTimeout(r, gap));
        const t0 = Date.now();
        await rejectsWith(compare(e), "upstream_timeout");
        const took = Date.now() - t0;
        assert.ok(took >= BUDGET - 5 && took < BUDGET + MARGIN, `gap ${gap}: took ${took} ms`);
        // Both calls went over one reused keep-alive socket.
        assert.equal(emu.requests.length, 2);
        assert.equal(emu.requests[1].remotePort, emu.requests[0].remotePort);
      }
    });

    it("keep-alive: a success followed shortly by a slow-but-in-budget reply still succeeds", async () => {
      const e = engine();
      emu.script(behave.success(), behave.slow(400));
      await compare(e);
      await new Promise((r) => setTimeout(r, 50));
      await compare(e);
      assert.equal(emu.attempts().length, 2);
    });

    it("caller abort rejects promptly with upstream_timeout", async () => {
      emu.setDefault(behave.hang());
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      const t0 = Date.now();
      await rejectsWith(compare(engine({ timeoutMs: 5_000 }), { signal: ac.signal }), "upstream_timeout");
      assert.ok(Date.now() - t0 < 200);
    });

    it("an already-aborted signal sends nothing", async () => {
      await rejectsWith(compare(engine(), { signal: AbortSignal.abort() }), "upstream_timeout");
      assert.equal(emu.requests.length, 0);
    });
  });

  describe("local checks and lifecycle", () => {
    it("refuses empty and oversized images and bad thresholds before any request", async () => {
      const e = engine({ maxImageBytes: 200_000 });
      await rejectsWith(e.compare({ imageA: Buffer.alloc(0), imageB: IMAGE_B }), "invalid_input");
      await rejectsWith(e.compare({ imageA: IMAGE_A, imageB: Buffer.alloc(200_001) }), "image_too_large");
      await rejectsWith(compare(e, { qualityScoreThreshold: 101 }), "invalid_input");
      assert.equal(emu.requests.length, 0);
    });

    it("invalid options are engine_misconfigured; close() makes the engine unavailable", async () => {
      assert.throws(() => createAlibabaEngine({ accessKeyId: AK, accessKeySecret: "" }), (e: unknown) => e instanceof FaceError && e.code === "engine_misconfigured");
      assert.throws(() => engine({ timeoutMs: 0 }), /timeoutMs/);
      const e = engine({ endpoint: `http://${emu.endpoint}/`, protocol: undefined });
      await e.ready();
      await compare(e);
      await e.close();
      await rejectsWith(compare(e), "engine_unavailable");
    });
  });

  describe("secrecy", () => {
    it("redacts the secret even when the upstream echoes it", async () => {
      emu.script(behave.error("InvalidImage.Format", { message: `bad image, by the way your key is ${SK}` }));
      const err = await rejectsWith(compare(engine()), "invalid_image");
      assert.ok(!err.message.includes(SK));
      emu.script(behave.error("SignatureDoesNotMatch", { message: `server string to sign ${SK} ${STS}` }));
      const err2 = await rejectsWith(compare(engine({ securityToken: STS })), "engine_misconfigured");
      assert.ok(!inspect(err2, { depth: 10 }).includes(SK));
      assert.ok(!inspect(err2, { depth: 10 }).includes(STS));
    });

    it("no error, cause, stack or log line of this suite contains the AccessKey secret or STS token", () => {
      assert.ok(produced.length > 40, `only ${produced.length} errors/logs collected`);
      for (const item of produced) {
        const text = `${inspect(item, { depth: 10, showHidden: true })}\n${item instanceof Error ? `${item.message}\n${item.stack}` : JSON.stringify(item)}`;
        assert.ok(!text.includes(SK), `secret leaked in ${text.slice(0, 300)}`);
        assert.ok(!text.includes(STS), `STS token leaked in ${text.slice(0, 300)}`);
        assert.ok(!text.includes("wrong-secret-value"), `wrong secret leaked in ${text.slice(0, 300)}`);
      }
    });
  });
});
