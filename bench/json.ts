/**
 * JSON text for bench/results laid out the way the repository's formatter (Biome) lays it out,
 * so that `npm run lint`, which also checks bench/, accepts a results file as written: objects
 * one key per line, arrays on one line when they fit in 100 columns, otherwise numbers packed
 * ("fill") and anything else one per line. Fractions are rounded to 6 significant digits.
 */

const LINE_WIDTH = 100;

function isContainer(value: unknown): boolean {
  return typeof value === 'object' && value !== null;
}

function scalar(value: unknown): string {
  if (typeof value === 'number' && !Number.isInteger(value)) {
    return JSON.stringify(Number(value.toPrecision(6)));
  }
  return JSON.stringify(value) ?? 'null';
}

/** Numbers packed into lines of at most LINE_WIDTH columns. */
function fill(items: readonly string[], indent: number): string {
  const pad = ' '.repeat(indent + 2);
  const lines: string[] = [];
  let line = '';
  items.forEach((item, index) => {
    const piece = index < items.length - 1 ? `${item},` : item;
    if (line && pad.length + line.length + 1 + piece.length > LINE_WIDTH) {
      lines.push(line);
      line = piece;
    } else {
      line = line ? `${line} ${piece}` : piece;
    }
  });
  lines.push(line);
  return `[\n${lines.map((text) => pad + text).join('\n')}\n${' '.repeat(indent)}]`;
}

/**
 * `value` as it appears after `prefix` columns of its line, followed by `suffix` columns (a
 * comma) that must fit on the same line.
 */
function layout(value: unknown, indent: number, prefix: number, suffix: number): string {
  const pad = ' '.repeat(indent + 2);
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    if (!value.some(isContainer)) {
      const items = value.map(scalar);
      const flat = `[${items.join(', ')}]`;
      if (prefix + flat.length + suffix <= LINE_WIDTH) return flat;
      if (value.every((item) => typeof item === 'number')) return fill(items, indent);
    }
    const last = value.length - 1;
    const lines = value.map((item, index) => {
      const comma = index < last ? ',' : '';
      return `${pad}${layout(item, indent + 2, pad.length, comma.length)}${comma}`;
    });
    return `[\n${lines.join('\n')}\n${' '.repeat(indent)}]`;
  }
  if (isContainer(value)) {
    const entries = Object.entries(value as object).filter(([, item]) => item !== undefined);
    if (entries.length === 0) return '{}';
    const last = entries.length - 1;
    const lines = entries.map(([key, item], index) => {
      const comma = index < last ? ',' : '';
      const head = `${pad}${JSON.stringify(key)}: `;
      return `${head}${layout(item, indent + 2, head.length, comma.length)}${comma}`;
    });
    return `{\n${lines.join('\n')}\n${' '.repeat(indent)}}`;
  }
  return scalar(value);
}

/** The whole document, with a final newline. */
export function formatJson(value: unknown): string {
  return `${layout(value, 0, 0, 0)}\n`;
}
