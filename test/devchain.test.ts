import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { createPublicClient, domainSeparator, encodeFunctionData, http, toHex, type Address, type Hex } from "viem";
import { mnemonicToAccount, privateKeyToAccount } from "viem/accounts";
import { anvilBinaryPath, DEV_KEYS, DEV_MNEMONIC, startDevChain, type DevAccount, type DevChain } from "server402/devchain";
import { EIP3009_ABI } from "../lib/src/chain/abi.js";
import { createChainReader } from "../lib/src/chain/reader.js";
import { reasonFromRevert, relayerSettler, type RelayerSettler } from "../lib/src/chain/relayer.js";
import type { SettleRequest } from "../lib/src/chain/settler.js";
import { ChainError, SettlementError } from "../lib/src/errors.js";
import { ARTIFACT_PATH, compileTestUSDC } from "../scripts/compile-token.js";

import { TRANSFER_WITH_AUTHORIZATION_TYPES } from "server402";

const CHAIN_ID = 84532;
const BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

/**
 * A JSON-RPC proxy in front of anvil that records the methods called and can
 * answer "method not found" for some, like a node that lacks them.
 */
async function recordingRpc(
  target: string,
  missing: string[] = [],
  refuseBatches = false,
): Promise<{ url: string; methods: string[]; batches: number; close(): Promise<void> }> {
  const methods: string[] = [];
  const state = { batches: 0 };
  const server: Server = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const parsed = JSON.parse(body) as { id: number; method: string } | { id: number; method: string }[];
    res.setHeader("content-type", "application/json");
    if (Array.isArray(parsed)) {
      state.batches++;
      for (const c of parsed) methods.push(c.method);
      if (refuseBatches) {
        res.statusCode = 400;
        return void res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "batch requests are not supported" } }));
      }
    }
    const call = Array.isArray(parsed) ? parsed[0]! : parsed;
    if (!Array.isArray(parsed)) methods.push(call.method);
    if (missing.includes(call.method)) return void res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, error: { code: -32601, message: "Method not found" } }));
    const upstream = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
    res.end(await upstream.text());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    methods,
    get batches() {
      return state.batches;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = (): bigint => BigInt(Math.floor(Date.now() / 1000));

describe("devchain + relayer settler", function () {
  let dev: DevChain;
  let settler: RelayerSettler;
  let client: ReturnType<typeof createPublicClient>;
  let startupMs: number;
  const rpc = <T>(method: string, params: unknown[] = []): Promise<T> => client.request({ method, params } as never) as Promise<T>;

  async function authorize(payer: DevAccount, over: { value?: bigint; validAfter?: bigint; validBefore?: bigint; to?: Address } = {}): Promise<SettleRequest> {
    const authorization = {
      from: payer.address,
      to: over.to ?? dev.accounts.payTo.address,
      value: over.value ?? 1000n,
      validAfter: over.validAfter ?? 0n,
      validBefore: over.validBefore ?? now() + 3600n,
      nonce: toHex(randomBytes(32)),
    };
    const signature = await privateKeyToAccount(payer.privateKey).signTypedData({
      domain: { name: "USDC", version: "2", chainId: CHAIN_ID, verifyingContract: dev.usdc },
      types: TRANSFER_WITH_AUTHORIZATION_TYPES,
      primaryType: "TransferWithAuthorization",
      message: authorization,
    });
    return { authorization, signature, asset: dev.usdc, chainId: CHAIN_ID, network: `eip155:${CHAIN_ID}`, v1Network: "base-sepolia", x402Version: 2, payload: {}, requirements: {} };
  }

  async function settleError(s: RelayerSettler, req: SettleRequest): Promise<SettlementError> {
    const err = await s.settle(req).then(
      () => assert.fail("settle should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SettlementError, `expected SettlementError, got ${String(err)}`);
    return err;
  }

  before(async function () {
    const t0 = performance.now();
    dev = await startDevChain();
    startupMs = performance.now() - t0;
    client = createPublicClient({ transport: http(dev.rpcUrl) });
    settler = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: dev.chainId, privateKey: dev.accounts.relayer.privateKey });
  });

  after(async function () {
    await dev?.stop();
  });

  describe("startDevChain", function () {
    it("starts fast on 127.0.0.1 with chainId 84532", async function () {
      console.log(`      devchain startup: ${startupMs.toFixed(0)} ms`);
      assert.match(dev.rpcUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(await client.getChainId(), CHAIN_ID);
      assert.equal(dev.usdc, BASE_SEPOLIA_USDC);
    });

    it("plants the test USDC at the Base Sepolia USDC address", async function () {
      const read = (functionName: "name" | "version" | "decimals") => client.readContract({ address: dev.usdc, abi: EIP3009_ABI, functionName });
      assert.equal(await read("name"), "USDC");
      assert.equal(await read("version"), "2");
      assert.equal(await read("decimals"), 6);
      const separator = await client.readContract({
        address: dev.usdc,
        abi: [{ type: "function", name: "DOMAIN_SEPARATOR", stateMutability: "view", inputs: [], outputs: [{ type: "bytes32" }] }],
        functionName: "DOMAIN_SEPARATOR",
      });
      assert.equal(separator, domainSeparator({ domain: { name: "USDC", version: "2", chainId: CHAIN_ID, verifyingContract: dev.usdc } }));
    });

    it("derives the dev accounts from the mnemonic: relayer #0, payers #1..#9, payTo #10", async function () {
      // Keys match addresses; index 0 and 10 against an independent HD derivation; 0..9 against anvil's own.
      for (const [address, privateKey] of DEV_KEYS) assert.equal(privateKeyToAccount(privateKey).address, address);
      for (const i of [0, 10]) assert.equal(DEV_KEYS[i][0], mnemonicToAccount(DEV_MNEMONIC, { addressIndex: i }).address);
      const anvilAccounts = await rpc<Address[]>("eth_accounts");
      const { relayer, payers, payTo } = dev.accounts;
      assert.equal(relayer.address.toLowerCase(), anvilAccounts[0].toLowerCase());
      assert.deepEqual(payers.map((p) => p.address.toLowerCase()), anvilAccounts.slice(1, 10).map((a) => a.toLowerCase()));
      assert.equal(payTo.address, DEV_KEYS[10][0]);
    });

    it("mints 1000 USDC to each payer and nothing to payTo; mint() adds more", async function () {
      for (const p of dev.accounts.payers) assert.equal(await dev.balanceOf(p.address), 1_000_000_000n);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), 0n);
      const someone = privateKeyToAccount(toHex(randomBytes(32))).address;
      await Promise.all([dev.mint(someone, 5n), dev.mint(someone, 7n)]);
      assert.equal(await dev.balanceOf(someone), 12n);
    });

    it("only the minter may mint", async function () {
      const data = encodeFunctionData({ abi: EIP3009_ABI, functionName: "mint", args: [dev.accounts.relayer.address, 1n] });
      await assert.rejects(rpc("eth_call", [{ from: dev.accounts.relayer.address, to: dev.usdc, data }, "latest"]), /caller is not the minter/);
    });

    it("refuses wildcard hosts and finds the anvil binary", async function () {
      await assert.rejects(startDevChain({ host: "0.0.0.0" }), /refusing to bind/);
      assert.ok(existsSync(anvilBinaryPath()));
    });

    it("anvil dies with the parent process even without stop()", async function () {
      const code = 'import { startDevChain } from "server402/devchain"; const d = await startDevChain({ mintPerPayer: 0n }); console.log(d.rpcUrl);';
      const { stdout } = await promisify(execFile)(process.execPath, ["--conditions=server402-source", "--import", "tsx", "--input-type=module", "-e", code], { cwd: process.cwd() });
      const rpcUrl = stdout.trim();
      assert.match(rpcUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
      await assert.rejects(createPublicClient({ transport: http(rpcUrl, { retryCount: 0 }) }).getChainId());
    });

    it("stop() kills anvil", async function () {
      const other = await startDevChain({ mintPerPayer: 0n });
      await other.stop();
      await other.stop(); // idempotent
      await assert.rejects(createPublicClient({ transport: http(other.rpcUrl, { retryCount: 0 }) }).getChainId());
    });
  });

  describe("TestUSDC artifact", function () {
    it("recompiling the source gives exactly the committed artifact", function () {
      this.timeout(120_000);
      const committed = JSON.parse(readFileSync(ARTIFACT_PATH, "utf8"));
      const fresh = JSON.parse(JSON.stringify(compileTestUSDC()));
      assert.equal(fresh.sourceSha256, committed.sourceSha256, "TestUSDC.sol changed: run `npx tsx scripts/compile-token.ts`");
      assert.equal(fresh.bytecode, committed.bytecode);
      assert.equal(fresh.deployedBytecode, committed.deployedBytecode);
      assert.deepEqual(fresh, committed);
    });
  });

  describe("relayerSettler", function () {
    it("settles a signed authorization: payTo gains exactly value", async function () {
      const payTo = dev.accounts.payTo.address;
      const before = await dev.balanceOf(payTo);
      const req = await authorize(dev.accounts.payers[0], { value: 12_345n });
      const result = await settler.settle(req);
      assert.equal(result.payer, dev.accounts.payers[0].address);
      assert.equal(result.network, "eip155:84532");
      assert.match(result.transaction, /^0x[0-9a-f]{64}$/);
      assert.equal(await dev.balanceOf(payTo), before + 12_345n);
      const receipt = await client.getTransactionReceipt({ hash: result.transaction });
      assert.equal(receipt.status, "success");
      assert.equal(receipt.from.toLowerCase(), dev.accounts.relayer.address.toLowerCase());
    });

    it("a replay is refused with nonce_already_used and nothing is broadcast", async function () {
      const req = await authorize(dev.accounts.payers[1]);
      await settler.settle(req);
      const [nonceBefore, blockBefore] = await Promise.all([
        rpc<Hex>("eth_getTransactionCount", [dev.accounts.relayer.address, "pending"]),
        client.getBlockNumber({ cacheTime: 0 }),
      ]);
      const err = await settleError(settler, req);
      assert.equal(err.reason, "invalid_exact_evm_nonce_already_used");
      assert.equal(err.transaction, undefined);
      assert.equal(err.pending, false);
      assert.equal(await rpc<Hex>("eth_getTransactionCount", [dev.accounts.relayer.address, "pending"]), nonceBefore);
      assert.equal(await client.getBlockNumber({ cacheTime: 0 }), blockBefore);
    });

    it("a pre-checked payment skips the estimate; if it lost a race anyway it reverts on-chain and is reported, never paid twice", async function () {
      const payTo = dev.accounts.payTo.address;
      const req = { ...(await authorize(dev.accounts.payers[1], { value: 777n })), prechecked: true };
      const before = await dev.balanceOf(payTo);
      await settler.settle(req);
      assert.equal(await dev.balanceOf(payTo), before + 777n);
      const err = await settleError(settler, req);
      assert.equal(err.reason, "invalid_exact_evm_transaction_failed");
      assert.match(err.transaction ?? "", /^0x[0-9a-f]{64}$/, "the reverted transaction is named");
      assert.equal(await dev.balanceOf(payTo), before + 777n);
    });

    it("maps reverts to x402 reasons without broadcasting", async function () {
      const [p2, p3] = [dev.accounts.payers[2], dev.accounts.payers[3]];
      const expired = await authorize(p2, { validBefore: now() - 10n });
      assert.equal((await settleError(settler, expired)).reason, "invalid_exact_evm_payload_authorization_valid_before");
      const early = await authorize(p2, { validAfter: now() + 3600n });
      assert.equal((await settleError(settler, early)).reason, "invalid_exact_evm_payload_authorization_valid_after");
      const signed = await authorize(p2);
      const forged = { ...signed, authorization: { ...signed.authorization, value: 999_999n } };
      assert.equal((await settleError(settler, forged)).reason, "invalid_exact_evm_signature");
      const pk = toHex(randomBytes(32));
      const broke = await authorize({ address: privateKeyToAccount(pk).address, privateKey: pk }, { to: p3.address }); // holds no USDC
      assert.equal((await settleError(settler, broke)).reason, "invalid_exact_evm_insufficient_balance");
      const wrongChain = { ...(await authorize(p2)), chainId: 8453 };
      assert.equal((await settleError(settler, wrongChain)).reason, "invalid_exact_evm_network_mismatch");
      const notToken = { ...(await authorize(p2)), asset: dev.accounts.payTo.address };
      assert.equal((await settleError(settler, notToken)).reason, "asset_not_deployed_contract");
    });

    it("reasonFromRevert follows the @x402/evm text mapping", function () {
      assert.equal(reasonFromRevert("FiatTokenV2: authorization is expired"), "invalid_exact_evm_payload_authorization_valid_before");
      assert.equal(reasonFromRevert("ERC20: transfer amount exceeds balance"), "invalid_exact_evm_insufficient_balance");
      assert.equal(reasonFromRevert("AuthorizationUsedOrCanceled()"), "invalid_exact_evm_nonce_already_used");
      assert.equal(reasonFromRevert("ECRecover: invalid signature"), "invalid_exact_evm_signature");
      assert.equal(reasonFromRevert("Pausable: paused"), "invalid_exact_evm_transaction_failed");
    });

    it("the token accepts the bytes-signature overload too", async function () {
      const req = await authorize(dev.accounts.payers[4]);
      const a = req.authorization;
      const simulate = (value: bigint) =>
        client.simulateContract({
          account: dev.accounts.relayer.address,
          address: dev.usdc,
          abi: EIP3009_ABI,
          functionName: "transferWithAuthorization",
          args: [a.from, a.to, value, a.validAfter, a.validBefore, a.nonce, req.signature],
        });
      const ok = await simulate(a.value);
      assert.equal(ok.request.functionName, "transferWithAuthorization");
      assert.equal((ok.request.args as readonly unknown[]).length, 7, "the (…, bytes signature) overload");
      // the signature is checked: the same bytes over another value revert
      await assert.rejects(simulate(a.value + 1n));
    });

    it("the chain reader sees the authorization as used after settle", async function () {
      const reader = createChainReader({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, timeoutMs: 2000 });
      const req = await authorize(dev.accounts.payers[5]);
      const { from, nonce } = req.authorization;
      assert.equal(await reader.authorizationUsed(dev.usdc, from, nonce), false);
      await settler.settle(req);
      assert.equal(await reader.authorizationUsed(dev.usdc, from, nonce), true);
      assert.equal(await reader.balanceOf(dev.usdc, from), await dev.balanceOf(from));
    });

    it("the chain reader reads both pre-check facts in one batched request; an endpoint refusing batches gets separate reads", async function () {
      for (const refuse of [false, true]) {
        const proxy = await recordingRpc(dev.rpcUrl, [], refuse);
        try {
          const reader = createChainReader({ rpcUrl: proxy.url, chainId: CHAIN_ID, timeoutMs: 2000 });
          const req = await authorize(dev.accounts.payers[5]);
          const { from, nonce } = req.authorization;
          const expected = { used: false, balance: await dev.balanceOf(from) };
          assert.deepEqual(await reader.paymentState!(dev.usdc, from, nonce), expected);
          assert.deepEqual(await reader.paymentState!(dev.usdc, from, nonce), expected);
          const calls = proxy.methods.filter((m) => m === "eth_call").length;
          // batched: 2 requests of 2 calls; refused: one refused batch, then 2 + 2 separate calls and no second batch
          assert.deepEqual([proxy.batches, calls], refuse ? [1, 6] : [2, 4], proxy.methods.join(" "));
          await settler.settle(req);
          assert.equal((await reader.paymentState!(dev.usdc, from, nonce)).used, true);
        } finally {
          await proxy.close();
        }
      }
    });

    it("the chain reader throws ChainError for a dead RPC or the wrong chain", async function () {
      const dead = createChainReader({ rpcUrl: "http://127.0.0.1:1", chainId: CHAIN_ID, timeoutMs: 500 });
      await assert.rejects(dead.balanceOf(dev.usdc, dev.accounts.payTo.address), ChainError);
      const wrong = createChainReader({ rpcUrl: dev.rpcUrl, chainId: 1, timeoutMs: 500 });
      await assert.rejects(wrong.balanceOf(dev.usdc, dev.accounts.payTo.address), (e: unknown) => e instanceof ChainError && /expected 1/.test(e.message));
      await assert.rejects(dead.paymentState!(dev.usdc, dev.accounts.payTo.address, toHex(randomBytes(32))), ChainError);
      await assert.rejects(wrong.paymentState!(dev.usdc, dev.accounts.payTo.address, toHex(randomBytes(32))), (e: unknown) => e instanceof ChainError && /expected 1/.test(e.message));
    });

    it("20 concurrent settles of distinct authorizations all succeed", async function () {
      const payTo = dev.accounts.payTo.address;
      const before = await dev.balanceOf(payTo);
      const reqs = await Promise.all(Array.from({ length: 20 }, (_, i) => authorize(dev.accounts.payers[i % 9], { value: BigInt(100 + i) })));
      const t0 = performance.now();
      const results = await Promise.all(reqs.map((r) => settler.settle(r)));
      console.log(`      20 concurrent settles: ${(performance.now() - t0).toFixed(0)} ms`);
      assert.equal(new Set(results.map((r) => r.transaction)).size, 20);
      const total = reqs.reduce((sum, r) => sum + r.authorization.value, 0n);
      assert.equal(await dev.balanceOf(payTo), before + total);
    });

    it("the same authorization settled twice at once is sent once", async function () {
      const req = await authorize(dev.accounts.payers[2]);
      const nonceBefore = await rpc<Hex>("eth_getTransactionCount", [dev.accounts.relayer.address, "pending"]);
      const [first, second] = await Promise.allSettled([settler.settle(req), settler.settle(req)]);
      assert.equal(first.status, "fulfilled");
      assert.equal(second.status, "rejected");
      assert.equal((second as PromiseRejectedResult).reason.reason, "invalid_exact_evm_nonce_already_used");
      assert.equal(BigInt(await rpc<Hex>("eth_getTransactionCount", [dev.accounts.relayer.address, "pending"])), BigInt(nonceBefore) + 1n);
    });

    it("settles sequentially in a few ms each", async function () {
      const payTo = dev.accounts.payTo.address;
      const before = await dev.balanceOf(payTo);
      const reqs = await Promise.all(Array.from({ length: 21 }, (_, i) => authorize(dev.accounts.payers[i % 9], { value: BigInt(1000 + i) })));
      const times: number[] = [];
      const transactions = new Set<string>();
      for (const r of reqs) {
        const t0 = performance.now();
        transactions.add((await settler.settle(r)).transaction);
        times.push(performance.now() - t0);
      }
      console.log(`      settle median over ${times.length}: ${median(times).toFixed(1)} ms (max ${Math.max(...times).toFixed(1)} ms)`);
      assert.equal(transactions.size, reqs.length, "each settle sent its own transaction");
      assert.equal(await dev.balanceOf(payTo), before + reqs.reduce((sum, r) => sum + r.authorization.value, 0n));
      // an automining dev chain answers with the receipt: well under the 30 s receipt timeout, whatever the load
      assert.ok(median(times) < 5000, `median ${median(times).toFixed(0)} ms`);
    });

    it("resyncs its nonce when another sender used the relayer key", async function () {
      const key = dev.accounts.payers[7].privateKey;
      const a = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: key });
      const b = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: key });
      const sender = privateKeyToAccount(key).address;
      const countBefore = BigInt(await rpc<Hex>("eth_getTransactionCount", [sender, "latest"]));
      const first = await a.settle(await authorize(dev.accounts.payers[0]));
      await b.settle(await authorize(dev.accounts.payers[0])); // a's cached nonce is now stale
      const third = await a.settle(await authorize(dev.accounts.payers[0]));
      assert.notEqual(third.transaction, first.transaction);
      assert.equal((await client.getTransactionReceipt({ hash: third.transaction })).status, "success");
      // three transactions from the shared key, no gap and no replacement
      assert.equal(BigInt(await rpc<Hex>("eth_getTransactionCount", [sender, "latest"])), countBefore + 3n);
    });

    it("a missing receipt gives a pending SettlementError carrying the tx hash", async function () {
      const relayerKey = dev.accounts.payers[8].privateKey; // own key: leaves the main settler's nonce alone
      const slow = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: relayerKey, receiptTimeoutMs: 200 });
      const req = await authorize(dev.accounts.payers[6], { value: 777n });
      await rpc("evm_setAutomine", [false]);
      let err: SettlementError;
      try {
        err = await settleError(slow, req);
      } finally {
        await rpc("evm_setAutomine", [true]);
      }
      assert.equal(err.pending, true);
      assert.equal(err.reason, "settlement_pending");
      assert.match(err.transaction ?? "", /^0x[0-9a-f]{64}$/);
      const tx = await client.getTransaction({ hash: err.transaction as Hex });
      assert.equal(tx.from.toLowerCase(), privateKeyToAccount(relayerKey).address.toLowerCase());
      await rpc("evm_mine");
      const receipt = await client.waitForTransactionReceipt({ hash: err.transaction as Hex, pollingInterval: 5 });
      assert.equal(receipt.status, "success");
      // settling the same authorization again resolves to the pending transaction, no second send
      const retried = await slow.settle(req);
      assert.equal(retried.transaction, err.transaction);
      // the settler's nonce queue carries on after the pending transaction
      await slow.settle(await authorize(dev.accounts.payers[6]));
    });

    /** Two settlements through a recording proxy (payTo gains both); the methods the node saw. */
    async function settleTwiceVia(missing: string[], sendMode?: "sync"): Promise<string[]> {
      const proxy = await recordingRpc(dev.rpcUrl, missing);
      try {
        const s = relayerSettler({ rpcUrl: proxy.url, chainId: CHAIN_ID, privateKey: dev.accounts.payers[5].privateKey, sendMode });
        const before = await dev.balanceOf(dev.accounts.payTo.address);
        await s.settle(await authorize(dev.accounts.payers[1], { value: 11n }));
        await s.settle(await authorize(dev.accounts.payers[1], { value: 12n }));
        assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + 23n);
        return proxy.methods;
      } finally {
        await proxy.close();
      }
    }
    const count = (methods: string[], m: string) => methods.filter((x) => x === m).length;

    it("on an automining node it sends with eth_sendRawTransactionSync: the receipt comes with the answer, no polling", async function () {
      const methods = await settleTwiceVia([]);
      assert.equal(count(methods, "anvil_getAutomine"), 1, methods.join(" "));
      assert.equal(count(methods, "eth_sendRawTransactionSync"), 2);
      assert.ok(!methods.includes("eth_sendRawTransaction") && !methods.includes("eth_getTransactionReceipt"), methods.join(" "));
    });

    it("a node without eth_sendRawTransactionSync: one refused try, then send + receipt polling", async function () {
      const methods = await settleTwiceVia(["eth_sendRawTransactionSync"], "sync");
      assert.equal(count(methods, "eth_sendRawTransactionSync"), 1, methods.join(" "));
      assert.equal(count(methods, "eth_sendRawTransaction"), 2);
      assert.ok(methods.includes("eth_getTransactionReceipt"));
    });

    it("sendMode sync on a chain that does not mine: pending with the hash after receiptTimeoutMs; the retry returns that transaction", async function () {
      const relayerKey = dev.accounts.payers[8].privateKey;
      const s = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: relayerKey, receiptTimeoutMs: 300, sendMode: "sync" });
      const req = await authorize(dev.accounts.payers[6], { value: 66n });
      await rpc("evm_setAutomine", [false]);
      let err: SettlementError;
      const t0 = performance.now();
      try {
        err = await settleError(s, req);
      } finally {
        await rpc("evm_setAutomine", [true]);
      }
      assert.ok(performance.now() - t0 < 3000);
      assert.equal(err.pending, true);
      assert.equal(err.reason, "settlement_pending");
      assert.match(err.transaction ?? "", /^0x[0-9a-f]{64}$/);
      await rpc("evm_mine");
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      assert.equal((await s.settle(req)).transaction, err.transaction);
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before, "mined once, not paid again");
    });

    it("a pending transaction the node dropped is settled afresh on retry, without a nonce gap", async function () {
      const relayerKey = dev.accounts.payers[8].privateKey;
      const slow = relayerSettler({ rpcUrl: dev.rpcUrl, chainId: CHAIN_ID, privateKey: relayerKey, receiptTimeoutMs: 100 });
      const req = await authorize(dev.accounts.payers[6], { value: 55n });
      await rpc("evm_setAutomine", [false]);
      let err: SettlementError;
      try {
        err = await settleError(slow, req);
        await rpc("anvil_dropTransaction", [err.transaction]);
        assert.equal(await rpc("eth_getTransactionByHash", [err.transaction]), null);
      } finally {
        await rpc("evm_setAutomine", [true]);
      }
      const before = await dev.balanceOf(dev.accounts.payTo.address);
      const retried = await slow.settle(req); // same nonce, fees and gas: the re-sent transaction may have the same hash
      assert.equal((await client.getTransactionReceipt({ hash: retried.transaction })).status, "success");
      assert.equal(await dev.balanceOf(dev.accounts.payTo.address), before + 55n);
    });
  });
});
