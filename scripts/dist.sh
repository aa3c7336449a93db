#!/usr/bin/env bash
# Builds the release artifacts of this checkout into --out DIR (default: dist):
#   lablink-x86_64-unknown-linux-musl  static: the allocator, the container images, any Linux
#   lablink-x86_64-unknown-linux-gnu   glibc: the agent on GPU VMs (NVML is loaded at run time,
#                                      which a static musl binary cannot do)
#   lablink_<version>-1_amd64.deb      the glibc build with its systemd units
#   lablink-aarch64-unknown-linux-musl the same two for arm64 (AWS Graviton GPU instances),
#   lablink-aarch64-unknown-linux-gnu  cross-compiled with cargo-zigbuild; the glibc one
#                                      needs no newer glibc than 2.35 (Ubuntu 22.04, Debian 12)
#   lablink_<version>-1_arm64.deb      the aarch64 glibc build with its systemd units
#   lablink.cdx.json                   CycloneDX SBOM of everything compiled in (all four)
#   SHA256SUMS                         checksums of all of the above
# Needs: rustup targets x86_64-unknown-linux-musl, aarch64-unknown-linux-musl and
# aarch64-unknown-linux-gnu, musl-tools, qemu-user and libc6-arm64-cross (to run the aarch64
# builds here), cargo-deb, cargo-cyclonedx, cargo-zigbuild and zig (`scripts/dist.sh
# --install-tools` installs the cargo tools with cargo install --locked and zig from PyPI
# into a virtualenv under ~/.cache/lablink-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_CYCLONEDX_VERSION=0.5.9
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.14.1
# The glibc the aarch64 glibc build is linked against: Ubuntu 22.04's (Debian 12 has 2.36).
AARCH64_GLIBC=2.35
MAX_BYTES=$((25 * 1024 * 1024))

out=dist
install_tools=0
zig_venv="${XDG_CACHE_HOME:-$HOME/.cache}/lablink-tools/ziglang-$ZIGLANG_VERSION"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --install-tools) install_tools=1; shift ;;
    *) echo "usage: scripts/dist.sh [--out DIR] [--install-tools]" >&2; exit 2 ;;
  esac
done

