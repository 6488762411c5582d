#!/usr/bin/env bash
# tests/cuemu/cuemu-src.sh IN.cu > OUT.cpp: a .cu file as host C++ for the emulator (cuemu.h):
# each launch  k<<<grid, block, smem, stream>>>(args)  becomes
# ::cuemu::launch(grid, block, smem, stream)(k, args), and each  extern __shared__ T name[];
# a pointer to the block's shared memory. The rest is left as it is (a #line keeps the
# compiler's messages pointing into IN.cu).
set -euo pipefail
in=${1:?usage: cuemu-src.sh IN.cu}
printf '#line 1 "%s"\n' "$in"
perl -0pe '
  s{([A-Za-z_]\w*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(\s*\)}{::cuemu::launch($2)($1)}gs;
  s{([A-Za-z_]\w*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(}{::cuemu::launch($2)($1, }gs;
  s{extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w ]*?)\s+(\w+)\[\];}{$1 *$2 = ($1 *)::cuemu::smem();}g;
' "$in"
