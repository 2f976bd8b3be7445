/** Label files: `labels.tsv` of an image-classification set or of a text-line set. */
import * as fs from 'fs';
import { MpqError } from '../errors';

export type Labels =
  | {
      kind: 'class';
      /** file name -> class index */
      byFile: Map<string, number>;
      /** class index -> name, where the file gives names */
      classNames: Map<number, string>;
    }
  | {
      kind: 'text';
      /** file name -> text */
      byFile: Map<string, string>;
    };

const bad = (file: string, msg: string) => new MpqError('MPQ_BAD_INPUT', `${file}: ${msg}`);

/**
 * Reads a tab-separated label file. Recognised forms (the header line decides):
 * - `index  wnid  name  file` (any column order; `index` or `label` or `class`, and `file`):
 *   classification, file -> class index;
 * - `file  text`: text lines (the text is the rest of the line, spaces kept);
 * - no header, two columns `file<TAB>label`: classification when every label is an integer,
 *   else text.
 */
export function readLabels(file: string): Labels {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read labels '${file}': ${(e as Error).message}`);
  }
  const lines = text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.length > 0);
  if (lines.length === 0) throw bad(file, 'empty label file');
  const head = lines[0].split('\t').map((c) => c.trim().toLowerCase());
  const fileCol = head.indexOf('file');
  if (fileCol >= 0) {
    const body = lines.slice(1);
    const textCol = head.indexOf('text');
    if (textCol >= 0) {
      if (textCol !== head.length - 1) throw bad(file, "the 'text' column must be the last one");
      const byFile = new Map<string, string>();
      for (const [i, l] of body.entries()) {
        const cols = l.split('\t');
        if (cols.length < head.length) throw bad(file, `line ${i + 2}: expected ${head.length} columns`);
        byFile.set(cols[fileCol], cols.slice(textCol).join('\t'));
      }
      return { kind: 'text', byFile };
    }
    const idxCol = ['index', 'label', 'class'].map((n) => head.indexOf(n)).find((c) => c >= 0);
    if (idxCol === undefined) throw bad(file, `header has 'file' but no 'index', 'label', 'class' or 'text' column`);
    const nameCol = head.indexOf('name');
    const byFile = new Map<string, number>();
    const classNames = new Map<number, string>();
    for (const [i, l] of body.entries()) {
      const cols = l.split('\t');
      if (cols.length < head.length) throw bad(file, `line ${i + 2}: expected ${head.length} columns, got ${cols.length}`);
      const c = Number(cols[idxCol]);
      if (!Number.isInteger(c) || c < 0) throw bad(file, `line ${i + 2}: class index '${cols[idxCol]}' is not a non-negative integer`);
      byFile.set(cols[fileCol], c);
      if (nameCol >= 0) classNames.set(c, cols[nameCol]);
    }
    return { kind: 'class', byFile, classNames };
  }
  // headerless file<TAB>label
  const rows = lines.map((l, i) => {
    const t = l.indexOf('\t');
    if (t < 0) throw bad(file, `line ${i + 1}: expected 'file<TAB>label' (or a header line with 'file' and 'index' or 'text')`);
    return [l.slice(0, t), l.slice(t + 1)] as const;
  });
  if (rows.every(([, v]) => /^\d+$/.test(v.trim()))) {
    return { kind: 'class', byFile: new Map(rows.map(([f, v]) => [f, Number(v)])), classNames: new Map() };
  }
  return { kind: 'text', byFile: new Map(rows) };
}
