/**
 * The gateway also listens on a unix socket under GT_HOME, at a path that survives worker restarts. Sandboxed and
 * containerized agents (no network, or a network of their own) reach it there: GT_GATEWAY_URL=unix:<path>.
 */
import { join } from 'node:path';

export const UNIX_URL_PREFIX = 'unix:';
export const gatewaySocketDir = (gtHome: string) => join(gtHome, 'gateway');
export const gatewaySocketPath = (gtHome: string) => join(gatewaySocketDir(gtHome), 'gateway.sock');
export const unixGatewayUrl = (gtHome: string) => `${UNIX_URL_PREFIX}${gatewaySocketPath(gtHome)}`;
