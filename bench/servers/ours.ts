/**
 * Echo server for the benchmark: this library (`listen`), written as the
 * README teaches: `for await (const msg of sock) await sock.write(...)`.
 *
 * `NOWAIT=1` is the second contestant: the same loop without `await`, to
 * keep the cost of awaiting visible. `STREAM=1` echoes each message in
 * pieces as they arrive: `readStream()` into `write(stream)`.
 * `FRAGMENT_SIZE=N` sets `fragmentSize` (default 64 KiB, as the seed).
 *
 * Path `/` echoes text as text and binary as binary; path `/fanout`
 * subscribes to a topic, and a message from any subscriber is published to
 * all of them with `server.publish` (`FANOUT=loop`: an awaited `write` to
 * each member in turn, as the seed does). Prints `READY <port>` when
 * listening.
 *
 * Run: PORT=0 deno run --allow-net --allow-env bench/servers/ours.ts
 */
import { listen, type Socket } from "../../mod.ts";

const members = new Set<Socket>();
const loop = Deno.env.get("FANOUT") === "loop";
const nowait = Deno.env.get("NOWAIT") === "1";
const streamed = Deno.env.get("STREAM") === "1";
const fragmentSize = Number(Deno.env.get("FRAGMENT_SIZE") ?? 64 * 1024);

const server = listen({
  addr: `127.0.0.1:${Deno.env.get("PORT") ?? "0"}`,
  backlog: 4096,
  fragmentSize,
  onError() {},
  async handler(sock) {
    if (sock.request.url.endsWith("/fanout")) {
      if (loop) members.add(sock);
      else sock.subscribe("fanout");
      try {
        for await (const m of sock) {
          if (m.type !== "text" && m.type !== "binary") continue;
          if (!loop) server.publish("fanout", m.data, m.type);
          else if (nowait) {
            for (const member of members) member.write(m.data, m.type);
          } else {
            for (const member of members) {
              await member.write(m.data, m.type).catch(() => {});
            }
          }
        }
      } finally {
        members.delete(sock);
      }
      return;
    }
    if (streamed) {
      for (;;) {
        const msg = await sock.readStream();
        if (msg === null) return;
        if (msg.type === "text" || msg.type === "binary") {
          await sock.write(msg.stream, msg.type);
        }
      }
    }
    if (nowait) {
      for await (const m of sock) {
        if (m.type === "text" || m.type === "binary") {
          sock.write(m.data, m.type);
        }
      }
      return;
    }
    for await (const msg of sock) {
      if (msg.type === "text" || msg.type === "binary") {
        await sock.write(msg.data, msg.type);
      }
    }
  },
});

console.log(`READY ${server.addr.port}`);
