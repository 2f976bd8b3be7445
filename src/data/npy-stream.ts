/**
 * Streaming access to .npy files: the header is read once, samples are read with positioned
 * file reads of only the bytes needed (never the whole file).
 */
import * as fs from 'fs';
import { MpqError } from '../errors';

const bad = (file: string, msg: string) => new MpqError('MPQ_BAD_INPUT', `${file}: ${msg}`);

type Getter = (dv: DataView, o: number) => number;
const DTYPES: Record<string, [number, Getter]> = {
  '<f4': [4, (dv, o) => dv.getFloat32(o, true)],
  '<f8': [8, (dv, o) => dv.getFloat64(o, true)],
  '<i8': [8, (dv, o) => Number(dv.getBigInt64(o, true))],
  '<i4': [4, (dv, o) => dv.getInt32(o, true)],
  '<i2': [2, (dv, o) => dv.getInt16(o, true)],
  '<u2': [2, (dv, o) => dv.getUint16(o, true)],
  '|u1': [1, (dv, o) => dv.getUint8(o)],
  '|i1': [1, (dv, o) => dv.getInt8(o)],
  '|b1': [1, (dv, o) => dv.getUint8(o)],
};

export interface NpyHeader {
  file: string;
  shape: number[];
  descr: string;
  itemSize: number;
  /** Byte offset of the data. */
  dataOffset: number;
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
    if (got < 10 || pre.toString('latin1', 0, 6) !== '\x93NUMPY') throw bad(file, 'not a .npy file (bad magic)');
    const major = pre[6];
    const hlen = major === 1 ? pre.readUInt16LE(8) : pre.readUInt32LE(8);
    const hstart = major === 1 ? 10 : 12;
    const hb = Buffer.alloc(hlen);
    if (fs.readSync(fd, hb, 0, hlen, hstart) < hlen) throw bad(file, 'truncated header');
    const header = hb.toString('latin1');
    const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
    const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
    const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
    if (!descr || !fortran || shapeStr === undefined) throw bad(file, `cannot parse header ${JSON.stringify(header)}`);
    if (fortran === 'True') throw bad(file, 'Fortran-ordered arrays are not supported; save with np.ascontiguousarray');
    const shape = shapeStr.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
    if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(file, `bad shape (${shapeStr})`);
    const k = DTYPES[descr];
    if (!k) throw bad(file, `dtype '${descr}' is not supported (use float32 or float64)`);
    const dataOffset = hstart + hlen;
    const n = shape.reduce((a, c) => a * c, 1);
    const size = fs.fstatSync(fd).size;
    if (size < dataOffset + n * k[0]) throw bad(file, `truncated data: shape (${shape}) needs ${n * k[0]} bytes, file has ${size - dataOffset}`);
    return { file, shape, descr, itemSize: k[0], dataOffset };
  } finally {
    fs.closeSync(fd);
  }
}

function convert(h: NpyHeader, buf: Buffer, out: Float32Array, at: number, count: number): void {
  if (h.descr === '<f4') {
    // copy through an aligned view
    const bytes = new Uint8Array(out.buffer, out.byteOffset + at * 4, count * 4);
    bytes.set(buf.subarray(0, count * 4));
    return;
  }
  const get = DTYPES[h.descr][1];
  const dv = new DataView(buf.buffer, buf.byteOffset, count * h.itemSize);
  for (let i = 0; i < count; i++) out[at + i] = get(dv, i * h.itemSize);
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
