/**
 * `npm run demo`: pay the running example server (started with `npm start`)
 * every way a client can, on its embedded dev chain, and show what happened.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { createPublicClient, createWalletClient, defineChain, erc20Abi, formatUnits, http, type Address, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { wrapFetchWithPayment as wrapV1, decodeXPaymentResponse } from "x402-fetch";
import { wrapFetchWithPayment as wrapV2, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";

const SERVER = (process.env.SERVER_URL ?? `http://127.0.0.1:${process.env.PORT ?? 4020}`).replace(/\/+$/, "");

interface DevInfo {
  rpcUrl: string;
  chainId: number;
  usdc: Address;
  payTo: Address;
  payers: { address: Address; privateKey: Hex }[];
}

const say = (s = "") => process.stdout.write(`${s}\n`);

async function main() {
  let info: DevInfo;
  try {
    const res = await fetch(`${SERVER}/api/devchain`);
    if (res.status === 404) throw new Error("the server at SERVER_URL runs no embedded dev chain; the demo needs one (start it with plain `npm start`).");
    info = (await res.json()) as DevInfo;
  } catch (err) {
    const msg = (err as Error).message;
    throw new Error(msg.includes("dev chain") ? msg : `cannot reach ${SERVER} (${msg}); start the server first with \`npm start\`.`);
  }
  const chain = defineChain({ id: info.chainId, name: "server402 dev chain", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [info.rpcUrl] } } });
  const pub = createPublicClient({ chain, transport: http(info.rpcUrl) });
  const balance = (a: Address) => pub.readContract({ address: info.usdc, abi: erc20Abi, functionName: "balanceOf", args: [a] });
  const usd = (v: bigint) => `${formatUnits(v, 6)} USDC`;

  const fixture = readFileSync(fileURLToPath(new URL("../../test/fixtures/faces/grace_hopper.jpg", import.meta.url)));
  const other = readFileSync(fileURLToPath(new URL("../../test/fixtures/faces/astronaut.png", import.meta.url)));
  const crop = await sharp(fixture).extract({ left: 40, top: 30, width: 420, height: 480 }).modulate({ brightness: 0.8 }).jpeg({ quality: 70 }).toBuffer();
  const same = { ImageDataA: fixture.toString("base64"), ImageDataB: crop.toString("base64") };
  const different = { ImageDataA: fixture.toString("base64"), ImageDataB: other.toString("base64") };
  const endpoint = `${SERVER}/api/tools/face-comparison`;
  const post = (body: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const result = async (res: Response) => {
    const body = (await res.json()) as { data?: { Result?: { Confidence: number; Thresholds: number[] } }; code?: string; message?: string };
    const r = body.data?.Result;
    return r ? `Confidence ${r.Confidence} (thresholds ${r.Thresholds.join("/")})` : `${body.code}: ${body.message}`;
  };

  const payToBefore = await balance(info.payTo);
  say(`server402 demo against ${SERVER}`);
  say(`payTo ${info.payTo} holds ${usd(payToBefore)}`);
  say();

  say("1. Unpaid call → 402");
  const unpaid = await fetch(endpoint, post(same));
  const offer = (await unpaid.json()) as { error: string; accepts: Array<{ maxAmountRequired: string; network: string; resource: string }> };
  say(`   HTTP ${unpaid.status} "${offer.error}": pay ${offer.accepts[0]!.maxAmountRequired} atomic USDC on ${offer.accepts[0]!.network} for ${offer.accepts[0]!.resource}`);

  const v2Payer = info.payers[0]!;
  const v2 = wrapV2(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(v2Payer.privateKey))));
  say(`2. @x402/fetch 2.x (PAYMENT-SIGNATURE) pays from ${v2Payer.address}`);
  const r2 = await v2(endpoint, post(same));
  const s2 = decodePaymentResponseHeader(r2.headers.get("payment-response") ?? "") as { transaction: string };
  say(`   HTTP ${r2.status} same person: ${await result(r2)}   tx ${s2.transaction}`);

  const v1Payer = info.payers[1]!;
  const wallet = createWalletClient({ account: privateKeyToAccount(v1Payer.privateKey), chain, transport: http(info.rpcUrl) });
  // x402-fetch 1.x refuses prices above $0.10 unless maxValue is raised
  const v1 = wrapV1(fetch, wallet as never, 200_000n);
  say(`3. x402-fetch 1.x (X-PAYMENT) pays from ${v1Payer.address}`);
  const r3 = await v1(endpoint, post(different));
  const s3 = decodeXPaymentResponse(r3.headers.get("x-payment-response") ?? "");
  say(`   HTTP ${r3.status} different people: ${await result(r3)}   tx ${s3.transaction}`);

  say("4. Prepaid token: create a payment, pay it with x402, spend the token as X-Payment-Token");
  const created = (await (await fetch(`${SERVER}/api/payments`, post({ serviceId: "face-comparison" }))).json()) as { paymentId: string; token: string; pay: { url: string } };
  say(`   created ${created.paymentId} (pending)`);
  const paid = await v2(created.pay.url, { method: "POST" });
  const paidBody = (await paid.json()) as { status: string; transaction: string };
  say(`   paid: HTTP ${paid.status} status ${paidBody.status}   tx ${paidBody.transaction}`);
  const r4 = await fetch(endpoint, { ...post(same), headers: { "content-type": "application/json", "x-payment-token": created.token } });
  say(`   token call: HTTP ${r4.status} ${await result(r4)}`);
  const r4b = await fetch(endpoint, { ...post(same), headers: { "content-type": "application/json", "x-payment-token": created.token } });
  say(`   token again: HTTP ${r4b.status} "${((await r4b.json()) as { error: string }).error}" (one call per payment)`);

  say("5. Legacy endpoint /api/tools/aliyun-facebody-compare-face with @x402/fetch");
  const r5 = await v2(`${SERVER}/api/tools/aliyun-facebody-compare-face`, post(same));
  const s5 = decodePaymentResponseHeader(r5.headers.get("payment-response") ?? "") as { transaction: string };
  say(`   HTTP ${r5.status} ${await result(r5)}   tx ${s5.transaction}`);

  const payToAfter = await balance(info.payTo);
  say();
  say(`payTo ${info.payTo}: ${usd(payToBefore)} → ${usd(payToAfter)} (+${usd(payToAfter - payToBefore)} for 4 paid calls)`);
  if ([r2, r3, r4, r5, paid].some((r) => r.status !== 200)) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  process.exit(1);
});
