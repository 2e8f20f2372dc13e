/**
 * Issue 14, cases A5–A7, against a real dev chain: never-charged work is bounded (retries of a
 * given-back payment, work in flight per payer), one balance cannot back many payments, and
 * unpaid traffic is refused cheaply (store writes and RPC requests counted).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express, { type Request, type Response } from "express";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import type { Hex } from "viem";
import { MemoryStore, paywall, relayerSettler, SettlementError, type PaywallOptions, type Store } from "server402";
import { generatePaymentToken, hashToken } from "server402/internal";
import { startDevChain, type DevChain } from "server402/devchain";
import { publicClient } from "./support/paid-app.js";
import { paidPayment } from "./store-conformance.js";
import { signAuthorization, v1Header } from "./support/sign.js";

const PRICE = 10_000n; // $0.01
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A loopback JSON-RPC proxy in front of the chain that counts HTTP requests and JSON-RPC calls by method. */
async function countingRpc(target: string) {
  const calls = new Map<string, number>();
  let requests = 0;
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString();
    requests++;
    try {
      const parsed = JSON.parse(body) as { method: string } | { method: string }[];
      for (const c of Array.isArray(parsed) ? parsed : [parsed]) calls.set(c.method, (calls.get(c.method) ?? 0) + 1);
    } catch {
      // forwarded as is
    }
    const upstream = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
    res.writeHead(upstream.status, { "content-type": "application/json" });
    res.end(await upstream.text());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    get requests() {
      return requests;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const WRITES = new Set(["claimNonce", "releaseNonce", "setNonceState", "claimPayerNonce", "giveBackNonce", "createPayment", "markPaid", "reserveCall", "commitCall", "releaseCall", "appendLedger"]);

/** A MemoryStore whose write methods are counted. */
function countingStore() {
  const inner = new MemoryStore();
  const writes = { n: 0 };
  const store = new Proxy(inner, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (WRITES.has(String(prop))) writes.n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as Store;
  return { store, writes };
}

interface WorkApp {
  url: string;
  store: Store;
  /** Handler runs by payer address (lower-case), or "token". */
  runs: Map<string, number>;
  /** Most handler runs of one payer at the same time. */
  maxConcurrent: Map<string, number>;
  close(): Promise<void>;
}

/**
 * `POST /work` ($0.01, service "work"): a handler that stands for an expensive engine with 2 slots
 * (a run waits at most 250 ms for one, else 503 `engine_unavailable`, like the face engine), each run
 * taking `workMs`; `{ "fail": true }` answers 422 after the work (a face that is not there).
 */
async function startWorkApp(chain: DevChain, opts: Partial<PaywallOptions> & { workMs?: number; slots?: number } = {}): Promise<WorkApp> {
  const store = opts.store ?? new MemoryStore();
  const runs = new Map<string, number>();
  const current = new Map<string, number>();
  const maxConcurrent = new Map<string, number>();
  const slots = opts.slots ?? 2;
  let busy = 0;
  const waiting: { resolve: (ok: boolean) => void; timer: NodeJS.Timeout }[] = [];
  const acquire = () =>
    new Promise<boolean>((resolve) => {
      if (busy < slots) return (busy++, resolve(true));
      const w = { resolve, timer: setTimeout(() => (waiting.splice(waiting.indexOf(w), 1), resolve(false)), 250) };
      waiting.push(w);
    });
  const releaseSlot = () => {
    const next = waiting.shift();
    if (!next) return void busy--;
    clearTimeout(next.timer);
    next.resolve(true);
  };
  const pw = paywall({
    payTo: chain.accounts.payTo.address,
    network: "base-sepolia",
    rpcUrl: chain.rpcUrl,
    settler: relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 }),
    ...opts,
    store,
    routes: { "POST /work": { price: "$0.01", serviceId: "work" } },
  });
  const app = express();
  app.use(express.json());
  app.use(pw);
  app.post("/work", async (req: Request, res: Response) => {
    const who = req.payment?.method === "x402" ? req.payment.payer.toLowerCase() : "token";
    runs.set(who, (runs.get(who) ?? 0) + 1);
    current.set(who, (current.get(who) ?? 0) + 1);
    maxConcurrent.set(who, Math.max(maxConcurrent.get(who) ?? 0, current.get(who)!));
    try {
      if (!(await acquire())) return void res.status(503).json({ error: "engine_unavailable" });
      try {
        await sleep(opts.workMs ?? 40);
      } finally {
        releaseSlot();
      }
      if (req.body?.fail) return void res.status(422).json({ error: "no_face" });
      res.json({ ok: true });
    } finally {
      current.set(who, current.get(who)! - 1);
    }
  });
  const server = await new Promise<Server>((r) => {
    const s = app.listen(0, "127.0.0.1", () => r(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    store,
    runs,
    maxConcurrent,
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

describe("Abuse limits (issue 14, A5–A7; real chain)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  const parts = (privateKey: Hex, extra: { nonce?: Hex } = {}) => ({ privateKey, asset: chain.usdc, payTo: chain.accounts.payTo.address, value: PRICE, ...extra });
  const post = (url: string, headers: Record<string, string>, body: unknown) =>
    fetch(`${url}/work`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) }).then(async (r) => ({
      status: r.status,
      body: (await r.json().catch(() => ({}))) as { error?: string },
    }));
  /** A new key holding `amount` test USDC. */
  async function fundedKey(amount: bigint): Promise<Hex> {
    const key = generatePrivateKey();
    if (amount > 0n) await chain.mint(privateKeyToAccount(key).address, amount);
    return key;
  }

  before(async () => {
    chain = await startDevChain();
  });
  after(async () => {
    await chain?.stop();
  });

  it("A6 one balance, many payments: a payer holding exactly one price sends 10 parallel payments → 1 × 200, no transfer broadcast and reverted, handler ran once", async () => {
    const app = await startWorkApp(chain, { slots: 20 });
    const client = publicClient(chain);
    try {
      const key = await fundedKey(PRICE);
      const payer = privateKeyToAccount(key).address.toLowerCase();
      const headers = await Promise.all(Array.from({ length: 10 }, () => v1Header(parts(key))));
      const relayerNonce = () => client.getTransactionCount({ address: chain.accounts.relayer.address, blockTag: "pending" });
      const [sentBefore, paidBefore] = [await relayerNonce(), await chain.balanceOf(chain.accounts.payTo.address)];
      const results = await Promise.all(headers.map((h) => post(app.url, { "x-payment": h }, {})));
      const broadcast = (await relayerNonce()) - sentBefore;
      const transferred = ((await chain.balanceOf(chain.accounts.payTo.address)) - paidBefore) / PRICE;
      const reverted = broadcast - Number(transferred);
      console.log(`      A6 figures: ${results.filter((r) => r.status === 200).length} × 200, ${broadcast} broadcast, ${reverted} reverted, handler runs ${app.runs.get(payer) ?? 0}`);
      assert.equal(results.filter((r) => r.status === 200).length, 1, JSON.stringify(results));
      assert.equal(reverted, 0, "transfers broadcast and reverted");
      assert.equal(broadcast, 1);
      assert.equal(app.runs.get(payer), 1, "handler runs");
      for (const r of results.filter((r) => r.status !== 200)) {
        assert.equal(r.status, 402);
        assert.equal(r.body.error, "insufficient_funds");
      }
      assert.equal(await chain.balanceOf(privateKeyToAccount(key).address), 0n);
    } finally {
      await app.close();
    }
  });

  it("A6 one balance, many payments: the relayer simulates a transfer whose pre-check read the chain more than 2 s ago, and broadcasts nothing that would revert", async () => {
    const settler = relayerSettler({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, privateKey: chain.accounts.relayer.privateKey, pollingIntervalMs: 5 });
    const client = publicClient(chain);
    const { signature, authorization: a } = await signAuthorization(parts(await fundedKey(0n)));
    const sent = () => client.getTransactionCount({ address: chain.accounts.relayer.address, blockTag: "pending" });
    const before = await sent();
    await assert.rejects(
      settler.settle({
        authorization: { from: a.from, to: a.to, value: BigInt(a.value), validAfter: BigInt(a.validAfter), validBefore: BigInt(a.validBefore), nonce: a.nonce },
        signature,
        asset: chain.usdc,
        chainId: chain.chainId,
        network: "eip155:84532",
        x402Version: 1,
        payload: {},
        requirements: {},
        prechecked: true,
        precheckedAt: Date.now() - 5000,
      }),
      (err: SettlementError) => err.reason === "invalid_exact_evm_insufficient_balance" && err.transaction === undefined,
    );
    assert.equal(await sent(), before, "transactions broadcast");
  });

  it("A5 never-charged work without limit: attackers re-sending failing authorizations run the handler at most 1 + 2 times each, and paying requests are served meanwhile", async () => {
    const app = await startWorkApp(chain);
    try {
      const attackers = await Promise.all(Array.from({ length: 16 }, () => fundedKey(PRICE)));
      const honest = [chain.accounts.payers[1]!.privateKey, chain.accounts.payers[2]!.privateKey];
      const refused = new Set<number>();
      let stop = false;
      let attackerRequests = 0;
      const attack = attackers.map(async (key, i) => {
        const header = { "x-payment": await v1Header(parts(key)) };
        for (let n = 0; n < 400 && !stop; n++) {
          attackerRequests++;
          const r = await post(app.url, header, { fail: true });
          if (r.status === 402) refused.add(i);
          else assert.ok(r.status === 422 || r.status === 503, JSON.stringify(r));
        }
      });
      // honest payers start once every attacker was refused (or after 1.5 s), while the attack goes on
      const t0 = Date.now();
      while (refused.size < attackers.length && Date.now() - t0 < 1500) await sleep(20);
      const honestResults: number[] = [];
      await Promise.all(
        honest.map(async (key) => {
          for (let n = 0; n < 8; n++) honestResults.push((await post(app.url, { "x-payment": await v1Header(parts(key)) }, {})).status);
        }),
      );
      stop = true;
      await Promise.all(attack);
      const attackerRuns = attackers.reduce((s, k) => s + (app.runs.get(privateKeyToAccount(k).address.toLowerCase()) ?? 0), 0);
      console.log(`      A5 figures: ${attackerRequests} attacker requests ran the handler ${attackerRuns} times; honest: ${honestResults.filter((s) => s === 200).length}/${honestResults.length} × 200`);
      for (const k of attackers) assert.ok((app.runs.get(privateKeyToAccount(k).address.toLowerCase()) ?? 0) <= 3, "runs of one authorization");
      assert.deepEqual(honestResults, Array(16).fill(200));
    } finally {
      await app.close();
    }
  });

  it("A5 never-charged work without limit: a refused retry answers retries_exhausted without running the handler", async () => {
    const app = await startWorkApp(chain);
    try {
      const key = chain.accounts.payers[3]!.privateKey;
      const header = { "x-payment": await v1Header(parts(key)) };
      const statuses: string[] = [];
      for (let n = 0; n < 6; n++) {
        const r = await post(app.url, header, { fail: true });
        statuses.push(`${r.status} ${r.body.error}`);
      }
      assert.deepEqual(statuses, [...Array(3).fill("422 no_face"), ...Array(3).fill("402 retries_exhausted")]);
      assert.equal(app.runs.get(privateKeyToAccount(key).address.toLowerCase()), 3);
    } finally {
      await app.close();
    }
  });

  it("A5 never-charged work without limit: one payer has at most 4 paid runs in flight", async () => {
    const app = await startWorkApp(chain, { workMs: 500, slots: 20 });
    try {
      const key = chain.accounts.payers[4]!.privateKey;
      const headers = await Promise.all(Array.from({ length: 12 }, () => v1Header(parts(key))));
      const results = await Promise.all(headers.map((h) => post(app.url, { "x-payment": h }, { fail: true })));
      const payer = privateKeyToAccount(key).address.toLowerCase();
      console.log(`      A5 figures: 12 parallel payments of one payer: most in flight ${app.maxConcurrent.get(payer)}`);
      assert.ok(app.maxConcurrent.get(payer)! <= 4, `in flight: ${app.maxConcurrent.get(payer)}`);
      // the runs may overlap less than fully (arrivals spread), so only the bound is exact
      assert.ok(results.some((r) => r.body.error === "too_many_in_flight"), JSON.stringify(results));
      for (const r of results.filter((r) => r.status !== 422)) assert.deepEqual([r.status, r.body.error], [429, "too_many_in_flight"]);
    } finally {
      await app.close();
    }
  });

  it("A5 never-charged work without limit: a token call given back after failed runs is retried at most 2 times, then refused without running the handler", async () => {
    const app = await startWorkApp(chain);
    try {
      const token = generatePaymentToken();
      const { paymentId } = await paidPayment(app.store, { serviceId: "work", tokenHash: hashToken(token), amountAtomic: PRICE.toString() });
      const statuses: string[] = [];
      for (let n = 0; n < 6; n++) {
        const r = await post(app.url, { "x-payment-token": token }, { fail: true });
        statuses.push(`${r.status} ${r.body.error}`);
      }
      assert.equal(app.runs.get("token"), 3, statuses.join(", "));
      assert.deepEqual(statuses.slice(3).map((s) => s.split(" ")[1]), Array(3).fill("retries_exhausted"));
      const p = await app.store.getPayment(paymentId);
      assert.equal(p?.callsUsed, 0, "nothing charged");
    } finally {
      await app.close();
    }
  });

  it("A7 cheap refusals: authorizations from empty keys cost no store write, one RPC check per payer, and a bounded rate of RPC for new payers", async () => {
    const rpc = await countingRpc(chain.rpcUrl);
    const { store, writes } = countingStore();
    const app = await startWorkApp(chain, { store, rpcUrl: rpc.url });
    try {
      // a payer known to pay keeps being served during the flood
      const known = chain.accounts.payers[5]!.privateKey;
      assert.equal((await post(app.url, { "x-payment": await v1Header(parts(known)) }, {})).status, 200);
      const writesBefore = writes.n;
      const checksBefore = rpc.requests;
      // one empty key, 30 times
      const empty = generatePrivateKey();
      for (let n = 0; n < 30; n++) {
        const r = await post(app.url, { "x-payment": await v1Header(parts(empty)) }, {});
        assert.equal(r.status, 402);
        assert.equal(r.body.error, "insufficient_funds");
      }
      const oneKey = { writes: writes.n - writesBefore, rpc: rpc.requests - checksBefore };
      // 300 fresh empty keys, 50 at a time, while the known payer pays
      const headers = await Promise.all(Array.from({ length: 300 }, () => v1Header(parts(generatePrivateKey()))));
      const started = performance.now();
      const rpcBefore = rpc.requests;
      const statuses = new Map<string, number>();
      const flood = (async () => {
        for (let i = 0; i < headers.length; i += 50) {
          const batch = await Promise.all(headers.slice(i, i + 50).map((h) => post(app.url, { "x-payment": h }, {})));
          for (const r of batch) statuses.set(`${r.status} ${r.body.error}`, (statuses.get(`${r.status} ${r.body.error}`) ?? 0) + 1);
        }
      })();
      const paid = await post(app.url, { "x-payment": await v1Header(parts(known)) }, {});
      await flood;
      const seconds = (performance.now() - started) / 1000;
      const floodRpc = rpc.requests - rpcBefore;
      console.log(
        `      A7 figures: one empty key × 30 → ${oneKey.writes} store writes, ${oneKey.rpc} RPC requests; 300 new empty keys in ${seconds.toFixed(2)} s → ${writes.n - writesBefore - oneKey.writes} store writes (the known payer's included), ${floodRpc} RPC requests; answers ${JSON.stringify(Object.fromEntries(statuses))}`,
      );
      assert.equal(paid.status, 200, JSON.stringify(paid));
      assert.equal(oneKey.writes, 0, "store writes for one empty key");
      assert.ok(oneKey.rpc <= 1, `RPC requests for one empty key: ${oneKey.rpc}`);
      // the flood writes nothing; the known payer's payment writes its own claim and settlement
      assert.ok(writes.n - writesBefore <= 4, `store writes: ${writes.n - writesBefore}`);
      // default budget for payers not seen paying: 10 checks per second, bursts of 20 (plus the known payer's own check and settlement)
      assert.ok(floodRpc <= 20 + 10 * seconds + 12, `RPC requests during the flood: ${floodRpc} in ${seconds.toFixed(2)} s`);
      for (const s of statuses.keys()) assert.match(s, /^(402 insufficient_funds|503 chain_check_busy)$/);
    } finally {
      await app.close();
      await rpc.close();
    }
  });

  it("A7 cheap refusals: forged signatures (not the payer's key) take the smart-wallet chain check only within the new payers' budget", async () => {
    const rpc = await countingRpc(chain.rpcUrl);
    const app = await startWorkApp(chain, { rpcUrl: rpc.url });
    try {
      // each signature recovers to some other key than `from`, so only a smart wallet at `from` could have made it
      const headers = await Promise.all(Array.from({ length: 300 }, () => v1Header({ ...parts(generatePrivateKey()), from: privateKeyToAccount(generatePrivateKey()).address })));
      const started = performance.now();
      const rpcBefore = rpc.requests;
      const statuses = new Map<string, number>();
      for (let i = 0; i < headers.length; i += 50) {
        const batch = await Promise.all(headers.slice(i, i + 50).map((h) => post(app.url, { "x-payment": h }, {})));
        for (const r of batch) statuses.set(`${r.status} ${r.body.error}`, (statuses.get(`${r.status} ${r.body.error}`) ?? 0) + 1);
      }
      const seconds = (performance.now() - started) / 1000;
      const floodRpc = rpc.requests - rpcBefore;
      console.log(`      A7 figures: 300 forged signatures in ${seconds.toFixed(2)} s → ${floodRpc} RPC requests; answers ${JSON.stringify(Object.fromEntries(statuses))}`);
      assert.equal(statuses.get("200 undefined"), undefined, "no forged signature is paid");
      assert.ok(floodRpc <= 20 + 10 * seconds + 2, `RPC requests during the flood: ${floodRpc} in ${seconds.toFixed(2)} s`);
      assert.ok((statuses.get("503 chain_check_busy") ?? 0) > 0, JSON.stringify(Object.fromEntries(statuses)));
    } finally {
      await app.close();
      await rpc.close();
    }
  });
});
