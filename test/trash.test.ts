/**
 * activities/trash.ts: a discarded tree is gone from its path at once and deleted in the background; leftovers of a
 * process that died go with the next discard into the same trash.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { discardTree, trashEmptied } from '../activities/trash';

const dir = () => mkdtempSync(join(tmpdir(), 'gt-trash-'));

/** A tree of `files` files in a few directories. */
function tree(at: string, files: number): string {
  for (let i = 0; i < files; i++) {
    mkdirSync(join(at, `d${i % 7}`, `e${i % 3}`), { recursive: true });
    writeFileSync(join(at, `d${i % 7}`, `e${i % 3}`, `f${i}`), `${i}\n`);
  }
  return at;
}

it('moves a tree out of its path at once and deletes it in the background', async () => {
  const root = dir();
  const trash = join(root, 'trash');
  const path = tree(join(root, 'candidates', 'mr-1'), 500);
  discardTree(path, trash);
  // Nothing at the path when discardTree returns: a tree can be built there again at once.
  expect(existsSync(path)).toBe(false);
  mkdirSync(path);
  expect(readdirSync(trash)).toHaveLength(1);
  await trashEmptied();
  expect(readdirSync(trash)).toEqual([]);
  expect(readdirSync(path)).toEqual([]);
});

it('takes a path with nothing there as done', async () => {
  const root = dir();
  discardTree(join(root, 'never-made'), join(root, 'trash'));
  await trashEmptied();
  expect(readdirSync(join(root, 'trash'))).toEqual([]);
});

it('deletes what an earlier process left in the trash with its first discard there', async () => {
  const root = dir();
  const trash = join(root, 'trash');
  // What a worker killed mid-removal leaves: trees renamed into the trash, never deleted.
  tree(join(trash, 'q.git-left-1'), 20);
  tree(join(trash, 'mr-9-left-2'), 20);
  discardTree(tree(join(root, 'quarantine', 'q.git'), 5), trash);
  await trashEmptied();
  expect(readdirSync(trash)).toEqual([]);
});
