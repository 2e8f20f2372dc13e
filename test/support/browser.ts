/**
 * A real browser for tests: Debian's chromium (`/usr/bin/chromium`, installed
 * by .ci/run when missing) driven by playwright-core, with a fresh profile
 * directory; and a test EIP-1193 wallet injected into its pages that signs
 * with a dev-chain key in this process (viem), so payments are real.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { REPO_ROOT } from "./server-process.js";

export const CHROMIUM = "/usr/bin/chromium";
/** Where screenshots go (kept after the run, ignored by git). */
export const ARTIFACTS = join(REPO_ROOT, "test-artifacts", "browser");

export interface TestBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Launch chromium headless with the flags CI needs and a fresh --user-data-dir. */
export async function launchBrowser(): Promise<TestBrowser> {
  const profile = mkdtempSync(join(tmpdir(), "server402-chromium-"));
  mkdirSync(ARTIFACTS, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1100, height: 900 },
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** What the injected wallet was asked. */
export interface WalletLog {
  methods: string[];
  switchedTo?: number;
  address: Hex;
}

const UINT_FIELDS = new Set(["value", "validAfter", "validBefore"]);

/**
 * Give `page` a `window.ethereum` (EIP-1193) backed by `privateKey`: it
 * answers accounts and chain id, switches chains when asked (it starts on
 * chain `startChainId`), and signs EIP-712 typed data for real.
 */
export async function injectWallet(page: Page, privateKey: Hex, startChainId = 1): Promise<WalletLog> {
  const account = privateKeyToAccount(privateKey);
  const log: WalletLog = { methods: [], address: account.address };
  let chainId = startChainId;
  await page.exposeFunction("__server402TestWallet", async (method: string, paramsJson: string): Promise<string> => {
    log.methods.push(method);
    const params = JSON.parse(paramsJson) as unknown[];
    switch (method) {
      case "eth_requestAccounts":
      case "eth_accounts":
        return JSON.stringify([account.address]);
      case "eth_chainId":
        return JSON.stringify(`0x${chainId.toString(16)}`);
      case "wallet_switchEthereumChain":
        chainId = Number.parseInt((params[0] as { chainId: string }).chainId, 16);
        log.switchedTo = chainId;
        return "null";
      case "eth_signTypedData_v4": {
        const [from, json] = params as [string, string];
        if (from.toLowerCase() !== account.address.toLowerCase()) throw new Error(`asked to sign for ${from}`);
        const td = JSON.parse(json) as { domain: Record<string, unknown>; types: Record<string, { name: string; type: string }[]>; primaryType: string; message: Record<string, unknown> };
        delete td.types.EIP712Domain;
        const message = Object.fromEntries(Object.entries(td.message).map(([k, v]) => [k, UINT_FIELDS.has(k) ? BigInt(v as string) : v]));
        const signature = await account.signTypedData({ domain: { ...td.domain, chainId: Number(td.domain.chainId) }, types: td.types, primaryType: td.primaryType, message } as never);
        return JSON.stringify(signature);
      }
      default:
        throw new Error(`test wallet: unsupported method ${method}`);
    }
  });
  // A string, not a function: tsx's transform would add helpers the page does not have.
  await page.addInitScript(`
    window.ethereum = {
      isTestWallet: true,
      request: async ({ method, params }) => JSON.parse(await window.__server402TestWallet(method, JSON.stringify(params ?? []))),
      on() {},
      removeListener() {},
    };`);
  return log;
}
