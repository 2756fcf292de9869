import { badRequest } from '../errors.ts';
import { own } from '../own.ts';

const PLACEHOLDER = /\$\{([^}]*)\}/g;
const VARIABLE = /^(input\.)?[a-z][a-z0-9_]*$/;

type Part = string | { variable: string };

/**
 * A string from a provider file in which `${name}` stands for a declared variable (connection
 * configuration, credentials, an action's input). Nothing is computed here: computing is JSONata's job.
 */
export class Template {
  readonly parts: Part[] = [];
  readonly variables: string[] = [];

  constructor(readonly source: string) {
    let last = 0;
    for (const m of source.matchAll(PLACEHOLDER)) {
      if (m.index > last) this.parts.push(source.slice(last, m.index));
      const variable = m[1].trim();
      this.parts.push({ variable });
      this.variables.push(variable);
      last = m.index + m[0].length;
    }
    if (last < source.length) this.parts.push(source.slice(last));
  }

  /** A template that is only text, even if it contains `${`: for paths given at run time (the proxy). */
  static literal(text: string): Template {
    const t = new Template('');
    t.parts.push(text);
    return t;
  }

  /** Placeholder names that are not of the form `name` or `input.name`. */
  malformed(): string[] {
    return this.variables.filter((v) => !VARIABLE.test(v));
  }

  /**
   * As a URL: every value is percent-encoded, so no value can add a `/`, `@`, `:`, `?` or `#` and
   * move the request to another host. The one exception is a value that opens the template (a
   * Salesforce instance URL): it must then be a bare http(s) origin, which is checked here.
   */
  renderUrl(values: Record<string, unknown>): string {
    return this.parts
      .map((part, i) => {
        if (typeof part === 'string') return part;
        const value = lookup(values, part.variable);
        if (i === 0) return origin(part.variable, value);
        // Percent-encoding leaves `.` alone, and a whole segment of `.` or `..` would move the path.
        if (value === '.' || value === '..') throw badRequest('invalid_value', `"${part.variable}" cannot be "${value}" in a URL`);
        return encodeURIComponent(value);
      })
      .join('');
  }

  /** As a header or query value: used as is, except that a line break can never get through. */
  renderText(values: Record<string, unknown>): string {
    const text = this.parts.map((part) => (typeof part === 'string' ? part : lookup(values, part.variable))).join('');
    if (/[\r\n]/.test(text)) throw badRequest('invalid_value', 'a value used in a header contains a line break');
    return text;
  }
}

function lookup(values: Record<string, unknown>, name: string): string {
  let value: unknown = values;
  for (const key of name.split('.')) value = value && typeof value === 'object' ? own(value as Record<string, unknown>, key) : undefined;
  if (value === undefined || value === null || value === '') {
    throw badRequest('missing_value', `"${name}" is needed to build this request but the connection has no value for it`);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function origin(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw badRequest('invalid_value', `"${name}" must be an http(s) URL such as https://example.com`);
  }
  const bare = value.replace(/\/$/, '');
  if (!/^https?:$/.test(url.protocol) || url.origin !== bare) {
    throw badRequest('invalid_value', `"${name}" must be a bare http(s) origin such as https://example.com, without path, user or query`);
  }
  return bare;
}
