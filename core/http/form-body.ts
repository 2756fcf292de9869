/**
 * A request body as application/x-www-form-urlencoded fields, nested the way Stripe (and Rails,
 * PHP, qs) read them: an object's keys and an array's indexes in brackets, so
 * `{metadata: {plan: "pro"}, items: [{price: "p_1"}]}` is `metadata[plan]=pro&items[0][price]=p_1`.
 * null and undefined are left out (JSONata leaves absent inputs out the same way); booleans and
 * numbers are sent as their text, in the body's order.
 */
export function formFields(body: unknown): Record<string, string> {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new TypeError(`a form body must be an object of fields, not ${Array.isArray(body) ? 'an array' : typeof body}`);
  const out: Record<string, string> = {};
  const walk = (key: string, value: unknown) => {
    if (value === undefined || value === null) return;
    if (Array.isArray(value)) value.forEach((v, i) => walk(`${key}[${i}]`, v));
    else if (typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(`${key}[${k}]`, v);
    else out[key] = String(value);
  };
  for (const [k, v] of Object.entries(body)) walk(k, v);
  return out;
}

