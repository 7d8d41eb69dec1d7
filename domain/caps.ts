/**
 * Caps on the text agents, repositories, forges and operators put into workflow payloads, so that no workflow input,
 * signal, update, activity result, query answer or continue-as-new can pass Temporal's 2 MB payload limit (a payload
 * over it fails the workflow task, which is retried forever: the workflow is wedged, not failed).
 *
 * Two rules, one per kind of text:
 * - text someone *sends* us (a gt done summary, a reviewer's feedback, an operator's message) is refused at the
 *   boundary with a message saying the limit (zod `.max()` in the schemas of domain/bead.ts, the gateway's body limit);
 * - text that is *ours to summarize* (conflicting paths, a gate's log, GitHub comments, feedback piling up over rounds)
 *   is shortened here, keeping what matters (the head and the tail, the newest entries) and saying what was left out.
 *
 * Sizes are in UTF-16 code units (JavaScript's string length, what zod's `.max()` counts). JSON takes at most
 * MAX_JSON_BYTES_PER_CHAR bytes for one (a control character is written as `\u00XX`), which is what the budgets below
 * are sized against. Pure and deterministic: safe in workflow code.
 */

/** Temporal's default limit on one payload (blob size). */
export const PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024;
/** The most UTF-8 bytes JSON needs for one UTF-16 code unit. */
export const MAX_JSON_BYTES_PER_CHAR = 6;

export const CAPS = {
  /** One round's feedback to a polecat: a conflict, a failed gate, a review, a pull request's comments. */
  feedback: 20_000,
  /** All the feedback a bead keeps over its rounds; it goes into every later run's input and prompt. */
  feedbackTotal: 60_000,
  /** What an older round's feedback shrinks to once the total would pass `feedbackTotal`. */
  feedbackOlder: 1_000,
  /** Conflicting paths named in a conflict outcome (the agent finds the rest with `git status`). */
  conflictPaths: 100,
  /** One path, or one name (a check, an author). */
  name: 300,
  /** One failure message carried in a workflow (an activity's error, a run's exit). */
  failure: 2_000,
  /** Checkpoint notes handed to a new run, newest first (each note is at most MAX_CHECKPOINT already). */
  checkpointsTotal: 30_000,
  /** Operator messages handed to a run or answered to `gt inbox`, newest first. */
  messagesTotal: 20_000,
  /** Why a bead ended, as a convoy keeps it for each of up to 1,000 beads (the bead's own result has the whole reason). */
  beadReason: 500,
  /** What a run's `gt done` summary is kept as in the bead's state (one line in `gt bead status`). */
  summary: 2_000,
  /** One GitHub review, comment or check description. */
  forgeBody: 2_000,
  /** All free GitHub text of one pull request snapshot together (bodies, paths, check names and details). */
  forgeTotal: 50_000,
} as const;

/** UTF-8 bytes of `s` (for a JSON text: the bytes of the payload it becomes). A lone surrogate counts as 3. */
export function utf8Bytes(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (isHighSurrogate(code) && isLowSurrogate(s.charCodeAt(i + 1))) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code: number) => code >= 0xdc00 && code <= 0xdfff;

/**
 * `s` in at most `max` characters: its head and its tail around a marker that says how much was left out (an error
 * or a log says most at its ends). Never splits a surrogate pair.
 */
export function capText(s: string, max: number): string {
  if (s.length <= max) return s;
  const marker = (omitted: number) => `\n… [${omitted} characters omitted] …\n`;
  const room = max - marker(s.length).length;
  if (room < 2) return cut(s, max);
  let headEnd = Math.ceil(room / 2);
  let tailStart = s.length - Math.floor(room / 2);
  if (isHighSurrogate(s.charCodeAt(headEnd - 1))) headEnd--;
  if (isLowSurrogate(s.charCodeAt(tailStart))) tailStart++;
  return `${s.slice(0, headEnd)}${marker(tailStart - headEnd)}${s.slice(tailStart)}`;
}

/** The first `max` characters of `s`, without a dangling half of a surrogate pair. */
function cut(s: string, max: number): string {
  const end = Math.max(0, max);
  return isHighSurrogate(s.charCodeAt(end - 1)) ? s.slice(0, end - 1) : s.slice(0, end);
}

/** The first `n` items, and how many were left out. */
export function capList<T>(items: readonly T[], n: number): { shown: T[]; more: number } {
  return { shown: items.slice(0, n), more: Math.max(0, items.length - n) };
}

/** `a, b, c … and 4997 more`: at most `n` items, each at most CAPS.name characters. */
export function listText(items: readonly string[], n: number): string {
  const { shown, more } = capList(items, n);
  const text = shown.map((i) => capText(i, CAPS.name)).join(', ');
  return more ? `${text} … and ${more} more` : text;
}

/**
 * The newest items whose text fits in `total` characters, in their original order; an item alone over `total` is
 * shortened. For notes and messages handed to a run: the latest say most about where the work is.
 */
export function keepNewest(items: readonly string[], total: number): string[] {
  const kept: string[] = [];
  let left = total;
  for (let i = items.length - 1; i >= 0 && left > 0; i--) {
    const item = items[i]!.length <= left ? items[i]! : capText(items[i]!, left);
    kept.unshift(item);
    left -= item.length;
  }
  return kept;
}

/**
 * The bead's feedback after one more round: the new entry capped at CAPS.feedback; when the total would pass
 * CAPS.feedbackTotal, older rounds shrink (oldest first) to CAPS.feedbackOlder, and then to a marker. The entry of
 * round i stays at index i - 1 (the prompt numbers rounds by position), and the newest round is always whole.
 */
export function appendFeedback(previous: readonly string[], entry: string): string[] {
  const all = [...previous, capText(entry, CAPS.feedback)];
  let total = all.reduce((n, f) => n + f.length, 0);
  // The marker is one character, so the total holds for up to CAPS.feedbackTotal - CAPS.feedback rounds (a rig allows 20).
  for (const shrink of [(f: string) => capText(f, CAPS.feedbackOlder), () => '…']) {
    for (let i = 0; i < all.length - 1 && total > CAPS.feedbackTotal; i++) {
      const shorter = shrink(all[i]!);
      if (shorter.length >= all[i]!.length) continue;
      total -= all[i]!.length - shorter.length;
      all[i] = shorter;
    }
  }
  return all;
}

/**
 * Text an agent wrote, made safe to show: terminal control sequences (ESC, the other C0 controls but tab and
 * newline, DEL, C1) are dropped, so a progress message or a gate's output cannot drive the operator's terminal when
 * `gt status`, `gt bead status` or a prompt shows it.
 */
export function printableText(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '');
}

/** `printableText` applied to every string of a JSON-like value (a gateway body). */
export function printableStrings<T>(value: T): T {
  if (typeof value === 'string') return printableText(value) as T;
  if (Array.isArray(value)) return value.map(printableStrings) as T;
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, printableStrings(v)])) as T;
  return value;
}
