/** A minimal external store for useSyncExternalStore: immutable snapshots, listeners. */
import type { AuthSnapshot } from "./types.js";

export class SnapshotStore {
  private listeners = new Set<() => void>();

  constructor(protected snapshot: AuthSnapshot) {}

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly getSnapshot = (): AuthSnapshot => this.snapshot;

  protected update(patch: Partial<AuthSnapshot>): void {
    const next = { ...this.snapshot, ...patch };
    const changed = (Object.keys(next) as Array<keyof AuthSnapshot>).some((k) => next[k] !== this.snapshot[k]);
    if (!changed) return;
    this.snapshot = next;
    for (const l of [...this.listeners]) l();
  }
}
