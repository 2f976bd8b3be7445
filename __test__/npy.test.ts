import test from 'ava';
import { encodeNpy, parseNpy } from '../index';
import { MpqError } from '../index';

test('npy float32 round trip keeps shape and values', (t) => {
  const data = Float32Array.from([1.5, -2, 3.25, 0, 1e-8, 7]);
  const back = parseNpy(encodeNpy([2, 3], data));
  t.deepEqual(back.shape, [2, 3]);
  t.deepEqual(Array.from(back.data), Array.from(data));
  // header is padded so data starts 64-byte aligned, as numpy writes it
  t.is(encodeNpy([2, 3], data).length % 64, (6 * 4) % 64);
});

test('npy float64 is read as float32', (t) => {
  const header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
  const pad = 64 - ((10 + header.length + 1) % 64);
  const h = Buffer.concat([Buffer.from('\x93NUMPY\x01\x00', 'latin1'), Buffer.alloc(2)]);
  const hdr = header + ' '.repeat(pad) + '\n';
  h.writeUInt16LE(hdr.length, 8);
  const buf = Buffer.concat([h, Buffer.from(hdr, 'latin1'), Buffer.from(new Float64Array([0.5, -1, 2]).buffer)]);
  const a = parseNpy(buf);
  t.deepEqual(a.shape, [3]);
  t.deepEqual(Array.from(a.data), [0.5, -1, 2]);
});

test('bad npy files give MPQ_BAD_INPUT', (t) => {
  for (const b of [Buffer.from('nope'), encodeNpy([10], new Float32Array(10)).subarray(0, 100)]) {
    const e = t.throws(() => parseNpy(b), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_INPUT');
  }
});
