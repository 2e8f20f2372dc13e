/**
 * The smart-wallet test contracts (lib/contracts/test/TestWallets.sol) on a dev chain: a factory, and wallets
 * of fresh owner keys, deployed or counterfactual, that sign typed data through their owners.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { concat, createWalletClient, encodeFunctionData, http, maxUint256, type Abi, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import type { DevChain } from "server402/devchain";
import { WALLETS_ARTIFACT_PATH } from "../../scripts/compile-token.js";
import { PERMIT2_ADDRESS } from "../../lib/src/protocol/permit2.js";
import { PERMIT2_READ_ABI } from "../../lib/src/chain/permit2.js";
import { chainRpc } from "./chain-rpc.js";
import { devChainDef, publicClient } from "./paid-app.js";

const wallets = JSON.parse(readFileSync(WALLETS_ARTIFACT_PATH, "utf8")) as { contracts: Record<string, { abi: Abi; bytecode: Hex }> };
export const WALLET_FACTORY = wallets.contracts.TestWalletFactory!;

type TypedData = Parameters<PrivateKeyAccount["signTypedData"]>[0];

export interface TestWallet {
  address: Address;
  owners: PrivateKeyAccount[];
  /** Every owner signs the same typed data; the wallet wants their signatures concatenated in owner order. */
  sign(td: unknown): Promise<Hex>;
  /** The factory call that deploys it (ERC-6492's factoryData). */
  factoryData: Hex;
}

/** Deploy the wallet factory from `deployerKey`; `newWallet` makes wallets funded with 1 USDC (and 1 plain token). */
export async function testWallets(chain: DevChain, deployerKey: Hex) {
  const pub = publicClient(chain);
  const rpc = chainRpc(() => chain.rpcUrl);
  const deployer = createWalletClient({ account: privateKeyToAccount(deployerKey), chain: devChainDef(chain), transport: http(chain.rpcUrl) });
  const mined = async (hash: Hex) => {
    const r = await pub.waitForTransactionReceipt({ hash });
    if (r.status !== "success") throw new Error(`transaction ${hash} reverted`);
    return r;
  };
  const factory = (await mined(await deployer.deployContract({ abi: WALLET_FACTORY.abi, bytecode: WALLET_FACTORY.bytecode, account: deployer.account!, chain: deployer.chain }))).contractAddress!;

  /**
   * A wallet of `ownerCount` fresh owner keys. `approvePermit2` (deployed wallets): the wallet approves Permit2
   * on those tokens; the test wallets have no execute function, so the wallet's own call is made by impersonating it.
   */
  async function newWallet(ownerCount: number, deployed: boolean, approvePermit2: Address[] = []): Promise<TestWallet> {
    const owners = Array.from({ length: ownerCount }, () => privateKeyToAccount(generatePrivateKey()));
    const salt: Hex = `0x${randomBytes(32).toString("hex")}`;
    const ownerAddrs = owners.map((o) => o.address);
    const address = (await pub.readContract({ address: factory, abi: WALLET_FACTORY.abi, functionName: "walletAddress", args: [ownerAddrs, salt] })) as Address;
    const factoryData = encodeFunctionData({ abi: WALLET_FACTORY.abi, functionName: "deploy", args: [ownerAddrs, salt] });
    await chain.mint(address, 1_000_000n);
    await chain.mintToken(address, 1_000_000n);
    if (deployed) {
      await mined(await deployer.sendTransaction({ to: factory, data: factoryData, account: deployer.account!, chain: deployer.chain }));
      if (approvePermit2.length > 0) {
        await rpc("anvil_impersonateAccount", [address]);
        await rpc("anvil_setBalance", [address, "0xde0b6b3a7640000"]);
        for (const asset of approvePermit2) {
          const data = encodeFunctionData({ abi: PERMIT2_READ_ABI, functionName: "approve", args: [PERMIT2_ADDRESS, maxUint256] });
          await mined((await rpc("eth_sendTransaction", [{ from: address, to: asset, data }])) as Hex);
        }
        await rpc("anvil_stopImpersonatingAccount", [address]);
      }
    }
    const sign = async (td: unknown): Promise<Hex> => concat(await Promise.all(owners.map((o) => o.signTypedData(td as TypedData))));
    return { address, owners, sign, factoryData };
  }
  return { factory, newWallet };
}
