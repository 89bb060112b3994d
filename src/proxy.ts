/**
 * HTTP proxies for `connect`: which proxy a URL goes through (the `proxy`
 * option, or the environment as Deno's `fetch` reads it), and the `CONNECT`
 * request and response that open a tunnel through it (RFC 9110 9.3.6).
 *
 * Pure except {@linkcode readEnv}, which reads the environment only when
 * the permission is already granted.
 *
 * @module
 */

import { WebSocketError } from "./errors.ts";
import { base64 } from "./handshake.ts";
import type { ResponseHead } from "./http.ts";

const encoder = new TextEncoder();

/** A proxy to tunnel through. */
export interface ProxyTarget {
  /** `true` for an `https:` proxy: TLS to the proxy itself. */
  secure: boolean;
  /** Host name or IP address, IPv6 without brackets. */
  hostname: string;
  port: number;
  /** `Proxy-Authorization` value from the URL's credentials, or `null`. */
  authorization: string | null;
  /**
   * The proxy URL without credentials, and where it came from, for
   * messages: `http://proxy:3128 (HTTPS_PROXY)`.
   */
  label: string;
}

/** Reads one environment variable, `undefined` when unset or unreadable. */
export type EnvReader = (name: string) => string | undefined;

/**
 * Reads an environment variable without asking for permission: without
 * `--allow-env` (for this variable) it counts as unset, with no prompt and
 * no `NotCapable` error.
 */
