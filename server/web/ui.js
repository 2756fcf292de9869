// Helpers shared by the connect UI and the dashboard (plain ES module, no build step). Text is
// only ever set as text, never as HTML: nothing a provider, an app or an end user wrote can become
// markup or script here.

/**
 * An element: `h('button', { class: 'primary', onclick: fn, disabled: true }, 'Connect')`.
 * Attributes whose value is false, null or undefined are left out; `on...` values are listeners.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/** Replaces what `parent` shows. */
export function show(parent, ...children) {
  parent.replaceChildren(...children.flat(Infinity).filter(Boolean));
}

/** Moves the keyboard's focus (and a screen reader's reading) to `element`, which need not be focusable by itself. */
export function focus(element) {
  if (!element) return;
  if (!element.matches('a[href], button, input, select, textarea, [tabindex]')) element.setAttribute('tabindex', '-1');
  element.focus();
}

/** An error answer of the API: its code and its message in words. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `the server answered HTTP ${status}`);
    this.status = status;
    this.code = body?.error ?? 'http_error';
  }
}

/**
 * A call of this server's API, relative to the page (so a public URL with a path prefix works). The
 * connect UI passes its session token, sent as Authorization: Bearer, never in a URL; the dashboard
 * relies on its HttpOnly session cookie.
 */
export async function request(path, { method = 'GET', body, token } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, { error: 'network_error', message: 'the server cannot be reached: check your connection and try again' });
  }
  const data = response.status === 204 ? undefined : await response.json().catch(() => undefined);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A provider's logo, or its name's first letter where the provider file names none (decorative: the name is beside it). */
export function logo(item) {
  if (item.logo) return h('img', { class: 'logo', src: item.logo, alt: '', width: 32, height: 32, referrerpolicy: 'no-referrer' });
  return h('span', { class: 'logo letter', 'aria-hidden': 'true' }, (item.display_name ?? '?').slice(0, 1).toUpperCase());
}
