#!/bin/busybox sh
# /init of the initramfs scripts/vm-test.sh boots (busybox only, PID 1).
#
# Turns the host's root, shared read-only over 9p or virtio-fs (tag
# hostroot; which one is sockleak.share= on the kernel command line, 9p by
# default), into a writable root (tmpfs overlay), mounts the writable results
# share (tag results) at the host path given as sockleak.out=, runs
# "$out/guest.sh" there as root, and powers off. Everything the guest writes
# outside $out is lost with it.
#
# sockleak.kernel= names the host directory the kernel package is unpacked
# in; its /boot/config-* and /lib/modules/* are put where an installed Debian
# kernel has them (libbpf reads /boot/config-$(uname -r) for __kconfig
# externs: without it, a BPF object using one fails to load with EINVAL).
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "vm-init: $*" > /dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# /proc moves into the new root half-way; power off through whichever is mounted.
poweroff_now() {
	sync
	for p in /newroot/proc /proc; do
		[ -e $p/sysrq-trigger ] && echo o > $p/sysrq-trigger
	done
	sleep 60
}

# Modules this kernel has as .ko, in dependency order (the rest are built in).
for m in $(cat /modules.list); do
	insmod "/modules/$m.ko" || say "insmod $m failed"
done

out= kdir= share=9p nofile=
for word in $(cat /proc/cmdline); do
	case "$word" in
	sockleak.nofile=*) nofile=${word#sockleak.nofile=} ;;
	sockleak.out=*) out=${word#sockleak.out=} ;;
	sockleak.kernel=*) kdir=${word#sockleak.kernel=} ;;
	sockleak.share=*) share=${word#sockleak.share=} ;;
	esac
done
[ -n "$out" ] || { say "no sockleak.out= on the kernel command line"; poweroff_now; }

mkdir -p /lower /rw /newroot
# 9p: cache=loose: the root is read-only and nobody inside writes it; loose
# caching saves a 9p round trip per stat, which dominates node's startup.
# virtio-fs (kernels without 9p): the host's virtiofsd serves it read-only
# and cached (cache=always); ro here as well.
if [ "$share" = virtiofs ]; then
	mount -t virtiofs -o ro hostroot /lower
else
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower
fi || { say "cannot mount the host root over $share"; poweroff_now; }
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
	{ say "cannot mount the overlay"; poweroff_now; }

for d in proc sys dev; do
	mount --move /$d /newroot/$d
done
# /tmp stays on the overlay, no tmpfs of its own: as private to the guest
# (writes land in /rw), and a checkout or SOCKLEAK_VM_CACHE under the host's
# /tmp (a CI clone, say) stays visible in the guest.
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /newroot/sys/kernel/tracing 2>/dev/null

release=$(uname -r)
if [ -n "$kdir" ] && [ -d "/newroot$kdir/lib/modules/$release" ]; then
	mkdir -p /newroot/boot "/newroot/lib/modules/$release"
	cp "/newroot$kdir/boot/config-$release" "/newroot$kdir/boot/System.map-$release" /newroot/boot/
	mount --bind "/newroot$kdir/lib/modules/$release" "/newroot/lib/modules/$release"
fi

# Results: 9p with cache=none (the default), so every write reaches the host
# at once; virtio-fs's virtiofsd for it runs with cache=none for the same reason.
mkdir -p "/newroot$out"
if [ "$share" = virtiofs ]; then
	mount -t virtiofs results "/newroot$out"
else
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results "/newroot$out"
fi || { say "cannot mount the results share"; poweroff_now; }

ip link set lo up
hostname sockleak-vm
# The host run's open-file limit (sockleak.nofile=), soft and hard, instead of
# the kernel's 1024/4096 for PID 1, which every process here inherits.
[ -z "$nofile" ] || ulimit -n "$nofile" || say "cannot set the open-file limit to $nofile"

say "running $out/guest.sh on $(uname -r)"
# switch_root, not a chroot in a child: PID 1 itself must change root, because
# the kernel's own helpers (modprobe for an auto-loaded module such as
# tcp_diag) share PID 1's root, and should find the host's /sbin/modprobe and
# this kernel's /lib/modules as on an installed system. PID 1 in the new root
# runs the command, keeps its status with the results, and powers off.
exec switch_root /newroot /bin/sh -c '
	out=$1
	/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb \
		/bin/sh "$out/guest.sh" < /dev/console > /dev/console 2>&1
	echo "$?" > "$out/guest.rc"
	echo "vm-init: done" > /dev/console
	sync
	echo o > /proc/sysrq-trigger
	# Power-off takes the 9p root away: from here PID 1 must neither exit nor
	# exec anything (sleep would fail with EIO), so it spins until the end.
	while :; do :; done
' vm-init "$out"
say "switch_root failed"
poweroff_now
