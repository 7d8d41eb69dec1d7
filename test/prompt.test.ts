/** The agent's prompt file: the bead, acceptance, feedback of earlier rounds, checkpoints, messages, and the finishing protocol. */
import { describe, expect, it } from 'vitest';
import { renderPrompt } from '../agents/prompt';
import { BeadSpec } from '../domain/bead';

const bead = BeadSpec.parse({
  id: 'b-login',
  title: 'Add /login',
  description: 'POST /login with a password',
  acceptance: 'curl -d ... returns 200',
});
const base = {
  bead,
  rig: 'webapp',
  runId: 'b-login/r2/a1',
  round: 2,
  attempt: 1,
  branch: 'gt/b-login',
  targetBranch: 'main',
};

describe('renderPrompt', () => {
  it('tells a polecat its bead, identity, feedback, checkpoints, messages and exactly how to finish', () => {
    const p = renderPrompt({
      ...base,
      role: 'polecat',
      feedback: ['[gates_failed] npm test: 2 failing'],
      checkpoints: ['routes done, tests next (saved by b-login/r1/a1)'],
      messages: ['use the existing session store (from mayor)'],
    });
    expect(p).toMatch(/^# Task: Add \/login\n/);
    expect(p).toContain('Run: `b-login/r2/a1` (round 2, attempt 1). Branch: `gt/b-login`; target: `main`.');
    expect(p).toContain('## Description\n\nPOST /login with a password');
    expect(p).toContain('## Acceptance\n\ncurl -d ... returns 200');
    expect(p).toContain('## Feedback from earlier rounds');
    expect(p).toContain('### Round 1\n\n[gates_failed] npm test: 2 failing');
    expect(p).toContain('## Checkpoints saved by earlier runs');
    expect(p).toContain('- routes done, tests next (saved by b-login/r1/a1)');
    expect(p).toContain('## Messages from operators\n\n- use the existing session store (from mayor)');
    expect(p).toContain('`gt checkpoint "<what is done, what is next>"`');
    expect(p).toContain('`gt inbox`');
    expect(p).toContain(
      'Run `gt done --summary "<one line about what you did>"`. Exiting without `gt done` counts as a failed attempt.',
    );
    expect(p).toContain('git fetch origin && git merge origin/main');
  });

  it('leaves out empty sections and gives a reviewer its verdict commands instead', () => {
    const p = renderPrompt({
      ...base,
      bead: BeadSpec.parse({ id: 'b-x', title: 'Tiny' }),
      role: 'reviewer',
      feedback: [],
    });
    expect(p).toMatch(/^# Review: Tiny\n/);
    for (const section of [
      '## Description',
      '## Acceptance',
      '## Feedback',
      '## Checkpoints',
      '## Messages',
      'gt done',
    ])
      expect(p).not.toContain(section);
    expect(p).toContain('`gt approve`');
    expect(p).toContain('`gt request-changes --feedback "<what must change>"`');
  });
});
