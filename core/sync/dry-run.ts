import { randomUUID } from 'node:crypto';
import type { Fresh } from '../auth/tokens.ts';
import type { Sync } from '../format/provider-types.ts';
import { runSync, type RunResult, type RunStore } from './run.ts';
import type { RunSummary } from './sync-store.ts';

export interface DryRunProgress {
  pages: number;
  records: number;
  ms: number;
}

export interface DryRunResult extends RunResult {
  /** The first mapped records, as a run would store them. */
  sample: Record<string, unknown>[];
  /** Mapped records seen (at most the limit). */
  records: number;
  /** Whether the run stopped at the limit before the pagination ended. */
  limited: boolean;
  ms: number;
}

/**
 * A sync run that stores nothing (`terapi dryrun`): the engine's own run (page fetching, mapping,
 * checking against the model) against a store that keeps only a sample and counts. `limit` ends it
 * after the page that reaches that many records. Delete detection and checkpoints are not stored.
 */
export async function dryRunSync(fresh: () => Promise<Fresh>, name: string, sync: Sync, options: { limit?: number; sampleSize: number; since?: unknown; waitBudgetMs?: number; onPage?: (p: DryRunProgress) => void }): Promise<DryRunResult> {
  const sample: Record<string, unknown>[] = [];
  let records = 0;
  let limited = false;
  const started = performance.now();
  const store: RunStore = {
    writePage: async (_handle, page) => {
      for (const [, data] of JSON.parse(new TextDecoder().decode(page.rows)) as [string, string, string][]) {
        if (options.limit !== undefined && records >= options.limit) break;
        records++;
        if (sample.length < options.sampleSize) sample.push(JSON.parse(data));
      }
      return { added: page.count, updated: 0, unchanged: 0 };
    },
    finish: async () => ({ deleted: 0, records_count: records }),
  };
  const runId = randomUUID();
  const summary: RunSummary = { run_id: runId, started_at: new Date().toISOString(), outcome: 'running', pages: 0, added: 0, updated: 0, deleted: 0, unchanged: 0, invalid: { count: 0, examples: [] } };
  const handle = { integration: '', connection: '', sync: name, model: sync.model.name, runId, run: runId };
  const onPage = ({ number }: { number: number }) => {
    options.onPage?.({ pages: number, records, ms: performance.now() - started });
    if (options.limit !== undefined && records >= options.limit) return !(limited = true);
    return true;
  };
  const result = await runSync({ store, fresh, onPage }, sync, { handle, summary, since: options.since, leaseMs: 60_000, waitBudgetMs: options.waitBudgetMs ?? 60_000 });
  return { ...result, sample, records, limited, ms: performance.now() - started };
}
