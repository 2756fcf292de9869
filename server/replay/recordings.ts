import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Ajv } from 'ajv';
import ajvFormats from 'ajv-formats';
import { schemaErrors } from '../../core/format/provider-schema.ts';
import type { Provider } from '../../core/format/provider-types.ts';
import { YamlSource, type Position, type SourceError } from '../../core/format/yaml-source.ts';

/** A recorded string, or `{ $match: <regular expression> }` for one that changes on every run. */
export type Value = string | { $match: string };

/** Where a request carries the credential: a header or a query parameter with this exact value, or nowhere. */
export type CredentialPlace = { header: string; value: Value } | { query: string; value: Value } | 'none';

/** A request as a recording writes it: the path under the base URL, or an absolute URL for another host. */
export interface RecordedRequest {
  method: string;
  path: string;
  query?: Record<string, Value | Value[]>;
  headers?: Record<string, Value>;
  body?: unknown;
  form?: Record<string, Value | Value[]>;
}

export interface Exchange {
  source: string;
  note?: string;
  /** Syncs: the run it belongs to (1 unless told). */
  run: number;
  credential?: CredentialPlace;
  request: RecordedRequest;
  response: { status: number; headers?: Record<string, string>; body?: unknown };
  /** Where the exchange is written, for messages. */
  at: Position;
}

/** One file of a provider's recordings: a sync or an action, replayed. */
export interface Recording {
  file: string;
  /** The file's name without .yaml: its snapshot is <name>.snapshot.yaml. */
  name: string;
  kind: 'sync' | 'action';
  /** The sync's or action's name. */
  target: string;
  input?: Record<string, unknown>;
  exchanges: Exchange[];
  snapshotFile: string;
}

/** connection.yaml: the connection every recording of the folder runs on. */
export interface ConnectionRecording {
  file: string;
  credentials?: Record<string, unknown>;
  connection_config: Record<string, string>;
  integration?: { oauth_client_id?: string; oauth_client_secret?: string; oauth_scopes?: string };
  credential: CredentialPlace;
  exchanges: Exchange[];
}

export interface ProviderRecordings {
  dir: string;
  connection?: ConnectionRecording;
  recordings: Recording[];
  errors: SourceError[];
}

export const RECORDING_SCHEMA_PATH = new URL('../../schemas/recording.schema.json', import.meta.url);
export const SNAPSHOT_SUFFIX = '.snapshot.yaml';
export const CONNECTION_FILE = 'connection.yaml';

/** The folder of a provider's recordings, beside its file: adding a provider means adding this folder. */
export const recordingsDir = (providersDir: string, provider: string) => join(providersDir, `${provider}.recordings`);

const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
ajvFormats.default(ajv);
const validate = ajv.compile(JSON.parse(readFileSync(RECORDING_SCHEMA_PATH, 'utf8')));

/**
 * Reads a provider's recordings folder and checks it against the provider: every error at its
 * file:line:col, saying what to change. Every sync and action needs a recording, a sync one at most.
 */
export function loadRecordings(dir: string, provider: Provider): ProviderRecordings {
  const errors: SourceError[] = [];
  const out: ProviderRecordings = { dir, recordings: [], errors };
  const folderError = (message: string) => errors.push({ file: dir, line: 1, col: 1, message });
  if (!existsSync(dir)) {
    folderError(`provider "${provider.name}" has no recordings: write them in this folder (CONTRIBUTING.md, "Testing offline")`);
    return out;
  }
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
  for (const f of files.filter((f) => f.endsWith(SNAPSHOT_SUFFIX))) {
    if (!files.includes(f.slice(0, -SNAPSHOT_SUFFIX.length) + '.yaml')) {
      errors.push({ file: join(dir, f), line: 1, col: 1, message: `this snapshot has no recording ${f.slice(0, -SNAPSHOT_SUFFIX.length)}.yaml: delete it` });
    }
  }
  for (const f of files.filter((f) => !f.endsWith(SNAPSHOT_SUFFIX))) {
    const file = join(dir, f);
    const source = new YamlSource(file, readFileSync(file, 'utf8'));
    const syntax = source.syntaxErrors();
    if (syntax.length) {
      errors.push(...syntax);
      continue;
    }
    const data = (source.toJS() ?? {}) as Record<string, any>;
    if (!validate(data)) {
      errors.push(...schemaErrors(source, validate.errors));
      continue;
    }
    const fileErrors = f === CONNECTION_FILE ? checkConnection(source, data, provider) : checkRecording(source, data, provider);
    if (fileErrors.length) {
      errors.push(...fileErrors);
      continue;
    }
    const exchanges = ((data.exchanges ?? []) as Omit<Exchange, 'at'>[]).map((e, i) => ({ ...e, run: e.run ?? 1, at: source.keyAt(['exchanges', i]) }));
    if (f === CONNECTION_FILE) {
      out.connection = { file, credentials: data.credentials, connection_config: data.connection_config ?? {}, integration: data.integration, credential: data.credential ?? 'none', exchanges };
    } else {
      const name = basename(f, '.yaml');
      const kind = data.sync !== undefined ? 'sync' : 'action';
      out.recordings.push({ file, name, kind, target: data[kind], input: data.input, exchanges, snapshotFile: join(dir, name + SNAPSHOT_SUFFIX) });
    }
  }
  if (!files.includes(CONNECTION_FILE) && !errors.some((e) => basename(e.file) === CONNECTION_FILE)) {
    folderError(`${CONNECTION_FILE} is missing: it gives the connection the recordings run on (credentials, connection_config, where the credential goes)`);
  }
  // Coverage: the rule, every sync and action replayed.
  const covered = new Set(out.recordings.map((r) => `${r.kind}:${r.target}`));
  for (const [kind, names] of [['sync', Object.keys(provider.syncs ?? {})], ['action', Object.keys(provider.actions ?? {})]] as const) {
    for (const name of names) {
      if (!covered.has(`${kind}:${name}`)) folderError(`${kind} "${name}" of provider "${provider.name}" has no recording: add a file with "${kind}: ${name}"`);
    }
  }
  const seen = new Map<string, string>();
  for (const r of out.recordings.filter((r) => r.kind === 'sync')) {
    const other = seen.get(r.target);
    if (other) errors.push({ file: r.file, line: 1, col: 1, message: `sync "${r.target}" is already replayed by ${other}: a sync has one recording (a second run goes in the same file, with run: 2)` });
    seen.set(r.target, basename(r.file));
  }
  return out;
}

