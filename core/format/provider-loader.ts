import { readFileSync, readdirSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Expression, ExpressionError } from '../expression/expression.ts';
import { checkExpressionRegexes, compileRegex, fullMatch, LinearTimeError } from '../expression/regex.ts';
import { checkInputSchema, validateProvider, type Marked } from './provider-schema.ts';
import { CREDENTIAL_VARIABLES, type Provider, type RequestSpec } from './provider-types.ts';
import { Template } from './template.ts';
import { YamlSource, type SourceError } from './yaml-source.ts';

export const BUILTIN_PROVIDERS_DIR = fileURLToPath(new URL('../../providers/', import.meta.url));

const NAME = /^[a-z][a-z0-9-]{0,62}$/;
/** What the auth's own requests (token, refresh, revocation, the authorization URL) may name beyond connection_config. */
const AUTH_VARIABLES = ['client_id', 'scopes'];
const URL_KEYS = new Set(['authorization_url', 'token_url', 'refresh_url', 'url', 'base_url', 'path']);

/** One file's contribution: where each part of a provider came from, for errors found after merging. */
interface Loaded {
  source: YamlSource;
  marked: Marked[];
}

/** A provider file given by its text (deployed through the API, or handed to a worker thread). */
export interface SourceFile {
  file: string;
  text: string;
}

export interface Catalog {
  providers: Map<string, Provider>;
  errors: SourceError[];
}

/** The provider files of a folder, in a stable order. A missing folder is an error, not an empty one. */
export function providerFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * Loads layers of provider files: the first layer is the built-in catalogue, each later one (a
 * TERAPI_PROVIDERS_DIR folder) adds providers, or merges into one of the same name: its syncs and
 * actions are added or replace those of the same name, any other top-level key replaces the
 * earlier one. Every error of every file is returned, each at the key or value it is about.
 */
export function loadCatalog(layers: (string | SourceFile)[][]): Catalog {
  const providers = new Map<string, Provider>();
  const contributions = new Map<string, Loaded[]>();
  /** Which file each top-level key (and each sync and action) of a provider now comes from. */
  const owners = new Map<string, Map<string, YamlSource>>();
  const broken = new Set<string>();
  const errors: SourceError[] = [];

  for (const files of layers) {
    const seenInLayer = new Set<string>();
    for (const entry of files) {
      const file = typeof entry === 'string' ? entry : entry.file;
      const name = basename(file, extname(file));
      let text: string;
      try {
        text = typeof entry === 'string' ? readFileSync(file, 'utf8') : entry.text;
      } catch (e) {
        errors.push({ file, line: 1, col: 1, message: `cannot read the file: ${(e as Error).message}` });
        continue;
      }
      const source = new YamlSource(file, text);
      const fileErrors = source.syntaxErrors();
      if (!NAME.test(name)) {
        fileErrors.push({ file, line: 1, col: 1, message: `the file name "${name}" is the provider's name and must be lower-case letters, digits and -: rename the file` });
      }
      if (seenInLayer.has(name)) {
        fileErrors.push({ file, line: 1, col: 1, message: `another file in this folder also defines provider "${name}": keep one` });
      }
      seenInLayer.add(name);
      if (fileErrors.length) {
        errors.push(...fileErrors);
        broken.add(name);
        continue;
      }
      let data: Record<string, unknown>;
      try {
        data = source.toJS() as Record<string, unknown>;
      } catch (e) {
        errors.push({ file, line: 1, col: 1, message: `the file cannot be read as data: ${(e as Error).message}` });
        broken.add(name);
        continue;
      }
      const base = providers.get(name);
      const isOverride = base !== undefined || broken.has(name);
      const { errors: schemaErrors, marked } = validateProvider(source, data, isOverride);
      const compileErrors = compileMarked(source, data, marked);
      if (schemaErrors.length || compileErrors.length) {
        errors.push(...schemaErrors, ...compileErrors);
        broken.add(name);
        continue;
      }
      if (broken.has(name)) continue;
      const own = owners.get(name) ?? new Map<string, YamlSource>();
      owners.set(name, own);
      for (const [key, value] of Object.entries(data)) {
        if ((key === 'syncs' || key === 'actions') && value) {
          for (const item of Object.keys(value as object)) own.set(`${key}.${item}`, source);
        } else own.set(key, source);
      }
      providers.set(name, merge(base, data, name, { file, text }));
      contributions.set(name, [...(contributions.get(name) ?? []), { source, marked }]);
    }
  }
  for (const name of broken) providers.delete(name);
  for (const [name, provider] of providers) {
    const found = crossCheck(provider, contributions.get(name) ?? [], owners.get(name)!);
    if (found.length) {
      errors.push(...found);
      providers.delete(name);
    }
  }
  return { providers, errors };
}

