export { beadWorkflow } from './bead';
export { mergeRequestWorkflow } from './merge-request';
export { refineryWorkflow } from './refinery';
export { escalationWorkflow } from './escalation';
export { convoyWorkflow } from './convoy';
export { dispatchGateWorkflow } from './dispatch-gate';
export { readRunLogWorkflow } from './run-log';
