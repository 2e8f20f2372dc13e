/**
 * Test instrumentation loaded into the example server process with
 * `node --import` (see 5-ssrf.test.ts). It does not change the server's code:
 *
 *  - NET_PROBE_HOSTS (JSON `{ "name": ["addr", ...] }`): extra host names
 *    the system resolver answers, like /etc/hosts entries, so DNS names
 *    resolving to private / link-local / metadata addresses can be tested
 *    without a DNS server. Other names go to the real resolver.
 *  - NET_PROBE_LOG (file path): every outbound TCP connect attempt of the
 *    process (`net.Socket#connect`, which HTTP, HTTPS and fetch all use) is
 *    appended as a JSON line `{ host, port }` before the connect happens.
 */
import dns from "node:dns";
import { appendFileSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";

const hosts = new Map<string, string[]>(Object.entries(JSON.parse(process.env.NET_PROBE_HOSTS ?? "{}") as Record<string, string[]>).map(([k, v]) => [k.toLowerCase(), v]));
const logPath = process.env.NET_PROBE_LOG;

if (hosts.size) {
  const family = (a: string) => (net.isIPv6(a) ? 6 : 4);
  const realPromise = dns.promises.lookup.bind(dns.promises);
  const fakePromise = (async (hostname: string, options?: number | dns.LookupOptions) => {
    const addrs = hosts.get(hostname.toLowerCase().replace(/\.$/, ""));
    if (!addrs) return realPromise(hostname, options as dns.LookupOptions);
    const all = typeof options === "object" && options?.all;
    return all ? addrs.map((address) => ({ address, family: family(address) })) : { address: addrs[0], family: family(addrs[0]!) };
  }) as typeof dns.promises.lookup;
  dns.promises.lookup = fakePromise;
  const realCallback = dns.lookup;
  dns.lookup = ((hostname: string, options: unknown, callback?: unknown) => {
    const cb = (typeof options === "function" ? options : callback) as (...args: unknown[]) => void;
    const opts = typeof options === "object" && options ? (options as dns.LookupOptions) : {};
    const addrs = hosts.get(String(hostname).toLowerCase().replace(/\.$/, ""));
    if (!addrs) return (realCallback as (...args: unknown[]) => void)(hostname, options, callback);
    process.nextTick(() => (opts.all ? cb(null, addrs.map((address) => ({ address, family: family(address) }))) : cb(null, addrs[0], family(addrs[0]!))));
  }) as typeof dns.lookup;
  syncBuiltinESMExports();
}

if (logPath) {
  const proto = net.Socket.prototype as unknown as { connect: (...args: unknown[]) => unknown };
  const original = proto.connect;
  proto.connect = function probedConnect(this: net.Socket, ...args: unknown[]) {
    let first = args[0];
    if (Array.isArray(first)) first = first[0];
    let host: string | undefined;
    let port: number | undefined;
    if (typeof first === "object" && first !== null) {
      const o = first as { host?: string; port?: number | string; path?: string };
      host = o.path ?? o.host;
      port = o.port === undefined ? undefined : Number(o.port);
    } else {
      port = Number(first);
      host = typeof args[1] === "string" ? args[1] : undefined;
    }
    appendFileSync(logPath, `${JSON.stringify({ host, port, at: Date.now() })}\n`);
    return original.apply(this, args);
  };
}
