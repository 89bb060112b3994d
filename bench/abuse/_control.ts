/**
 * The control channel every abuse fixture shares: the parent writes one
 * command a line on stdin (`gc`, `stats`), the fixture answers one
 * `TAG {json}` line on stdout. End of stdin (the parent is gone) ends the
 * fixture, and so does a lifetime limit, so no fixture outlives a run.
 *
 * @module
 */

const MAX_LIFETIME_MS = 15 * 60_000;

/** Prints `tag` and `value` as one line the parent parses. */
export function print(tag: string, value: unknown): void {
  console.log(`${tag} ${JSON.stringify(value)}`);
}

/**
 * Answers `gc` (a full collection when run with `--expose-gc`) and
 * `stats` (what `extra()` returns, with the V8 heap) until stdin ends,
 * then exits.
 */
export async function serveControl(
  extra: () => Record<string, unknown> = () => ({}),
): Promise<never> {
  setTimeout(() => Deno.exit(3), MAX_LIFETIME_MS);
  const gc = (globalThis as { gc?: () => void }).gc;
  let rest = "";
  for await (
    const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())
  ) {
    rest += chunk;
    let nl;
    while ((nl = rest.indexOf("\n")) !== -1) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line === "gc") {
        gc?.();
        print("GC", { collected: gc !== undefined });
      } else if (line === "stats") {
        const m = Deno.memoryUsage();
        print("STATS", {
          heapUsed: m.heapUsed,
          heapTotal: m.heapTotal,
          external: m.external,
          rss: m.rss,
          ...extra(),
        });
      }
    }
  }
  Deno.exit(0);
}
