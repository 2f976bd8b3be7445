#!/usr/bin/env node
/**
 * Compiles profiles/profile.schema.json into a standalone validator module,
 * dist/src/profiles/profile-validator.js (part of `npm run build:ts`). Compiling the schema
 * with ajv at run time costs a few hundred milliseconds of the event loop on the first
 * profile a process loads; the compiled module loads in a few. src/profiles/profile.ts falls
 * back to compiling when the module is missing.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv2020 = require('ajv/dist/2020').default;
const standaloneCode = require('ajv/dist/standalone').default;

const root = path.resolve(__dirname, '..');
const schema = JSON.parse(fs.readFileSync(path.join(root, 'profiles', 'profile.schema.json'), 'utf8'));
// the same options as the fallback in src/profiles/profile.ts
const ajv = new Ajv2020({ allErrors: true, strict: false, code: { source: true } });
const code = standaloneCode(ajv, ajv.compile(schema));
const out = path.join(root, 'dist', 'src', 'profiles', 'profile-validator.js');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, code);
