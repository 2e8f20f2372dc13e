/**
 * Test support: a throwaway self-signed TLS certificate for "img.test" (P-256,
 * generated for these tests only, never trusted anywhere) and an HTTPS
 * listener that records the SNI server name each client sends.
 */
import https from "node:https";
import type net from "node:net";
import tls from "node:tls";

/** Private key of the test-only certificate. */
export const TEST_TLS_KEY = `
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0HSWazJK3NQJpP/I
PQZL4tTewgKl/CfoASYAXQEiZAihRANCAAS4fGVfADULRf7d/UACGKVRV4OxGZ8I
daX3X9DVZdvEuyA4O8iEw8C7+knwruNuA3cWW8LHiLIBOppWuuBHiAc4
-----END PRIVATE KEY-----
`;

/** Self-signed certificate, CN/SAN "img.test", valid until 2126. */
export const TEST_TLS_CERT = `
-----BEGIN CERTIFICATE-----
MIIBkjCCATigAwIBAgIUJL+1bY639vg9tlHvkXzN4EeV6YgwCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIaW1nLnRlc3QwIBcNMjYxMTI0MDQwODQ4WhgPMjEyNjEwMzEw
NDA4NDhaMBMxETAPBgNVBAMMCGltZy50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEuHxlXwA1C0X+3f1AAhilUVeDsRmfCHWl91/Q1WXbxLsgODvIhMPAu/pJ
8K7jbgN3FlvCx4iyATqaVrrgR4gHOKNoMGYwHQYDVR0OBBYEFPgbrNqXDimIPkH6
xldxGWEGcLAaMB8GA1UdIwQYMBaAFPgbrNqXDimIPkH6xldxGWEGcLAaMA8GA1Ud
EwEB/wQFMAMBAf8wEwYDVR0RBAwwCoIIaW1nLnRlc3QwCgYIKoZIzj0EAwIDSAAw
RQIhAL4a0lGAUEQuCFQaokGfYcO3CRgZjRXVPOqKcC6cNLFwAiAiilcc9btym4g+
ZrVyQZWURUydg/wIJAppo2qx7TIM9w==
-----END CERTIFICATE-----
`;

/** An HTTPS server that records TCP connections and the SNI names it was offered. */
export interface RecordingTlsServer {
  /** Bound port. */
  readonly port: number;
  /** TCP connections accepted. */
  readonly connections: number;
  /** SNI server names offered in ClientHellos (a hello without SNI adds nothing). */
  readonly serverNames: string[];
  /** Closes the server. */
  close(): Promise<void>;
}

/** Starts an HTTPS server with the test certificate on `host` (ephemeral port). */
export async function startTlsListener(host: string): Promise<RecordingTlsServer> {
  const serverNames: string[] = [];
  let connections = 0;
  const context = tls.createSecureContext({ key: TEST_TLS_KEY, cert: TEST_TLS_CERT });
  const server = https.createServer(
    {
      key: TEST_TLS_KEY,
      cert: TEST_TLS_CERT,
      // Runs on the ClientHello, before the client gets to reject the certificate.
      SNICallback: (servername, cb) => {
        serverNames.push(servername);
        cb(null, context);
      },
    },
    (_req, res) => {
      res.writeHead(200, { "Content-Type": "image/jpeg" });
      res.end(Buffer.from([0xff, 0xd8, 0xff, 0xd9]));
    },
  );
  server.on("connection", () => {
    connections += 1;
  });
  server.on("tlsClientError", () => {
    /* expected: the client refuses the self-signed certificate */
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    get connections() {
      return connections;
    },
    serverNames,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
