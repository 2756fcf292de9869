/**
 * The provider file format: what loads, and for every class of mistake the exact message and the
 * exact line:col it is reported at. Cases mutate one realistic provider,
 * test/fixtures/providers/acme-tickets.yaml (oauth2, a connection_config field, an incremental sync
 * with cursor pagination, an action). Its line numbers matter here: the ones the cases rely on are
 *
 *    2 display_name    7 auth:          12 connection_config:   17 api:          21 syncs:
 *    3 categories      8   mode         13   subdomain:         18   base_url    22   tickets:
 *    4 docs            9   authorization_url   15 pattern                        41 actions:
 *                     10   token_url                                           42   create-ticket:
 *
 * and within the sync: 24 mode, 27 request.path, 30 pagination, 31 type, 32 cursor, 33 param,
 * 34 records, 35 mapping, 36 model, 38 checkpoint, 40 checkpoint.param; within the action:
 * 44 input, 45 input.type, 52 request.path.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { Expression } from '../core/expression/expression.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import { ProviderRegistry } from '../core/format/provider-registry.ts';
import type { Provider } from '../core/format/provider-types.ts';
import { Template } from '../core/format/template.ts';
import { formatError, type SourceError } from '../core/format/yaml-source.ts';
import { runCommand } from './support.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/providers/acme-tickets.yaml');
const BASE = readFileSync(FIXTURE, 'utf8');
const TMP = mkdtempSync(join(tmpdir(), 'terapi-provider-format-'));
after(() => rmSync(TMP, { recursive: true, force: true }));

/** The fixture with each `from` (which must occur exactly once) replaced by `to`. */
function edit(text: string, ...edits: [from: string, to: string][]): string {
  for (const [from, to] of edits) {
    const at = text.indexOf(from);
    assert.ok(at >= 0 && text.indexOf(from, at + 1) < 0, `fixture edit: ${JSON.stringify(from)} must occur exactly once`);
    text = text.slice(0, at) + to + text.slice(at + from.length);
  }
  return text;
}

let cases = 0;
/**
 * Loads layers of files (each layer a folder: layer1, layer2...) from a fresh directory; errors come
 * back formatted, with paths relative to that directory.
 */
function loadLayers(layers: Record<string, string>[]): { providers: Map<string, Provider>; errors: string[]; raw: SourceError[] } {
  const dir = join(TMP, `case-${++cases}`);
  const paths = layers.map((files, i) => {
    const layerDir = join(dir, `layer${i + 1}`);
    mkdirSync(layerDir, { recursive: true });
    return Object.entries(files).map(([name, text]) => {
      writeFileSync(join(layerDir, name), text);
      return join(layerDir, name);
    });
  });
  const { providers, errors } = loadCatalog(paths);
  return { providers, raw: errors, errors: errors.map((e) => formatError({ ...e, file: relative(dir, e.file) })) };
}

