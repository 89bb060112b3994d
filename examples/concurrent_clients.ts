/**
 * Opens 10 connections at once; each sends a greeting and prints the reply.
 *
 * Ports the seed's "性能建议 4. 并发连接": `Promise.all` replaces the wait
 * group.
 *
 * Run: deno run --allow-net --allow-env examples/concurrent_clients.ts [ws://127.0.0.1:8080]
 * (against examples/echo_server.ts).
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";
const CLIENTS = 10;

async function runClient(id: number): Promise<void> {
  let sock;
  try {
    sock = await connect(url);
  } catch (err) {
    console.log(`Client ${id} failed:`, (err as Error).message);
    return;
  }
  await sock.write(`Hello from client ${id}`, "text");
  const msg = await sock.read();
  console.log(`Client ${id} received:`, msg?.type === "text" ? msg.data : msg);
  await sock.close();
}

await Promise.all(
  Array.from({ length: CLIENTS }, (_, i) => runClient(i + 1)),
);
console.log("All clients completed");
