#!/bin/sh
# Puts hybox on a Kubernetes node whose CRI is containerd: the binary as /usr/local/bin/hybox with
# hybox-runc beside it (the hybox-runc binary found beside HYBOX_BINARY, the OCI runtime without
# the wasm worker, which it runs from hybox; else a link to hybox: argv[0] dispatch), the runtime
# policy as
# /etc/hybox/runtime.json (kept if one is there: it is the node admin's), and the `hybox` runtime
# handler in containerd's config.toml; then containerd is restarted
# (running pods keep running: their shims outlive containerd). Idempotent.
#
#   install.sh HYBOX_BINARY RUNTIME_POLICY [ROOT]
#
# ROOT (default /) is where the node's filesystem is: the DaemonSet (installer.yaml) mounts the
# host's / there. HYBOX_NO_RESTART=1 leaves containerd alone (and is what a dry run uses).
set -eu
bin=$1 policy=$2 root=${3:-/}
here=$(cd "$(dirname "$0")" && pwd)
conf=$root/etc/containerd/config.toml
mkdir -p "$root/usr/local/bin" "$root/etc/hybox" "$root/etc/containerd"
install -m 0755 "$bin" "$root/usr/local/bin/hybox.new"
mv "$root/usr/local/bin/hybox.new" "$root/usr/local/bin/hybox"
runc=$(dirname "$bin")/hybox-runc
if [ -f "$runc" ] && [ ! -L "$runc" ]; then
  # Replaces a link of an earlier install too (rename(2) replaces the entry, not its target).
  install -m 0755 "$runc" "$root/usr/local/bin/hybox-runc.new"
  mv "$root/usr/local/bin/hybox-runc.new" "$root/usr/local/bin/hybox-runc"
else
  ln -sfn hybox "$root/usr/local/bin/hybox-runc"
fi
[ -e "$root/etc/hybox/runtime.json" ] || install -m 0644 "$policy" "$root/etc/hybox/runtime.json"

# containerd 2.x reads config version 3; 1.6 and 1.7 read version 2 (what containerd 1.x's
# `config default` writes).
version=2
if [ -e "$conf" ] && grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*3' "$conf"; then
  version=3
fi
[ -e "$conf" ] || printf 'version = %s\n' "$version" >"$conf"
# The handler's tables go at the end of config.toml between markers (replaced on a re-install), not
# into an `imports` drop-in: containerd 1.x merges imports plugin by plugin, and a drop-in holding a
# CRI table would replace the node's whole CRI configuration.
if grep -q 'runtimes\.hybox\]' "$conf" && ! grep -q '^# BEGIN hybox' "$conf"; then
  echo "install.sh: $conf already defines a hybox runtime (not by install.sh): left as it is" >&2
  exit 1
fi
{
  sed '/^# BEGIN hybox/,/^# END hybox/d' "$conf"
  echo '# BEGIN hybox (deploy/kubernetes/install.sh)'
  cat "$here/containerd-config-v$version.toml"
  echo '# END hybox'
} >"$conf.hybox"
mv "$conf.hybox" "$conf"
if [ "${HYBOX_NO_RESTART:-0}" != 1 ]; then
  # The node's init: systemd on every distribution Kubernetes supports.
  if [ "$root" = / ]; then
    systemctl restart containerd
  else
    chroot "$root" systemctl restart containerd
  fi
fi
echo "install.sh: hybox installed under $root (containerd config version $version)" >&2
