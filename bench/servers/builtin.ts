/**
 * Echo server for the benchmark: Deno's built-in WebSocket
 * (`Deno.serve` + `Deno.upgradeWebSocket`).
 *
 * Path `/` echoes text as text and binary as binary; path `/fanout` joins
 * the broadcast set, and a message from any member is sent to every member
 * (a loop of sends). Prints `READY <port>` when listening.
 *
 * Run: PORT=0 deno run --allow-net --allow-env bench/servers/builtin.ts
 */

const members = new Set<WebSocket>();

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? "0"),
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
  if (new URL(req.url).pathname === "/fanout") {
    socket.onopen = () => members.add(socket);
    socket.onclose = () => members.delete(socket);
    socket.onmessage = (e) => {
      for (const member of members) member.send(e.data);
    };
  } else {
    socket.onmessage = (e) => socket.send(e.data);
  }
  socket.onerror = () => {};
  return response;
});
