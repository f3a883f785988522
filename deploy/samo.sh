#!/bin/sh
# `samo` in the Triton image, where only `samo build-engines` is installed: the image holds the samo core,
# typer and tritonclient (locks/triton-python-backend.txt), not the gateway or export roles.
if [ "$1" != "build-engines" ]; then
    echo "samo: only \`samo build-engines\` runs in this image" >&2
    exit 2
fi
shift
exec python3 -m samo_cli.engines "$@"
