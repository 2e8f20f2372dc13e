/**
 * Multicall3's `tryAggregate` at its canonical address on a dev chain. Real chains have Multicall3 there; the
 * dev chain does not, and the official @x402/evm facilitator simulates an ERC-6492 payment (factory call, then
 * the transfer) through it. This is the one function it calls, written here and compiled with solc-js.
 */
import solc from "solc";
import type { Hex } from "viem";
import type { DevChain } from "server402/devchain";
import { chainRpc } from "./chain-rpc.js";

export const MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11";

const SOURCE = `// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
contract TryAggregate {
    struct Call { address target; bytes callData; }
    struct Result { bool success; bytes returnData; }
    function tryAggregate(bool requireSuccess, Call[] calldata calls) external payable returns (Result[] memory results) {
        results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = calls[i].target.call(calls[i].callData);
            require(ok || !requireSuccess, "Multicall3: call failed");
            results[i] = Result(ok, ret);
        }
    }
}`;

/** Plant `tryAggregate` at the Multicall3 address of `chain`. */
export async function plantMulticall3(chain: DevChain): Promise<void> {
  const input = { language: "Solidity", sources: { "TryAggregate.sol": { content: SOURCE } }, settings: { outputSelection: { "*": { "*": ["evm.deployedBytecode.object"] } } } };
  const out = JSON.parse(solc.compile(JSON.stringify(input))) as { errors?: { severity: string; formattedMessage: string }[]; contracts: Record<string, Record<string, { evm: { deployedBytecode: { object: string } } }>> };
  const errors = (out.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(errors.map((e) => e.formattedMessage).join("\n"));
  const runtime = `0x${out.contracts["TryAggregate.sol"]!.TryAggregate!.evm.deployedBytecode.object}` as Hex;
  await chainRpc(() => chain.rpcUrl)("anvil_setCode", [MULTICALL3_ADDRESS, runtime]);
}
