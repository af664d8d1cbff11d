import fc from 'fast-check';
import type { Test } from 'tap';

/** fc.assert that also counts as one tap assertion. */
export function check<Ts extends [unknown, ...unknown[]]>(
  t: Test,
  property: fc.IProperty<Ts>,
  params?: fc.Parameters<Ts>,
  name = 'property holds',
): void {
  fc.assert(property, params);
  t.pass(name);
}
