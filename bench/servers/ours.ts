/**
 * Echo server for the benchmark: this library (`listen`).
 *
 * Path `/` echoes text as text and binary as binary; path `/fanout`
 * subscribes to a topic, and a message from any subscriber is published to
 * all of them (`FANOUT=loop`: a loop of writes, as the seed does). Prints `READY <port>` when listening.
 *
 * Run: PORT=0 deno run --allow-net --allow-env bench/servers/ours.ts
 */
import { listen, type Socket } from "../../mod.ts";

const members = new Set<Socket>();
const loop = Deno.env.get("FANOUT") === "loop";

const server = listen({
  addr: `127.0.0.1:${Deno.env.get("PORT") ?? "0"}`,
  backlog: 4096,
  onError() {},
  async handler(sock) {
    if (sock.request.url.endsWith("/fanout")) {
      // Topics (issue 5): the frame is encoded once and the same bytes are
      // queued on every subscriber. FANOUT=loop uses the seed's loop of
      // write() calls instead.
      if (loop) members.add(sock);
      else sock.subscribe("fanout");
      try {
        for await (const m of sock) {
          if (m.type !== "text" && m.type !== "binary") continue;
          if (loop) {
            for (const member of members) member.write(m.data, m.type);
          } else server.publish("fanout", m.data, m.type);
        }
      } finally {
        members.delete(sock);
      }
      return;
    }
    for await (const m of sock) {
      if (m.type === "text" || m.type === "binary") sock.write(m.data, m.type);
    }
  },
});

console.log(`READY ${server.addr.port}`);
