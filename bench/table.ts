/**
 * The result table: one row per figure, Postern next to the direct baseline measured in the
 * same run, their ratio, and the target where there is one. Rendered as a Markdown
 * table so the same text reads in a terminal and in docs/performance.md.
 */
import type { Summary } from './stats.js';

export interface Row {
  /** What was measured, e.g. `Bulk download 1 GiB`. */
  workload: string;
  /** The door it went through: `socks5`, or a process name for per-process figures. */
  door: string;
  unit: string;
  postern: Summary;
  direct: Summary | null;
  /** Target from the issue, as text (`≥ 400 MB/s`), or null. */
  target: string | null;
  note: string;
}

/** Digits that keep three significant figures without going below units. */
export function formatNumber(value: number): string {
  const magnitude = Math.abs(value);
  const digits = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : 2;
  return value.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function formatSummary(summary: Summary, unit: string): string {
  const { median, min, max } = summary;
  return `${formatNumber(median)} ${unit} (${formatNumber(min)}–${formatNumber(max)})`;
}

/** Postern's median over the baseline's, as `0.42×`; empty without a baseline. */
export function formatRatio(row: Row): string {
  if (!row.direct || row.direct.median === 0) return '';
  return `${(row.postern.median / row.direct.median).toFixed(2)}×`;
}

const HEADERS = [
  'Workload',
  'Door',
  'Postern median (min–max)',
  'Direct median (min–max)',
  'Ratio',
  'Target',
  'Notes',
];

function cells(row: Row): string[] {
  return [
    row.workload,
    row.door,
    formatSummary(row.postern, row.unit),
    row.direct ? formatSummary(row.direct, row.unit) : '—',
    formatRatio(row) || '—',
    row.target ?? '',
    row.note,
  ];
}

/** A Markdown table with padded columns. */
export function renderTable(rows: readonly Row[]): string {
  const lines = [HEADERS, ...rows.map(cells)];
  const widths = HEADERS.map((_, column) => Math.max(...lines.map((line) => line[column]!.length)));
  const format = (line: string[]) =>
    `| ${line.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  const rule = `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`;
  return [format(lines[0]!), rule, ...lines.slice(1).map(format)].join('\n');
}
