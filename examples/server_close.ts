/**
 * Starts a server, then closes it CLOSE_AFTER ms later (default 1000).
 * `server.close()` stops accepting, sends 1001 Going Away to open sockets and
 * resolves once they are gone.
 *
 * Ports the seed's `server:close()` example.
 *
 * Run: deno run --allow-net --allow-env examples/server_close.ts
 */
import { listen } from "../mod.ts";

const port = Number(Deno.env.get("PORT") ?? "8080");
const closeAfter = Number(Deno.env.get("CLOSE_AFTER") ?? "1000");

const server = listen({
  addr: `127.0.0.1:${port}`,
  handler: (sock) => sock.close(),
});
console.log(`Server listening on ws://127.0.0.1:${server.addr.port}`);

// Later, close the server.
await new Promise((resolve) => setTimeout(resolve, closeAfter));
await server.close();
console.log("Server closed");
