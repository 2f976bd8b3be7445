/** Labels per sample, from a labels.tsv (by file name, else by position), a .npy or a .txt. */
import * as fs from 'fs';
import * as path from 'path';
import { readLabels } from '../data';
import { MpqError } from '../errors';
import { readNpy } from '../npy';

export type SampleLabels = (name: string, index: number) => number | string | undefined;

export function loadSampleLabels(file: string): SampleLabels {
  if (file.endsWith('.npy')) {
    const a = readNpy(file).data;
    return (_n, i) => (i < a.length ? a[i] : undefined);
  }
  if (file.endsWith('.txt')) {
    let lines: string[];
    try {
      lines = fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    } catch (e) {
      throw new MpqError('MPQ_BAD_INPUT', `cannot read labels '${file}': ${(e as Error).message}`);
    }
    return (_n, i) => (i < lines.length ? (/^-?\d+$/.test(lines[i]) ? Number(lines[i]) : lines[i]) : undefined);
  }
  const l = readLabels(file);
  const ordered = [...l.byFile.values()] as (number | string)[];
  return (name, i) => {
    const v = l.byFile.get(path.basename(name)) as number | string | undefined;
    return v !== undefined ? v : i < ordered.length ? ordered[i] : undefined;
  };
}