/** One file alone (the built-in layer); errors name it by its bare file name. */
function loadOne(text: string, name = 'acme-tickets.yaml') {
  const { providers, errors } = loadLayers([{ [name]: text }]);
  return { providers, errors: errors.map((e) => e.replace(/^layer1\//, '')) };
}

// ---------------------------------------------------------------------------------------------
// Valid files

test('the fixture loads, with expressions compiled and templates parsed', () => {
  const { providers, errors } = loadOne(BASE);
  assert.deepEqual(errors, []);
  assert.deepEqual([...providers.keys()], ['acme-tickets']);
  const p = providers.get('acme-tickets')!;
  assert.equal(p.name, 'acme-tickets');
  assert.equal(p.display_name, 'Acme Tickets');
  assert.equal(p.files.length, 1);
  assert.equal(p.auth.mode, 'oauth2');
  assert.ok(p.api.base_url instanceof Template);
  assert.deepEqual(p.api.base_url.variables, ['subdomain']);
  const sync = p.syncs!.tickets;
  assert.ok(sync.mapping instanceof Expression);
  assert.ok(sync.records instanceof Expression);
  assert.ok(sync.checkpoint!.value instanceof Expression);
  assert.ok(sync.request.path instanceof Template);
  assert.equal(sync.pagination?.type, 'cursor');
  const action = p.actions!['create-ticket'];
  assert.ok(action.request.body instanceof Expression);
  assert.ok(action.output instanceof Expression);
  assert.deepEqual((action.request.path as Template).variables, ['input.project']);
});

test('the loaded mapping expression evaluates', async () => {
  const p = loadOne(BASE).providers.get('acme-tickets')!;
  const mapped = await p.syncs!.tickets.mapping.evaluate({ id: 7, subject: 'Printer on fire', status: 'open', updated_at: '2024-05-01T10:00:00Z' });
  assert.deepEqual({ ...(mapped as object) }, { id: '7', title: 'Printer on fire', status: 'open', updated_at: '2024-05-01T10:00:00Z' });
});

const VALID_VARIANTS: Record<string, string> = {
  'a connection_config field with format: url may open a URL template': edit(
    BASE,
    ['  base_url: https://${subdomain}.acme.example/api/v2', '  base_url: ${instance_url}/api/v2'],
    ['connection_config:\n', 'connection_config:\n  instance_url:\n    pattern: "https://[a-z0-9.-]+"\n    format: url\n'],
  ),
  'a cursor sent as $cursor in the request body, no param': edit(
    BASE,
    ['      param: cursor\n', ''],
    ['      path: /tickets\n', '      method: POST\n      path: /tickets/search\n      body: \'{ "after": $cursor, "updated_since": $checkpoint }\'\n'],
    ['      param: updated_since\n', ''],
  ),
  'api_key auth with api.credentials and a key pattern': edit(
    BASE,
    [
      '  mode: oauth2\n  authorization_url: https://${subdomain}.acme.example/oauth/authorize\n  token_url: https://${subdomain}.acme.example/oauth/token\n  scopes: [tickets.read, tickets.write]\n',
      '  mode: api_key\n  label: API token\n  pattern: "acme_[A-Za-z0-9]{32}"\n',
    ],
    ['  headers:\n', '  credentials: { in: header, name: Authorization, value: "Token ${api_key}" }\n  headers:\n'],
  ),
  'from_token_response under oauth2, a full-mode sync without checkpoint': edit(
    BASE,
    ['    example: example-co\n', '    example: example-co\n    from_token_response: team.subdomain\n'],
    ['    mode: incremental', '    mode: full'],
    ['    checkpoint:\n      value: $max(updated_at)\n      param: updated_since\n', ''],
  ),
  'none auth, offset pagination, a block-scalar mapping': edit(
    BASE,
    [
      '  mode: oauth2\n  authorization_url: https://${subdomain}.acme.example/oauth/authorize\n  token_url: https://${subdomain}.acme.example/oauth/token\n  scopes: [tickets.read, tickets.write]\n',
      '  mode: none\n',
    ],
    ['      type: cursor\n      cursor: meta.next_cursor\n      param: cursor\n', '      type: offset\n      param: offset\n      page_size: { param: limit, value: 100 }\n'],
    [`    mapping: '{ "id": $string(id), "title": subject, "status": status, "updated_at": updated_at }'\n`, '    mapping: |\n      {\n        "id": $string(id),\n        "title": subject\n      }\n'],
  ),
};
for (const [name, text] of Object.entries(VALID_VARIANTS)) {
  test(`valid: ${name}`, () => {
    const { providers, errors } = loadOne(text);
    assert.deepEqual(errors, []);
    assert.equal(providers.size, 1);
  });
}

// ---------------------------------------------------------------------------------------------
// Invalid files: each class of mistake, with the exact message at the exact line:col.

const OAUTH2_AUTH =
  '  mode: oauth2\n  authorization_url: https://${subdomain}.acme.example/oauth/authorize\n  token_url: https://${subdomain}.acme.example/oauth/token\n  scopes: [tickets.read, tickets.write]\n';

interface Case {
  text: string;
  file?: string;
  errors: string[];
}

const F = 'acme-tickets.yaml';
const INVALID: Record<string, Case> = {
  // YAML syntax: reported where the YAML parser stopped; nothing else is checked.
  'syntax: unclosed quote (at the end of the line where the string should close)': {
    text: edit(BASE, ['display_name: Acme Tickets', 'display_name: "Acme Tickets']),
    errors: [`${F}:2:28: Missing closing "quote`],
  },
  'syntax: unclosed flow sequence (where the "]" was expected)': {
    text: edit(BASE, ['display_name: Acme Tickets', 'display_name: [Acme Tickets']),
    errors: [`${F}:3:1: Flow sequence in block collection must be sufficiently indented and end with a ]`],
  },
  'syntax: tab indentation': {
    text: edit(BASE, ['    Accept: application/json', '\tAccept: application/json']),
    errors: [`${F}:20:1: Tabs are not allowed as indentation`],
  },
  // Duplicate keys: at the second occurrence.
  'duplicate: a sync named twice (at the second name)': {
    text: edit(BASE, [
      'actions:\n',
      '  tickets:\n    mode: full\n    request: { path: /tickets }\n    records: tickets\n    mapping: $\n    model: { name: OtherTicket }\nactions:\n',
    ]),
    errors: [`${F}:41:3: Map keys must be unique`],
  },
  'duplicate: a top-level key given twice': {
    text: edit(BASE, ['auth:\n', 'docs: https://acme.example/docs\nauth:\n']),
    errors: [`${F}:7:1: Map keys must be unique`],
  },
  'file name: not lower-case letters, digits and -': {
    text: BASE,
    file: 'Acme_Tickets.yaml',
    errors: [`Acme_Tickets.yaml:1:1: the file name "Acme_Tickets" is the provider's name and must be lower-case letters, digits and -: rename the file`],
  },
  'empty file': {
    text: '# nothing yet\n',
    errors: [`${F}:1:1: the file must be an object, not null`],
  },
  // Unknown keys: at the key, with the nearest allowed key when it is a likely typo.
  'unknown key: a typo of an optional key, with "did you mean"': {
    text: edit(BASE, ['    description: Every ticket', '    descripton: Every ticket']),
    errors: [
      `${F}:23:5: unknown key "descripton" in "syncs.tickets": did you mean "description"? allowed keys are description, mode, frequency, auto_start, request, pagination, records, filter, mapping, model, checkpoint, invalid_records`,
    ],
  },
  'unknown key: a typo of a required key also reports it missing (at the parent key)': {
    text: edit(BASE, ['    records: tickets', '    record: tickets']),
    errors: [
      `${F}:22:3: "syncs.tickets" is missing the required key "records": add it`,
      `${F}:34:5: unknown key "record" in "syncs.tickets": did you mean "records"? allowed keys are description, mode, frequency, auto_start, request, pagination, records, filter, mapping, model, checkpoint, invalid_records`,
    ],
  },
  'unknown key: nothing near enough, no suggestion': {
    text: edit(BASE, ['docs: https://developer.acme.example/docs\n', 'docs: https://developer.acme.example/docs\nmascot: acme.svg\n']),
    errors: [
      `${F}:5:1: unknown key "mascot" in the file: allowed keys are display_name, logo, categories, docs, references, auth, connection_config, post_connection, verification, api, syncs, actions`,
    ],
  },
  'logo: an https: or data:image URL only (a page of the connect UI loads it)': {
    text: edit(BASE, ['docs: https://developer.acme.example/docs\n', 'docs: https://developer.acme.example/docs\nlogo: http://acme.example/logo.svg\n']),
    errors: [
      `${F}:5:7: "logo" must match ^(https://\\S+|data:image/\\S+)$ (An https: or data:image URL of the provider's logo (square, shown at 32 by 32 pixels in the connect UI); without one the UI shows the name's first letter.); got "http://acme.example/logo.svg"`,
    ],
  },
  'unknown key: in the auth branch chosen by mode': {
    text: edit(BASE, ['  scopes:', '  scope:']),
    errors: [
      `${F}:11:3: unknown key "scope" in "auth": did you mean "scopes"? allowed keys are mode, authorization_url, token_url, refresh_url, issuer, scopes, scope_separator, scope_param, authorization_params, token_params, token_headers, refresh_params, pkce, client_auth, token_request_format, token_response, refresh_buffer_seconds, refresh_on_401, revocation`,
    ],
  },
  // Missing required keys: at the key of the object that lacks it.
  'missing: api.base_url (at "api")': {
    text: edit(BASE, ['  base_url: https://${subdomain}.acme.example/api/v2\n', '']),
    errors: [`${F}:17:1: "api" is missing the required key "base_url": add it`],
  },
  'missing: a top-level key (at the first key of the file)': {
    text: edit(BASE, ['docs: https://developer.acme.example/docs\n', '']),
    errors: [`${F}:2:1: the file is missing the required key "docs": add it`],
  },
  'missing: checkpoint of an incremental sync (if/then)': {
    text: edit(BASE, ['    checkpoint:\n      value: $max(updated_at)\n      param: updated_since\n', '']),
    errors: [`${F}:22:3: "syncs.tickets" is missing the required key "checkpoint": add it`],
  },
  'missing: oauth2 token_url (at "auth")': {
    text: edit(BASE, ['  token_url: https://${subdomain}.acme.example/oauth/token\n', '']),
    errors: [`${F}:7:1: "auth" is missing the required key "token_url": add it`],
  },
  // Wrong types, enums, patterns, formats: at the value.
  'type: a string where a list is expected': {
    text: edit(BASE, ['categories: [ticketing]', 'categories: ticketing']),
    errors: [`${F}:3:13: "categories" must be an array, not a string ("ticketing")`],
  },
  'type: a number where an expression is expected': {
    text: edit(BASE, ['    records: tickets', '    records: 42']),
    errors: [`${F}:34:14: "syncs.tickets.records" must be a string, not a number (42)`],
  },
  'type: an empty connection_config field': {
    text: edit(BASE, ['  subdomain:\n    description: Your Acme subdomain, as in https://<subdomain>.acme.example\n    pattern: "[a-z0-9][a-z0-9-]*"\n    example: example-co\n', '  subdomain:\n']),
    errors: [`${F}:13:13: "connection_config.subdomain" must be an object, not null`],
  },
  'enum: sync mode': {
    text: edit(BASE, ['    mode: incremental', '    mode: sometimes']),
    errors: [`${F}:24:11: "syncs.tickets.mode" must be one of full, incremental; got "sometimes"`],
  },
  'enum: HTTP method is case-sensitive': {
    text: edit(BASE, ['      method: POST', '      method: post']),
    errors: [`${F}:51:15: "actions.create-ticket.request.method" must be one of GET, POST, PUT, PATCH, DELETE; got "post"`],
  },
  'discriminator: unknown auth mode (at the mode value)': {
    text: edit(BASE, ['  mode: oauth2', '  mode: oauth']),
    errors: [`${F}:8:9: "auth.mode" must be one of oauth2, oauth1, oauth2_client_credentials, api_key, basic, jwt_bearer, none; got "oauth"`],
  },
  'discriminator: auth without mode (at "auth")': {
    text: edit(BASE, ['  mode: oauth2\n', '']),
    errors: [`${F}:7:1: "auth" is missing the required key "mode": add it`],
  },
  'discriminator: unknown pagination type': {
    text: edit(BASE, ['      type: cursor', '      type: cursors']),
    errors: [`${F}:31:13: "syncs.tickets.pagination.type" must be one of cursor, next_url, offset, page; got "cursors"`],
  },
  'discriminator: offset pagination without its required keys': {
    text: edit(BASE, ['      type: cursor\n      cursor: meta.next_cursor\n      param: cursor\n', '      type: offset\n']),
    errors: [
      `${F}:30:5: "syncs.tickets.pagination" is missing the required key "param": add it`,
      `${F}:30:5: "syncs.tickets.pagination" is missing the required key "page_size": add it`,
    ],
  },
  'pattern: a sync name (at the name, not at "syncs")': {
    text: edit(BASE, ['  tickets:', '  Tickets:']),
    errors: [`${F}:22:3: name "Tickets" in "syncs" is not allowed: use lower-case letters, digits, - and _`],
  },
  'pattern: an action name (at the name, not at "actions")': {
    text: edit(BASE, ['  create-ticket:', '  Create Ticket:']),
    errors: [`${F}:42:3: name "Create Ticket" in "actions" is not allowed: use lower-case letters, digits, - and _`],
  },
  'pattern: a connection_config field name': {
    text: edit(BASE, ['  subdomain:\n', '  Sub-Domain:\n']),
    errors: [`${F}:13:3: name "Sub-Domain" in "connection_config" is not allowed: use lower-case letters, digits and _`],
  },
  'pattern: frequency, with the description as a hint': {
    text: edit(BASE, ['frequency: 15m', 'frequency: 15 minutes']),
    errors: [`${F}:25:16: "syncs.tickets.frequency" must match ^[1-9][0-9]*(s|m|h|d)$ (How often it runs on its own, e.g. 30s, 15m, 1h, 1d; an integration can set another (PATCH /integration, sync_frequencies).); got "15 minutes"`],
  },
  'pattern: a URL template that is not http(s)': {
    text: edit(BASE, ['  token_url: https://${subdomain}', '  token_url: ftp://${subdomain}']),
    errors: [
      `${F}:10:14: "auth.token_url" must match ^(https?://|\\$\\{) (An absolute http(s) URL template; may start with a connection_config field of format url.); got "ftp://\${subdomain}.acme.example/oauth/token"`,
    ],
  },
  'format: docs is not a URL': {
    text: edit(BASE, ['docs: https://developer.acme.example/docs', 'docs: developer acme docs']),
    errors: [`${F}:4:7: "docs" must be a valid uri; got "developer acme docs"`],
  },
  // At the FIRST occurrence (Ajv's params.i), unlike duplicate keys, which are at the second: see the report.
  'uniqueItems: a category listed twice (at its second occurrence)': {
    text: edit(BASE, ['categories: [ticketing]', 'categories: [crm, ticketing, support, ticketing]']),
    errors: [`${F}:3:39: "categories" lists "ticketing" twice: remove one`],
  },
  'minimum: a negative refresh buffer': {
    text: edit(BASE, ['  scopes:', '  refresh_buffer_seconds: -1\n  scopes:']),
    errors: [`${F}:11:27: "auth.refresh_buffer_seconds" must be at least 0; got -1`],
  },
  // Compiled strings: at the value, with JSONata's message and its offset in the expression.
  'JSONata: unclosed predicate (plain scalar)': {
    text: edit(BASE, ['    records: tickets', '    records: tickets[status = "open"']),
    errors: [`${F}:34:14: "syncs.tickets.records" is not a valid JSONata expression: Expected "]" before end of expression (at character 23 of the expression)`],
  },
  'JSONata: stray parenthesis (quoted scalar)': {
    text: edit(BASE, [`'{ "id": $string(id),`, `'{ "id": $string(id)),`]),
    errors: [`${F}:35:14: "syncs.tickets.mapping" is not a valid JSONata expression: Expected "}", got ")" (at character 20 of the expression)`],
  },
  'JSONata: in the checkpoint value': {
    text: edit(BASE, ['      value: $max(updated_at)', '      value: $max(updated_at']),
    errors: [`${F}:39:14: "syncs.tickets.checkpoint.value" is not a valid JSONata expression: Expected ")" before end of expression (at character 15 of the expression)`],
  },
  'template: an undeclared variable': {
    text: edit(BASE, ['      path: /tickets\n', '      path: /tickets/${region}\n']),
    errors: [
      `${F}:27:13: "syncs.tickets.request.path" uses \${region}, which is not declared here: declare it under connection_config, or use one of: subdomain, access_token, client_id`,
    ],
  },
  'template: credentials are not in scope in auth URLs': {
    text: edit(BASE, ['/oauth/token\n', '/oauth/token?client=${client_id}\n']),
    errors: [`${F}:10:14: "auth.token_url" uses \${client_id}, which is not declared here: declare it under connection_config, or use one of: subdomain`],
  },
  'template: a malformed placeholder (an expression, not a name)': {
    text: edit(BASE, ['      path: /tickets\n', '      path: /tickets/${region.name}\n']),
    errors: [
      `${F}:27:13: "syncs.tickets.request.path" has the placeholder \${region.name}: a placeholder names one variable, like \${subdomain} or \${input.owner}; compute anything else with JSONata`,
    ],
  },
  'template: an empty placeholder': {
    text: edit(BASE, ['      path: /tickets\n', '      path: /tickets/${ }\n']),
    errors: [
      `${F}:27:13: "syncs.tickets.request.path" has the placeholder \${}: a placeholder names one variable, like \${subdomain} or \${input.owner}; compute anything else with JSONata`,
    ],
  },
  'template: a URL opened by a connection_config field without format: url': {
    text: edit(BASE, ['  base_url: https://${subdomain}.acme.example/api/v2', '  base_url: ${subdomain}/api/v2']),
    errors: [
      `${F}:18:13: "api.base_url" starts with \${subdomain}: only a connection_config field with "format: url" may open a URL, so that no value can choose the host`,
    ],
  },
  'template: ${input.x} with x not in the action input schema': {
    text: edit(BASE, ['      path: /projects/${input.project}/tickets', '      path: /projects/${input.team}/tickets']),
    errors: [
      `${F}:52:13: "actions.create-ticket.request.path" uses \${input.team}, which is not declared here: declare "team" under the action's input properties, or use one of: subdomain, access_token, client_id, input.project, input.title`,
    ],
  },
  'regexp: an invalid connection_config pattern (at the quoted value)': {
    text: edit(BASE, ['    pattern: "[a-z0-9][a-z0-9-]*"', '    pattern: "[a-z0-9"']),
    errors: [`${F}:15:14: "connection_config.subdomain.pattern" is not a valid regular expression: Invalid regular expression: /[a-z0-9/: Unterminated character class`],
  },
  // Patterns run on end-user input, on RE2 (linear time): what RE2 cannot run is refused at load.
  'regexp: a lookahead in a connection_config pattern (RE2 cannot run it)': {
    text: edit(BASE, ['    pattern: "[a-z0-9][a-z0-9-]*"', '    pattern: "(?!www)[a-z0-9][a-z0-9-]*"']),
    errors: [`${F}:15:14: "connection_config.subdomain.pattern" holds a regular expression RE2 cannot run in linear time: /(?!www)[a-z0-9][a-z0-9-]*/: invalid or unsupported Perl syntax: \`(?!\`; rewrite it without lookarounds or backreferences`],
  },
  'regexp: a backreference in an api_key pattern': {
    text: edit(BASE, [OAUTH2_AUTH, '  mode: api_key\n  pattern: "(ab)\\\\1"\n'], ['  headers:\n', '  credentials: { in: header, name: X-Key, value: "${api_key}" }\n  headers:\n']),
    errors: [`${F}:9:12: "auth.pattern" holds a regular expression RE2 cannot run in linear time: /(ab)\\1/: invalid escape sequence: \`\\1\`; rewrite it without lookarounds or backreferences`],
  },
  'regexp: a lookbehind in an action input schema pattern (at the input value)': {
    text: edit(BASE, ['        title: { type: string }', '        title: { type: string, pattern: "(?<=a)b" }']),
    errors: [`${F}:45:7: "actions.create-ticket.input" holds a regular expression RE2 cannot run in linear time: /(?<=a)b/: invalid named capture: \`(?<=a)b\`; rewrite it without lookarounds or backreferences`],
  },
  'regexp: a lookahead in a JSONata regex of a mapping': {
    text: edit(BASE, [`'{ "id": $string(id), "title": subject,`, `'{ "id": $string(id), "title": $replace(subject, /a(?=b)/, ""),`]),
    errors: [`${F}:35:14: "syncs.tickets.mapping" holds a regular expression RE2 cannot run in linear time: /a(?=b)/: invalid or unsupported Perl syntax: \`(?=\`; rewrite it without lookarounds or backreferences`],
  },
  'JSON Schema: an invalid action input (at the input value)': {
    text: edit(BASE, ['        title: { type: string }', '        title: { type: text }']),
    errors: [
      `${F}:45:7: "actions.create-ticket.input" is not a valid JSON Schema: input/properties/title/type must be equal to one of the allowed values, input/properties/title/type must be array, input/properties/title/type must match a schema in anyOf`,
    ],
  },
  // Whole-provider checks.
  'api_key auth without api.credentials (at "api")': {
    text: edit(BASE, [OAUTH2_AUTH, '  mode: api_key\n  label: API token\n']),
    errors: [`${F}:15:1: auth mode api_key needs "api.credentials" to say where the key goes, e.g. { in: header, name: Authorization, value: "Bearer \${api_key}" }`],
  },
  'cursor pagination whose cursor is never sent (at "cursor")': {
    text: edit(BASE, ['      param: cursor\n', '']),
    errors: [`${F}:32:7: "syncs.tickets.pagination" reads a cursor but never sends it: set "param", or use $cursor in "request.body"`],
  },
  'incremental checkpoint never sent (at "checkpoint")': {
    text: edit(BASE, ['      param: updated_since\n', '']),
    errors: [`${F}:38:5: "syncs.tickets.checkpoint" is never sent: set "param", or use $checkpoint in "request.body"`],
  },
  'checkpoint in full mode (at "checkpoint")': {
    text: edit(BASE, ['    mode: incremental', '    mode: full']),
    errors: [`${F}:38:5: "syncs.tickets.checkpoint" is only used in incremental mode: remove it or set "mode: incremental"`],
  },
  'two syncs with the same model name (at the second model name)': {
    text: edit(BASE, [
      'actions:\n',
      '  closed-tickets:\n    mode: full\n    request: { path: /tickets/closed }\n    records: tickets\n    mapping: $\n    model: { name: Ticket }\nactions:\n',
    ]),
    errors: [`${F}:46:20: model "Ticket" is already the model of sync "tickets": each sync needs its own model name`],
  },
  'a connection_config field named like a credential variable (at its name)': {
    text: edit(BASE, ['connection_config:\n', 'connection_config:\n  access_token:\n    pattern: ".+"\n']),
    errors: [`${F}:13:3: connection_config field "access_token" has the name of a credential variable: rename it`],
  },
  'a connection_config field named like another mode\'s credential': {
    text: edit(BASE, ['connection_config:\n', 'connection_config:\n  api_key:\n    pattern: ".+"\n']),
    errors: [`${F}:13:3: connection_config field "api_key" has the name of a credential variable: rename it`],
  },
  'from_token_response under api_key (at "from_token_response")': {
    text: edit(
      BASE,
      [OAUTH2_AUTH, '  mode: api_key\n'],
      ['    example: example-co\n', '    example: example-co\n    from_token_response: team.subdomain\n'],
      ['  headers:\n    Accept: application/json\n', '  credentials: { in: header, name: X-Api-Key, value: "${api_key}" }\n'],
    ),
    errors: [`${F}:14:5: "connection_config.subdomain.from_token_response" needs an OAuth 2 auth mode or a token_exchange: there is no token response in mode api_key`],
  },
  'several mistakes in one file: all reported, in file order per check': {
    text: edit(BASE, ['    mode: incremental', '    mode: sometimes'], ['docs: https://developer.acme.example/docs', 'docs: nope'], ['  create-ticket:', '  CreateTicket:']),
    errors: [
      `${F}:4:7: "docs" must be a valid uri; got "nope"`,
      `${F}:24:11: "syncs.tickets.mode" must be one of full, incremental; got "sometimes"`,
      `${F}:42:3: name "CreateTicket" in "actions" is not allowed: use lower-case letters, digits, - and _`,
    ],
  },
};

for (const [name, c] of Object.entries(INVALID)) {
  test(`invalid: ${name}`, () => {
    const { providers, errors } = loadOne(c.text, c.file);
    assert.deepEqual(errors, c.errors);
    assert.equal(providers.size, 0, 'a file with errors gives no provider');
  });
}

test('invalid: file name: .yaml and .yml of the same provider in one folder', () => {
  const { providers, errors } = loadLayers([{ 'acme-tickets.yaml': BASE, 'acme-tickets.yml': BASE }]);
  assert.deepEqual(errors, [`layer1/acme-tickets.yml:1:1: another file in this folder also defines provider "acme-tickets": keep one`]);
  assert.equal(providers.size, 0);
});

test('a broken file does not hide the errors of the other files, nor drop valid providers', () => {
  const { providers, errors } = loadLayers([
    {
      'acme-tickets.yaml': BASE,
      'broken-one.yaml': edit(BASE, ['    mode: incremental', '    mode: sometimes']),
      'broken-two.yaml': edit(BASE, ['display_name: Acme Tickets', 'display_name: "Acme Tickets']),
    },
  ]);
  assert.deepEqual(errors, [
    `layer1/broken-one.yaml:24:11: "syncs.tickets.mode" must be one of full, incremental; got "sometimes"`,
    `layer1/broken-two.yaml:2:28: Missing closing "quote`,
  ]);
  assert.deepEqual([...providers.keys()], ['acme-tickets']);
});

// ---------------------------------------------------------------------------------------------
// Layers: a TERAPI_PROVIDERS_DIR file merges into the built-in of its name.

const CLOSED_SYNC = `syncs:
  closed-tickets:
    mode: full
    request:
      path: /tickets
      params:
        state: closed
    records: tickets
    mapping: '{ "id": $string(id), "closed_at": closed_at }'
    model:
      name: ClosedTicket
`;

test('layers: a file named like a built-in adds a sync, keeping the rest', () => {
  const { providers, errors, raw } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': CLOSED_SYNC }]);
  assert.deepEqual(errors, []);
  const p = providers.get('acme-tickets')!;
  assert.deepEqual(Object.keys(p.syncs!), ['tickets', 'closed-tickets']);
  assert.deepEqual(Object.keys(p.actions!), ['create-ticket']);
  assert.equal(p.display_name, 'Acme Tickets');
  assert.ok(p.syncs!['closed-tickets'].mapping instanceof Expression);
  assert.deepEqual(
    p.files.map((f) => relative(TMP, f).split('/').slice(1).join('/')),
    ['layer1/acme-tickets.yaml', 'layer2/acme-tickets.yaml'],
  );
  assert.equal(raw.length, 0);
});

test('layers: a sync of the same name is replaced whole, not merged key by key', () => {
  const replacement = `syncs:
  tickets:
    mode: full
    request:
      path: /v3/tickets
    records: data
    mapping: '{ "id": $string(id) }'
    model:
      name: Ticket
`;
  const { providers, errors } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': replacement }]);
  assert.deepEqual(errors, []);
  const sync = providers.get('acme-tickets')!.syncs!.tickets;
  assert.equal(sync.mode, 'full');
  assert.equal(sync.request.path.source, '/v3/tickets');
  assert.equal(sync.checkpoint, undefined, 'the built-in checkpoint is gone with the built-in sync');
  assert.equal(sync.pagination, undefined);
  assert.equal(sync.frequency, undefined);
});

test('layers: another top-level key replaces the built-in one', () => {
  const { providers, errors } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'display_name: Acme Helpdesk\ncategories: [support]\n' }]);
  assert.deepEqual(errors, []);
  const p = providers.get('acme-tickets')!;
  assert.equal(p.display_name, 'Acme Helpdesk');
  assert.deepEqual(p.categories, ['support']);
  assert.equal(p.docs, 'https://developer.acme.example/docs');
  assert.deepEqual(Object.keys(p.syncs!), ['tickets']);
});