function merge(base: Provider | undefined, data: Record<string, unknown>, name: string, source: SourceFile): Provider {
  const merged = mergeParts({ ...base, name, files: [...(base?.files ?? []), source.file], sources: [...(base?.sources ?? []), source] }, data);
  return merged as unknown as Provider;
}

/** How a later file merges into a provider: its syncs and actions are added or replace those of the same name; any other top-level key replaces. */
function mergeParts(base: Record<string, unknown>, data: Record<string, unknown>): Record<string, unknown> {
  const merged = { ...base };
  for (const [key, value] of Object.entries(data)) {
    merged[key] = key === 'syncs' || key === 'actions' ? { ...((base[key] as object | undefined) ?? {}), ...(value as object) } : value;
  }
  return merged;
}

/**
 * A loaded provider as its files give it, uncompiled (GET /providers/{name}): the merged data, and
 * for each part (a top-level key, or `syncs.<name>` and `actions.<name>`) the file it comes from.
 */
export function describeSources(sources: SourceFile[]): { definition: Record<string, unknown>; parts: Map<string, string> } {
  let definition: Record<string, unknown> = {};
  const parts = new Map<string, string>();
  for (const source of sources) {
    const data = new YamlSource(source.file, source.text).toJS() as Record<string, unknown>;
    for (const [key, value] of Object.entries(data)) {
      if ((key === 'syncs' || key === 'actions') && value) {
        for (const item of Object.keys(value as object)) parts.set(`${key}.${item}`, source.file);
      } else parts.set(key, source.file);
    }
    definition = mergeParts(definition, data);
  }
  return { definition, parts };
}

/** Compiles what the schema marked, in place: the loaded provider holds compiled expressions and parsed templates. */
function compileMarked(source: YamlSource, data: Record<string, unknown>, marked: Marked[]): SourceError[] {
  const errors: SourceError[] = [];
  const expressions = marked.filter((m) => m.kind === 'expression' && typeof m.value === 'string');
  const syntax = Expression.check(expressions.map((m) => m.value as string));
  const broken = new Map([...syntax].map(([i, e]) => [expressions[i], e]));
  for (const m of marked) {
    if (typeof m.value !== 'string' && m.kind !== 'json-schema') continue;
    // Positions only when there is an error: locating builds the slower YAML document.
    const at = () => source.valueAt(m.path);
    const where = `"${m.path.join('.')}"`;
    try {
      if (m.kind === 'expression') {
        const error = broken.get(m);
        if (error) throw error;
        checkExpressionRegexes(m.value as string);
        setAt(data, m.path, new Expression(m.value as string, { path: m.path, locate: at }));
      }
      else if (m.kind === 'template') {
        const template = new Template(m.value as string);
        for (const bad of template.malformed()) {
          errors.push({ ...at(), message: `${where} has the placeholder \${${bad}}: a placeholder names one variable, like \${subdomain} or \${input.owner}; compute anything else with JSONata` });
        }
        setAt(data, m.path, template);
      } else if (m.kind === 'regexp') compileRegex(m.value as string);
      else if (m.kind === 'json-schema') checkInputSchema(m.value as object);
    } catch (e) {
      if (e instanceof LinearTimeError) {
        errors.push({ ...at(), message: `${where} holds a regular expression RE2 cannot run in linear time: ${e.message}` });
      } else if (e instanceof ExpressionError) {
        const col = e.position !== undefined ? ` (at character ${e.position} of the expression)` : '';
        errors.push({ ...at(), message: `${where} is not a valid JSONata expression: ${e.message}${col}` });
      } else if (m.kind === 'regexp') {
        errors.push({ ...at(), message: `${where} is not a valid regular expression: ${(e as Error).message}` });
      } else {
        errors.push({ ...at(), message: `${where} is not a valid JSON Schema: ${(e as Error).message}` });
      }
    }
  }
  return errors;
}

