/**
 * The slow path for smart-wallet signatures: ERC-1271 (a deployed contract
 * wallet checks the signature itself) and ERC-6492 (a wallet not deployed
 * yet; the signature carries the factory call that deploys it). EOA
 * signatures never come here: they are checked locally in protocol/verify.ts.
 *
 * Verification is one `eth_call` of our SignatureProbe's creation code
 * (lib/contracts/SignatureProbe.sol, run "deployless"): it runs the factory
 * call for a counterfactual wallet inside the call only, requires code at
 * `authorization.from` itself, then asks that address's `isValidSignature`.
 */
import {
  BaseError,
  createPublicClient,
  decodeAbiParameters,
  encodeAbiParameters,
  encodeFunctionData,
  getAddress,
  hexToBigInt,
  http,
  isAddressEqual,
  size,
  slice,
  zeroAddress,
  type Address,
  type Hex,
} from "viem";
import { ChainError, PaymentError } from "../errors.js";
import { EIP3009_ABI } from "./abi.js";
import { rpcOrigin } from "./reader.js";
import { isErc6492, MAX_SIGNATURE_BYTES, type ExactAuthorization, type SignatureKind, type SmartWalletVerifier } from "../protocol/signature.js";
import probe from "./SignatureProbe.artifact.json" with { type: "json" };

export { ERC6492_MAGIC, isErc6492, MAX_SIGNATURE_BYTES, type SignatureKind, type SmartWalletVerifier } from "../protocol/signature.js";

/** Gas allowed to the verification `eth_call` (factory deployment + `isValidSignature`). */
const PROBE_GAS = 3_000_000n;

/** The parts of an ERC-6492 wrapped signature. */
export interface Erc6492Signature {
  factory: Address;
  factoryData: Hex;
  /** The wallet's own (ERC-1271) signature. */
  signature: Hex;
}

/**
 * Split an ERC-6492 signature: `abi.encode(factory, factoryData, signature) ‖ magic`.
 * Undefined when it is not wrapped; throws PaymentError when it is wrapped but malformed.
 */
export function parseErc6492(signature: Hex): Erc6492Signature | undefined {
  if (!isErc6492(signature)) return undefined;
  try {
    const [factory, factoryData, inner] = decodeAbiParameters(
      [{ type: "address" }, { type: "bytes" }, { type: "bytes" }],
      slice(signature, 0, size(signature) - 32),
    );
    return { factory: getAddress(factory), factoryData, signature: inner };
  } catch {
    throw new PaymentError("invalid_exact_evm_payload_signature", "payload.signature ends with the ERC-6492 suffix but is not abi.encode(address factory, bytes factoryData, bytes signature).");
  }
}

/** True when the settle call must use the token's `bytes signature` form (a smart wallet's signature). */
export function needsBytesForm(req: { signature: Hex; signatureKind?: SignatureKind }): boolean {
  return req.signatureKind !== undefined ? req.signatureKind !== "eoa" : size(req.signature) !== 65;
}

export interface SmartWalletVerifierOptions {
  rpcUrl: string;
  /** Per-request timeout in ms (one attempt). Default 5000. */
  timeoutMs?: number;
}

/** A {@link SmartWalletVerifier} asking the chain at `rpcUrl` (one `eth_call` per signature). */
export function smartWalletVerifier(opts: SmartWalletVerifierOptions): SmartWalletVerifier {
  const client = createPublicClient({ transport: http(opts.rpcUrl, { timeout: opts.timeoutMs ?? 5000, retryCount: 0 }) });
  const where = rpcOrigin(opts.rpcUrl);
  return {
    async verify(from, digest, signature) {
      if (size(signature) > MAX_SIGNATURE_BYTES) {
        throw new PaymentError("invalid_exact_evm_payload_signature", `payload.signature is longer than ${MAX_SIGNATURE_BYTES} bytes.`);
      }
      const wrapped = parseErc6492(signature);
      const args = encodeAbiParameters(
        [{ type: "address" }, { type: "bytes32" }, { type: "address" }, { type: "bytes" }, { type: "bytes" }],
        [from, digest, wrapped?.factory ?? zeroAddress, wrapped?.factoryData ?? "0x", wrapped?.signature ?? signature],
      );
      let status: bigint;
      try {
        const out = (await client.request({ method: "eth_call", params: [{ data: `${probe.bytecode}${args.slice(2)}` as Hex, gas: `0x${PROBE_GAS.toString(16)}` }, "latest"] })) as Hex;
        status = hexToBigInt(out);
      } catch (err) {
        throw new ChainError(`smart-wallet signature check via ${where} failed: ${err instanceof BaseError ? err.shortMessage : String(err)}`, { cause: err });
      }
      if (status === 0n) return wrapped && !isAddressEqual(wrapped.factory, zeroAddress) ? "erc6492" : "erc1271";
      throw new PaymentError(...REFUSALS[Number(status)] ?? ["invalid_exact_evm_payload_signature", "the signature check returned an unknown status."]);
    },
  };
}

/**
 * Smart-wallet signatures on a server without an RPC whose facilitator checks every payment before the
 * handler (its /verify, the default pre-handler check): not refused here but passed on, for the facilitator
 * to verify as the exact EVM scheme says (ERC-1271 `isValidSignature`; ERC-6492 verified deployless, the
 * wallet deployed at settlement). Only what needs no chain is checked locally: the size and the wrapper's shape.
 */
export const facilitatorVerifiedWallets: SmartWalletVerifier = {
  async verify(_from, _digest, signature) {
    if (size(signature) > MAX_SIGNATURE_BYTES) {
      throw new PaymentError("invalid_exact_evm_payload_signature", `payload.signature is longer than ${MAX_SIGNATURE_BYTES} bytes.`);
    }
    const wrapped = parseErc6492(signature);
    return wrapped && !isAddressEqual(wrapped.factory, zeroAddress) ? "erc6492" : "erc1271";
  },
};

/** Why the probe refused, by its status word. */
const REFUSALS: Record<number, [string, string]> = {
  1: ["invalid_exact_evm_payload_signature", "the smart wallet at authorization.from does not accept this signature (ERC-1271 isValidSignature)."],
  2: ["smart_wallet_deployment_failed", "the ERC-6492 factory call that deploys authorization.from reverts."],
  3: ["smart_wallet_deployment_failed", "the ERC-6492 factory call does not deploy a wallet at authorization.from."],
  4: ["invalid_exact_evm_payload_signature", "the signature does not come from authorization.from, which is not a contract wallet either (no code, no ERC-6492 factory)."],
};

/** Calldata of the token's `transferWithAuthorization(…, bytes signature)` (USDC 2.2), the form smart wallets settle with. */
export function bytesSettleCall(a: ExactAuthorization, signature: Hex): Hex {
  return encodeFunctionData({
    abi: EIP3009_ABI,
    functionName: "transferWithAuthorization",
    args: [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, signature],
  });
}

/** Most gas a relayer spends on an ERC-6492 factory call (a wallet deployment is a few hundred thousand). */
export const MAX_DEPLOY_GAS = 3_000_000n;
