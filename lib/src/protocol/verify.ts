/**
 * Local verification of an EIP-3009 TransferWithAuthorization: EIP-712 digest
 * with a cached domain separator, public-key recovery with the native
 * libsecp256k1 binding (`secp256k1` npm package) and a pure-JS fallback when
 * the native module does not load. No network round trip for EOAs; a
 * signature the local check cannot confirm (a smart wallet's) goes to the
 * optional on-chain slow path (chain/smart-wallet.ts).
 */
import { createRequire } from "node:module";
import { concat, getAddress, hashDomain, keccak256, numberToHex, pad, recoverAddress, toBytes, toHex, type Address, type Hex } from "viem";
import { PaymentError } from "../errors.js";
import type { ExactAuthorization } from "./signature.js";
import { isErc6492, MAX_SIGNATURE_BYTES, type SignatureKind, type SmartWalletVerifier } from "./signature.js";
import type { AssetInfo } from "./networks.js";

/** Seconds of validity the authorization must still have, as facilitators require. */
export const VALID_BEFORE_MARGIN_SECONDS = 6n;

/** EIP-712 `types` of an EIP-3009 TransferWithAuthorization, as clients sign it (viem `signTypedData` shape). */
export const TRANSFER_WITH_AUTHORIZATION_TYPES = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
} as const;

const TYPE_HASH = keccak256(
  toBytes(`TransferWithAuthorization(${TRANSFER_WITH_AUTHORIZATION_TYPES.TransferWithAuthorization.map((f) => `${f.type} ${f.name}`).join(",")})`),
);
/** secp256k1 group order / 2: signatures with a larger `s` are rejected on-chain (OpenZeppelin ECDSA). */
const HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;

interface NativeSecp256k1 {
  ecdsaRecover(sig: Uint8Array, recid: number, msg32: Uint8Array, compressed: boolean): Uint8Array;
}

function loadNative(): NativeSecp256k1 | undefined {
  if (process.env.SERVER402_PURE_JS_SECP256K1 === "1") return undefined;
  try {
    // The package's index falls back to JS silently; load the binding itself so we know which one runs.
    return createRequire(import.meta.url)("secp256k1/bindings") as NativeSecp256k1;
  } catch {
    return undefined;
  }
}

const native = loadNative();

/** Which signature recovery backend is in use: `native` (libsecp256k1) or `js`. */
export const recoveryBackend: "native" | "js" = native ? "native" : "js";

const domainCache = new Map<string, Hex>();

/** EIP-712 domain separator of an asset on a chain (cached). */
export function domainSeparator(asset: AssetInfo, chainId: number): Hex {
  const key = `${chainId}:${asset.address}:${asset.eip712Name}:${asset.eip712Version}`;
  let sep = domainCache.get(key);
  if (!sep) {
    sep = hashDomain({
      domain: { name: asset.eip712Name, version: asset.eip712Version, chainId: BigInt(chainId), verifyingContract: asset.address },
      types: {
        EIP712Domain: [
          { name: "name", type: "string" },
          { name: "version", type: "string" },
          { name: "chainId", type: "uint256" },
          { name: "verifyingContract", type: "address" },
        ],
      },
    });
    domainCache.set(key, sep);
  }
  return sep;
}

/** The EIP-712 digest a payer signs for `auth`. */
export function authorizationDigest(auth: ExactAuthorization, asset: AssetInfo, chainId: number): Hex {
  const structHash = keccak256(
    concat([
      TYPE_HASH,
      pad(auth.from),
      pad(auth.to),
      numberToHex(auth.value, { size: 32 }),
      numberToHex(auth.validAfter, { size: 32 }),
      numberToHex(auth.validBefore, { size: 32 }),
      auth.nonce,
    ]),
  );
  return keccak256(concat(["0x1901", domainSeparator(asset, chainId), structHash]));
}

/**
 * Recover the signer of a 65-byte signature over `digest`. Returns undefined
 * for malformed or non-canonical (high-s) signatures.
 */
