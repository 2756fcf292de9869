/**
 * What crosses between the API thread and a run thread (core/jobs/sync-worker.ts): the task, the
 * run's requests and their answers, errors by name. Kept apart from the worker's own module, which
 * lowers the priority of the thread that loads it: the API thread imports only this.
 */
import type { MessagePort } from 'node:worker_threads';
import type { Fresh } from '../auth/tokens.ts';
import { TerapiError } from '../errors.ts';
import type { SourceFile } from '../format/provider-loader.ts';
import type { RunResult, RunStore, RunTask } from '../sync/run.ts';
import { ConnectionGone, RunLost } from '../sync/sync-store.ts';

export interface SyncTask {
  /** The provider's files by text: the worker loads exactly what the API thread has. */
  sources: SourceFile[];
  provider: string;
  sync: string;
  run: RunTask;
  /** Requests for fresh credentials go to the API thread, which owns refreshes (single flight). */
  port: MessagePort;
  /** The watchdog's slot: the deadline of the evaluation in progress. */
  deadline: Float64Array;
  /** The most bytes of a provider's answer read into memory (TERAPI_MAX_RESPONSE_BYTES), as in the API thread. */
  maxResponseBytes: number;
}

/** A sync task's answer: the run's result, or why it stopped without one. */
export type SyncOutcome = { ok: true; result: RunResult } | { ok: false; lost: 'run' | 'connection'; message: string };

/** Messages a sync task sends on its port: requests (answered with the same id), and news for the watchdog. */
export type RunRequest = { kind: 'fresh'; stale?: string } | { kind: 'store'; method: keyof RunStore; args: unknown[] };
export type WorkerMessage = (RunRequest & { id: number }) | { kind: 'evaluating'; where: string };

/** An error that crossed threads: its class by name (RunLost, ConnectionGone, TerapiError) and what it says. */
export interface WireError {
  name: string;
  message: string;
  status?: number;
  code?: string;
}

/** Fresh credentials, and the secrets to scrub from provider text (a function cannot cross threads). */
export type FreshAnswer = { id: number; fresh?: Omit<Fresh, 'provider' | 'scrub'> & { secrets: string[] }; error?: WireError };
/**
 * `spent`: a stored page's bytes, handed back to the run thread to be freed there. Memory outside
 * the heap is freed when the heap holding it is collected: the run thread's is, every few pages;
 * the API thread's, which allocates little, might keep tens of MB of pages before it is.
 */
export type StoreAnswer = { id: number; value?: unknown; error?: WireError; spent?: ArrayBuffer };

/** An error as it crosses threads. */
export function toWire(e: unknown): WireError {
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err instanceof RunLost ? 'RunLost' : err instanceof ConnectionGone ? 'ConnectionGone' : err instanceof TerapiError ? 'TerapiError' : 'Error', message: err.message, ...(err instanceof TerapiError ? { status: err.status, code: err.code } : {}) };
}

export function fromWire(w: WireError): Error {
  if (w.name === 'RunLost') return new RunLost(w.message);
  if (w.name === 'ConnectionGone') return new ConnectionGone(w.message);
  if (w.name === 'TerapiError') return new TerapiError(w.status ?? 500, w.code ?? 'internal_error', w.message);
  return new Error(w.message);
}
