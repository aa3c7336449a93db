#!/usr/bin/env bash
# Builds the documentation site (mdBook, docs/book.toml) into --out DIR (default:
# target/book, never committed) and checks every link between its pages and every anchor,
# offline: LinkChecker follows the built HTML and reads no http(s) address.
# Exit status non-zero on a build error or any broken internal link or anchor.
# Needs mdBook 0.5.4 and Debian's linkchecker (`scripts/book.sh --install-tools` installs
# mdBook with cargo install --locked into ~/.cargo/bin, reused when the version matches,
# and linkchecker with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4

out=target/book
install_tools=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --install-tools) install_tools=1; shift ;;
    *) echo "usage: scripts/book.sh [--out DIR] [--install-tools]" >&2; exit 2 ;;
  esac
done

if [ "$install_tools" = 1 ]; then
  mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION" \
    || cargo install --locked mdbook --version "$MDBOOK_VERSION"
  if ! command -v linkchecker >/dev/null 2>&1; then
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends linkchecker
  fi
fi
mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION" \
  || { echo "book: mdBook $MDBOOK_VERSION is missing (scripts/book.sh --install-tools)" >&2; exit 1; }
command -v linkchecker >/dev/null 2>&1 \
  || { echo "book: linkchecker is missing (scripts/book.sh --install-tools)" >&2; exit 1; }

mkdir -p "$out"
out="$(cd "$out" && pwd)"
find "$out" -mindepth 1 -delete
log="$(mktemp)"
rc="$(mktemp)"
# LinkChecker run as root switches to the user nobody, who must reach every page: the links
# are checked in a world-readable copy, since the output folder may lie in a private home
# (CI's default target folder is under /root, mode 0700).
site="$(mktemp -d)"
trap 'rm -rf "$log" "$rc" "$site"' EXIT
echo "==> mdbook build docs --dest-dir $out"
mdbook build docs --dest-dir "$out" 2>&1 | tee "$log"
# A warning is text lost from a page, e.g. `<host>` outside backticks read as an HTML tag.
if grep -q ' WARN ' "$log"; then
  echo "book: mdBook warned (above); write such text as \`<host>\` or \\<host>" >&2
  exit 1
fi

# Every page is a start: the sidebar is drawn by JavaScript, which LinkChecker does not run.
# Addresses outside the book (http, https, mailto) are left alone; a file: link that
# leaves the book is still checked, and fails when the file is not there.
cat >"$rc" <<'EOF'
[filtering]
checkextern=1
ignore=
  ^https?:
  ^mailto:
  /print\.html
[AnchorCheck]
EOF
chmod a+r "$rc"
cp -r "$out/." "$site/"
chmod -R a+rX "$site"
# Left out: 404.html, served for any missing address, so its links start from the site's
# root (`site-url`), not from where the file lies; and print.html, every chapter again on one
# page with the same links (checking each anchor there again took minutes).
mapfile -t pages < <(cd "$site" && find . -name '*.html' ! -path ./404.html ! -path ./print.html | sort)
echo "==> linkchecker: ${#pages[@]} page(s), internal links and anchors"
(cd "$site" && linkchecker --config "$rc" --no-status "${pages[@]}")
echo "book: $out/index.html"
