#!/usr/bin/env bash
# The default scenarios of tests/vm/run, executed INSIDE the test VM (as root, in the overlay of the
# host's root, with the guest's own cgroup2 at /sys/fs/cgroup). Never run this on a host: `smoke`
# creates and kills cgroups. Usage: guest.sh prep REPO | kernel | smoke | doctor HYBOX_BINARY |
# rootless CMD... (run CMD as uid 65534 in a delegated subtree) | rootless-smoke
set -euo pipefail

if [ ! -e /run/hybox-vm ] || [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
  echo "guest.sh: refusing to run outside the hybox test VM (no pure cgroup2 at /sys/fs/cgroup)" >&2
  exit 2
fi

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
expect() { # expect FILE VALUE: the first line of FILE is VALUE
  local got
  got=$(head -n 1 "$1")
  [ "$got" = "$2" ] || fail "$1 = '$got', expected '$2'"
  echo "  $1 = $got"
}
field() { # field FILE KEY: the value of "KEY value" in a flat-keyed cgroup file
  awk -v k="$2" '$1 == k { print $2 }' "$1"
}

kernel() {
  echo "kernel: $(uname -r)"
  case "$(uname -r)" in 6.1.*) ;; *) fail "expected a 6.1 kernel" ;; esac
  local c
  c=$(cat /sys/fs/cgroup/cgroup.controllers)
  echo "cgroup2 controllers: $c"
  for want in memory cpu pids; do
    [[ " $c " == *" $want "* ]] || fail "controller $want missing"
  done
  grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || fail "cgroup2 not mounted at /sys/fs/cgroup"
  if awk '$3 == "cgroup" { found = 1 } END { exit !found }' /proc/mounts; then
    fail "a cgroup v1 hierarchy is mounted"
  fi
  echo "lsm: $(cat /sys/kernel/security/lsm 2>/dev/null || echo '?')"
  # The native backend needs user, mount and pid namespaces; a chrooted harness would lose them.
  unshare -Urmpf --mount-proc true || fail "cannot create user+mount+pid namespaces"
  echo "namespaces: user, mount, pid ok"
}

