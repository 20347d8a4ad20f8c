#!/bin/sh
# Builds beam.smp from the unpacked Debian erlang source in $1 (inside a chroot of its suite)
# the way dpkg-buildpackage runs debian/rules, up to `make emulator`. Run by
# `cargo xtask otp-debug --suite S` (xtask/src/otp_debug/suite.rs), which unpacks the source.
# $1: source tree, $2: make jobs. Logs (automake.log, configure.log, make.log) go next to it.
set -eu
tree=$1
jobs=$2
cd "$tree"
logs=$(dirname "$tree")
# dpkg-buildpackage gives debian/rules SOURCE_DATE_EPOCH but (dpkg >= 1.22) no build flags in
# the environment: the rules file sees only the flags it sets itself. Debian's own beam.smp
# shows it: the compiler flags it embeds (ERTS_EMU_CMDLINE_FLAGS) lack CPPFLAGS' -Wdate-time
# and dpkg-buildflags' CXXFLAGS. So no `dpkg-buildflags --export` here.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -STimestamp)
export SOURCE_DATE_EPOCH LC_ALL=C.UTF-8
unset CFLAGS CXXFLAGS CPPFLAGS LDFLAGS MAKEFLAGS 2>/dev/null || true
# debian/rules' own steps: automake-stamp (config.guess/sub, autoconf regeneration) and
# configure-stamp (its configure line and CFLAGS, whitespace included: the flags string is
# compiled into beam.smp, so even a trailing space changes the binary).
make -f debian/rules automake-stamp > "$logs/automake.log" 2>&1 || { tail -20 "$logs/automake.log"; exit 1; }
make -f debian/rules configure-stamp > "$logs/configure.log" 2>&1 || { tail -20 "$logs/configure.log"; exit 1; }
# The GEN_OPT_FLGS debian/rules passes to make, exactly (printf keeps trailing blanks).
GEN_OPT_FLGS=$(make -s -f debian/rules --eval 'scope-probe-gen-opt: ; @printf "[%s]" "$(GEN_OPT_FLGS)"' scope-probe-gen-opt)
GEN_OPT_FLGS=${GEN_OPT_FLGS#[}
GEN_OPT_FLGS=${GEN_OPT_FLGS%]}
echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
echo "GEN_OPT_FLGS=[$GEN_OPT_FLGS]"
grep -m1 '^  \$ \./configure\|^\$ \./configure' "$logs/configure.log" | sed 's/^ *\$ /configure: /' || true
# Debian runs `make TYPE= GEN_OPT_FLGS=...` (everything); `make emulator` builds the same
# beam.smp, then may stop on erl_call: judged by beam.smp existing.
make -j"$jobs" TYPE= GEN_OPT_FLGS="$GEN_OPT_FLGS" emulator > "$logs/make.log" 2>&1 || echo "make emulator exited non-zero (see make.log)"
ls -l "$tree/bin/x86_64-pc-linux-gnu/beam.smp"