test('layers: an override is validated with nothing required at the top, but what it gives must be whole', () => {
  // Nothing required: a lone display_name is a valid override.
  assert.deepEqual(loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'display_name: Acme\n' }]).errors, []);
  // A sync it gives must still be complete; errors name the override, not the built-in.
  const { providers, errors } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'display_name: Acme\nsyncs:\n  tickets:\n    mode: full\n' }]);
  assert.deepEqual(errors, [
    `layer2/acme-tickets.yaml:3:3: "syncs.tickets" is missing the required key "request": add it`,
    `layer2/acme-tickets.yaml:3:3: "syncs.tickets" is missing the required key "records": add it`,
    `layer2/acme-tickets.yaml:3:3: "syncs.tickets" is missing the required key "mapping": add it`,
    `layer2/acme-tickets.yaml:3:3: "syncs.tickets" is missing the required key "model": add it`,
  ]);
  assert.equal(providers.size, 0, 'an invalid override drops the provider');
  // Unknown keys are still unknown in an override.
  assert.deepEqual(loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'dispaly_name: Acme\n' }]).errors, [
    `layer2/acme-tickets.yaml:1:1: unknown key "dispaly_name" in the file: did you mean "display_name"? allowed keys are display_name, logo, categories, docs, references, auth, connection_config, post_connection, verification, api, syncs, actions`,
  ]);
});

