import { badRequest } from '../errors.ts';

/**
 * Cursors over a table's increasing ids, opaque to callers: `tag` tells one kind from another (a
 * record's cursor is no operation's), and `hint` says what a caller should pass back instead.
 */
export function idCursor(tag: string, hint: string) {
  const shape = new RegExp(`^${tag}(0|[1-9][0-9]{0,15})$`);
  return {
    encode: (n: number) => Buffer.from(`${tag}${n}`).toString('base64url'),
    decode(text: string): number {
      const plain = /^[A-Za-z0-9_-]{1,24}$/.test(text) ? Buffer.from(text, 'base64url').toString() : '';
      const m = shape.exec(plain);
      if (!m) throw badRequest('invalid_cursor', `cursor is not one this server gave: ${hint}`);
      return Number(m[1]);
    },
  };
}
