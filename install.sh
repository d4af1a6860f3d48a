#!/usr/bin/env bash
# Installs docxy on a Linux server: the binary, a configuration and a systemd unit.
#
#   sudo ./install.sh                       # build (or take ./docxy), install, enable and start
#   ./install.sh --root /tmp/x --no-start   # install into a throwaway root, start nothing
#
# Options:
#   --root DIR        install below DIR instead of / (for images and tests)
#   --binary FILE     the docxy binary to install (default: ./docxy, built with `make build` if absent)
#   --public-url URL  set server.public_base_url in a new configuration (e.g. https://mirror.example.com)
#   --no-start        do not run systemctl
# An existing /etc/docxy/config.toml is never overwritten.
set -euo pipefail

root=/
binary=
public_url=
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --public-url) public_url=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$binary" ]; then
  binary=$here/docxy
  if [ ! -x "$binary" ]; then
    command -v go >/dev/null || { echo "install.sh: no ./docxy and no Go toolchain to build it; pass --binary FILE" >&2; exit 1; }
    (cd "$here" && make build)
  fi
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

dest() { printf '%s%s' "${root%/}" "$1"; }
install -d -m 0755 "$(dest /usr/local/bin)" "$(dest /etc/docxy)" "$(dest /etc/systemd/system)"
install -m 0755 "$binary" "$(dest /usr/local/bin/docxy)"
install -m 0644 "$here/deploy/docxy.service" "$(dest /etc/systemd/system/docxy.service)"

config=$(dest /etc/docxy/config.toml)
if [ -e "$config" ]; then
  echo "install.sh: keeping the existing $config"
else
  # The example documents every key; point the cache at systemd's CacheDirectory.
  sed -e 's|^dir = "docxy-cache"|dir = "/var/cache/docxy"|' \
      -e 's|^cache_dir = "docxy-acme"|cache_dir = "/var/lib/docxy/acme"|' \
      "$here/config.toml.example" > "$config"
  if [ -n "$public_url" ]; then
    sed -i "s|^public_base_url = \"\"|public_base_url = \"$public_url\"|" "$config"
  fi
  chmod 0644 "$config"
  echo "install.sh: wrote $config"
fi
"$(dest /usr/local/bin/docxy)" -check -config "$config"

if [ "$start" = 1 ] && [ "$root" = / ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  systemctl enable --now docxy
  echo "install.sh: docxy is running; status: systemctl status docxy; logs: journalctl -u docxy"
else
  echo "install.sh: installed below $root (not started)"
fi