test('layers: whole-provider errors found after merging name the file the faulty part comes from', () => {
  // The override's sync reuses the built-in sync's model name.
  assert.deepEqual(loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': edit(CLOSED_SYNC, ['ClosedTicket', 'Ticket']) }]).errors, [
    `layer2/acme-tickets.yaml:11:13: model "Ticket" is already the model of sync "tickets": each sync needs its own model name`,
  ]);
  // The override's template uses a variable the merged provider does not declare.
  assert.deepEqual(loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': edit(CLOSED_SYNC, ['      path: /tickets\n', '      path: /tickets/${region}\n']) }]).errors, [
    `layer2/acme-tickets.yaml:5:13: "syncs.closed-tickets.request.path" uses \${region}, which is not declared here: declare it under connection_config, or use one of: subdomain, access_token, client_id`,
  ]);
  // Switching the built-in to api_key: the missing credentials are the built-in api's.
  assert.deepEqual(loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'auth:\n  mode: api_key\n' }]).errors, [
    `layer1/acme-tickets.yaml:17:1: auth mode api_key needs "api.credentials" to say where the key goes, e.g. { in: header, name: Authorization, value: "Bearer \${api_key}" }`,
  ]);
});

test('layers: replacing connection_config re-checks the built-in templates that remain', () => {
  const { errors } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'acme-tickets.yaml': 'connection_config:\n  region:\n    pattern: "[a-z]+"\n' }]);
  assert.deepEqual(errors, [
    `layer1/acme-tickets.yaml:9:22: "auth.authorization_url" uses \${subdomain}, which is not declared here: declare it under connection_config, or use one of: region`,
    `layer1/acme-tickets.yaml:10:14: "auth.token_url" uses \${subdomain}, which is not declared here: declare it under connection_config, or use one of: region`,
    `layer1/acme-tickets.yaml:18:13: "api.base_url" uses \${subdomain}, which is not declared here: declare it under connection_config, or use one of: region, access_token, client_id`,
  ]);
});