function setAt(data: Record<string, unknown>, path: string[], value: unknown) {
  let target: any = data;
  for (const key of path.slice(0, -1)) target = target[key];
  target[path[path.length - 1]] = value;
}

/** Checks that need the whole provider: declared variables, names, and parts that must go together. */
function crossCheck(provider: Provider, loaded: Loaded[], owners: Map<string, YamlSource>): SourceError[] {
  const errors: SourceError[] = [];
  const owner = (key: string) => owners.get(key)!;
  const config = provider.connection_config ?? {};
  const credentials = CREDENTIAL_VARIABLES[provider.auth.mode];
  const exchanging = 'token_exchange' in provider.auth && provider.auth.token_exchange !== undefined;

  // Templates, each against the variables in scope where it stands.
  for (const { source, marked } of loaded) {
    for (const m of marked) {
      if (m.kind !== 'template') continue;
      const top = m.path[0] === 'syncs' || m.path[0] === 'actions' ? `${m.path[0]}.${m.path[1]}` : m.path[0];
      if (owners.get(top) !== source) continue; // replaced by a later file
      const template = new Template(m.value as string);
      const inScope = new Set(Object.keys(config));
      const jwt = provider.auth.mode === 'jwt_bearer';
      if (m.path[0] !== 'auth') credentials.forEach((c) => inScope.add(c));
      // A JWT's claims name the connection's issuer and key id; its exchange also the signed JWT.
      else if (jwt && (m.path[1] === 'claims' || m.path[1] === 'token_exchange')) ['issuer', 'key_id', ...(m.path[1] === 'token_exchange' ? ['assertion'] : [])].forEach((v) => inScope.add(v));
      // A token exchange's request names the credentials given; the token it gives is for the API.
      else if (m.path[1] === 'token_exchange') credentials.forEach((c) => inScope.add(c));
      // The auth's params and headers, and everything of its revocation (GitHub's revocation path
      // names the client id), may name the client id and scopes; its token URLs may not.
      else if (m.path[1] === 'revocation' || !URL_KEYS.has(m.path[m.path.length - 1])) AUTH_VARIABLES.forEach((v) => inScope.add(v));
      if (m.path[0] !== 'auth' && exchanging) inScope.add('access_token');
      if (m.path[0] === 'auth' && m.path[1] === 'revocation') inScope.add('token');
      if (m.path[0] === 'actions') {
        const input = provider.actions?.[m.path[1]]?.input as { properties?: object } | undefined;
        Object.keys(input?.properties ?? {}).forEach((p) => inScope.add(`input.${p}`));
      }
      const at = () => source.valueAt(m.path);
      const where = `"${m.path.join('.')}"`;
      for (const v of template.variables) {
        if (!inScope.has(v) && !template.malformed().includes(v)) {
          const known = [...inScope].join(', ') || 'none';
          const fix = !v.startsWith('input.')
            ? 'declare it under connection_config'
            : m.path[0] === 'actions'
              ? `declare "${v.slice(6)}" under the action's input properties`
              : 'only an action has input';
          errors.push({ ...at(), message: `${where} uses \${${v}}, which is not declared here: ${fix}, or use one of: ${known}` });
        }
      }
      const first = template.parts[0];
      if (URL_KEYS.has(m.path[m.path.length - 1]) && typeof first === 'object' && inScope.has(first.variable)) {
        if (config[first.variable]?.format !== 'url') {
          errors.push({ ...at(), message: `${where} starts with \${${first.variable}}: only a connection_config field with "format: url" may open a URL, so that no value can choose the host` });
        }
      }
    }
  }

  // Connection configuration.
  for (const [field, spec] of Object.entries(config)) {
    const src = owner('connection_config');
    if ([...Object.values(CREDENTIAL_VARIABLES).flat(), ...AUTH_VARIABLES, 'token', 'issuer', 'key_id', 'assertion', 'input'].includes(field)) {
      errors.push({ ...src.keyAt(['connection_config', field]), message: `connection_config field "${field}" has the name of a credential variable: rename it` });
    }
    if (spec.from_callback && provider.auth.mode !== 'oauth2') {
      errors.push({ ...src.keyAt(['connection_config', field, 'from_callback']), message: `"connection_config.${field}.from_callback" needs auth mode oauth2: there is no OAuth callback in mode ${provider.auth.mode}` });
    }
    if (spec.default !== undefined && !fullMatch(spec.pattern, spec.default)) {
      errors.push({ ...src.valueAt(['connection_config', field, 'default']), message: `"connection_config.${field}.default" does not match the field's pattern ${spec.pattern}: give a value the pattern accepts` });
    }
    if (spec.from_token_response && provider.auth.mode !== 'oauth2' && provider.auth.mode !== 'oauth2_client_credentials' && !exchanging) {
      errors.push({ ...src.keyAt(['connection_config', field, 'from_token_response']), message: `"connection_config.${field}.from_token_response" needs an OAuth 2 auth mode or a token_exchange: there is no token response in mode ${provider.auth.mode}` });
    }
  }
  if (exchanging && provider.verification) {
    errors.push({ ...owner('verification').keyAt(['verification']), message: '"verification" is not needed with auth.token_exchange: the exchange itself checks the credentials when the connection is made. Remove it' });
  }
  if (provider.auth.mode === 'api_key' && !provider.api.credentials && !exchanging) {
    errors.push({ ...owner('api').keyAt(['api']), message: `auth mode api_key needs "api.credentials" to say where the key goes, e.g. { in: header, name: Authorization, value: "Bearer \${api_key}" }` });
  }

  // Requests: keys that mean something only where they stand.
  const requests: [string[], RequestSpec, YamlSource][] = [];
  for (const key of ['verification', 'post_connection'] as const) {
    const spec = provider[key]?.request;
    if (spec) requests.push([[key, 'request'], spec, owner(key)]);
  }
  for (const kind of ['syncs', 'actions'] as const) {
    for (const [name, item] of Object.entries(provider[kind] ?? {})) requests.push([[kind, name, 'request'], item.request, owner(`${kind}.${name}`)]);
  }
  for (const [path, spec, src] of requests) {
    const where = path.join('.');
    if (spec.body_format === 'form' && !spec.body) {
      errors.push({ ...src.keyAt([...path, 'body_format']), message: `"${where}.body_format" is form but the request has no "body": add the JSONata body that gives its fields, or remove body_format` });
    }
    if (path[0] !== 'syncs' && path[0] !== 'actions') {
      for (const key of ['error', 'retry', 'idempotent'] as const) {
        if (spec[key] !== undefined) errors.push({ ...src.keyAt([...path, key]), message: `"${where}.${key}" is only used by a sync's or an action's request: remove it` });
      }
    } else if (path[0] === 'syncs' && spec.idempotent !== undefined) {
      errors.push({ ...src.keyAt([...path, 'idempotent']), message: `"${where}.idempotent" has no effect: a sync's requests only read, and are always retried by the retry rules; remove it` });
    }
  }

  // Syncs: where cursors and checkpoints go, and one model per sync.
  const models = new Map<string, string>();
  for (const [name, sync] of Object.entries(provider.syncs ?? {})) {
    const src = owner(`syncs.${name}`);
    const path = ['syncs', name];
    const body = sync.request.body?.source ?? '';
    if (sync.pagination?.type === 'cursor' && !sync.pagination.param && !body.includes('$cursor')) {
      errors.push({ ...src.keyAt([...path, 'pagination', 'cursor']), message: `"syncs.${name}.pagination" reads a cursor but never sends it: set "param", or use $cursor in "request.body"` });
    }
    if (sync.mode === 'incremental' && sync.checkpoint && !sync.checkpoint.param && !body.includes('$checkpoint')) {
      errors.push({ ...src.keyAt([...path, 'checkpoint']), message: `"syncs.${name}.checkpoint" is never sent: set "param", or use $checkpoint in "request.body"` });
    }
    if (sync.mode === 'full' && sync.checkpoint) {
      errors.push({ ...src.keyAt([...path, 'checkpoint']), message: `"syncs.${name}.checkpoint" is only used in incremental mode: remove it or set "mode: incremental"` });
    }
    const other = models.get(sync.model.name);
    if (other) {
      errors.push({ ...src.valueAt([...path, 'model', 'name']), message: `model "${sync.model.name}" is already the model of sync "${other}": each sync needs its own model name` });
    }
    models.set(sync.model.name, name);
  }
  return errors;
}
