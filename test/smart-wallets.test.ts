/**
 * Issue 17 part 1: smart-wallet payments (ERC-1271 and ERC-6492) on the real
 * anvil dev chain, through the Express paywall and the relayer settler. The
 * wallets and their factory are our own test contracts
 * (lib/contracts/test/TestWallets.sol, artifact built by `npm run compile-token`);
 * the paying client is the real @x402/fetch with a signer that signs through
 * the wallet's owner key(s).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  concat,
  createWalletClient,
  encodeFunctionData,
  http,
  serializeErc6492Signature,
  toFunctionSelector,
  type Abi,
  type Address,
  type Hex,
} from "viem";
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { startDevChain, type DevChain } from "server402/devchain";
import { encodeHeader, TRANSFER_WITH_AUTHORIZATION_TYPES } from "server402";
import { authorizationDigest, verifyPayer } from "../lib/src/protocol/verify.js";
import { findNetwork } from "../lib/src/protocol/networks.js";
import { MAX_SIGNATURE_BYTES, smartWalletVerifier, type SmartWalletVerifier } from "../lib/src/chain/smart-wallet.js";
import { compileSmartWallets, PROBE_ARTIFACT_PATH, WALLETS_ARTIFACT_PATH } from "../scripts/compile-token.js";
import { devChainDef, publicClient, startPaidApp, type PaidApp } from "./support/paid-app.js";

interface Artifact {
  abi: Abi;
  bytecode: Hex;
}
const wallets = JSON.parse(readFileSync(WALLETS_ARTIFACT_PATH, "utf8")) as { contracts: Record<string, Artifact> };
const FACTORY = wallets.contracts.TestWalletFactory!;
const BYTES_FORM = toFunctionSelector("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)");
const PRICE = 10_000n; // GET /weather: $0.01

type TypedData = Parameters<PrivateKeyAccount["signTypedData"]>[0];

describe("smart-wallet payments (issue 17.1: ERC-1271 and ERC-6492)", function () {
  this.timeout(120_000);
  let chain: DevChain;
  let app: PaidApp;
  let factory: Address;
  let deployer: ReturnType<typeof createWalletClient>;
  const pub = () => publicClient(chain);

  before(async () => {
    chain = await startDevChain();
    app = await startPaidApp(chain);
    deployer = createWalletClient({ account: privateKeyToAccount(chain.accounts.payers[8]!.privateKey), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
    const hash = await deployer.deployContract({ abi: FACTORY.abi, bytecode: FACTORY.bytecode, account: deployer.account!, chain: deployer.chain });
    factory = (await pub().waitForTransactionReceipt({ hash })).contractAddress!;
  });
  after(async () => {
    await app?.close();
    await chain?.stop();
  });

  const salt = (): Hex => `0x${randomBytes(32).toString("hex")}`;
  const walletAddress = (owners: Address[], s: Hex) =>
    pub().readContract({ address: factory, abi: FACTORY.abi, functionName: "walletAddress", args: [owners, s] }) as Promise<Address>;
  const deployCall = (owners: Address[], s: Hex) => encodeFunctionData({ abi: FACTORY.abi, functionName: "deploy", args: [owners, s] });
  async function send(to: Address, data: Hex): Promise<void> {
    const hash = await deployer.sendTransaction({ to, data, account: deployer.account!, chain: deployer.chain });
    assert.equal((await pub().waitForTransactionReceipt({ hash })).status, "success");
  }
  const code = async (a: Address) => (await pub().getCode({ address: a })) ?? "0x";
  const relayerNonce = () => pub().getTransactionCount({ address: chain.accounts.relayer.address });

  /** A new wallet of fresh owner keys; deployed or only counterfactual; funded with 1 USDC. */
  async function newWallet(ownerCount: number, deployed: boolean) {
    const owners = Array.from({ length: ownerCount }, () => privateKeyToAccount(generatePrivateKey()));
    const s = salt();
    const ownerAddrs = owners.map((o) => o.address);
    const address = await walletAddress(ownerAddrs, s);
    if (deployed) await send(factory, deployCall(ownerAddrs, s));
    await chain.mint(address, 1_000_000n);
    /** Every owner signs the same typed data; the wallet wants their signatures concatenated in owner order. */
    const sign = async (td: TypedData): Promise<Hex> => concat(await Promise.all(owners.map((o) => o.signTypedData(td))));
    return { address, owners, salt: s, sign, factoryData: deployCall(ownerAddrs, s) };
  }

  /** The real @x402/fetch client paying as `address`, its signatures made by `sign` (the wallet's owners). */
  function walletFetch(address: Address, sign: (td: TypedData) => Promise<Hex>) {
    const signer = { address, signTypedData: (td: Record<string, unknown>) => sign(td as unknown as TypedData) };
    return wrapFetchWithPayment(fetch, new x402Client().register("eip155:*", new ExactEvmScheme(signer)));
  }

  async function paidOk(pay: typeof fetch, payer: Address) {
    const [before, payToBefore] = await Promise.all([chain.balanceOf(payer), chain.balanceOf(chain.accounts.payTo.address)]);
    const res = await pay(`${app.url}/weather`);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const settled = decodePaymentResponseHeader(res.headers.get("payment-response")!);
    assert.equal(settled.success, true);
    assert.equal(settled.payer, payer);
    assert.equal(JSON.parse(text).payment.payer, payer);
    assert.equal(await chain.balanceOf(payer), before - PRICE);
    assert.equal(await chain.balanceOf(chain.accounts.payTo.address), payToBefore + PRICE);
    const tx = await pub().getTransaction({ hash: settled.transaction as Hex });
    assert.equal(tx.input.slice(0, 10), BYTES_FORM, "settled with transferWithAuthorization(…, bytes signature)");
    return settled;
  }

  /** A hand-made v2 payment for /weather, for hostile cases. */
  async function v2Payment(from: Address, sign: (td: TypedData) => Promise<Hex>, mangle: (sig: Hex) => Hex = (s) => s): Promise<string> {
    const now = BigInt(Math.floor(Date.now() / 1000));
    const message = { from, to: chain.accounts.payTo.address, value: PRICE, validAfter: now - 600n, validBefore: now + 300n, nonce: salt() };
    const signature = mangle(
      await sign({ domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc }, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization", message }),
    );
    return encodeHeader({
      x402Version: 2,
      accepted: { scheme: "exact", network: "eip155:84532", amount: PRICE.toString(), asset: chain.usdc, payTo: chain.accounts.payTo.address, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } },
      payload: { signature, authorization: { ...message, value: message.value.toString(), validAfter: message.validAfter.toString(), validBefore: message.validBefore.toString() } },
    });
  }

  async function expect402(header: string, reason: string, messagePart?: RegExp) {
    const runs = app.runs.weather ?? 0;
    const res = await fetch(`${app.url}/weather`, { headers: { "payment-signature": header } });
    const text = await res.text();
    assert.equal(res.status, 402, text);
    const body = JSON.parse(text);
    assert.equal(body.error, reason, text);
    if (messagePart) assert.match(body.message, messagePart);
    assert.equal(app.runs.weather ?? 0, runs, "the paid handler did not run");
  }

  it("the committed probe and test-wallet artifacts are built from the current sources", function () {
    this.timeout(180_000);
    const built = compileSmartWallets();
    assert.deepEqual(JSON.parse(readFileSync(PROBE_ARTIFACT_PATH, "utf8")), built.probe, "run npm run compile-token");
    assert.deepEqual(JSON.parse(readFileSync(WALLETS_ARTIFACT_PATH, "utf8")), built.wallets, "run npm run compile-token");
  });

  it("17.1 a deployed ERC-1271 wallet (one owner, 65-byte signature) pays with @x402/fetch; settled with the bytes-signature form", async () => {
    const w = await newWallet(1, true);
    await paidOk(walletFetch(w.address, w.sign), w.address);
  });

  it("17.1 a deployed 2-owner ERC-1271 wallet (130-byte signature) pays", async () => {
    const w = await newWallet(2, true);
    await paidOk(walletFetch(w.address, w.sign), w.address);
    await paidOk(walletFetch(w.address, w.sign), w.address); // and again, with a new nonce
  });

  it("17.1 a counterfactual wallet's ERC-6492 signature is verified without deployment, then settled: factory deploy, then transfer", async () => {
    const w = await newWallet(1, false);
    assert.equal(await code(w.address), "0x");
    const wrap = async (td: TypedData) => serializeErc6492Signature({ address: factory, data: w.factoryData, signature: await w.sign(td) });

    // verification alone deploys nothing
    const asset = findNetwork("eip155:84532")!.usdc!;
    const now = BigInt(Math.floor(Date.now() / 1000));
    const auth = { from: w.address, to: chain.accounts.payTo.address, value: PRICE, validAfter: now - 600n, validBefore: now + 300n, nonce: salt() };
    const sig = await wrap({ domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc }, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization", message: auth });
    const exp = { asset, chainId: chain.chainId, payTo: auth.to, amount: PRICE, amountRule: "exact" as const, now, smartWallets: smartWalletVerifier({ rpcUrl: chain.rpcUrl }) };
    assert.deepEqual(await verifyPayer(auth, sig, exp), { payer: w.address, kind: "erc6492" });
    assert.equal(await code(w.address), "0x", "verification deployed nothing");

    // paying deploys the wallet through its factory, then transfers with the wallet's own signature
    const nonce = await relayerNonce();
    await paidOk(walletFetch(w.address, wrap), w.address);
    assert.notEqual(await code(w.address), "0x", "deployed by the settlement");
    assert.equal(await relayerNonce(), nonce + 2, "two relayer transactions: factory deploy, then transfer");

    // a client that keeps wrapping after deployment still pays, and nothing is deployed twice
    await paidOk(walletFetch(w.address, wrap), w.address);
    assert.equal(await relayerNonce(), nonce + 3);
  });

  it("17.1 two payments at once from one counterfactual wallet, through a factory that reverts once the wallet exists: deployed once, both settled", async () => {
    const w = await newWallet(1, false);
    const strict = encodeFunctionData({ abi: FACTORY.abi, functionName: "deployStrict", args: [w.owners.map((o) => o.address), w.salt] });
    const wrap = async (td: TypedData) => serializeErc6492Signature({ address: factory, data: strict, signature: await w.sign(td) });
    const [before, payToBefore] = await Promise.all([chain.balanceOf(w.address), chain.balanceOf(chain.accounts.payTo.address)]);
    const answers = await Promise.all([0, 1].map(() => walletFetch(w.address, wrap)(`${app.url}/weather`)));
    const texts = await Promise.all(answers.map((r) => r.text()));
    assert.deepEqual(answers.map((r) => r.status), [200, 200], texts.join("\n"));
    assert.equal(await chain.balanceOf(w.address), before - 2n * PRICE);
    assert.equal(await chain.balanceOf(chain.accounts.payTo.address), payToBefore + 2n * PRICE);
  });

  it("17.1 the EOA fast path stays local: a 65-byte EOA signature never reaches the smart-wallet path", async () => {
    const calls: Address[] = [];
    const spy: SmartWalletVerifier = { verify: async (from) => (calls.push(from), "erc1271") };
    const eoa = privateKeyToAccount(generatePrivateKey());
    const asset = findNetwork("eip155:84532")!.usdc!;
    const now = BigInt(Math.floor(Date.now() / 1000));
    const auth = { from: eoa.address, to: chain.accounts.payTo.address, value: PRICE, validAfter: now - 600n, validBefore: now + 300n, nonce: salt() };
    const sig = await eoa.signTypedData({ domain: { name: "USDC", version: "2", chainId: chain.chainId, verifyingContract: chain.usdc }, types: TRANSFER_WITH_AUTHORIZATION_TYPES, primaryType: "TransferWithAuthorization", message: auth });
    const exp = { asset, chainId: chain.chainId, payTo: auth.to, amount: PRICE, amountRule: "exact" as const, now, smartWallets: spy };
    assert.deepEqual(await verifyPayer(auth, sig, exp), { payer: eoa.address, kind: "eoa" });
    assert.deepEqual(calls, []);
    assert.equal(authorizationDigest(auth, asset, chain.chainId).length, 66);
  });

  it("17.1 hostile: a wallet that accepts anything cannot pay from someone else's wallet (deployed wallet, EOA, counterfactual wallet)", async () => {
    // the attacker's own permissive wallet exists on chain
    await send(factory, encodeFunctionData({ abi: FACTORY.abi, functionName: "deployPermissive", args: [salt()] }));
    const attacker = privateKeyToAccount(generatePrivateKey());
    const attackerSign = (td: TypedData) => attacker.signTypedData(td);
    const victimWallet = await newWallet(1, true);
    const victimCounterfactual = await newWallet(1, false);
    const victimEoa = chain.accounts.payers[5]!.address;
    const permissiveDeploy = encodeFunctionData({ abi: FACTORY.abi, functionName: "deployPermissive", args: [salt()] });
    const viaPermissive = (sig: Hex) => serializeErc6492Signature({ address: factory, data: permissiveDeploy, signature: sig });
    const balances = () => Promise.all([victimWallet.address, victimCounterfactual.address, victimEoa].map((a) => chain.balanceOf(a)));
    const before = await balances();
    const nonce = await relayerNonce();

    // the victim's deployed wallet decides, whatever the attacker's signature is
    await expect402(await v2Payment(victimWallet.address, attackerSign), "invalid_exact_evm_payload_signature", /ERC-1271/);
    // an ERC-6492 wrapper deploying the permissive wallet elsewhere vouches for nobody
    await expect402(await v2Payment(victimEoa, attackerSign, viaPermissive), "smart_wallet_deployment_failed", /does not deploy a wallet at authorization\.from/);
    await expect402(await v2Payment(victimCounterfactual.address, attackerSign, viaPermissive), "smart_wallet_deployment_failed", /does not deploy/);
    // the real factory call of the victim's counterfactual wallet, with the attacker's signature inside
    const victimDeploy = (sig: Hex) => serializeErc6492Signature({ address: factory, data: victimCounterfactual.factoryData, signature: sig });
    await expect402(await v2Payment(victimCounterfactual.address, attackerSign, victimDeploy), "invalid_exact_evm_payload_signature", /ERC-1271/);

    assert.deepEqual(await balances(), before, "nobody's money moved");
    assert.equal(await relayerNonce(), nonce, "the relayer sent nothing");
    assert.equal(await code(victimCounterfactual.address), "0x");
  });

  it("17.1 hostile: an ERC-6492 signature whose factory call reverts gets a clear 402, and nothing is sent", async () => {
    const w = await newWallet(1, false);
    const nonce = await relayerNonce();
    const reverting = (sig: Hex) => serializeErc6492Signature({ address: factory, data: deployCall([], salt()), signature: sig }); // "no owners"
    await expect402(await v2Payment(w.address, w.sign, reverting), "smart_wallet_deployment_failed", /factory call that deploys authorization\.from reverts/);
    // a "factory" that is no contract at all cannot deploy anything either
    const nowhere = (sig: Hex) => serializeErc6492Signature({ address: privateKeyToAccount(generatePrivateKey()).address, data: w.factoryData, signature: sig });
    await expect402(await v2Payment(w.address, w.sign, nowhere), "smart_wallet_deployment_failed", /does not deploy/);
    // a wrapper that is not abi.encode(address, bytes, bytes)
    const garbled = (sig: Hex) => concat([sig, "0x6492649264926492649264926492649264926492649264926492649264926492"]);
    await expect402(await v2Payment(w.address, w.sign, garbled), "invalid_exact_evm_payload_signature", /ERC-6492/);
    assert.equal(await relayerNonce(), nonce);
    assert.equal(await code(w.address), "0x");
  });

  it("17.1 hostile: an over-long signature is refused locally, before any chain call", async () => {
    const w = await newWallet(1, true);
    const long = (sig: Hex) => concat([sig, `0x${"ab".repeat(MAX_SIGNATURE_BYTES - 64)}`]); // 65 + 1984 = 2049 bytes
    await expect402(await v2Payment(w.address, w.sign, long), "invalid_exact_evm_payload_signature", new RegExp(`65 to ${MAX_SIGNATURE_BYTES} bytes`));
    // the same signature straight into verification: the on-chain path is never asked
    const calls: Address[] = [];
    const spy: SmartWalletVerifier = { verify: async (from) => (calls.push(from), "erc1271") };
    const now = BigInt(Math.floor(Date.now() / 1000));
    const auth = { from: w.address, to: chain.accounts.payTo.address, value: PRICE, validAfter: now - 600n, validBefore: now + 300n, nonce: salt() };
    const exp = { asset: findNetwork("eip155:84532")!.usdc!, chainId: chain.chainId, payTo: auth.to, amount: PRICE, amountRule: "exact" as const, now, smartWallets: spy };
    await assert.rejects(verifyPayer(auth, long(`0x${"11".repeat(65)}`), exp), { reason: "invalid_exact_evm_payload_signature" });
    assert.deepEqual(calls, []);
  });
});
