# Shared by scripts/test-install-arm64, scripts/pi-image,
# scripts/test-pi-image and scripts/test-vm-arm64: run arm64 programs in a
# chroot on an x86_64 host.

. "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"

# binfmt_misc: arm64 programs inside a chroot (dpkg runs maintainer
# scripts) must start through qemu. Build containers often have
# binfmt_misc unmounted; root can mount it. The F flag opens the
# interpreter at registration, so it works inside the chroot too.
ensure_arm64_binfmt() {
  command -v qemu-aarch64-static >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static
  }
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    if ! mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null; then
      # Not something a test can fix: exit 77 (skipped), said loudly.
      echo "SKIPPED: binfmt_misc cannot be mounted here (unprivileged container?)" >&2
      exit 77
    fi
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
      > /proc/sys/fs/binfmt_misc/register
  fi
}

# A Debian bookworm arm64 minbase rootfs, made once and cached as a tar.
arm64_rootfs_tar() {
  local cache=$1
  if [ ! -f "$cache" ]; then
    command -v debootstrap >/dev/null || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    }
    echo "== debootstrap bookworm arm64 (once; cached in $cache)" >&2
    local tmp mirror
    mirror=$(debian_mirror bookworm) || return 1
    tmp=$(mktemp -d)
    debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$tmp/root" "$mirror" >/dev/null
    cp /usr/bin/qemu-aarch64-static "$tmp/root/usr/bin/"
    chroot "$tmp/root" /debootstrap/debootstrap --second-stage >/dev/null
    mkdir -p "$(dirname "$cache")"
    tar -C "$tmp/root" -cf "$cache" .
    rm -rf "$tmp"
  fi
}

# Partition N of a disk image as a loop device (no partition scanning
# needed: offset and size from the partition table).
loop_partition() {
  local img=$1 n=$2 start size
  read -r start size < <(sfdisk -J "$img" | python3 -c "
import json, sys
p = json.load(sys.stdin)['partitiontable']['partitions'][$n - 1]
print(p['start'], p['size'])")
  losetup --find --show --offset $((start * 512)) --sizelimit $((size * 512)) "$img"
}

# Byte offset of partition N of a disk image.
partition_offset() {
  local img=$1 n=$2
  sfdisk -J "$img" | python3 -c "
import json, sys
print(json.load(sys.stdin)['partitiontable']['partitions'][$n - 1]['start'] * 512)"
}
