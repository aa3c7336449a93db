#!/usr/bin/env bash
# Builds the release artifacts of this checkout into --out DIR (default: dist):
#   lablink-x86_64-unknown-linux-musl  static: the allocator, the container images, any Linux
#   lablink-x86_64-unknown-linux-gnu   glibc: the agent on GPU VMs (NVML is loaded at run time,
#                                      which a static musl binary cannot do)
#   lablink_<version>-1_amd64.deb      the glibc build with its systemd units
#   lablink.cdx.json                   CycloneDX SBOM of everything compiled in
#   SHA256SUMS                         checksums of all of the above
# Needs: rustup target x86_64-unknown-linux-musl, musl-tools, cargo-deb, cargo-cyclonedx
# (`scripts/dist.sh --install-tools` installs the last two with cargo install --locked).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_CYCLONEDX_VERSION=0.5.9
MAX_BYTES=$((25 * 1024 * 1024))

out=dist
install_tools=0
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
fi
for tool in deb cyclonedx; do
  cargo "$tool" --version >/dev/null 2>&1 \
    || { echo "dist: cargo-$tool is missing (scripts/dist.sh --install-tools)" >&2; exit 1; }
done

target_dir="${CARGO_TARGET_DIR:-target}"
version="$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="lablink"))')"
# The commit goes into `lablink version` even when .git is absent (source tarballs).
LABLINK_GIT_COMMIT="${LABLINK_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export LABLINK_GIT_COMMIT

rm -rf "$out"
mkdir -p "$out"

for target in x86_64-unknown-linux-musl x86_64-unknown-linux-gnu; do
  echo "==> cargo build --release --target $target"
  cargo build --release --locked --target "$target"
  binary="$target_dir/$target/release/lablink"
  size="$(stat -c %s "$binary")"
  if [ "$size" -ge "$MAX_BYTES" ]; then
    echo "dist: $binary is $size bytes, over the 25 MB budget" >&2
    exit 1
  fi
  report="$("$binary" version)"
  grep -qx "lablink $version" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  grep -qx "target $target" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  grep -qx "commit $LABLINK_GIT_COMMIT" <<<"$report" || { echo "dist: $binary reports: $report" >&2; exit 1; }
  cp "$binary" "$out/lablink-$target"
  echo "    $(numfmt --to=iec "$size") $(file -b "$binary" | cut -d, -f1-2)"
done

if ! file -b "$out/lablink-x86_64-unknown-linux-musl" | grep -Eq "static(-pie)? linked|statically linked"; then
  echo "dist: the musl build is not statically linked" >&2
  exit 1
fi

echo "==> cargo deb"
cargo deb --no-build --no-strip --target x86_64-unknown-linux-gnu --output "$out/"

echo "==> cargo cyclonedx"
cargo cyclonedx --format json --spec-version 1.5 --no-build-deps --target x86_64-unknown-linux-musl \
  --override-filename lablink.cdx >/dev/null
mv lablink.cdx.json "$out/lablink.cdx.json"

(cd "$out" && sha256sum -- * >SHA256SUMS && sha256sum --check --quiet SHA256SUMS)
echo "==> $out"
ls -l "$out"
