import jsyaml from 'js-yaml';
import type { Provider } from '../../core/format/provider-types.ts';
import { Template } from '../../core/format/template.ts';

/** Keys whose values are where requests go (the loader's URL keys): the only strings rewritten. */
const URL_KEYS = new Set(['authorization_url', 'token_url', 'refresh_url', 'url', 'base_url', 'path']);
const URL_TEMPLATE = /^(https?:\/\/|\$\{)/;
/** Top-level keys that say nothing about where requests go. */
const INERT = new Set(['display_name', 'categories', 'docs', 'references', 'connection_config']);

/** A provider's file data as written (expressions and templates as text), its layers merged as the loader merges them. */
export function rawProvider(provider: Provider): Record<string, any> {
  const merged: Record<string, any> = {};
  for (const { text } of provider.sources) {
    const data = (jsyaml.load(text, { schema: jsyaml.CORE_SCHEMA }) ?? {}) as Record<string, any>;
    for (const [key, value] of Object.entries(data)) merged[key] = key === 'syncs' || key === 'actions' ? { ...merged[key], ...value } : value;
  }
  return merged;
}

/**
 * Splits a URL template into its origin, rendered with the connection's values (the host may be
 * `${subdomain}.zendesk.com`, or a whole `${instance_url}`), and the rest, kept as a template.
 */
export function splitOrigin(text: string, config: Record<string, string>): { origin: string; rest: string } {
  const opener = /^\$\{\s*([a-z][a-z0-9_]*)\s*\}/.exec(text);
  if (opener) {
    const value = config[opener[1]];
    if (!value) throw new Error(`connection.yaml must give connection_config.${opener[1]}: it is the host of ${text}`);
    return { origin: new URL(value).origin, rest: text.slice(opener[0].length) };
  }
  // The host ends at the first "/" after the scheme that is not inside a placeholder.
  let end = text.indexOf('://') + 3;
  for (let depth = 0; end < text.length; end++) {
    if (text.startsWith('${', end)) depth++;
    else if (text[end] === '}' && depth) depth--;
    else if (text[end] === '/' && !depth) break;
  }
  const host = new Template(text.slice(0, end));
  const missing = host.variables.filter((v) => !config[v]);
  if (missing.length) throw new Error(`connection.yaml must give connection_config.${missing[0]}: it is part of the host of ${text}`);
  return { origin: new URL(host.renderText(config)).origin, rest: text.slice(end) };
}

/**
 * Where a provider's requests go, and the same provider sending them to local stand-ins: every
 * URL template (base URL, auth URLs, absolute request paths) with its real origin replaced by the
 * one `local` gives. Returns the real origins and an override file's data: only the top-level keys,
 * syncs and actions that changed, which a TERAPI_PROVIDERS_DIR layer merges over the provider.
 */
export function pointedAt(raw: Record<string, any>, config: Record<string, string>, local: (origin: string) => string): { origins: string[]; override: Record<string, any> } {
  const origins = new Set<string>();
  const rewrite = (node: unknown, key?: string): unknown => {
    if (typeof node === 'string') {
      if (!key || !URL_KEYS.has(key) || !URL_TEMPLATE.test(node)) return node;
      const { origin, rest } = splitOrigin(node, config);
      origins.add(origin);
      return local(origin) + rest;
    }
    if (Array.isArray(node)) return node.map((v) => rewrite(v));
    if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, rewrite(v, k)]));
    return node;
  };
  const override: Record<string, any> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (INERT.has(key)) continue;
    if (key === 'syncs' || key === 'actions') {
      for (const [name, item] of Object.entries(value ?? {})) {
        const changed = rewrite(item);
        if (JSON.stringify(changed) !== JSON.stringify(item)) (override[key] ??= {})[name] = changed;
      }
    } else {
      const changed = rewrite(value);
      if (JSON.stringify(changed) !== JSON.stringify(value)) override[key] = changed;
    }
  }
  return { origins: [...origins], override };
}