function checkConnection(source: YamlSource, data: Record<string, any>, provider: Provider): SourceError[] {
  const errors: SourceError[] = [];
  for (const key of ['sync', 'action', 'input']) {
    if (data[key] !== undefined) errors.push({ ...source.keyAt([key]), message: `"${key}" has no place in ${CONNECTION_FILE}, which describes the connection: move it to a recording of its own` });
  }
  const mode = provider.auth.mode;
  const needsCredentials = mode !== 'none' && mode !== 'oauth2_client_credentials';
  if (needsCredentials && !data.credentials) errors.push({ ...source.keyAt([]), message: `provider "${provider.name}" uses ${mode} auth: give "credentials" in the shape POST /connection takes, with values shaped like real ones` });
  if (mode !== 'none' && !data.credential) errors.push({ ...source.keyAt([]), message: 'say where every request carries the credential: "credential: { header: Authorization, value: Bearer <token> }" (or "query: <name>")' });
  (data.exchanges ?? []).forEach((e: { run?: number }, i: number) => {
    if (e.run !== undefined) errors.push({ ...source.keyAt(['exchanges', i, 'run']), message: '"run" is for sync recordings: the connection is made once' });
  });
  return errors;
}

function checkRecording(source: YamlSource, data: Record<string, any>, provider: Provider): SourceError[] {
  const errors: SourceError[] = [];
  const at = (path: (string | number)[], message: string) => errors.push({ ...source.keyAt(path), message });
  for (const key of ['credentials', 'connection_config', 'integration', 'credential']) {
    if (data[key] !== undefined) at([key], `"${key}" belongs in ${CONNECTION_FILE}: every recording of the folder runs on that one connection`);
  }
  if ((data.sync === undefined) === (data.action === undefined)) {
    at([], 'a recording names the one sync or action it replays: "sync: <name>" or "action: <name>"');
    return errors;
  }
  const kind = data.sync !== undefined ? 'sync' : 'action';
  const known = Object.keys((kind === 'sync' ? provider.syncs : provider.actions) ?? {});
  if (!known.includes(data[kind])) at([kind], `provider "${provider.name}" has no ${kind} "${data[kind]}"; its ${kind}s: ${known.join(', ') || 'none'}`);
  if (kind === 'sync' && data.input !== undefined) at(['input'], '"input" is for actions: a sync takes none');
  const exchanges = (data.exchanges ?? []) as { run?: number }[];
  if (kind === 'action') {
    exchanges.forEach((e, i) => e.run !== undefined && at(['exchanges', i, 'run'], '"run" is for sync recordings'));
    if (!exchanges.length) at(['exchanges'], 'an action sends at least one request: record it');
  } else if (!exchanges.some((e) => (e.run ?? 1) === 1)) {
    at(['exchanges'], 'a sync recording starts with its first run: record the first page (exchanges without "run")');
  } else {
    const runs = exchanges.map((e) => e.run ?? 1);
    runs.forEach((r, i) => {
      if (i && r < runs[i - 1]) at(['exchanges', i, 'run'], 'exchanges go in the order they happen: runs in increasing order');
    });
  }
  return errors;
}
