/**
 * CORS for browser clients: they may send the x402 and prepaid payment
 * headers (both x402 client libraries also send `Access-Control-Expose-Headers`
 * as a request header, forcing a preflight) and the MCP headers, and may read
 * the payment response headers and the request id.
 */
import cors from "cors";
import type { RequestHandler } from "express";

/** Request headers browsers may send. */
export const ALLOWED_HEADERS = [
  "Content-Type",
  "Authorization",
  "X-PAYMENT",
  "PAYMENT-SIGNATURE",
  "X-Payment-Token",
  "Access-Control-Expose-Headers",
  "X-Request-Id",
  "Mcp-Session-Id",
  "Mcp-Protocol-Version",
  "Last-Event-ID",
];

/** Response headers browsers may read. */
export const EXPOSED_HEADERS = ["X-PAYMENT-RESPONSE", "PAYMENT-RESPONSE", "PAYMENT-REQUIRED", "X-Request-Id", "Mcp-Session-Id"];

/** CORS middleware for `origins`: "*" or a comma-separated list of exact origins. */
export function corsMiddleware(origins: string): RequestHandler {
  const list = origins.split(",").map((o) => o.trim().replace(/\/+$/, "")).filter(Boolean);
  return cors({
    origin: list.length === 0 || list.includes("*") ? "*" : list,
    methods: ["GET", "HEAD", "POST", "OPTIONS"],
    allowedHeaders: ALLOWED_HEADERS,
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
  });
}
