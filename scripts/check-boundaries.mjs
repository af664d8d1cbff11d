#!/usr/bin/env node
// Import boundaries: brickd and mount never import each other; both may import
// proto and coord (the etcd control-plane client); proto imports no sibling.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const rules = {
  'packages/brickd': ['@dunix/mount', 'packages/mount'],
  'packages/mount': ['@dunix/brickd', 'packages/brickd'],
  'packages/proto': [
    '@dunix/mount',
    '@dunix/brickd',
    '@dunix/coord',
    'packages/mount',
    'packages/brickd',
    'packages/coord',
  ],
  'packages/coord': ['@dunix/mount', '@dunix/brickd', 'packages/mount', 'packages/brickd'],
};
let bad = 0;
function walk(dir, forbidden) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, forbidden);
    else if (/\.(c|m)?ts$/.test(name)) {
      const src = readFileSync(p, 'utf8');
      for (const m of src.matchAll(/from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
        const spec = m[1] ?? m[2];
        if (forbidden.some((f) => spec.includes(f) || spec.includes(f.replace('packages/', '../')))) {
          console.error(`${p}: imports ${spec}, which crosses a package boundary`);
          bad++;
        }
      }
    }
  }
}
for (const [dir, forbidden] of Object.entries(rules)) walk(dir, forbidden);
if (bad) process.exit(1);
console.log('import boundaries: ok');
