#!/usr/bin/env bash
# tests/cuemu/cuemu-src.sh IN.cu > OUT.cpp: a .cu file as host C++ for the emulator (cuemu.h):
#   k<<<grid, block, smem, stream>>>(args)   ::cuemu::launch(grid, block, smem, stream)(
#                                                [](auto... x) { k(x...); }, args)
#   extern __shared__ T name[];              T *name = (T *)::cuemu::smem();  the block's
#   __shared__ T name[N];                    static T name[N];  (the blocks of a grid run one
#                                            after another: one copy serves each in turn)
#   NULL                                     nullptr (a launch's argument deduced as a pointer)
# The rest is left as it is (a #line keeps the compiler's messages pointing into IN.cu).
set -euo pipefail
in=${1:?usage: cuemu-src.sh IN.cu}
printf '#line 1 "%s"\n' "$in"
perl -0pe '
  s{([A-Za-z_]\w*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(\s*\)}{::cuemu::launch($2)([]() { $1(); })}gs;
  s{([A-Za-z_]\w*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(}{::cuemu::launch($2)([](auto... cuemu_x) { $1(cuemu_x...); }, }gs;
  s{extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w ]*?)\s+(\w+)\[\];}{$1 *$2 = ($1 *)::cuemu::smem();}g;
  s{\b__shared__\s+}{static }g;
  s{\bNULL\b}{nullptr}g;
' "$in"
