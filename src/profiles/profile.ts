/**
 * Hardware profiles: JSON files validated against profiles/profile.schema.json. Built-ins ship
 * in the package's profiles/ folder and are listed by `mpq profiles`.
 */
import * as fs from 'fs';
import * as path from 'path';
import Ajv2020 from 'ajv/dist/2020';
import { MpqError } from '../errors';

export interface Candidate {
  a: number;
  w: number;
}

/** Quantization scheme options (DESIGN.md section 2 unless the profile says otherwise). */
export interface Scheme {
  per_channel?: boolean;
  weights_symmetric?: boolean;
  activations_symmetric?: boolean;
  narrow_range?: boolean;
  /** 8-bit weights limited to [-63, 63] inside int8 storage (runtimes whose int8 kernels saturate). */
  reduce_range?: boolean;
}

/** Scheme values the quantizer implements; any other value is refused rather than ignored. */
const SCHEME_SUPPORTED: Record<string, boolean[]> = {
  per_channel: [true],
  weights_symmetric: [true],
  activations_symmetric: [false],
  narrow_range: [true],
  reduce_range: [true, false],
};

export interface Profile {
  name: string;
  description?: string;
  candidates: Candidate[];
  ops?: Record<string, { a?: number[]; w?: number[] }>;
  scheme?: Scheme;
  ties?: { op: string; inputs?: 'all' }[];
  cost?: { metric?: 'bops' | 'latency'; latency?: Record<string, Record<string, number>>; conversion?: number };
}

const DIR = path.resolve(__dirname, '..', '..', '..', 'profiles');
export const SCHEMA_FILE = path.join(DIR, 'profile.schema.json');

let validator: ((x: unknown) => boolean) & { errors?: { instancePath: string; message?: string; params: Record<string, unknown> }[] | null } | undefined;

/** The validator `npm run build:ts` compiled from the schema (scripts/profile-validator.js), if built. */
function compiledValidator(): typeof validator {
  const file = path.join(__dirname, 'profile-validator.js');
  if (!fs.existsSync(file)) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const m = require(file) as { default?: typeof validator } & typeof validator;
  return m.default ?? m;
}

function validate(p: unknown, where: string): Profile {
  validator ??= compiledValidator() ?? new Ajv2020({ allErrors: true, strict: false }).compile(JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')));
  if (!validator(p)) {
    const msgs = (validator.errors ?? []).map((e) => {
      const field = e.instancePath ? e.instancePath.slice(1).replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.') : '(top level)';
      const extra = e.params?.additionalProperty ? ` '${e.params.additionalProperty}'` : e.params?.allowedValues ? ` (${(e.params.allowedValues as unknown[]).join(', ')})` : '';
      return `${field}: ${e.message}${extra}`;
    });
    throw new MpqError('MPQ_BAD_INPUT', `invalid profile ${where}: ${msgs.join('; ')}`);
  }
  const prof = p as Profile;
  const seen = new Set<string>();
  prof.candidates.forEach((c, i) => {
    const k = `${c.a}/${c.w}`;
    if (seen.has(k)) throw new MpqError('MPQ_BAD_INPUT', `invalid profile ${where}: candidates[${i}]: W${c.w}A${c.a} is listed twice`);
    seen.add(k);
  });
  if (prof.ties?.length) {
    // refused rather than ignored: a tie changes which configurations are allowed
    throw new MpqError('MPQ_BAD_INPUT', `invalid profile ${where}: ties (${prof.ties.map((t) => t.op).join(', ')}) are not implemented yet: the search would treat the tied inputs as independent groups; remove 'ties' to search without them`);
  }
  for (const [k, v] of Object.entries(prof.scheme ?? {})) {
    if (!SCHEME_SUPPORTED[k].includes(v)) {
      throw new MpqError('MPQ_BAD_INPUT', `invalid profile ${where}: scheme.${k} = ${v} is not implemented (only ${SCHEME_SUPPORTED[k].join(' or ')}); remove it to get the default`);
    }
  }
  return prof;
}

export function builtinProfiles(): Profile[] {
  return fs
    .readdirSync(DIR)
    .filter((f) => f.endsWith('.json') && f !== 'profile.schema.json')
    .map((f) => validate(JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')), f))
    .sort((a, b) => (a.name === 'default' ? -1 : b.name === 'default' ? 1 : a.name.localeCompare(b.name)));
}

/** A built-in profile by name, or a profile file. */
export function loadProfile(spec = 'default'): Profile {
  const builtin = builtinProfiles().find((p) => p.name === spec);
  if (builtin) return builtin;
  if (!fs.existsSync(spec)) {
    throw new MpqError('MPQ_BAD_INPUT', `profile '${spec}' is neither a built-in (${builtinProfiles().map((p) => p.name).join(', ')}) nor a file`);
  }
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(spec, 'utf8'));
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read profile '${spec}': ${(e as Error).message}`);
  }
  return validate(j, `'${spec}'`);
}

export const candKey = (c: Candidate) => `W${c.w}A${c.a}`;

/** Candidates a set of ops allows (the intersection of their restrictions). */
export function allowedCandidates(p: Profile, ops: Iterable<string>): Candidate[] {
  let cands = p.candidates.slice();
  for (const op of ops) {
    const r = p.ops?.[op];
    if (!r) continue;
    cands = cands.filter((c) => (!r.a || r.a.includes(c.a)) && (!r.w || r.w.includes(c.w)));
  }
  return cands;
}