if [ "$install_tools" = 1 ]; then
  cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION" \
    || cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
  cargo cyclonedx --version 2>/dev/null | grep -q "$CARGO_CYCLONEDX_VERSION" \
    || cargo install --locked cargo-cyclonedx --version "$CARGO_CYCLONEDX_VERSION"
  cargo-zigbuild --version 2>/dev/null | grep -q "$CARGO_ZIGBUILD_VERSION" \
    || cargo install --locked cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION"
  if [ "$("$zig_venv/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
    rm -rf "$zig_venv"
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
  fi
fi
for tool in cargo-deb cargo-cyclonedx cargo-zigbuild; do
  command -v "$tool" >/dev/null 2>&1 \
    || { echo "dist: $tool is missing (scripts/dist.sh --install-tools)" >&2; exit 1; }
done
if [ "$("$zig_venv/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
  echo "dist: zig $ZIGLANG_VERSION is missing from $zig_venv (scripts/dist.sh --install-tools)" >&2
  exit 1
fi
# The aarch64 builds' `lablink version` runs under qemu; the glibc one needs arm64's loader.
aarch64_sysroot=/usr/aarch64-linux-gnu
if ! command -v qemu-aarch64 >/dev/null 2>&1 || [ ! -e "$aarch64_sysroot/lib/ld-linux-aarch64.so.1" ]; then
  echo "dist: qemu-aarch64 or $aarch64_sysroot is missing (apt-get install qemu-user libc6-arm64-cross)" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
version="$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="lablink"))')"
# The commit goes into `lablink version` even when .git is absent (source tarballs).
LABLINK_GIT_COMMIT="${LABLINK_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export LABLINK_GIT_COMMIT

rm -rf "$out"
mkdir -p "$out"

# Size budget and `lablink version` of a build (run by "$@" when given: qemu for aarch64),
# then the copy into $out.
check_and_copy() {
  local target="$1" binary="$target_dir/$1/release/lablink"
  shift
  local size report
  size="$(stat -c %s "$binary")"
  if [ "$size" -ge "$MAX_BYTES" ]; then
    echo "dist: $binary is $size bytes, over the 25 MB budget" >&2
    exit 1
  fi
  report="$("$@" "$binary" version)"
  grep -qx "lablink $version" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  grep -qx "target $target" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  grep -qx "commit $LABLINK_GIT_COMMIT" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  cp "$binary" "$out/lablink-$target"
  echo "    $(numfmt --to=iec "$size") $(file -b "$binary" | cut -d, -f1-2)"
}

static() {
  file -b "$1" | grep -Eq "static(-pie)? linked|statically linked"
}

for target in x86_64-unknown-linux-musl x86_64-unknown-linux-gnu; do
  echo "==> cargo build --release --target $target"
  cargo build --release --locked --target "$target"
  check_and_copy "$target"
done

if ! static "$out/lablink-x86_64-unknown-linux-musl"; then
  echo "dist: the musl build is not statically linked" >&2
  exit 1
fi

# zig is cargo-zigbuild's C compiler and linker (ring's C and assembly too); it finds zig as
# `python3 -m ziglang`. The .2.35 suffix picks the glibc to link against.
for target in aarch64-unknown-linux-musl "aarch64-unknown-linux-gnu.$AARCH64_GLIBC"; do
  echo "==> cargo zigbuild --release --target $target"
  PATH="$zig_venv/bin:$PATH" cargo zigbuild --release --locked --target "$target"
done
check_and_copy aarch64-unknown-linux-musl qemu-aarch64
check_and_copy aarch64-unknown-linux-gnu qemu-aarch64 -L "$aarch64_sysroot"
for target in aarch64-unknown-linux-musl aarch64-unknown-linux-gnu; do
  file -b "$out/lablink-$target" | grep -q "ARM aarch64" \
    || { echo "dist: lablink-$target is not an aarch64 executable" >&2; exit 1; }
done
if ! static "$out/lablink-aarch64-unknown-linux-musl"; then
  echo "dist: the aarch64 musl build is not statically linked" >&2
  exit 1
fi
newest_glibc="$(readelf --version-info --wide "$out/lablink-aarch64-unknown-linux-gnu" \
  | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
if [ "$(printf '%s\n' "$newest_glibc" "$AARCH64_GLIBC" | sort -V | tail -n 1)" != "$AARCH64_GLIBC" ]; then
  echo "dist: the aarch64 glibc build needs glibc $newest_glibc, newer than $AARCH64_GLIBC" >&2
  exit 1
fi

echo "==> cargo deb"
cargo deb --no-build --no-strip --target x86_64-unknown-linux-gnu --output "$out/"
cargo deb --no-build --no-strip --target aarch64-unknown-linux-gnu --output "$out/"

echo "==> cargo cyclonedx"
cargo cyclonedx --format json --spec-version 1.5 --no-build-deps --target x86_64-unknown-linux-musl \
  --override-filename lablink.cdx >/dev/null
mv lablink.cdx.json "$out/lablink.cdx.json"
# One SBOM for all builds: the x86_64 dependency graph holds the aarch64 one (x86_64 adds
# raw-cpuid); this fails when a dependency appears for aarch64 only.
for target in aarch64-unknown-linux-musl aarch64-unknown-linux-gnu; do
  cargo tree --locked --target "$target" -e normal --prefix none --format '{p}' \
    | sed 's/ (.*//' | sort -u \
    | python3 -c '
import json, sys
sbom = json.load(open(sys.argv[1]))
components = sbom["components"] + [sbom["metadata"]["component"]]
listed = {c["name"] + " v" + c["version"] for c in components}
missing = [p for p in sys.stdin.read().splitlines() if p not in listed]
if missing:
    sys.exit(f"dist: {sys.argv[2]} compiles in what lablink.cdx.json does not list: {missing}")
' "$out/lablink.cdx.json" "$target"
done

(cd "$out" && sha256sum -- * >SHA256SUMS && sha256sum --check --quiet SHA256SUMS)
echo "==> $out"
ls -l "$out"
