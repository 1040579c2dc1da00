#!/bin/sh
# Compiles lmvm-init (src/runtime/guest-init/init.c), PID 1 of every sandbox,
# static so that it runs in any image whatever its libc, next to the compiled
# module that mounts it (dist/src/runtime/guest-init/). Needs gcc and libc6-dev.
set -eu
cd "$(dirname "$0")/.."
src=src/runtime/guest-init/init.c
out=dist/src/runtime/guest-init/lmvm-init
mkdir -p "$(dirname "$out")"
if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
  gcc -static -O2 -Wall -Wextra -Werror -o "$out.tmp" "$src"
  mv "$out.tmp" "$out"
fi
