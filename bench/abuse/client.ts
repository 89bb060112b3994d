/**
 * The attacked client: `connect()` from the library to the URL given as
 * the first argument, reading messages in a loop (pings are delivered as
 * messages, so the read queue never fills first) and echoing text and
 * binary ones. Prints `OPEN {extensions}` once connected and `CLOSED
 * {code, reason}` when the connection ends.
 *
 * Flags: `--compression` (offer permessage-deflate). Commands on stdin: see
 * `_control.ts`.
 *
 * @module
 */

import { connect } from "../../mod.ts";
import { parseFlags } from "../_common.ts";
import { print, serveControl } from "./_control.ts";

const [url, ...rest] = Deno.args;
const flags = parseFlags(rest);
let messages = 0;
const control = serveControl(() => ({ messages }));
try {
  const sock = await connect(url, {
    compression: flags.compression === "true",
  });
  print("OPEN", { extensions: sock.extensions });
  for await (const msg of sock) {
    messages++;
    if (msg.type === "text" || msg.type === "binary") {
      await sock.write(msg.data, msg.type);
    } else if (msg.type === "close") {
      print("CLOSED", { code: msg.code, reason: msg.reason });
    }
  }
} catch (error) {
  print("FAILED", { error: String(error) });
}
await control;
