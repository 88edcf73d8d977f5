#!/bin/sh
# Installs libsvmap (libsvmap.so, libsvmap.a, svmap.h, svmap.pc) under a
# prefix. Run `cargo build --release` at the workspace root first.
#
#   sh examples/c/install.sh [PREFIX]          (default /usr/local)
#
# SVMAP_LIB_DIR: where the built libraries are (default target/release of
# the workspace, or $CARGO_TARGET_DIR/release).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=${1:-/usr/local}
libdir=${SVMAP_LIB_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)

for f in libsvmap.so libsvmap.a; do
    if [ ! -f "$libdir/$f" ]; then
        echo "install.sh: $libdir/$f not found; run 'cargo build --release' first" >&2
        exit 1
    fi
done
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
cp "$libdir/libsvmap.so" "$libdir/libsvmap.a" "$prefix/lib/"
cp "$root/include/svmap.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" \
    "$root/svmap.pc.in" > "$prefix/lib/pkgconfig/svmap.pc"
echo "installed libsvmap $version under $prefix"