test('layers: a file with a new name must be complete, and does not affect the built-ins', () => {
  const { providers, errors } = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'zeta.yaml': 'display_name: Zeta\n' }]);
  assert.deepEqual(errors, [
    `layer2/zeta.yaml:1:1: the file is missing the required key "categories": add it`,
    `layer2/zeta.yaml:1:1: the file is missing the required key "docs": add it`,
    `layer2/zeta.yaml:1:1: the file is missing the required key "auth": add it`,
    `layer2/zeta.yaml:1:1: the file is missing the required key "api": add it`,
  ]);
  assert.deepEqual([...providers.keys()], ['acme-tickets']);
  // Complete, it is a provider of its own.
  const ok = loadLayers([{ 'acme-tickets.yaml': BASE }, { 'zeta.yaml': edit(BASE, ['display_name: Acme Tickets', 'display_name: Zeta']) }]);
  assert.deepEqual(ok.errors, []);
  assert.deepEqual([...ok.providers.keys()].sort(), ['acme-tickets', 'zeta']);
});

test('layers: an override of a broken built-in does not revive it', () => {
  const { providers, errors } = loadLayers([
    { 'acme-tickets.yaml': edit(BASE, ['display_name: Acme Tickets', 'display_name: "Acme Tickets']) },
    { 'acme-tickets.yaml': 'display_name: Acme\n' },
  ]);
  assert.deepEqual(errors, [`layer1/acme-tickets.yaml:2:28: Missing closing "quote`]);
  assert.equal(providers.size, 0);
});

