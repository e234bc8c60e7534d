#!/bin/sh
echo "bazel coverage is not available in servekit's offline workspace" >&2
exit 1
