#!/bin/sh
# start a dev server on port ${PORT:-7299}
exec ~/.cache/gastown/temporal-cli-v1.5.1/temporal server start-dev --headless --port ${PORT:-7299} --ip 127.0.0.1 --ui-port $(( ${PORT:-7299} + 1000 )) --log-level warn
