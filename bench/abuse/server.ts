/**
 * The attacked server: `listen()` from the library with default options,
 * and the echo handler a new user would write. Prints `READY <port>`.
 *
 * Flags: `--tls` (wss:// with the test certificate), `--handshake-timeout
 * MS`, `--compression` (permessage-deflate). Commands on stdin: see
 * `_control.ts`.
 *
 * @module
 */

import { listen, type ListenOptions } from "../../mod.ts";
import { num, parseFlags } from "../_common.ts";
import { serveControl } from "./_control.ts";

const flags = parseFlags(Deno.args);
const fixtures = new URL("../../tests/fixtures/", import.meta.url);
const errors: string[] = [];

const options: ListenOptions = {
  addr: "127.0.0.1:0",
  async handler(sock) {
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.data, msg.type);
      }
    }
  },
  onError(error) {
    if (errors.length < 5) errors.push(String(error));
  },
};
if (flags.tls === "true") {
  Object.assign(options, {
    tls: true,
    certs: [{
      cert: Deno.readTextFileSync(new URL("localhost.crt", fixtures)),
      key: Deno.readTextFileSync(new URL("localhost.key", fixtures)),
    }],
  });
}
if (flags["handshake-timeout"] !== undefined) {
  options.handshakeTimeout = num(flags, "handshake-timeout", 10_000);
}
if (flags.compression === "true") options.compression = true;

const server = listen(options);
console.log(`READY ${server.addr.port}`);
await serveControl(() => ({ connections: server.connections, errors }));
