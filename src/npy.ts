/** NumPy .npy reading and writing (float32; float64 and integer arrays are read as float32). */
import * as fs from 'fs';
import { MpqError } from './errors';

export interface NpyArray {
  shape: number[];
  data: Float32Array;
}

const bad = (file: string, msg: string) => new MpqError('MPQ_BAD_INPUT', `${file}: ${msg}`);

export function parseNpy(buf: Uint8Array, file = '<npy>'): NpyArray {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || b.toString('latin1', 0, 6) !== '\x93NUMPY') throw bad(file, 'not a .npy file (bad magic)');
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  if (hstart + hlen > b.length) throw bad(file, 'truncated header');
  const header = b.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) throw bad(file, `cannot parse header ${JSON.stringify(header)}`);
  if (fortran === 'True') throw bad(file, 'Fortran-ordered arrays are not supported; save with np.ascontiguousarray');
  const shape = shapeStr.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(file, `bad shape (${shapeStr})`);
  const n = shape.reduce((a, c) => a * c, 1);
  const off = hstart + hlen;
  const kinds: Record<string, [number, (dv: DataView, o: number) => number]> = {
    '<f4': [4, (dv, o) => dv.getFloat32(o, true)],
    '<f8': [8, (dv, o) => dv.getFloat64(o, true)],
    '<f2': [2, (dv, o) => dv.getUint16(o, true)],
    '<i8': [8, (dv, o) => Number(dv.getBigInt64(o, true))],
    '<i4': [4, (dv, o) => dv.getInt32(o, true)],
    '|u1': [1, (dv, o) => dv.getUint8(o)],
    '|i1': [1, (dv, o) => dv.getInt8(o)],
    '|b1': [1, (dv, o) => dv.getUint8(o)],
  };
  const k = kinds[descr];
  if (!k || descr === '<f2') throw bad(file, `dtype '${descr}' is not supported (use float32 or float64)`);
  const [size, get] = k;
  if (b.length < off + n * size) throw bad(file, `truncated data: shape (${shape}) needs ${n * size} bytes, file has ${b.length - off}`);
  let data: Float32Array;
  if (descr === '<f4' && (b.byteOffset + off) % 4 === 0) {
    data = new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + off + n * 4));
  } else {
    data = new Float32Array(n);
    const dv = new DataView(b.buffer, b.byteOffset + off, n * size);
    for (let i = 0; i < n; i++) data[i] = get(dv, i * size);
  }
  return { shape, data };
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
