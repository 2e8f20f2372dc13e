/**
 * NOT PUBLIC API. `server402/internal` exposes internals that this
 * repository's example server, tests and benchmarks use. It follows no
 * versioning promise: anything here may change or disappear in any release.
 * Applications import from `server402` (and its documented entry points).
 */
export { PaymentEngine, type EngineOptions, type X402Attempt, type TokenAttempt } from "./core/engine.js";
export { toRequirementsV1, toRequirementsV2, toPaymentRequiredV2 } from "./protocol/requirements.js";
export { authorizationDigest, verifyAuthorization, verifyPayer, recoveryBackend, type VerifiedPayer } from "./protocol/verify.js";
export { parseMoney, resolvePrice, usdCents, type ResolvedPrice } from "./protocol/price.js";
export { resolveNetwork } from "./protocol/networks.js";
export { generatePaymentToken, hashToken, isWellFormedToken, newPaymentId } from "./state/tokens.js";
export { paymentStatus, RESERVED_PAYMENT_FIELDS } from "./state/store.js";
export { toPublicPayment } from "./core/payment-object.js";
export { smartWalletVerifier, MAX_SIGNATURE_BYTES, type SmartWalletVerifier, type SignatureKind } from "./chain/smart-wallet.js";
export { SERVER402_ERROR_CODES } from "./errors.js";
export { permit2Digest, permit2TypedData, verifyPermit2, type Permit2Payment, type Permit2Scheme } from "./protocol/permit2.js";
export { permit2Checker, type Permit2CheckerOptions } from "./chain/permit2.js";
export { endBeforeBody } from "./adapters/express/unread-body.js";