smoke() {
  local top=/sys/fs/cgroup/hybox-vm-smoke leaf hog pid st
  leaf=$top/leaf
  rmdir "$leaf" "$top" 2>/dev/null || true
  echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
  mkdir "$top"
  echo "+memory +pids +cpu" >"$top/cgroup.subtree_control"
  mkdir "$leaf"
  expect "$leaf/cgroup.controllers" "cpu memory pids"

  # The no-internal-process rule: a cgroup with a member process cannot enable controllers for
  # children (cgroup-v2.rst, "No Internal Process Constraint").
  sleep 30 &
  pid=$!
  echo "$pid" >"$leaf/cgroup.procs"
  if echo "+memory" >"$leaf/cgroup.subtree_control" 2>/dev/null; then
    fail "enabling +memory under a populated cgroup succeeded"
  fi
  echo "  no-internal-process rule: enabling +memory under a populated leaf refused"
  # cgroup.kill (5.14+): kills every member; the cgroup becomes unpopulated.
  echo 1 >"$leaf/cgroup.kill"
  st=0
  wait "$pid" || st=$?
  [ "$st" = 137 ] || fail "cgroup.kill: sleep exited with $st, expected 137 (SIGKILL)"
  expect "$leaf/cgroup.procs" ""
  [ "$(field "$leaf/cgroup.events" populated)" = 0 ] || fail "leaf still populated after cgroup.kill"
  echo "  cgroup.kill: member SIGKILLed, leaf unpopulated"

  # Limits, read back in the kernel's canonical form.
  echo 32M >"$leaf/memory.max"
  expect "$leaf/memory.max" 33554432
  echo 0 >"$leaf/memory.swap.max"
  expect "$leaf/memory.swap.max" 0
  echo 1 >"$leaf/memory.oom.group"
  expect "$leaf/memory.oom.group" 1
  echo 16 >"$leaf/pids.max"
  expect "$leaf/pids.max" 16
  echo "50000 100000" >"$leaf/cpu.max"
  expect "$leaf/cpu.max" "50000 100000"
  [ -r "$leaf/memory.peak" ] || fail "memory.peak missing (needs Linux 5.19+)"
  [ -r "$leaf/cpu.stat" ] || fail "cpu.stat missing"

  # Memory limit: a hog that touches 128 MiB under 32M is OOM-killed; memory.events counts it.
  hog=$(dirname "$0")/../../examples/out/native/alloc
  st=0
  if [ -x "$hog" ]; then
    bash -c 'echo $$ >"$1"/cgroup.procs && exec "$2" 128' _ "$leaf" "$hog" || st=$?
  else
    # Without the example guests: tail buffers a newline-less stream in memory.
    bash -c 'echo $$ >"$1"/cgroup.procs && head -c 128M /dev/zero | tail -n 1 >/dev/null' _ "$leaf" || st=$?
  fi
  [ "$st" != 0 ] || fail "the memory hog survived a 32M limit"
  local oom_kill peak
  oom_kill=$(field "$leaf/memory.events" oom_kill)
  [ "${oom_kill:-0}" -ge 1 ] || fail "memory.events oom_kill = '${oom_kill:-}', expected >= 1"
  peak=$(cat "$leaf/memory.peak")
  [ "$peak" -gt $((16 << 20)) ] && [ "$peak" -le $((34 << 20)) ] ||
    fail "memory.peak = $peak, expected within (16M, 34M]"
  echo "  memory: hog status $st, memory.events oom_kill=$oom_kill, memory.peak=$peak"

  # pids limit: 40 background sleeps under pids.max=16; forks beyond the limit fail with EAGAIN.
  # busybox sh, because bash retries a failed fork for ~15 s.
  busybox sh -c 'echo $$ >"$1"/cgroup.procs; for i in $(seq 40); do sleep 2 & done 2>/dev/null; wait' _ "$leaf" || true
  local pmax
  pmax=$(field "$leaf/pids.events" max)
  [ "${pmax:-0}" -ge 1 ] || fail "pids.events max = '${pmax:-}', expected >= 1"
  echo "  pids: pids.events max=$pmax"

  # cpu quota: a busy loop for 1 s of wall time at 50% gets about 0.5 s of CPU (band 0.2-0.8 s).
  local usage
  timeout -s KILL 1 bash -c 'echo $$ >"$1"/cgroup.procs; while :; do :; done' _ "$leaf" || true
  usage=$(field "$leaf/cpu.stat" usage_usec)
  local throttled
  throttled=$(field "$leaf/cpu.stat" nr_throttled)
  echo "  cpu: usage_usec=$usage nr_throttled=$throttled (cpu.max 50000 100000)"
  [ "${throttled:-0}" -ge 1 ] || fail "cpu.stat nr_throttled = '${throttled:-}', expected >= 1"

  # Teardown: an empty cgroup is removed with rmdir.
  [ "$(field "$leaf/cgroup.events" populated)" = 0 ] || echo 1 >"$leaf/cgroup.kill"
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(field "$leaf/cgroup.events" populated)" = 0 ] && break
    sleep 0.2
  done
  rmdir "$leaf" "$top"
  [ ! -e "$top" ] || fail "$top still exists"
  echo "  teardown: rmdir ok"
}

doctor() {
  local bin=$1 json cg ll pv
  [ -x "$bin" ] || fail "$bin missing or not executable by uid $(id -u)"
  "$bin" doctor || true
  json=$("$bin" doctor --json) || true
  echo "$json" | jq -e 'type == "array" or type == "object"' >/dev/null 2>&1 || fail "doctor --json printed no JSON"
  show() { echo "$json" | jq -r --arg n "$1" '[.. | objects | select(.name? == $n)][0] // empty | "\(.status) \(.found)"'; }
  pv=$(show privileges)
  cg=$(show cgroups)
  ll=$(show landlock)
  echo "doctor (uid $(id -u)): privileges: $pv"
  echo "doctor (uid $(id -u)): cgroups: $cg"
  echo "doctor (uid $(id -u)): landlock: $ll"
  [ -n "$pv" ] && [ -n "$cg" ] && [ -n "$ll" ] || fail "doctor --json lacks the privileges, cgroups or landlock check"
  if [ "$(id -u)" = 0 ]; then
    [[ "$cg" == ok* ]] || fail "doctor does not find a usable cgroup hierarchy"
    [[ "$cg" == *v2* ]] || fail "doctor does not report cgroup v2"
  fi
}

