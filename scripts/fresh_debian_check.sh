#!/usr/bin/env bash
# Runs a README command in a clean clone of this repository's HEAD inside a bare Debian 12 chroot
# (debootstrap), so that a package this machine happens to have, and a bare one lacks, shows up
# as a failure here instead of on a user's machine. Needs root, debootstrap and network access to
# Debian's mirror and PyPI; the CUDA 13.0 toolkit the build needs is bind-mounted from this
# machine's /usr/local/cuda. Certificates of a TLS-intercepting proxy in
# /usr/local/share/ca-certificates go along (update-ca-certificates adds them once setup installs
# ca-certificates). Prints the command's own timings and the total.
#   bash scripts/fresh_debian_check.sh [test|demo] [CHROOT_DIR]   (default: test, a new temp dir)
# The chroot stays for a second command (`demo` after `test` reuses its packages and build); remove
# it with: umount -R DIR/dev DIR/sys DIR/proc DIR/usr/local/cuda-*; rm -rf DIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-test}"
root="${2:-$(mktemp -d /tmp/moa-debian12.XXXXXX)}"
case "$command" in
  test | demo) ;;
  *)
    echo "usage: $0 [test|demo] [CHROOT_DIR]" >&2
    exit 2
    ;;
esac
[ "$(id -u)" = 0 ] || {
  echo "$0: needs root (debootstrap, chroot, mounts)" >&2
  exit 1
}
command -v debootstrap >/dev/null || {
  echo "$0: needs debootstrap (apt-get install debootstrap)" >&2
  exit 1
}
toolkit=$(readlink -f /usr/local/cuda)
[ -x "$toolkit/bin/nvcc" ] || {
  echo "$0: no CUDA toolkit at /usr/local/cuda (the build needs nvcc 13.0)" >&2
  exit 1
}
start=$(date +%s)
if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "fresh_debian_check: debootstrap bookworm into $root"
  debootstrap bookworm "$root" http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 || {
    tail -20 "$root.debootstrap.log" >&2
    exit 1
  }
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
mounted() { findmnt -n "$1" >/dev/null; }
mkdir -p "$root$toolkit"
ln -sfn "$toolkit" "$root/usr/local/cuda"
mounted "$root$toolkit" || mount --bind "$toolkit" "$root$toolkit"
mounted "$root/proc" || mount -t proc proc "$root/proc"
for fs in sys dev; do
  if ! mounted "$root/$fs"; then
    mount --rbind "/$fs" "$root/$fs"
    mount --make-rslave "$root/$fs"  # nothing mounted below it reaches this machine's /$fs
  fi
done
if [ ! -d "$root/root/moa" ]; then
  git clone -q "$here" "$root/root/moa"
else
  git -C "$root/root/moa" pull -q
fi
echo "fresh_debian_check: $(git -C "$root/root/moa" log --oneline -1)"
ready=$(date +%s)
status=0
# The caller's environment goes along (a proxy's PIP_CERT or SSL_CERT_FILE among it).
chroot "$root" bash -c "cd /root/moa && bash scripts/$command.sh" || status=$?
echo "fresh_debian_check: scripts/$command.sh exited $status after $(($(date +%s) - ready)) s" \
  "(chroot ready in $((ready - start)) s); chroot: $root"
exit $status