// ---------------------------------------------------------------------------------------------
// Two bugs the tests found, fixed in core: a reused $id in an input schema, and an alias bomb.

test('loading the same files twice gives the same catalogue (action input with $id)', () => {
  const text = edit(BASE, ['      type: object\n      required: [project, title]', '      $id: https://acme.example/schemas/create-ticket\n      type: object\n      required: [project, title]']);
  const dir = join(TMP, 'twice');
  mkdirSync(dir);
  writeFileSync(join(dir, 'acme-tickets.yaml'), text);
  const first = loadCatalog([[join(dir, 'acme-tickets.yaml')]]);
  const second = loadCatalog([[join(dir, 'acme-tickets.yaml')]]);
  assert.deepEqual(first.errors.map(formatError), []);
  assert.deepEqual(second.errors.map(formatError), []);
});

test('a file with too many aliases is an error of that file, not an exception', () => {
  const text = `${BASE}x-anchor: &x 1\nx-list: [${Array(101).fill('*x').join(', ')}]\n`;
  let result: ReturnType<typeof loadOne> | undefined;
  assert.doesNotThrow(() => (result = loadOne(text)));
  assert.equal(result!.providers.size, 0);
  assert.deepEqual(result!.errors, [`${F}:1:1: the file cannot be read as data: Excessive alias count indicates a resource exhaustion attack`]);
});

