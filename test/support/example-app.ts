/**
 * The example server as tests run it: `startServer` on a real dev chain with
 * the real Alibaba engine (official SDK) talking to the local
 * signature-verifying emulator, a memory store and an ephemeral port.
 */
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { pino, type Logger } from "pino";
import type { DevChain } from "server402/devchain";
import { loadConfig } from "../../example-server/src/config.js";
import { startServer, type RunningServer } from "../../example-server/src/server.js";
import { services, faceService } from "../../example-server/src/service.js";
import type { ServiceSpec } from "../../example-server/src/discovery/catalog.js";
import { startAlibabaEmulator, type AlibabaEmulator } from "./alibaba-emulator.js";

const AK = "LTAI5tExampleAppTestKey";
const SK = "example-app-test-secret-do-not-leak";

/** Two real face images as base64, for ImageDataA / ImageDataB. */
export const IMAGE_A = readFileSync(new URL("../fixtures/faces/grace_hopper.jpg", import.meta.url)).toString("base64");
export const IMAGE_B = readFileSync(new URL("../fixtures/faces/camera.png", import.meta.url)).toString("base64");

/** A running example server. */
export interface ExampleApp {
  url: string;
  running: RunningServer;
  emulator: AlibabaEmulator;
  close(): Promise<void>;
}

/** Options of {@link startExampleApp}. */
export interface ExampleAppOptions {
  env?: Record<string, string>;
  logger?: Logger;
  services?: readonly ServiceSpec[];
}

/** Start the example server against `chain`. */
export async function startExampleApp(chain: DevChain, opts: ExampleAppOptions = {}): Promise<ExampleApp> {
  const emulator = await startAlibabaEmulator({ accessKeyId: AK, accessKeySecret: SK });
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    STORE: "memory",
    ALIBABA_CLOUD_ACCESS_KEY_ID: AK,
    ALIBABA_CLOUD_ACCESS_KEY_SECRET: SK,
    ALIBABA_ENDPOINT: emulator.endpoint,
    ALIBABA_PROTOCOL: "http",
    ...opts.env,
  });
  try {
    const running = await startServer(config, opts.logger ?? pino({ level: "silent" }), { devchain: chain, services: opts.services });
    const { port } = running.server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}`,
      running,
      emulator,
      close: async () => {
        running.server.closeAllConnections();
        await running.close();
        await emulator.close();
      },
    };
  } catch (err) {
    await emulator.close();
    throw err;
  }
}

/** service.ts's services with the face-comparison price replaced. */
export function servicesWithPrice(price: string): ServiceSpec[] {
  return services.map((s) => (s.id === faceService.id ? { ...s, price } : s));
}
