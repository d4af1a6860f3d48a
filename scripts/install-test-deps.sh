#!/usr/bin/env bash
# Installs what the end-to-end tests need, once: Debian packages (real clients) and Go tools
# (a real upstream registry and test CA), built into a cache directory reused across runs.
set -euo pipefail

TOOLS_BIN=${TOOLS_BIN:-$HOME/.cache/docxy-tools/bin}
mkdir -p "$TOOLS_BIN"

need_apt=()
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: need root to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# name module@version; rebuilt only when the recorded version differs.
go_tools=(
  "registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
  "crane github.com/google/go-containerregistry/cmd/crane@v0.22.1"
  "pebble github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3"
  "pebble-challtestsrv github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3"
  "versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)
for entry in "${go_tools[@]}"; do
  name=${entry%% *}
  pkg=${entry#* }
  stamp="$TOOLS_BIN/.$name.version"
  if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
    continue
  fi
  echo "install-test-deps: go install $pkg"
  GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install "$pkg"
  echo "$pkg" > "$stamp"
done
