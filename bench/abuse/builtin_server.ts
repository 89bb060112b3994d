/**
 * Reference server: Deno's built-in WebSocket, the benchmark's own echo
 * server (`bench/servers/builtin.ts`: `Deno.serve` +
 * `Deno.upgradeWebSocket`), with the abuse suite's control channel (`gc`,
 * `stats`). Prints `READY <port>`.
 *
 * @module
 */

import "../servers/builtin.ts";
import { serveControl } from "./_control.ts";

await serveControl();
