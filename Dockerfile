# syntax=docker/dockerfile:1
# Gas Town worker + agent gateway (worker/main.ts) for a real Temporal cluster. See docs/deployment.md.
#   docker build -t gastown-worker .
# The workflow code is bundled once at build time, so every replica runs byte-identical workflow code and
# starts without webpack.

# The base of both stages. Elsewhere: the official image as pinned here. On a machine without a registry,
# scripts/compose-proof.ts passes a local Debian bookworm base with the same Node major (docs/deployment.md).
ARG NODE_IMAGE=node:20.19.5-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY . .
# The bundle must match the worker's tracing setting (the worker refuses a mismatch); the build arg is in RUN's environment.
ARG GT_OTEL_EXPORTER=none
RUN npm run build:bundle
# `gt` starts from plain-JS bundles (dist/gt-agent.cjs for the commands agents call in their runs, dist/gt-cli/ for the rest).
RUN npm run build:cli

FROM ${NODE_IMAGE}
# git: mirrors, worktrees and merges; bubblewrap: the `sandbox` agent runtime; ca-certificates: https remotes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates bubblewrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app /app
# GT_HOME holds per-host state (git mirrors, agent worktrees, run files); agents run as the unprivileged node user.
RUN mkdir -p /var/lib/gastown && chown node:node /var/lib/gastown
ENV NODE_ENV=production \
    PATH=/app/bin:$PATH \
    GT_HOME=/var/lib/gastown \
    GT_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js \
    GT_GATEWAY_HOST=0.0.0.0 \
    GT_GATEWAY_PORT=7380 \
    GT_METRICS_ADDRESS=0.0.0.0:9464 \
    GT_LOG_FORMAT=json
USER node
VOLUME /var/lib/gastown
EXPOSE 7380 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.GT_GATEWAY_PORT + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The Temporal Runtime drains the worker on SIGTERM (GT_SHUTDOWN_GRACE); give it that long before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "worker/main.ts"]
