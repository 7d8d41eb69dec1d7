/** The agent's prompt file (GT_PROMPT_FILE): the bead, earlier feedback, and the exact finishing protocol. */
import type { BeadSpec } from '../domain/bead';

export interface PromptContext {
  bead: BeadSpec;
  rig: string;
  runId: string;
  role: 'polecat' | 'reviewer';
  round: number;
  attempt: number;
  branch: string;
  targetBranch: string;
  /** Feedback from earlier rounds (conflicts, failed gates, requested changes), oldest first. */
  feedback: string[];
  /** Notes earlier runs of this bead saved with `gt checkpoint`. */
  checkpoints?: string[];
}

export function renderPrompt(c: PromptContext): string {
  const parts = [
    `# ${c.role === 'polecat' ? 'Task' : 'Review'}: ${c.bead.title}`,
    '',
    `You are a ${c.role} of Gas Town working on bead \`${c.bead.id}\` in rig \`${c.rig}\`.`,
    `Run: \`${c.runId}\` (round ${c.round}, attempt ${c.attempt}). Branch: \`${c.branch}\`; target: \`${c.targetBranch}\`.`,
    '',
  ];
  if (c.bead.description) parts.push('## Description', '', c.bead.description, '');
  if (c.bead.acceptance) parts.push('## Acceptance', '', c.bead.acceptance, '');
  if (c.feedback.length) {
    parts.push('## Feedback from earlier rounds', '', 'Your previous work was sent back. Address all of this:', '');
    c.feedback.forEach((f, i) => parts.push(`### Round ${i + 1}`, '', f, ''));
  }
  if (c.checkpoints?.length) {
    parts.push('## Checkpoints saved by earlier runs', '');
    c.checkpoints.forEach((cp) => parts.push(`- ${cp}`));
    parts.push('');
  }
  if (c.role === 'polecat') {
    parts.push(
      '## When you are finished',
      '',
      `1. Commit all of your work on branch \`${c.branch}\` (uncommitted changes are lost).`,
      `2. If the target moved, merge it in first: \`git fetch origin && git merge origin/${c.targetBranch}\`.`,
      '3. Run `gt done --summary "<one line about what you did>"`. Exiting without `gt done` counts as a failed attempt.',
      '',
      'While you work, `gt progress "<what you are doing>"` tells the town you are alive; a run that reports nothing',
      'for too long is stopped and handed to another attempt. If you are stuck, `gt escalate --reason "..."`.',
    );
  } else {
    parts.push(
      '## When you are finished',
      '',
      `Your worktree is checked out (detached) at exactly the commit that would be merged into \`${c.targetBranch}\`.`,
      `Review the diff \`git diff origin/${c.targetBranch}...HEAD\` against the description and acceptance above, then either`,
      '- `gt approve`, or',
      '- `gt request-changes --feedback "<what must change>"` (the polecat of the next round gets this text verbatim).',
      '',
      'Do not commit or push: reviewers read, polecats write. Exiting without a verdict counts as a failed review attempt.',
    );
  }
  return parts.join('\n') + '\n';
}
