#!/usr/bin/env bash
# Converge benchmark (issue 6): wall time of a first converge of the full site.yml (hardening,
# ledger, enforcer, anchor) on a fresh appliance container, of the idempotent second run (and its
# change count), and the Lynis hardening index of the converged container next to the same image
# unconverged.
#
#   bench/converge.sh            (root, after scripts/setup; about 5 minutes)
#
# The containers are the Molecule ones (scripts/molecule-image, systemd as PID 1, no network,
# connection vantio_podman); the converged one gets the appliance scenario's capabilities and the
# offline package sources (scripts/offline-repo, built before the clock starts), made its apt
# source and pip index by molecule/_shared/prepare.yml (untimed). What runs is
# molecule/appliance/converge.yml: site.yml with the appliance settings of
# molecule/_shared/vars/appliance.yml, then the demo agent.
# Lynis is the host's package, bind-mounted read-only into both
# containers, so the image itself stays as it is. Work files go to a temporary directory;
# containers and work files are removed at the end. Targets (issue 6): first converge < 5 min,
# second < 1 min with zero changes, Lynis hardening index >= 85.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "converge.sh: needs root (rootful podman)" >&2; exit 1; }
command -v lynis >/dev/null || { echo "converge.sh: lynis is missing (scripts/setup installs it)" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"
scripts/podman-fixes
# shellcheck source=scripts/podman-env
. scripts/podman-env

image=$(scripts/molecule-image)
scripts/offline-repo >/dev/null
cache=${VANTIO_OFFLINE_CACHE:-/var/cache/vantio-offline}
work=$(mktemp -d "${TMPDIR:-/tmp}/vantio-bench-converge.XXXXXX")
converged=vantio-bench-converged
baseline=vantio-bench-baseline
cleanup() {
  podman rm --force --time 5 "$converged" "$baseline" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_container() {  # $1: name, then extra podman run arguments
  local name=$1
  shift
  podman run --detach --replace --name "$name" --hostname "$name" --systemd=always --network=none \
    --cap-add=NET_ADMIN "$@" \
    --volume /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw \
    --volume /proc/sys/net:/proc/sys/net:rw \
    --volume /usr/share/lynis:/usr/share/lynis:ro \
    --volume /usr/sbin/lynis:/usr/sbin/lynis:ro \
    --volume /etc/lynis:/etc/lynis:ro \
    "$image" >/dev/null
  local state="" i
  for i in $(seq 60); do  # the bus is not there during the first moments of boot
    state=$(podman exec "$name" systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 1
  done
  echo "converge.sh: $name did not boot ($state)" >&2
  return 1
}
# the appliance scenario's capabilities (molecule/appliance/molecule.yml) and the offline sources
start_container "$converged" --cap-add=SYS_ADMIN --cap-add=LINUX_IMMUTABLE --cap-add=SYS_RAWIO \
  --cap-add=BPF --cap-add=PERFMON --volume "$cache:/srv/vantio-offline:ro"
start_container "$baseline"

ssh-keygen -q -t ed25519 -N '' -C bench-admin -f "$work/admin_key"
cat >"$work/inventory.yml" <<EOF
all:
  children:
    appliance:
      hosts:
        $converged:
      vars:
        ansible_connection: vantio_podman
        ansible_python_interpreter: /usr/bin/python3
        hardening_admin_users:
          - name: vantio-admin
            authorized_keys: ["$(cat "$work/admin_key.pub")"]
EOF

export ANSIBLE_CONNECTION_PLUGINS="$PWD/molecule/_shared/plugins/connection"
export ANSIBLE_PIPELINING=true ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 MOLECULE_PROJECT_DIRECTORY="$PWD"
ansible-playbook -i "$work/inventory.yml" molecule/_shared/prepare.yml >"$work/prepare.log" 2>&1 \
  || { tail -20 "$work/prepare.log" >&2; exit 1; }
run_site() {  # $1: log file; prints the wall time in seconds
  local t0 t1
  t0=$(date +%s%N)
  ansible-playbook -i "$work/inventory.yml" -e @molecule/_shared/vars/appliance.yml \
    molecule/appliance/converge.yml >"$1" 2>&1 || { tail -40 "$1" >&2; return 1; }
  t1=$(date +%s%N)
  printf '%d.%d\n' $(((t1 - t0) / 1000000000)) $(((t1 - t0) / 100000000 % 10))
}
changes() { awk '/PLAY RECAP/ {r=1} r && /changed=/ {sub(/.*changed=/, ""); n += $1} END {print n + 0}' "$1"; }

first=$(run_site "$work/first.log")
second=$(run_site "$work/second.log")

lynis_index() {
  podman exec "$1" lynis audit system --quick --no-colors --no-log >"$work/lynis-$1.txt" 2>&1 || true
  sed -n 's/.*Hardening index : \([0-9]*\).*/\1/p' "$work/lynis-$1.txt" | head -1
}
index_baseline=$(lynis_index "$baseline")
index_converged=$(lynis_index "$converged")
tests_converged=$(sed -n 's/.*Tests performed : \([0-9]*\).*/\1/p' "$work/lynis-$converged.txt" | head -1)

printf 'converge.sh  %s  image %s  %s  load %s\n' "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  "${image##*:}" "$(date -u +%FT%TZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'first converge (site.yml)    %6.1f s   changes %s   (target < 300 s)\n' "$first" "$(changes "$work/first.log")"
printf 'second run (idempotent)      %6.1f s   changes %s   (target < 60 s, 0 changes)\n' "$second" "$(changes "$work/second.log")"
printf 'Lynis hardening index        unconverged %s, converged %s   (target >= 85; %s tests in the container)\n' \
  "${index_baseline:-?}" "${index_converged:-?}" "${tests_converged:-?}"
if [ -n "${BENCH_KEEP_LYNIS:-}" ]; then
  cp "$work/lynis-$converged.txt" "$work/lynis-$baseline.txt" "$BENCH_KEEP_LYNIS"/
fi