prep() {
  local repo=$1 f
  # The example guests were built on the host before boot (tests/vm/run). The test helpers call
  # examples/build.sh once per test binary; under emulation every cargo/rustc start reads hundreds
  # of MB over 9p (about a minute per call). Replace the script, in the guest's RAM overlay only,
  # by a check that its outputs exist.
  for f in native/hello native/alloc wasm/hello.wasm; do
    [ -f "$repo/examples/out/$f" ] || { echo "prep: examples/out/$f missing: run examples/build.sh on the host" >&2; return 1; }
  done
  cat >"$repo/examples/build.sh" <<'EOF'
#!/usr/bin/env bash
# tests/vm (guest overlay only): the example guests were built on the host before boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/out/native" ] && [ -d "$here/out/wasm" ] || { echo "examples/out missing" >&2; exit 1; }
EOF
  echo "prep: examples/build.sh replaced in the guest overlay by a check of examples/out"
}

# Delegates a cgroup subtree to uid/gid 65534 the way systemd's user@.service does (Delegate=yes;
# cgroup-v2.rst "Delegation Containment": chown the directory and its cgroup.procs, cgroup.threads
# and cgroup.subtree_control), puts this process in a leaf of it, drops to that user and runs "$@".
# The delegated directory is in $HYBOX_VM_DELEGATED.
rootless() {
  local uid=65534 d
  d=/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service
  mkdir -p "$d/session.scope"
  echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
  echo "+memory +pids +cpu" >/sys/fs/cgroup/user.slice/cgroup.subtree_control
  echo "+memory +pids +cpu" >"/sys/fs/cgroup/user.slice/user-$uid.slice/cgroup.subtree_control"
  chown "$uid:$uid" "$d" "$d"/cgroup.{procs,threads,subtree_control}
  chown -R "$uid:$uid" "$d/session.scope"
  echo $$ >"$d/session.scope/cgroup.procs"
  mkdir -p /tmp/home-$uid
  chown "$uid:$uid" /tmp/home-$uid
  if ! setpriv --reuid=$uid --regid=$uid --clear-groups test -r "${1:?rootless needs a command}"; then
    fail "uid $uid cannot read $1: the repository must be world-readable (not under /root) for rootless scenarios"
  fi
  HOME=/tmp/home-$uid HYBOX_VM_DELEGATED=$d exec setpriv --reuid=$uid --regid=$uid --clear-groups \
    --inh-caps=-all "$@"
}

# Run as the delegated user (via rootless): what an unprivileged runner may and may not do.
rootless_smoke() {
  local d=${HYBOX_VM_DELEGATED:?run through guest.sh rootless}
  [ "$(id -u)" != 0 ] || fail "still root"
  echo "  running as uid $(id -u) in $(cut -d: -f3 /proc/self/cgroup)"
  if echo "+memory" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    fail "an unprivileged user wrote the root cgroup's subtree_control"
  fi
  echo "  outside the delegated subtree: refused"
  echo "+memory +pids +cpu" >"$d/cgroup.subtree_control"
  mkdir "$d/run1"
  echo 32M >"$d/run1/memory.max"
  expect "$d/run1/memory.max" 33554432
  echo 8 >"$d/run1/pids.max"
  expect "$d/run1/pids.max" 8
  # Migration needs write access to cgroup.procs of the common ancestor: $d is ours.
  sleep 30 &
  local pid=$! st=0
  echo "$pid" >"$d/run1/cgroup.procs"
  echo 1 >"$d/run1/cgroup.kill"
  wait "$pid" || st=$?
  [ "$st" = 137 ] || fail "cgroup.kill in the delegated subtree: status $st"
  rmdir "$d/run1"
  echo "  delegated subtree: controllers enabled, limits written, cgroup.kill, rmdir ok"
  unshare -Urmpf --mount-proc true || fail "an unprivileged user cannot create user namespaces"
  echo "  unprivileged user+mount+pid namespaces: ok"
}

case "${1:-}" in
  rootless) shift; rootless "$@" ;;
  rootless-smoke) rootless_smoke ;;
  prep) prep "${2:?prep needs the repository path}" ;;
  kernel) kernel ;;
  smoke) smoke ;;
  doctor) doctor "${2:?doctor needs the hybox binary}" ;;
  *) echo "usage: guest.sh prep REPO | kernel | smoke | doctor HYBOX_BINARY | rootless CMD... | rootless-smoke" >&2; exit 2 ;;
esac