// Input schemas that pass the meta-schema but could not be compiled: the loader still refuses them,
// though it compiles input schemas only on an action's first run.

test('invalid: JSON Schema: an action input with an unresolvable $ref', () => {
  const { providers, errors } = loadOne(edit(BASE, ['        title: { type: string }', '        title: { $ref: "#/definitions/nope" }']));
  assert.deepEqual(errors, [`${F}:45:7: "actions.create-ticket.input" is not a valid JSON Schema: can't resolve reference #/definitions/nope from id #`]);
  assert.equal(providers.size, 0);
});

test('invalid: JSON Schema: an action input with an invalid pattern', () => {
  const { providers, errors } = loadOne(edit(BASE, ['        title: { type: string }', '        title: { type: string, pattern: "[a-" }']));
  assert.deepEqual(errors, [`${F}:45:7: "actions.create-ticket.input" is not a valid JSON Schema: Invalid regular expression: /[a-/u: Unterminated character class`]);
  assert.equal(providers.size, 0);
});

// ---------------------------------------------------------------------------------------------
// The built-in catalogue

const HEADER = '# yaml-language-server: $schema=../schemas/provider.schema.json';
const builtinFiles = () => providerFiles(BUILTIN_PROVIDERS_DIR);

test('built-in: every provider in providers/ validates, and there are at least 12', () => {
  const { providers, errors } = loadCatalog([builtinFiles()]);
  assert.deepEqual(errors.map(formatError), []);
  assert.ok(providers.size >= 12, `${providers.size} built-in providers: ${[...providers.keys()].join(', ')}`);
});

