/**
 * A set whose members come and go all the time (a server's connections),
 * kept in an array, not in a `Set`.
 *
 * Why not a `Set`: under connection churn, the server's `Set`s got every
 * connection's objects promoted to V8's old generation (about 4 KB per
 * connection, a scavenge of 6 to 12 ms every 90 ms, a full collection twice
 * a second), though only the open connections were alive. The likely
 * mechanism: V8 compacts a `Set` whose table has filled with deleted entries
 * into a new table and links the old table to the new one (for iterators
 * still walking it); once an old table is in the old generation, the
 * young-generation collector treats it as alive until the next full
 * collection, and through the links every later table and what it held.
 * An array forgets a member once its slot is overwritten.
 * `tests/gc_test.ts` measures it.
 *
 * @module
 */

/** A member's place in its {@linkcode Members}; give it back to remove it. */
export interface Member<T> {
  readonly value: T;
  /** Index in the array, or -1 once removed. */
  index: number;
}

/**
 * Members with O(1) add and remove and no hash table. `M` is the handle's
 * type, for callers that keep more in it (see {@linkcode Members.insert}).
 */
export class Members<T, M extends Member<T> = Member<T>> {
  #items: M[] = [];

  /** How many members there are. */
  get size(): number {
    return this.#items.length;
  }

  /** Adds `value`; the returned handle removes it. */
  add(value: T): Member<T> {
    return this.insert({ value, index: 0 } as M);
  }

  /** Adds a handle the caller made (its `index` is set here); returns it. */
  insert(member: M): M {
    member.index = this.#items.length;
    this.#items.push(member);
    return member;
  }

  /** Removes a member; does nothing if it was removed already or is another set's. */
  remove(member: M): void {
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

  /** Like {@linkcode forEach}, with the handles. */
  forEachMember(fn: (member: M) => void): void {
    const items = this.#items;
    for (let i = 0; i < items.length; i++) fn(items[i]);
  }

  /** The members now, in no particular order (a copy: removing is safe while walking it). */
  values(): T[] {
    return this.#items.map((member) => member.value);
  }
}
