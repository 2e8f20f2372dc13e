/**
 * server402 — charge per call on any Express route or MCP tool with x402
 * (v1 and v2 on the same route) and prepaid payment tokens.
 */
export { Server402Error, ConfigError, PaymentError, SettlementError, StoreError, ChainError } from "./errors.js";
export { MissingDependencyError, type Server402ErrorCode } from "./errors.js";

// pure protocol
export { findNetwork, resolveNetwork, KNOWN_NETWORKS, type AssetInfo, type NetworkInfo } from "./protocol/networks.js";
export { parseMoney, resolvePrice, formatUnitsExact, usdCents, type PriceInput, type AtomicPrice, type ResolvedPrice } from "./protocol/price.js";
export { encodeHeader, decodeHeader } from "./protocol/encoding.js";
export { toRequirementsV1, toRequirementsV2, toPaymentRequiredV2, type Offer } from "./protocol/requirements.js";
export { authorizationDigest, verifyAuthorization, recoveryBackend, TRANSFER_WITH_AUTHORIZATION_TYPES } from "./protocol/verify.js";
export { verifyPayer, type VerifiedPayer } from "./protocol/verify.js";
export * from "./protocol/types.js";

// chain
export type { Settler, SettleRequest, SettleResult, ChainReader, ExactAuthorization } from "./chain/settler.js";
export { createChainReader } from "./chain/reader.js";
export { smartWalletVerifier, MAX_SIGNATURE_BYTES, type SmartWalletVerifier, type SignatureKind } from "./chain/smart-wallet.js";
export { relayerSettler } from "./chain/relayer.js";
export type { RelayerSettlerOptions, RelayerSettler, RelayerEvent } from "./chain/relayer.js";
export { RelayerFundsError } from "./errors.js";
export { facilitatorSettler, type FacilitatorOptions, type FacilitatorSettler } from "./chain/facilitator.js";

// state (SqliteStore: "server402/sqlite", RedisStore: "server402/redis", dev chain: "server402/devchain")
export { paymentStatus, type Store, type StoredPayment, type LedgerEntry, type ReserveResult, type ReservedPayment, type PaymentStatus } from "./state/store.js";
export { MemoryStore } from "./state/memory.js";
export { generatePaymentToken, hashToken, isWellFormedToken } from "./state/tokens.js";

// core + adapters
export { chainChecker, type PaymentChecker } from "./core/checker.js";
export type { AbuseLimits } from "./core/limits.js";
export { PaymentEngine, type PaymentInfo, type X402PaymentInfo, type TokenPaymentInfo, type PaymentEvent } from "./core/engine.js";
export type { RouteOptions, PaymentOptions, SettlementMode, ResolvedRoute } from "./core/options.js";
export { paywall, requirePayment, type PaywallOptions, type PaywallMiddleware } from "./adapters/express/paywall.js";
export { PAYWALL_PAGE_CSP, type PaywallPageOptions, type PaywallPageContext, type PaywallPageSetting } from "./adapters/express/paywall-page.js";
export { paymentsRouter, type PaymentsRouterOptions, type PaymentsApiOptions } from "./adapters/express/payments-router.js";
export { toPublicPayment, type PublicPayment } from "./core/payment-object.js";
