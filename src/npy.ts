/** NumPy .npy reading and writing (float32; float64 and integer arrays are read as float32). */
import * as fs from 'fs';
import { MpqError } from './errors';

export interface NpyArray {
  shape: number[];
  data: Float32Array;
}

const bad = (file: string, msg: string) => new MpqError('MPQ_BAD_INPUT', `${file}: ${msg}`);

type Getter = (dv: DataView, o: number) => number;
/** Element types read from .npy files (as float32): byte size and reader. */
export const NPY_DTYPES: Readonly<Record<string, [number, Getter]>> = {
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

export interface NpyLayout {
  shape: number[];
  descr: string;
  itemSize: number;
  /** Byte offset of the data. */
  dataOffset: number;
}

/** Total header size from the first 12 bytes (magic, version, header length). */
export function npyHeaderSize(pre: Uint8Array, file = '<npy>', fileSize = Infinity): number {
  const b = Buffer.from(pre.buffer, pre.byteOffset, pre.byteLength);
  if (b.length < 10 || b.toString('latin1', 0, 6) !== '\x93NUMPY') throw bad(file, 'not a .npy file (bad magic)');
  const major = b[6];
  if (major !== 1 && major !== 2 && major !== 3) throw bad(file, `.npy format version ${major} is not supported (1, 2 or 3)`);
  if (major !== 1 && b.length < 12) throw bad(file, 'truncated header');
  const len = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const size = (major === 1 ? 10 : 12) + len;
  // checked before anything of that size is allocated (a v2 header may claim 4 GiB)
  if (size > fileSize) throw bad(file, `header length ${len} is larger than the file (${fileSize} bytes); the file is truncated or not a .npy file`);
  return size;
}

/** Parses a .npy header (`head` holds at least the whole header). */
export function parseNpyHeader(head: Uint8Array, file = '<npy>'): NpyLayout {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  const dataOffset = npyHeaderSize(b, file, b.length);
  const hstart = b[6] === 1 ? 10 : 12;
  if (dataOffset > b.length) throw bad(file, 'truncated header');
  const header = b.toString('latin1', hstart, dataOffset);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) throw bad(file, `cannot parse header ${JSON.stringify(header)}`);
  if (fortran === 'True') throw bad(file, 'Fortran-ordered arrays are not supported; save with np.ascontiguousarray');
  const shape = shapeStr.split(',').map((x) => x.trim()).filter(Boolean).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(file, `bad shape (${shapeStr})`);
  const k = NPY_DTYPES[descr];
  if (!k) throw bad(file, `dtype '${descr}' is not supported (use float32 or float64)`);
  return { shape, descr, itemSize: k[0], dataOffset };
}

/** Converts `count` elements of raw .npy data to float32, into `out` at element `at`. */
export function npyToFloat32(descr: string, raw: Uint8Array, out: Float32Array, at: number, count: number): void {
  if (descr === '<f4') {
    new Uint8Array(out.buffer, out.byteOffset + at * 4, count * 4).set(raw.subarray(0, count * 4));
    return;
  }
  const [size, get] = NPY_DTYPES[descr];
  const dv = new DataView(raw.buffer, raw.byteOffset, count * size);
  for (let i = 0; i < count; i++) out[at + i] = get(dv, i * size);
}

export function parseNpy(buf: Uint8Array, file = '<npy>'): NpyArray {
  const h = parseNpyHeader(buf, file);
  const n = h.shape.reduce((a, c) => a * c, 1);
  if (buf.length < h.dataOffset + n * h.itemSize) {
    throw bad(file, `truncated data: shape (${h.shape}) needs ${n * h.itemSize} bytes, file has ${buf.length - h.dataOffset}`);
  }
  const data = new Float32Array(n);
  npyToFloat32(h.descr, buf.subarray(h.dataOffset), data, 0, n);
  return { shape: h.shape, data };
}

export function readNpy(file: string): NpyArray {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read '${file}': ${(e as Error).message}`);
  }
  return parseNpy(buf, file);
}

export function encodeNpy(shape: readonly number[], data: Float32Array): Buffer {
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const h = Buffer.alloc(10);
  h.write('\x93NUMPY', 0, 'latin1');
  h[6] = 1;
  h[7] = 0;
  h.writeUInt16LE(header.length, 8);
  return Buffer.concat([h, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}
