/**
 * A settlement looked up by its transaction hash counts as paid only when the receipt holds this very
 * authorization's AuthorizationUsed + Transfer, not any Transfer of the same from/to/value: a batch (ours, or a
 * batching facilitator's) may carry a twin payment of the same amount while this one's call failed. The relayer
 * already used that rule; the chain lookup of `facilitatorSettler({ rpcUrl })` accepted the twin.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { encodeEventTopics, numberToHex, pad, parseAbi, type Hex } from "viem";
import { settlementLookup } from "../lib/src/chain/settlement-lookup.js";
import type { SettleRequest } from "../lib/src/chain/settler.js";

const TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const FROM = "0x1111111111111111111111111111111111111111";
const TO = "0x2222222222222222222222222222222222222222";
const HASH = `0x${"ab".repeat(32)}` as Hex;
const EVENTS = parseAbi(["event Transfer(address indexed from, address indexed to, uint256 value)", "event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)"]);
const nonce = (n: number) => pad(numberToHex(n), { size: 32 });

/** A loopback JSON-RPC: the batch receipt (the twin's AuthorizationUsed + Transfer), this authorization unused. */
async function rpcWithTwinReceipt(): Promise<{ url: string; close(): void }> {
  const twin = [
    { address: TOKEN, topics: encodeEventTopics({ abi: EVENTS, eventName: "AuthorizationUsed", args: { authorizer: FROM, nonce: nonce(2) } }), data: "0x" },
    { address: TOKEN, topics: encodeEventTopics({ abi: EVENTS, eventName: "Transfer", args: { from: FROM, to: TO } }), data: pad(numberToHex(10_000n), { size: 32 }) },
  ];
  const answers: Record<string, unknown> = {
    eth_chainId: "0x14a34",
    eth_getTransactionReceipt: { status: "0x1", blockNumber: "0x10", logs: twin },
    eth_call: pad("0x0", { size: 32 }), // authorizationState: unused
    eth_blockNumber: "0x10",
    eth_getLogs: [],
  };
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const one = (m: { id: number; method: string }) => ({ jsonrpc: "2.0", id: m.id, result: answers[m.method] ?? null });
      const msg = JSON.parse(body) as { id: number; method: string } | Array<{ id: number; method: string }>;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(Array.isArray(msg) ? msg.map(one) : one(msg)));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

describe("settlement lookup by transaction hash", () => {
  it("a receipt holding only a twin payment's Transfer (same from/to/value, another nonce) does not pay this authorization", async () => {
    const rpc = await rpcWithTwinReceipt();
    try {
      const req = {
        chainId: 84532,
        network: "eip155:84532",
        asset: TOKEN,
        authorization: { from: FROM, to: TO, value: 10_000n, validAfter: 0n, validBefore: 2n ** 40n, nonce: nonce(1) },
        signature: `0x${"11".repeat(65)}`,
      } as unknown as SettleRequest;
      const outcome = await settlementLookup(rpc.url).outcome(req, HASH);
      assert.equal(outcome, undefined, `counted as paid by the twin's transfer: ${JSON.stringify(outcome)}`);
    } finally {
      rpc.close();
    }
  });
});
