/**
 * `npm run build:bundle`: bundles the workflow code once (webpack + swc) into dist/workflow-bundle.js, so production
 * workers start in milliseconds with `workflowBundle: { codePath }` instead of bundling from source at every start,
 * and every worker of a deployment runs byte-identical workflow code. Output path: argv[2] or GT_WORKFLOW_BUNDLE.
 * With GT_OTEL_EXPORTER set, the OpenTelemetry workflow interceptors are compiled in (workers must trace too, see worker/tracing.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { defaultWorkflowBundlePath } from '../worker/main';
import { workflowBundlePlugins } from '../worker/tracing';
import { workflowBundleOptions } from '../worker/worker';

const out = resolve(process.argv[2] ?? process.env.GT_WORKFLOW_BUNDLE ?? defaultWorkflowBundlePath);
const plugins = await workflowBundlePlugins();
const { code } = await bundleWorkflowCode({ ...workflowBundleOptions, plugins });
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, code);
console.log(
  `workflow bundle written to ${out} (${(code.length / 1024).toFixed(0)} KiB${plugins.length ? ', with OpenTelemetry tracing' : ''})`,
);
