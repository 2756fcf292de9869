import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import { parse } from 'yaml';
import { badRequest } from '../core/errors.ts';
import { checkJson } from '../core/json-limits.ts';

export const OPENAPI_TEXT = readFileSync(new URL('./openapi.yaml', import.meta.url), 'utf8');
export const openapi = parse(OPENAPI_TEXT) as {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, object>; requestBodies?: Record<string, RequestBody> };
};

interface RequestBody {
  required?: boolean;
  content: Record<string, { schema: object }>;
}
/** An operation's body as written, or the shared one it names (#/components/requestBodies/...). */
const requestBody = (op: Operation): RequestBody | undefined =>
  op.requestBody && '$ref' in op.requestBody ? openapi.components.requestBodies?.[op.requestBody.$ref.split('/').pop()!] : op.requestBody;

interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  schema: object;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: RequestBody | { $ref: string };
  security?: unknown[];
}

// discriminator: a oneOf told apart by a property (the credentials' `type`) is checked against the
// branch that value names, so an error names a field of the shape the caller meant.
const ajv = new Ajv({ allErrors: false, strict: false, coerceTypes: true, useDefaults: true, discriminator: true });
ajvFormats.default(ajv);
/** Ajv takes a discriminator without `mapping` (each branch names its value in an enum); clients' generators need it. */
const withoutMappings = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (k, x) => (k === 'discriminator' ? { propertyName: x.propertyName } : x)));
ajv.addSchema({ $id: 'openapi', components: withoutMappings(openapi.components) });
const withRefs = (schema: object) => JSON.parse(JSON.stringify(withoutMappings(schema)).replace(/"#\/components\//g, '"openapi#/components/'));

export interface Checked {
  params: Record<string, string>;
  query: Record<string, unknown>;
  body: Record<string, unknown>;
}

/**
 * A checker per operation of the served document: path and query parameters (coerced to their
 * types) and the JSON body. A request that breaks the document is a 400 naming the field.
 */
export const operations = new Map<string, { check: (params: object, query: object, body: unknown) => Checked; public: boolean; dashboard: boolean; takesBody: boolean }>();

/** The security schemes an operation accepts: the document's default (the secret key) unless it says otherwise. */
const schemes = (op: Operation) => new Set((op.security ?? [{ SecretKeyAuth: [] }]).flatMap((s) => Object.keys(s as object)));

for (const item of Object.values(openapi.paths)) {
  for (const op of Object.values(item)) {
    const groups: Record<'path' | 'query', { type: 'object'; properties: Record<string, object>; required: string[] }> = {
      path: { type: 'object', properties: {}, required: [] },
      query: { type: 'object', properties: {}, required: [] },
    };
    for (const p of op.parameters ?? []) {
      if (p.in !== 'path' && p.in !== 'query') continue;
      groups[p.in].properties[p.name] = withRefs(p.schema);
      if (p.required) groups[p.in].required.push(p.name);
    }
    const pathCheck = ajv.compile(groups.path);
    const queryCheck = ajv.compile(groups.query);
    // An operation that also takes other types (a provider file as YAML) reads its body itself.
    const content = requestBody(op)?.content ?? {};
    const jsonOnly = Object.keys(content).every((type) => type === 'application/json');
    const bodySchema = jsonOnly ? content['application/json']?.schema : undefined;
    const bodyCheck = bodySchema ? ajv.compile(withRefs(bodySchema)) : undefined;
    operations.set(op.operationId, {
      // Public: no secret key (the connect flow's pages and calls, which carry a connect session token instead).
      public: !schemes(op).has('SecretKeyAuth'),
      // The operator's dashboard reads these with its session cookie instead of the secret key.
      dashboard: schemes(op).has('DashboardSession'),
      takesBody: bodySchema !== undefined,
      check(params, query, body) {
        const p = { ...params } as Record<string, string>;
        run(pathCheck, p, 'path');
        // Repeated query parameters are not part of this API: the last one counts.
        const q = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, Array.isArray(v) ? v[v.length - 1] : v]));
        run(queryCheck, q, 'query');
        if (bodyCheck) {
          // Bodies of the API's own operations may be stored: no NUL character either.
          checkJson(body, 'body', { storable: true });
          run(bodyCheck, body ?? {}, 'body');
        }
        return { params: p, query: q, body: (body ?? {}) as Record<string, unknown> };
      },
    });
  }
}

function run(check: ValidateFunction, data: unknown, where: 'path' | 'query' | 'body') {
  if (check(data)) return;
  const e = check.errors![0];
  const field = [where, ...e.instancePath.split('/').filter(Boolean)].join('.');
  const p = e.params as Record<string, any>;
  let message: string;
  switch (e.keyword) {
    case 'required':
      message = `${field}.${p.missingProperty} is required`;
      break;
    case 'additionalProperties':
      message = `${field}.${p.additionalProperty} is not a field of this request`;
      break;
    case 'type':
      message = `${field} must be ${p.type === 'object' || p.type === 'array' || p.type === 'integer' ? `an ${p.type}` : `a ${p.type}`}`;
      break;
    case 'discriminator':
      message = `${field}.${p.tag} must be ${p.error === 'tag' ? 'a string' : 'one of the values its schema lists (GET /openapi.yaml)'}`;
      break;
    default:
      message = `${field} ${e.message}`;
  }
  // Credentials of the wrong shape are told as the engine tells credentials that do not fit (PRODUCT.md).
  throw badRequest(field === 'body.credentials' || field.startsWith('body.credentials.') ? 'invalid_credentials' : 'invalid_request', message);
}
