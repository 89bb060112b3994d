/**
 * Keeps one connection open for many request/response round trips instead
 * of reconnecting for each.
 *
 * Ports the seed's "性能建议 3. 连接复用". REQUESTS (default 1000) and
 * DELAY_MS (default 100) set the number of round trips and the pause
 * between them.
 *
 * Run: deno run --allow-net --allow-env examples/connection_reuse_client.ts [ws://127.0.0.1:8080]
 */
import { connect } from "../mod.ts";

const url = Deno.args[0] ?? Deno.env.get("URL") ?? "ws://127.0.0.1:8080";
const requests = Number(Deno.env.get("REQUESTS") ?? "1000");
const delayMs = Number(Deno.env.get("DELAY_MS") ?? "100");

const sock = await connect(url);

let completed = 0;
for (let i = 1; i <= requests; i++) {
  await sock.write(`Request ${i}`, "text");
  const response = await sock.read();
  if (response === null || response.type === "close") break;
  // Handle the response here...
  completed++;
  await new Promise((resolve) => setTimeout(resolve, delayMs));
}

await sock.close();
console.log(`Completed ${completed} requests over one connection`);