test('built-in: every file starts with the schema line and has a non-empty references list', () => {
  const problems: string[] = [];
  for (const file of builtinFiles()) {
    const text = readFileSync(file, 'utf8');
    if (text.split(/\r?\n/, 1)[0] !== HEADER) problems.push(`${basename(file)}: the first line is not "${HEADER}"`);
    let refs: unknown;
    try {
      refs = (parse(text) as { references?: unknown } | null)?.references;
    } catch (e) {
      problems.push(`${basename(file)}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    if (!Array.isArray(refs) || refs.length === 0) problems.push(`${basename(file)}: no references`);
  }
  assert.deepEqual(problems, []);
});

test('built-in: github, hubspot and linear each have at least one sync and one action', () => {
  const problems: string[] = [];
  for (const name of ['github', 'hubspot', 'linear']) {
    let data: { syncs?: object; actions?: object } | null = null;
    try {
      data = parse(readFileSync(join(BUILTIN_PROVIDERS_DIR, `${name}.yaml`), 'utf8'));
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    if (Object.keys(data?.syncs ?? {}).length === 0) problems.push(`${name}: no sync`);
    if (Object.keys(data?.actions ?? {}).length === 0) problems.push(`${name}: no action`);
  }
  assert.deepEqual(problems, []);
});

// ---------------------------------------------------------------------------------------------
// ProviderRegistry: watching a TERAPI_PROVIDERS_DIR folder

test('registry: a valid new file goes live, an invalid change is rejected and the previous version stays', async () => {
  // A built-in folder of our own, so that this test does not depend on providers/.
  const builtin = join(TMP, 'registry-builtin');
  const extra = join(TMP, 'registry-extra');
  mkdirSync(builtin);
  mkdirSync(extra);
  writeFileSync(join(builtin, 'acme-tickets.yaml'), BASE);
  const registry = new ProviderRegistry([extra], builtin);
  registry.load();
  assert.deepEqual(registry.list().map((p) => p.name), ['acme-tickets']);
  registry.watch(50);
  const within = (event: string) => once(registry, event, { signal: AbortSignal.timeout(2000) });
  try {
    // A new provider.
    let next = within('reloaded');
    writeFileSync(join(extra, 'helpdesk.yaml'), edit(BASE, ['display_name: Acme Tickets', 'display_name: Helpdesk']));
    assert.deepEqual(await next, [2]);
    assert.equal(registry.get('helpdesk')?.display_name, 'Helpdesk');

    // Broken: rejected with its errors, and the previous version stays in force.
    next = within('rejected');
    const broken = join(extra, 'helpdesk.yaml');
    writeFileSync(broken, edit(BASE, ['display_name: Acme Tickets', 'display_name: Helpdesk 2'], ['    mode: incremental', '    mode: sometimes']));
    const [errors] = (await next) as [SourceError[]];
    assert.deepEqual(errors.map(formatError), [`${broken}:24:11: "syncs.tickets.mode" must be one of full, incremental; got "sometimes"`]);
    assert.equal(registry.get('helpdesk')?.display_name, 'Helpdesk');
    assert.equal(registry.list().length, 2);

    // Fixed: live again.
    next = within('reloaded');
    writeFileSync(broken, edit(BASE, ['display_name: Acme Tickets', 'display_name: Helpdesk 3']));
    await next;
    assert.equal(registry.get('helpdesk')?.display_name, 'Helpdesk 3');
  } finally {
    registry.close();
  }
});

test('registry: load() reports a missing extra folder', () => {
  const missing = join(TMP, 'no-such-folder');
  const registry = new ProviderRegistry([missing], join(TMP, 'registry-builtin'));
  assert.throws(() => registry.load(), (e: Error & { errors?: SourceError[] }) => {
    assert.deepEqual(e.errors?.map(formatError), [`${missing}:1:1: this TERAPI_PROVIDERS_DIR folder does not exist: create it or remove it from the list`]);
    return true;
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI. It checks the given files on top of the built-in catalogue, so the "valid" case also
// needs providers/ to be valid.

const cli = (...args: string[]) => runCommand([process.execPath, join(ROOT, 'server/bin.mjs'), ...args], { cwd: ROOT });

test('cli: terapi validate prints file:line:col: message and exits 1 for a bad file', async () => {
  const dir = join(TMP, 'cli');
  mkdirSync(dir);
  const file = join(dir, 'acme-tickets.yaml');
  writeFileSync(file, edit(BASE, ['      type: cursor', '      type: cursors']));
  const { code, stderr } = await cli('validate', file);
  assert.equal(code, 1);
  const lines = stderr.split('\n');
  assert.ok(lines.includes(`${file}:31:13: "syncs.tickets.pagination.type" must be one of cursor, next_url, offset, page; got "cursors"`), stderr);
  assert.match(stderr, /\n\d+ errors? in \d+ files?\n$/);
});

test('cli: terapi validate exits 0 for a good file', async () => {
  const { code, stdout, stderr } = await cli('validate', relative(ROOT, FIXTURE));
  assert.equal(stderr, '');
  assert.equal(code, 0);
  assert.match(stdout, /^\d+ files? valid: \d+ providers?\n$/);
});

test('a value the schema refuses is reported once, not compiled as well', () => {
  const { errors } = loadOne(edit(BASE, ['    records: tickets', "    records: ''"]));
  assert.equal(errors.length, 1, errors.join('\n'));
  assert.match(errors[0], /"syncs\.tickets\.records" must not be empty$/);
});
