import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';
import { builtinModules } from 'node:module';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

// Workflow code runs in Temporal's deterministic sandbox: Node built-ins (and the free `process` global,
// which the bundler does not catch) must never be reached from it.
const nodeBuiltins = builtinModules.flatMap((m) => [m, `node:${m}`]);

// Layers point one way: domain ← workflows ← activities ← worker ← client, with the machine-level modules (host, agents,
// codec, gateway, provisioning) beside activities. A lower layer never imports a higher one; workflows may import
// activities' types only (proxyActivities). Cycles are refused outright (import-x/no-cycle).
const layer = (files, forbidden, typesOnly = []) => ({
  files,
  rules: {
    '@typescript-eslint/no-restricted-imports': [
      'error',
      {
        patterns: [...forbidden, ...typesOnly].map((dir) => ({
          group: [`../${dir}`, `../${dir}/*`, `../../${dir}/*`],
          message: `${files[0].split('/')[0]}/ must not import ${dir}/${typesOnly.includes(dir) ? ' (types only)' : ''}: layers point one way (eslint.config.mjs).`,
          allowTypeImports: typesOnly.includes(dir),
        })),
      },
    ],
  },
});
const ABOVE_DOMAIN = [
  'workflows',
  'activities',
  'worker',
  'client',
  'host',
  'agents',
  'codec',
  'gateway',
  'provisioning',
];

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/', 'test/.artifacts/', 'bench/reports/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: { allowDefaultProject: ['*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
    },
  },
  {
    files: ['workflows/**/*.ts', 'domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Workflow code must be deterministic: no Node built-ins.',
          })),
        },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'process', message: 'Not available in the workflow sandbox.' },
        { name: 'setInterval', message: 'Use sleep() / condition().' },
      ],
    },
  },
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/parsers': importX.flatConfigs.typescript.settings['import-x/parsers'],
      'import-x/extensions': importX.flatConfigs.typescript.settings['import-x/extensions'],
      'import-x/resolver-next': [createTypeScriptImportResolver()],
    },
    rules: { 'import-x/no-cycle': 'error' },
  },
  layer(['domain/**/*.ts'], ABOVE_DOMAIN),
  // domain/ is evaluated once per workflow thread and shared by every workflow on it (workflows/preload.ts): a
  // module-level variable or collection there would carry one workflow's state into another's.
  {
    files: ['domain/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...['Program > VariableDeclaration', 'Program > ExportNamedDeclaration > VariableDeclaration'].flatMap(
          (decl) => [
            {
              selector: `${decl}[kind!="const"]`,
              message: 'domain/ is shared between workflows (workflows/preload.ts): no module-level let or var.',
            },
            {
              selector: `${decl} > VariableDeclarator > NewExpression[callee.name=/^(Map|Set|WeakMap|WeakSet|Array)$/]`,
              message: 'domain/ is shared between workflows (workflows/preload.ts): no module-level collection.',
            },
          ],
        ),
      ],
    },
  },
  layer(
    ['workflows/**/*.ts'],
    ['worker', 'client', 'host', 'agents', 'codec', 'gateway', 'provisioning'],
    ['activities'],
  ),
  layer(
    [
      'activities/**/*.ts',
      'host/**/*.ts',
      'agents/**/*.ts',
      'codec/**/*.ts',
      'gateway/**/*.ts',
      'provisioning/**/*.ts',
    ],
    ['worker', 'client'],
  ),
  layer(['worker/**/*.ts'], ['client']),
  { files: ['**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
