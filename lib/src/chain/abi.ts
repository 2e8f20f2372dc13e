/**
 * ABI fragments of an EIP-3009 token (USDC FiatToken v2.2 surface) used to
 * read state and settle payments.
 */
import { parseAbi } from "viem";

/** ERC-20 + EIP-3009 functions, events and the dev-token `mint`. */
export const EIP3009_ABI = parseAbi([
  "function name() view returns (string)",
  "function version() view returns (string)",
  "function decimals() view returns (uint8)",
  "function balanceOf(address owner) view returns (uint256)",
  "function authorizationState(address authorizer, bytes32 nonce) view returns (bool)",
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)",
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)",
  "function mint(address to, uint256 value)",
  "event Transfer(address indexed from, address indexed to, uint256 value)",
]);
