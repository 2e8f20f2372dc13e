/**
 * Preload (`node --import ./no-network.mjs`) for the client children of
 * test/x402-clients.test.ts: the process may reach loopback addresses only.
 * Any other TCP connect or host-name lookup fails with ECONNREFUSED/ENOTFOUND
 * and is reported on stderr as `refused: <where>`, so a client that needs its
 * own cloud service cannot pay. Test-only; never loaded by the library.
 */
import dns from "node:dns";
import net from "node:net";

const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "::1", "[::1]"]);
const isLoopback = (host) => typeof host === "string" && (LOOPBACK_NAMES.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host) || host === "::ffff:127.0.0.1");
const refuse = (where) => process.stderr.write(`refused: ${where}\n`);

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const opts = typeof args[0] === "object" && args[0] !== null ? (Array.isArray(args[0]) ? args[0][0] : args[0]) : { port: args[0], host: args[1] };
  if (opts && opts.path === undefined) {
    const host = opts.host ?? "localhost";
    if (!isLoopback(host)) {
      refuse(`connect ${host}:${opts.port}`);
      const err = Object.assign(new Error(`connect ECONNREFUSED ${host}:${opts.port} (network blocked in this test process)`), { code: "ECONNREFUSED" });
      process.nextTick(() => this.destroy(err));
      return this;
    }
  }
  return connect.apply(this, args);
};

const lookup = dns.lookup;
dns.lookup = function (host, ...rest) {
  if (isLoopback(host)) return lookup.call(this, host, ...rest);
  refuse(`lookup ${host}`);
  const cb = rest[rest.length - 1];
  const err = Object.assign(new Error(`getaddrinfo ENOTFOUND ${host} (network blocked in this test process)`), { code: "ENOTFOUND", hostname: host });
  if (typeof cb === "function") process.nextTick(() => cb(err));
};
const plookup = dns.promises.lookup;
dns.promises.lookup = async function (host, ...rest) {
  if (isLoopback(host)) return plookup.call(this, host, ...rest);
  refuse(`lookup ${host}`);
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host} (network blocked in this test process)`), { code: "ENOTFOUND", hostname: host });
};
