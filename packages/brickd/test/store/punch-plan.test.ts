import t from 'tap';
import { punchPlan } from '../../src/store/punch-plan.js';

const B = 1024;

t.test('what a punch does to one block file', async (t) => {
  // Block 2 holds [2048, 2048 + 1000).
  const plan = (from: number, to: number, length = 1000) =>
    punchPlan(length, 2n, B, BigInt(from), BigInt(to));
  t.same(plan(0, 2048), undefined, 'before the block');
  t.same(plan(2048 + 1000, 5000), undefined, 'past its stored bytes');
  t.same(plan(0, 9999), { kind: 'DELETE' }, 'over the whole block');
  t.same(plan(2048, 2048 + 1000), { kind: 'DELETE' }, 'exactly its bytes');
  t.same(plan(2048 + 10, 9999), { kind: 'TRUNCATE', keep: 10 }, 'its tail');
  t.same(plan(2048 + 10, 2048 + 20), { kind: 'ZERO', offset: 10, length: 10 }, 'inside');
  t.same(plan(0, 2048 + 20), { kind: 'ZERO', offset: 0, length: 20 }, 'its head');
  t.same(plan(2048 + 5, 2048 + 5), undefined, 'empty');
});
