/**
 * Issue 15: relayerSettler and facilitatorSettler check their options when
 * created, and the paywall checks that the settler's chain is its network's,
 * each problem a ConfigError naming the option and the fix (before: a viem
 * TypeError "reading 'slice'" on the first payment, or a silent mismatch).
 */
import assert from "node:assert/strict";
import { ConfigError, facilitatorSettler, MemoryStore, paywall, relayerSettler, requirePayment, type RelayerSettlerOptions } from "server402";

const KEY = `0x${"11".repeat(32)}` as const;
const good: RelayerSettlerOptions = { rpcUrl: "http://127.0.0.1:9", chainId: 84532, privateKey: KEY };
const PAY_TO = "0x0000000000000000000000000000000000000001";

/** Asserts `f` throws a ConfigError for `option` whose message matches `fix`. */
function refuses(f: () => unknown, option: string, fix: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `a ConfigError, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    assert.equal(e.code, "invalid_config");
    assert.equal(e.option, option);
    assert.match(e.message, fix);
    return true;
  });
}

describe("settler options are checked at construction (issue 15)", () => {
  it("relayerSettler: a missing or malformed private key names privateKey and its form, never echoing the key", () => {
    refuses(() => relayerSettler({ ...good, privateKey: undefined as never }), "privateKey", /is required: .*0x followed by 64 hex digits.*RELAYER_PRIVATE_KEY/);
    refuses(() => relayerSettler({ ...good, privateKey: "" as never }), "privateKey", /is required/);
    refuses(() => relayerSettler({ ...good, privateKey: "0x1234" }), "privateKey", /must be 0x followed by 64 hex digits, got 6 characters/);
    const bare = "ab".repeat(32);
    refuses(() => relayerSettler({ ...good, privateKey: bare as never }), "privateKey", /without the 0x prefix/);
    assert.throws(() => relayerSettler({ ...good, privateKey: bare as never }), (e: Error) => !e.message.includes(bare));
    refuses(() => relayerSettler({ ...good, privateKey: `0x${"0".repeat(64)}` }), "privateKey", /not a valid secp256k1 key/);
  });

  it("relayerSettler: rpcUrl and chainId are required and well-formed; timeouts and sendMode are checked", () => {
    refuses(() => relayerSettler({ ...good, rpcUrl: undefined as never }), "rpcUrl", /is required, e\.g\. "https:\/\//);
    refuses(() => relayerSettler({ ...good, rpcUrl: "localhost:8545" }), "rpcUrl", /http\(s\) URL|not a URL/);
    refuses(() => relayerSettler({ ...good, rpcUrl: "not a url" }), "rpcUrl", /is not a URL/);
    refuses(() => relayerSettler({ ...good, chainId: undefined as never }), "chainId", /positive integer \(84532 Base Sepolia, 8453 Base\)/);
    refuses(() => relayerSettler({ ...good, chainId: "84532" as never }), "chainId", /got "84532"/);
    refuses(() => relayerSettler({ ...good, receiptTimeoutMs: -1 }), "receiptTimeoutMs", /whole milliseconds/);
    refuses(() => relayerSettler({ ...good, sendMode: "fast" as never }), "sendMode", /"auto", "sync" or "poll"/);
    refuses(() => relayerSettler(undefined as never), "relayerSettler", /pass an options object/);
    const s = relayerSettler(good);
    assert.equal(s.chainId, 84532);
  });

  it("facilitatorSettler: a missing or malformed url, a bad timeout or auth hook is a ConfigError", () => {
    refuses(() => facilitatorSettler({} as never), "facilitator.url", /is required, e\.g\. "https:\/\/x402\.org\/facilitator"/);
    refuses(() => facilitatorSettler({ url: "x402.org" }), "facilitator.url", /not a URL/);
    refuses(() => facilitatorSettler({ url: "ftp://x402.org" }), "facilitator.url", /http\(s\) URL/);
    refuses(() => facilitatorSettler({ url: "https://x402.org/facilitator", timeoutMs: 0 }), "facilitator.timeoutMs", /whole milliseconds/);
    refuses(() => facilitatorSettler({ url: "https://x402.org/facilitator", createAuthHeaders: "Bearer x" as never }), "facilitator.createAuthHeaders", /must be a function/);
  });

  it("a relayer on one chain under a paywall whose network is another chain is a ConfigError naming both chain ids", () => {
    const settler = relayerSettler(good); // 84532, Base Sepolia
    const store = new MemoryStore();
    refuses(() => paywall({ payTo: PAY_TO, network: "base", settler, store, routes: { "GET /x": { price: "$0.01" } } }), "network", /eip155:8453 \(chainId 8453\).*chainId 84532.*chainId: 8453/);
    refuses(
      () => paywall({ payTo: PAY_TO, settler, store, routes: { "GET /x": { price: "$0.01", network: "eip155:8453" } } }),
      'routes["GET /x"].network',
      /chainId 8453.*chainId 84532/,
    );
    refuses(() => requirePayment({ payTo: PAY_TO, network: "polygon", settler, store, price: "$0.01" }), "network", /chainId 137/);
    // The settler's own chain is accepted.
    paywall({ payTo: PAY_TO, network: "base-sepolia", settler, store, routes: { "GET /x": { price: "$0.01" } } });
  });

  it("the missing-settler message shows how to create one, chainId included", () => {
    refuses(() => paywall({ payTo: PAY_TO, store: new MemoryStore(), routes: { "GET /x": { price: "$0.01" } } } as never), "settler", /relayerSettler\(\{ rpcUrl, chainId, privateKey \}\)/);
  });
});
