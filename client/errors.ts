/** A user-facing failure: the CLI prints its message as the one-line reason and exits non-zero. */
export class UserError extends Error {}