export function readEnv(name: string): string | undefined {
  try {
    const status = Deno.permissions.querySync({ name: "env", variable: name });
    return status.state === "granted" ? Deno.env.get(name) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The proxy for `target`, or `null` to connect directly.
 *
 * `option` is the `proxy` option: a URL wins over the environment, `false`
 * ignores the environment. Without it, as Deno's `fetch` does: `ALL_PROXY`
 * (or `all_proxy`) for any URL, else `HTTPS_PROXY` (or `https_proxy`) for
 * `wss:` and `HTTP_PROXY` (or `http_proxy`, ignored under CGI, where a
 * request's `Proxy:` header becomes `HTTP_PROXY`) for `ws:`; a value that is
 * not a URL is skipped; `NO_PROXY` (or `no_proxy`) names the hosts that
 * bypass them (see {@linkcode noProxyMatches}).
 *
 * @throws {TypeError} an invalid `proxy` option
 * @throws {WebSocketError} `PROXY_ERROR`: the environment names a SOCKS
 * proxy, which is not supported (connecting directly instead would bypass
 * it unannounced)
 */
export function proxyFor(
  target: URL,
  option: string | URL | false | undefined,
  env: EnvReader = readEnv,
): ProxyTarget | null {
  if (option === false) return null;
  if (option !== undefined) {
    if (typeof option !== "string" && !(option instanceof URL)) {
      throw new TypeError(
        "Invalid option proxy: expected a URL string, a URL or false",
      );
    }
    const proxy = parseProxy(String(option), "the proxy option");
    if (typeof proxy === "string") {
      throw new TypeError(`Invalid option proxy: ${proxy}`);
    }
    return proxy;
  }
  const names = [["ALL_PROXY", "all_proxy"]];
  if (target.protocol === "wss:") names.push(["HTTPS_PROXY", "https_proxy"]);
  else if (env("REQUEST_METHOD") === undefined) {
    names.push(["HTTP_PROXY", "http_proxy"]);
  }
  let proxy: ProxyTarget | null = null;
  for (const [upper, lower] of names) {
    proxy = fromEnv(upper, env) ?? fromEnv(lower, env);
    if (proxy !== null) break;
  }
  if (proxy === null) return null;
  const noProxy = env("NO_PROXY") ?? env("no_proxy") ?? "";
  const port = target.port === ""
    ? (target.protocol === "wss:" ? 443 : 80)
    : Number(target.port);
  return noProxyMatches(noProxy, target.hostname, port) ? null : proxy;
}

function fromEnv(name: string, env: EnvReader): ProxyTarget | null {
  const value = env(name)?.trim();
  if (value === undefined || value === "") return null;
  const proxy = parseProxy(value, name);
  if (typeof proxy !== "string") return proxy;
  if (/^socks/i.test(value)) {
    throw new WebSocketError(
      "PROXY_ERROR",
      `Proxy not supported: ${name} is a SOCKS proxy, only http: and https: proxies are`,
    );
  }
  return null;
}

/**
 * Parses a proxy URL: `http:` or `https:` (a bare `host:port` means
 * `http:`), with percent-encoded credentials for `Proxy-Authorization:
 * Basic`. The path is ignored.
 *
 * @returns the proxy, or what is wrong with `value`
 */
export function parseProxy(
  value: string,
  source: string,
): ProxyTarget | string {
  let url: URL;
  try {
    url = new URL(
      /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`,
    );
  } catch {
    return "expected a proxy URL such as http://proxy:3128";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `expected an http: or https: proxy URL, received ${url.protocol}`;
  }
  if (url.hostname === "") return "the proxy URL has no host";
  const secure = url.protocol === "https:";
  let authorization: string | null = null;
  if (url.username !== "" || url.password !== "") {
    const credentials = `${decode(url.username)}:${decode(url.password)}`;
    authorization = `Basic ${base64(encoder.encode(credentials))}`;
  }
  return {
    secure,
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port === "" ? (secure ? 443 : 80) : Number(url.port),
    authorization,
    label: `${url.protocol}//${url.host} (${source})`,
  };
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

// -- NO_PROXY --

/**
 * Whether a `NO_PROXY` list names `hostname` (as a URL spells it, IPv6 in
 * brackets) on `port`. Entries are comma-separated, case-insensitive:
 *
 * - `*` matches every host;
 * - `example.com`, `.example.com` and `*.example.com` match the domain and
 *   every subdomain (`a.example.com`), never `notexample.com`;
 * - an IP address (`127.0.0.1`, `::1`, `[::1]`) matches that address, and a
 *   CIDR block (`10.0.0.0/8`, `fd00::/8`) every address in it; domain
 *   entries never match an IP address;
 * - any of these with `:port` (`example.com:8080`, `[::1]:8080`) matches
 *   that port only.
 */
export function noProxyMatches(
  list: string,
  hostname: string,
  port: number,
): boolean {
  const host = canonicalHost(hostname.toLowerCase().replace(/\.$/, ""));
  const hostIp = ipBytes(host);
  for (let entry of list.split(",")) {
    entry = entry.trim().toLowerCase();
    if (entry === "") continue;
    if (entry === "*") return true;
    let entryPort: number | null = null;
    const withPort = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(entry);
    if (withPort !== null) {
      entry = withPort[1];
      entryPort = Number(withPort[2]);
    }
    if (entryPort !== null && entryPort !== port) continue;
    const slash = entry.indexOf("/");
    if (slash !== -1) {
      const network = ipBytes(canonicalHost(entry.slice(0, slash)));
      const bits = Number(entry.slice(slash + 1));
      if (
        hostIp !== null && network !== null &&
        network.length === hostIp.length && Number.isInteger(bits) &&
        inNetwork(hostIp, network, bits)
      ) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, "").replace(/\.$/, "");
    if (domain === "") continue;
    const canonical = canonicalHost(domain);
    if (hostIp !== null || ipBytes(canonical) !== null) {
      if (canonical === host) return true;
    } else if (host === canonical || host.endsWith(`.${canonical}`)) {
      return true;
    }
  }
  return false;
}

/**
 * A host as a URL would spell it: IPv6 in brackets and compressed, IPv4 in
 * dotted decimal, international names in punycode. Left as it is when it is
 * not a valid host.
 */
function canonicalHost(host: string): string {
  const bracketed = !host.startsWith("[") && host.includes(":")
    ? `[${host}]`
    : host;
  try {
    return new URL(`http://${bracketed}/`).hostname;
  } catch {
    return host;
  }
}

/** The bytes of a canonical IP host (4 or 16), or `null` for a name. */
function ipBytes(host: string): Uint8Array | null {
  if (host.startsWith("[")) {
    const groups = host.slice(1, -1).split("::");
    const head = groups[0] === "" ? [] : groups[0].split(":");
    const tail = groups.length < 2 || groups[1] === ""
      ? []
      : groups[1].split(":");
    const words = [
      ...head,
      ...Array(8 - head.length - tail.length).fill("0"),
      ...tail,
    ];
    const bytes = new Uint8Array(16);
    words.forEach((word, i) => {
      const value = parseInt(word, 16);
      bytes[2 * i] = value >> 8;
      bytes[2 * i + 1] = value & 0xff;
    });
    return bytes;
  }
  const octets = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host);
  if (octets === null) return null;
  return new Uint8Array(octets.slice(1).map(Number));
}

function inNetwork(ip: Uint8Array, network: Uint8Array, bits: number): boolean {
  if (bits < 0 || bits > ip.length * 8) return false;
  for (let i = 0; i < ip.length; i++) {
    const take = Math.max(0, Math.min(8, bits - 8 * i));
    const mask = (0xff00 >> take) & 0xff;
    if ((ip[i] & mask) !== (network[i] & mask)) return false;
  }
  return true;
}

// -- The tunnel --

/**
 * The `CONNECT` request (RFC 9110 9.3.6) for `hostname` (as a URL spells
 * it, IPv6 in brackets) and `port`.
 */
export function connectRequest(
  hostname: string,
  port: number,
  proxy: ProxyTarget,
): Uint8Array {
  const authority = `${hostname}:${port}`;
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (proxy.authorization !== null) {
    head += `Proxy-Authorization: ${proxy.authorization}\r\n`;
  }
  return encoder.encode(head + "\r\n");
}

/**
 * Checks the proxy's answer to `CONNECT`: any 2xx opens the tunnel (RFC
 * 9110 9.3.6); anything else is a `PROXY_ERROR` carrying the status line.
 *
 * @returns `null` for a tunnel, else the error to reject with
 */
export function checkConnectResponse(
  response: ResponseHead,
  authority: string,
  proxy: ProxyTarget,
): WebSocketError | null {
  if (response.status >= 200 && response.status < 300) return null;
  const statusLine =
    `${response.version} ${response.status} ${response.statusText}`.trimEnd();
  let hint = "";
  if (response.status === 407) {
    hint = proxy.authorization === null
      ? " (the proxy URL has no credentials: http://user:pass@host:port)"
      : " (the proxy rejected the credentials in its URL)";
  }
  return new WebSocketError(
    "PROXY_ERROR",
    `Proxy refused CONNECT ${authority} via ${proxy.label}: ${statusLine}${hint}`,
  );
}
