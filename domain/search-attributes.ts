/**
 * Search attributes that make the town readable and searchable in the Temporal Web UI, e.g.
 * `GtKind = "bead" AND GtStatus = "in_progress"` or `GtConvoyId = "login"`.
 * `gt up` registers them on the embedded server; for a cluster see the README.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA = {
  kind: defineSearchAttributeKey('GtKind', SearchAttributeType.KEYWORD),
  rig: defineSearchAttributeKey('GtRig', SearchAttributeType.KEYWORD),
  beadId: defineSearchAttributeKey('GtBeadId', SearchAttributeType.KEYWORD),
  convoyId: defineSearchAttributeKey('GtConvoyId', SearchAttributeType.KEYWORD),
  status: defineSearchAttributeKey('GtStatus', SearchAttributeType.KEYWORD),
  runId: defineSearchAttributeKey('GtRunId', SearchAttributeType.KEYWORD),
  round: defineSearchAttributeKey('GtRound', SearchAttributeType.INT),
  /** The formula a bead runs, `name@version` (docs/formulas.md). */
  formula: defineSearchAttributeKey('GtFormula', SearchAttributeType.KEYWORD),
} as const;

export const ALL_SEARCH_ATTRIBUTES = Object.values(SA);

export type WorkflowKind = 'bead' | 'merge-request' | 'refinery' | 'convoy' | 'escalation' | 'dispatch-gate';
