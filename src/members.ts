/**
 * A set whose members come and go all the time (a server's connections),
 * kept in an array, not in a `Set`.
 *
 * Why not a `Set`: V8 compacts a `Set` whose table has filled with deleted
 * entries into a new table, and the old table keeps a link to the new one
 * (for iterators still walking it). Once an old table has been promoted to
 * the old generation, the young-generation collector counts it as alive
 * until the next full collection, so the links keep every later table, and
 * every connection any of them held, alive as well. Under connection churn
 * that promoted every connection's objects: about 4 KB per connection,
 * a scavenge of 6 to 12 ms every 90 ms, and a full collection twice a
 * second. An array forgets a member once the slot is overwritten.
 *
 * @module
 */

/** A member's place in its {@linkcode Members}; give it back to remove it. */
export interface Member<T> {
  readonly value: T;
  /** Index in the array, or -1 once removed. */
  index: number;
}

/** Members with O(1) add and remove and no hash table. */
export class Members<T> {
  #items: Member<T>[] = [];

  /** How many members there are. */
  get size(): number {
    return this.#items.length;
  }

  /** Adds `value`; the returned handle removes it. */
  add(value: T): Member<T> {
    const member = { value, index: this.#items.length };
    this.#items.push(member);
    return member;
  }

  /** Removes a member; does nothing if it was removed already or is another set's. */
  remove(member: Member<T>): void {
    const items = this.#items;
    const index = member.index;
    if (index < 0 || items[index] !== member) return;
    const last = items.pop()!;
    if (last !== member) {
      items[index] = last;
      last.index = index;
    }
    member.index = -1;
  }

  /**
   * Calls `fn` with each member, in no particular order. `fn` must not add
   * or remove members (walk {@linkcode values} for that).
   */
  forEach(fn: (value: T) => void): void {
    const items = this.#items;
    for (let i = 0; i < items.length; i++) fn(items[i].value);
  }

  /** The members now, in no particular order (a copy: removing is safe while walking it). */
  values(): T[] {
    return this.#items.map((member) => member.value);
  }
}