export async function recoverSigner(digest: Hex, signature: Hex): Promise<Address | undefined> {
  const sig = toBytes(signature);
  if (sig.length !== 65) return undefined;
  let v = sig[64]!;
  if (v >= 27) v -= 27;
  if (v !== 0 && v !== 1) return undefined;
  const s = BigInt(toHex(sig.subarray(32, 64)));
  if (s === 0n || s > HALF_N) return undefined;
  if (native) {
    try {
      const pub = native.ecdsaRecover(sig.subarray(0, 64), v, toBytes(digest), false);
      return getAddress(`0x${keccak256(pub.subarray(1)).slice(-40)}`);
    } catch {
      return undefined;
    }
  }
  try {
    return await recoverAddress({ hash: digest, signature });
  } catch {
    return undefined;
  }
}

/** What the authorization must satisfy. */
export interface AuthorizationExpectation {
  asset: AssetInfo;
  chainId: number;
  payTo: Address;
  amount: bigint;
  /** `exact`: value must equal amount (v2); `atLeast`: value ≥ amount (v1). */
  amountRule: "exact" | "atLeast";
  /** Current time in seconds. */
  now: bigint;
  /**
   * The slow path for signatures the local EOA check cannot confirm (ERC-1271
   * wallets, ERC-6492 wrappers). Without it such signatures are refused.
   */
  smartWallets?: SmartWalletVerifier;
}

/** A verified payer and how its signature was checked. */
export interface VerifiedPayer {
  payer: Address;
  kind: SignatureKind;
}

/**
 * Check an authorization and its signature locally. Throws PaymentError with
 * the x402 reason of the first failed check; returns the verified payer.
 * Smart-wallet signatures need `exp.smartWallets` (see {@link verifyPayer}).
 */
export async function verifyAuthorization(auth: ExactAuthorization, signature: Hex, exp: AuthorizationExpectation): Promise<Address> {
  return (await verifyPayer(auth, signature, exp)).payer;
}

/**
 * {@link verifyAuthorization}, also telling how the signature was checked: a
 * 65-byte signature that recovers to `authorization.from` is an EOA's,
 * checked locally; anything else goes to `exp.smartWallets` (one on-chain
 * call), and is refused without it.
 */
export async function verifyPayer(auth: ExactAuthorization, signature: Hex, exp: AuthorizationExpectation): Promise<VerifiedPayer> {
  if (auth.to !== exp.payTo) {
    throw new PaymentError("invalid_exact_evm_payload_recipient_mismatch", `authorization.to ${auth.to} is not the payTo address ${exp.payTo}.`);
  }
  if (exp.amountRule === "exact" ? auth.value !== exp.amount : auth.value < exp.amount) {
    const reason = exp.amountRule === "exact" ? "invalid_exact_evm_payload_authorization_value_mismatch" : "invalid_exact_evm_payload_authorization_value";
    throw new PaymentError(reason, `authorization.value ${auth.value} does not cover the price ${exp.amount}.`);
  }
  if (auth.validAfter > exp.now) {
    throw new PaymentError("invalid_exact_evm_payload_authorization_valid_after", `authorization is not valid before ${auth.validAfter} (now ${exp.now}).`);
  }
  if (auth.validBefore < exp.now + VALID_BEFORE_MARGIN_SECONDS) {
    throw new PaymentError("invalid_exact_evm_payload_authorization_valid_before", `authorization expires at ${auth.validBefore}; it must stay valid at least ${VALID_BEFORE_MARGIN_SECONDS} s after now (${exp.now}).`);
  }
  const length = (signature.length - 2) / 2;
  if (length > MAX_SIGNATURE_BYTES) {
    throw new PaymentError("invalid_exact_evm_payload_signature", `payload.signature is longer than ${MAX_SIGNATURE_BYTES} bytes.`);
  }
  const digest = authorizationDigest(auth, exp.asset, exp.chainId);
  // the fast path: an EOA's 65-byte signature, checked here without any network call
  if (length === 65 && (await recoverSigner(digest, signature)) === auth.from) return { payer: auth.from, kind: "eoa" };
  if (!exp.smartWallets) {
    throw new PaymentError(
      "invalid_exact_evm_payload_signature",
      length === 65 && !isErc6492(signature)
        ? `the signature does not come from authorization.from ${auth.from} for this asset, chain and message.`
        : "only 65-byte EOA signatures are verified locally; smart-wallet signatures need an RPC (the rpcUrl option).",
    );
  }
  // the slow path: the wallet at authorization.from (deployed, or deployed by its ERC-6492 factory inside an eth_call) decides
  return { payer: auth.from, kind: await exp.smartWallets.verify(auth.from, digest, signature) };
}
