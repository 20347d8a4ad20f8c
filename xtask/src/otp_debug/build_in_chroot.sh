#!/bin/sh
# Builds beam.smp from the unpacked Debian erlang source in $1 (inside a chroot) the way
# dpkg-buildpackage + debian/rules would, up to `make emulator`. Run by `cargo xtask otp-debug
# --suite S` (xtask/src/otp_debug.rs), which unpacks the source there first.
# $1: source tree, $2: make jobs. Writes configure.log and make.log next to the tree.
set -eu
tree=$1
jobs=$2
cd "$tree"
logs=$(dirname "$tree")
# dpkg-buildpackage exports dpkg-buildflags' values (CPPFLAGS, CXXFLAGS with -ffile-prefix-map
# of this directory, LDFLAGS -z relro...) and SOURCE_DATE_EPOCH; debian/rules then overrides CFLAGS
# for configure and passes GEN_OPT_FLGS to make. Reproduce the same environment.
eval "$(dpkg-buildflags --export=sh)"
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -STimestamp)
export SOURCE_DATE_EPOCH LC_ALL=C.UTF-8 HOME="$tree/debian"
# debian/rules' own values, expanded by make itself (no guessing of its conditionals).
rules_var() { make -s -f debian/rules --eval "scope-probe-print-%: ; @echo \$(\$*)" "scope-probe-print-$1"; }
CFLAGS=$(rules_var CFLAGS)
GEN_OPT_FLGS=$(rules_var GEN_OPT_FLGS)
export CFLAGS
# The configure command line of the configure-stamp target, variables expanded (dry run).
flags=$(make -s -n -f debian/rules configure-stamp | sed -n '/\.\/configure/,/^[^\t ]*$/p' \
  | tr -d '\\' | tr -s ' \t\n' '   ' | sed -e 's/.*\.\/configure //' -e 's/#.*//')
echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
echo "CFLAGS=$CFLAGS"
echo "CXXFLAGS=$CXXFLAGS"
echo "CPPFLAGS=$CPPFLAGS"
echo "LDFLAGS=$LDFLAGS"
echo "GEN_OPT_FLGS=$GEN_OPT_FLGS"
echo "configure $flags"
# shellcheck disable=SC2086
./configure $flags > "$logs/configure.log" 2>&1 || { tail -20 "$logs/configure.log"; exit 1; }
# `make emulator` builds beam.smp, then may stop on erl_call: judged by beam.smp existing.
make -j"$jobs" GEN_OPT_FLGS="$GEN_OPT_FLGS" emulator > "$logs/make.log" 2>&1 || echo "make emulator exited non-zero (see make.log)"
ls -l "$tree/bin/x86_64-pc-linux-gnu/beam.smp"
