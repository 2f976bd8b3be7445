/**
 * Streaming access to .npy files: the header is read once, samples are read with positioned
 * file reads of only the bytes needed (never the whole file).
 */
import * as fs from 'fs';
import { MpqError } from '../errors';
import { npyHeaderSize, NpyLayout, npyToFloat32, parseNpyHeader } from '../npy';

const bad = (file: string, msg: string) => new MpqError('MPQ_BAD_INPUT', `${file}: ${msg}`);

export interface NpyHeader extends NpyLayout {
  file: string;
}

/** Reads and checks the header of a .npy file (a few hundred bytes). */
export function readNpyHeader(file: string): NpyHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read '${file}': ${(e as Error).message}`);
  }
  try {
    const pre = Buffer.alloc(12);
    const got = fs.readSync(fd, pre, 0, 12, 0);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw bad(file, 'not a regular file');
    const total = st.size;
    const size = npyHeaderSize(pre.subarray(0, got), file, total);
    const head = Buffer.alloc(size);
    if (fs.readSync(fd, head, 0, size, 0) < size) throw bad(file, 'truncated header');
    const h = parseNpyHeader(head, file);
    const n = h.shape.reduce((a, c) => a * c, 1);
    if (total < h.dataOffset + n * h.itemSize) throw bad(file, `truncated data: shape (${h.shape}) needs ${n * h.itemSize} bytes, file has ${total - h.dataOffset}`);
    return { file, ...h };
  } finally {
    fs.closeSync(fd);
  }
}

function convert(h: NpyHeader, buf: Buffer, out: Float32Array, at: number, count: number): void {
  npyToFloat32(h.descr, buf, out, at, count);
}

/**
 * Reads rows `rows` (indices along the leading axis) of `h` into `out` starting at element
 * `at`; consecutive rows are read with one file read.
 */
export function readNpyRows(h: NpyHeader, rows: number[], out: Float32Array, at = 0): void {
  const rowLen = h.shape.slice(1).reduce((a, c) => a * c, 1);
  const rowBytes = rowLen * h.itemSize;
  const fd = fs.openSync(h.file, 'r');
  try {
    let i = 0;
    while (i < rows.length) {
      let j = i + 1;
      while (j < rows.length && rows[j] === rows[j - 1] + 1) j++;
      const n = j - i;
      const buf = Buffer.alloc(n * rowBytes);
      const got = fs.readSync(fd, buf, 0, buf.length, h.dataOffset + rows[i] * rowBytes);
      if (got < buf.length) throw bad(h.file, 'file changed or truncated while reading');
      convert(h, buf, out, at + i * rowLen, n * rowLen);
      i = j;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the whole array of a (small) .npy file into `out` at element `at`. */
export function readNpyAll(h: NpyHeader, out: Float32Array, at = 0): void {
  const n = h.shape.reduce((a, c) => a * c, 1);
  const buf = Buffer.alloc(n * h.itemSize);
  const fd = fs.openSync(h.file, 'r');
  try {
    if (fs.readSync(fd, buf, 0, buf.length, h.dataOffset) < buf.length) throw bad(h.file, 'file changed or truncated while reading');
  } finally {
    fs.closeSync(fd);
  }
  convert(h, buf, out, at, n);
}
