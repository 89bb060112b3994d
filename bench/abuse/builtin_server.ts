/**
 * Reference server: Deno's built-in WebSocket (`Deno.serve` +
 * `Deno.upgradeWebSocket`), echoing as `bench/servers/builtin.ts` does,
 * with the abuse suite's control channel (`gc`, `stats`). Prints
 * `READY <port>`.
 *
 * @module
 */

import { serveControl } from "./_control.ts";

let open = 0;
Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen({ port }) {
    console.log(`READY ${port}`);
  },
  onError() {
    return new Response(null, { status: 500 });
  },
}, (req) => {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response("WebSocket only", { status: 426 });
  }
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => open++;
  socket.onclose = () => open--;
  socket.onmessage = (e) => socket.send(e.data);
  socket.onerror = () => {};
  return response;
});
await serveControl(() => ({ connections: open }));
