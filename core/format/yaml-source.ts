import jsyaml from 'js-yaml';
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Document, type Node } from 'yaml';

export interface Position {
  file: string;
  line: number;
  col: number;
}

/** A problem in a provider file, located at the key or value it is about. */
export interface SourceError extends Position {
  message: string;
}

export const formatError = (e: SourceError) => `${e.file}:${e.line}:${e.col}: ${e.message}`;

/** An alias (`*name`): the fast parser has no limit on how far aliases expand, so such files take the careful path. */
const ALIAS = /(^|[\s[{,:-])\*[^\s,\]}]/m;

/**
 * A YAML file that can say where any path in it starts. The data comes from js-yaml, about ten
 * times faster than the `yaml` package (bench/load.ts); the `yaml` document, with positions, is
 * built only when an error has to be located, or when js-yaml refuses the text, so that syntax
 * errors keep `yaml`'s precise messages.
 */
export class YamlSource {
  private parsed?: Document;
  private readonly lines = new LineCounter();
  private fast?: { data: unknown } | { error: string };

  constructor(
    readonly file: string,
    private readonly text: string,
  ) {}

  get doc(): Document {
    // uniqueKeys: a sync or action named twice is an error at the second name.
    this.parsed ??= parseDocument(this.text, { lineCounter: this.lines, uniqueKeys: true, prettyErrors: false });
    return this.parsed;
  }

  private quick(): { data: unknown } | { error: string } {
    if (!this.fast) {
      if (ALIAS.test(this.text)) this.fast = { error: 'aliases' };
      else {
        try {
          this.fast = { data: jsyaml.load(this.text, { schema: jsyaml.CORE_SCHEMA, filename: this.file }) };
        } catch (e) {
          this.fast = { error: (e as Error).message };
        }
      }
    }
    return this.fast;
  }

  syntaxErrors(): SourceError[] {
    if ('data' in this.quick()) return [];
    return this.doc.errors.map((e) => {
      const { line, col } = this.lines.linePos(e.pos[0]);
      return { file: this.file, line, col, message: e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '') };
    });
  }

  at(offset: number): Position {
    const { line, col } = this.lines.linePos(offset);
    return { file: this.file, line, col };
  }

  /**
   * The node at a path of keys and indexes, and the key node that names it. Stops at the deepest
   * node that exists, so a path into a missing key still lands near it.
   */
  find(path: readonly (string | number)[]): { key?: Node; value?: Node } {
    let value: unknown = this.doc.contents;
    let key: Node | undefined;
    for (const segment of path) {
      if (isMap(value)) {
        const pair = value.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(segment));
        if (!pair) break;
        key = pair.key as Node;
        value = pair.value;
      } else if (isSeq(value)) {
        const item = value.items[Number(segment)];
        if (item === undefined) break;
        key = undefined;
        value = item;
      } else break;
    }
    return { key, value: value as Node | undefined };
  }

  /** Where the value at `path` starts (its key's position where the value is empty). */
  valueAt(path: readonly (string | number)[]): Position {
    const { key, value } = this.find(path);
    const range = value?.range ?? key?.range;
    return this.at(range?.[0] ?? 0);
  }

  /** Where the key that names `path` starts (the value's position for a list item). */
  keyAt(path: readonly (string | number)[]): Position {
    const { key, value } = this.find(path);
    const range = key?.range ?? value?.range;
    return this.at(range?.[0] ?? 0);
  }

  toJS(): unknown {
    const quick = this.quick();
    return 'data' in quick ? quick.data : this.doc.toJS({ maxAliasCount: 100 });
  }
}

/** `/syncs/issues/request` as ['syncs', 'issues', 'request'] (JSON Pointer, RFC 6901). */
export function pointerPath(pointer: string): string[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}
