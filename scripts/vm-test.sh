#!/usr/bin/env bash
# The kernel matrix: sockleak's real-BPF tests, from this checkout's existing
# build (dist/, build/Release/sockleak.node; nothing is rebuilt), on other
# kernels booted under qemu and on the host's own kernel, as one table.
# The checkout (less .git; node_modules linked) is copied once per run, so
# every kernel runs the same bytes even while someone rebuilds the checkout.
#
# usage: scripts/vm-test.sh [--tests 'FILE...'] [--timeout SECONDS] [--run 'CMD'] KERNEL...
#   KERNEL   6.1, 6.12 (newest Debian bookworm -amd64-unsigned of that series),
#            an exact one such as 6.1.0-50 or 6.12.107+deb12, or "host"
#            (run directly on the running kernel, no VM). A flavour suffix
#            picks another build of the same kernel: -rt (6.1-rt, 6.12-rt,
#            6.12.107+deb12-rt) Debian's PREEMPT_RT -rt-amd64-unsigned, -cloud
#            (6.1-cloud, 6.12-cloud) its -cloud-amd64-unsigned, which has no
#            9p: that one sees the host's files over virtio-fs (qemu's
#            virtiofsd) instead.
#   --tests  test files, relative to the repo (default: dist/test/*.test.js);
#            also SOCKLEAK_VM_TESTS.
#   --timeout  per-kernel limit for the test run, seconds (default 1800);
#            also SOCKLEAK_VM_TIMEOUT. One test file may take at most
#            SOCKLEAK_VM_FILE_TIMEOUT seconds (default 600).
#   --refuse SET  run the tests with SOCKLEAK_REFUSE=SET (src/kernel/fallbacks.ts): a
#            fallback path forced, on every kernel given (also SOCKLEAK_REFUSE).
#   --run    instead of the tests, run this shell command in the repo as root
#            on each kernel and show its output (diagnostics, e.g.
#            --run 'SOCKLEAK_DEBUG=1 node bin/sockleak.js snapshot').
# SOCKLEAK_VM_CACHE: where kernels, initramfs and results go
# (default /var/cache/sockleak-vm; results in $SOCKLEAK_VM_CACHE/runs/).
# SOCKLEAK_VM_ACCEL, SOCKLEAK_VM_SMP: qemu's -accel and -smp (default
# tcg,thread=multi and 1: with 2 vCPUs under multi-threaded TCG, the guest
# oopses on int3 in handle_softirqs after some twenty attach/detach cycles, an
# emulation fault; thread=single avoids it too but runs at half the speed).
#
# Why TCG and not KVM, and what each kernel showed: docs/kernels.md.
# Exit status: 0 only if every test passed or skipped on every kernel.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tests=${SOCKLEAK_VM_TESTS:-}
limit=${SOCKLEAK_VM_TIMEOUT:-1800}
file_limit=${SOCKLEAK_VM_FILE_TIMEOUT:-600}
cache=${SOCKLEAK_VM_CACHE:-/var/cache/sockleak-vm}
accel=${SOCKLEAK_VM_ACCEL:-tcg,thread=multi}
smp=${SOCKLEAK_VM_SMP:-1}
kernels=()
run_cmd=
refuse=${SOCKLEAK_REFUSE:-}
while (($#)); do
	case "$1" in
	--tests) tests=$2; shift 2 ;;
	--tests=*) tests=${1#--tests=}; shift ;;
	--timeout) limit=$2; shift 2 ;;
	--timeout=*) limit=${1#--timeout=}; shift ;;
	--refuse) refuse=$2; shift 2 ;;
	--refuse=*) refuse=${1#--refuse=}; shift ;;
	--run) run_cmd=$2; shift 2 ;;
	--run=*) run_cmd=${1#--run=}; shift ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "vm-test: unknown option $1" >&2; exit 64 ;;
	*) kernels+=("$1"); shift ;;
	esac
done
((${#kernels[@]})) || { echo "usage: scripts/vm-test.sh [--tests 'FILE...'] [--timeout S] KERNEL... (6.1 6.12 6.12-rt 6.12-cloud host)" >&2; exit 64; }
[[ $limit =~ ^[0-9]+$ ]] || { echo "vm-test: --timeout wants seconds, got '$limit'" >&2; exit 64; }
[[ $file_limit =~ ^[0-9]+$ ]] || { echo "vm-test: SOCKLEAK_VM_FILE_TIMEOUT wants seconds, got '$file_limit'" >&2; exit 64; }
export SOCKLEAK_VM_FILE_TIMEOUT=$file_limit

log() { echo "vm-test: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the tests load BPF, and the VMs need apt-get download"

# Test files, as paths relative to the repo (the guest sees the repo at the same path).
if [ -n "$tests" ]; then
	read -r -a test_files <<< "$tests"
else
	test_files=(dist/test/*.test.js)
fi
for f in "${test_files[@]}"; do
	[ -f "$f" ] || die "no test file $f: build first (scripts/setup.sh); this script never rebuilds"
done
[ -f build/Release/sockleak.node ] || [ -n "${SOCKLEAK_ADDON:-}" ] ||
	die "no build/Release/sockleak.node: run scripts/setup.sh first"

ensure_packages() {
	local missing=() p
	for p in qemu-system-x86 busybox-static cpio kmod xz-utils; do
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >&2; }
}

# The package for a kernel argument SERIES[-FLAVOUR]: the newest
# linux-image-<SERIES>...-<FLAVOUR>-amd64-unsigned. FLAVOUR is rt (PREEMPT_RT)
# or cloud (Debian's cloud images); without one, the generic -amd64 (never
# -cloud nor -rt, whose names end the same way). The flavour is read off the
# end of the argument, because exact versions have dashes too (6.1.0-50-rt).
kernel_flavour() {
	case "$1" in
	*-rt) echo rt ;;
	*-cloud) echo cloud ;;
	*) echo "" ;;
	esac
}
kernel_package() {
	local arg=$1 flavour series re
	flavour=$(kernel_flavour "$arg")
	series=${arg%-"$flavour"}
	re="^linux-image-${series//./\\.}"
	re=${re//+/\\+}
	if [ -n "$flavour" ]; then
		apt-cache search --names-only "${re}([.+-][^ ]*)?-${flavour}-amd64-unsigned\$" | cut -d' ' -f1 |
			sort -V | tail -n1
	else
		apt-cache search --names-only "${re}([.+-][^ ]*)?-amd64-unsigned\$" | cut -d' ' -f1 |
			grep -Ev -- '-(cloud|rt)-amd64-unsigned$' | sort -V | tail -n1
	fi
}

# Downloads (apt-get download, no install) and unpacks a kernel package once;
# prints the directory it is unpacked in.
fetch_kernel() {
	local pkg=$1 dir=$cache/kernels/$1 deb
	if ! compgen -G "$dir/boot/vmlinuz-*" > /dev/null; then
		mkdir -p "$cache/debs"
		deb=$(compgen -G "$cache/debs/${pkg}_*.deb" | head -n1 || true)
		if [ -z "$deb" ]; then
			log "downloading $pkg"
			(cd "$cache/debs" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2) ||
				die "apt-get download $pkg failed"
			deb=$(compgen -G "$cache/debs/${pkg}_*.deb" | head -n1)
		fi
		log "unpacking $(basename "$deb")"
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		dpkg-deb -x "$deb" "$dir.tmp"
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

# How the guest sees the host's files: 9p where the kernel has it (generic
# and rt), else virtio-fs (cloud: no 9p at all, but CONFIG_VIRTIO_FS). Read
# from the kernel's own config rather than its flavour's name, so an exact or
# future package that differs is still booted the way it can be.
kernel_share() {
	local config=$1
	if grep -Eq '^CONFIG_9P_FS=[ym]$' "$config" && grep -Eq '^CONFIG_NET_9P_VIRTIO=[ym]$' "$config"; then
		echo 9p
	elif grep -Eq '^CONFIG_VIRTIO_FS=[ym]$' "$config"; then
		echo virtiofs
	else
		echo none
	fi
}

# A busybox initramfs with scripts/vm/init.sh as /init and, uncompressed, the
# .ko files the share (9p or virtio-fs, over virtio-pci) and overlayfs need on
# this kernel (with their dependencies, in load order; whatever is built in is
# skipped).
build_initramfs() {
	local dir=$1 kver=$2 image=$3 share=$4 stage m line ko name mods
	if [ "$share" = virtiofs ]; then
		mods=(virtio_pci virtiofs overlay)
	else
		mods=(virtio_pci 9pnet_virtio 9p overlay)
	fi
	stage=$(mktemp -d)
	mkdir -p "$stage"/{bin,dev,proc,sys,modules}
	cp /bin/busybox "$stage/bin/busybox"
	cp scripts/vm/init.sh "$stage/init"
	chmod 755 "$stage/init"
	mknod -m 600 "$stage/dev/console" c 5 1
	[ -f "$dir/lib/modules/$kver/modules.dep" ] || depmod -b "$dir" "$kver"
	: > "$stage/modules.list"
	for m in "${mods[@]}"; do
		modprobe -d "$dir" -S "$kver" --show-depends "$m" | while read -r line; do
			case "$line" in insmod\ *) ;; *) continue ;; esac
			ko=$(echo "$line" | cut -d' ' -f2)
			name=$(basename "$ko"); name=${name%%.ko*}
			grep -qx "$name" "$stage/modules.list" && continue
			case "$ko" in
			*.ko.xz) xz -dc "$ko" > "$stage/modules/$name.ko" ;;
			*.ko.zst) zstd -qdc "$ko" > "$stage/modules/$name.ko" ;;
			*.ko.gz) gzip -dc "$ko" > "$stage/modules/$name.ko" ;;
			*) cp "$ko" "$stage/modules/$name.ko" ;;
			esac
			echo "$name" >> "$stage/modules.list"
		done
	done
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$image"
	rm -rf "$stage"
}

# The command running now (qemu's timeout, or the host's test runner). It runs
# in the background while the script waits, because bash runs a trap only
# between commands: that way an interrupt stops it instead of orphaning it.
# helpers: the virtiofsd processes of the VM running now, stopped with it.
child=
helpers=()
stop_helpers() {
	local p
	for p in "${helpers[@]}"; do
		kill -TERM "$p" 2> /dev/null || true
	done
	for p in "${helpers[@]}"; do
		wait "$p" 2> /dev/null || true
	done
	helpers=()
}
on_signal() {
	[ -z "$child" ] || kill -TERM "$child" 2> /dev/null
	((${#helpers[@]} == 0)) || stop_helpers
	# run_vm's sockets (bash's locals are visible to the functions it calls, the trap included).
	[ -z "${sockets:-}" ] || remove_sockets "$sockets"
	log "interrupted"
	exit 130
}
trap on_signal INT TERM HUP

# Runs "$@" with its output on stderr, each line prefixed with [LABEL], and
# kept (without terminal escapes) in LOG_FILE; returns its exit status.
watched() {
	local label=$1 log_file=$2 rc=0
	shift 2
	"$@" < /dev/null > >(sed -u 's/\r//g; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' |
		tee "$log_file" | sed -u "s/^/[$label] /" >&2) 2>&1 &
	child=$!
	wait "$child" || rc=$?
	child=
	return "$rc"
}

# Serves SOURCE to the guest over virtio-fs as the vhost-user socket SOCKET
# (qemu's virtiofsd, run in the background; its pid goes to helpers). ro:
# virtiofsd has no read-only option, so it serves a recursive bind mount of
# SOURCE with every mount in it remounted read-only, in a mount namespace of
# its own (the host keeps its mounts as they are); the guest cannot write the
# host's files, as with 9p's readonly=on. The root share is cached
# (cache=always, like 9p's cache=loose: nobody changes it during the run),
# the results share is not (cache=none: every write reaches the host at once).
start_virtiofsd() {
	local source=$1 socket=$2 mode=$3 log_file=$4 view
	if [ "$mode" = ro ]; then
		view=${socket%.sock}.root
		mkdir -p "$view"
		# A mount it cannot make read-only stops it before virtiofsd starts
		# (run_vm then reports that virtiofsd did not start): never serve a
		# writable host root.
		unshare --mount --propagation private /bin/bash -c '
			set -eo pipefail
			mount --rbind "$1" "$2"
			# findmnt -r escapes spaces and the like as \x20; printf %b (in bash) undoes it.
			findmnt -R -n -r -o TARGET "$2" | while read -r m; do
				mount -o remount,bind,ro "$(printf "%b" "$m")"
			done
			exec /usr/lib/qemu/virtiofsd --socket-path="$3" -o source="$2" -o cache=always
		' virtiofsd "$source" "$view" "$socket" > "$log_file" 2>&1 &
	else
		/usr/lib/qemu/virtiofsd --socket-path="$socket" -o source="$source" -o cache=none > "$log_file" 2>&1 &
	fi
	helpers+=($!)
}

# Removes start_virtiofsd's directory once its virtiofsds have stopped. Never
# rm -r: the .root directory in it is where the host's root was bind-mounted
# (in virtiofsd's own mount namespace only, but an empty-directory rmdir is
# the one removal that cannot reach into the host's files if that ever leaked).
remove_sockets() {
	rm -f "$1"/*.sock
	rmdir "$1"/*.root "$1" 2> /dev/null || log "left $1 in place (not empty)"
}

# Boots one kernel with the host root shared read-only and $out shared
# writable, and runs the tests in it; the guest leaves its files in $out.
run_vm() {
	local arg=$1 out=$2 pkg dir kver vmlinuz image start rc share sockets s i
	local -a fs_args
	pkg=$(kernel_package "$arg")
	if [ -z "$pkg" ]; then
		# A fresh machine may have no package lists yet.
		log "no Debian package for $arg known to apt: apt-get update"
		apt-get -q update >&2 || true
		pkg=$(kernel_package "$arg")
	fi
	[ -n "$pkg" ] || { log "no Debian package for $arg (linux-image-<series>…-amd64-unsigned, flavour '$(kernel_flavour "$arg")')"; return 1; }
	dir=$(fetch_kernel "$pkg")
	vmlinuz=$(compgen -G "$dir/boot/vmlinuz-*" | head -n1)
	kver=${vmlinuz##*/vmlinuz-}
	echo "$pkg" > "$out/package"
	share=$(kernel_share "$dir/boot/config-$kver")
	[ "$share" != none ] || { log "$kver has neither 9p nor virtio-fs: the guest could not see the host's files"; return 1; }
	echo "$share" > "$out/share"
	image=$cache/kernels/$pkg/initramfs.cpio.gz
	build_initramfs "$dir" "$kver" "$image" "$share"

	sockets=
	if [ "$share" = virtiofs ]; then
		# virtio-fs: one virtiofsd per share; vhost-user needs the guest's memory
		# shared with them (a memfd backend as the machine's RAM, same size as -m).
		[ -x /usr/lib/qemu/virtiofsd ] || { log "no /usr/lib/qemu/virtiofsd (package qemu-system-common) for $kver"; return 1; }
		sockets=$(mktemp -d /tmp/sockleak-vm.XXXXXX)
		start_virtiofsd / "$sockets/hostroot.sock" ro "$out/virtiofsd-hostroot.log"
		start_virtiofsd "$out" "$sockets/results.sock" rw "$out/virtiofsd-results.log"
		# virtiofsd creates its socket, then waits for qemu; qemu fails if it starts first.
		for s in hostroot results; do
			for ((i = 0; i < 100; i++)); do
				[ -S "$sockets/$s.sock" ] && break
				sleep 0.1
			done
			[ -S "$sockets/$s.sock" ] || {
				log "virtiofsd for $s did not start: $(tail -n3 "$out/virtiofsd-$s.log")"
				stop_helpers; remove_sockets "$sockets"; return 1
			}
		done
		fs_args=(
			-object memory-backend-memfd,id=mem,size=2G,share=on -machine memory-backend=mem
			-chardev socket,id=hostroot,path="$sockets/hostroot.sock"
			-device vhost-user-fs-pci,chardev=hostroot,tag=hostroot
			-chardev socket,id=results,path="$sockets/results.sock"
			-device vhost-user-fs-pci,chardev=results,tag=results
		)
	else
		fs_args=(
			-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
			-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
			-fsdev local,id=results,path="$out",security_model=none
			-device virtio-9p-pci,fsdev=results,mount_tag=results
		)
	fi

	{
		echo "# written by scripts/vm-test.sh; run by scripts/vm/init.sh as root inside the guest"
		if [ -n "$run_cmd" ]; then
			printf 'cd %q || exit 1\nuname -r > %q\n%s\n' "$tree" "$out/kernel" "$run_cmd"
		else
			printf 'SOCKLEAK_REFUSE=%q SOCKLEAK_VM_FILE_TIMEOUT=%q exec /bin/bash %q %q %q' "$refuse" "$file_limit" \
				"$tree/scripts/vm/run-tests.sh" "$out" "$limit"
			printf ' %q' "${test_files[@]}"
			echo
		fi
	} > "$out/guest.sh"

	log "booting $kver (qemu -accel $accel -smp $smp, host root over $share; test output follows, prefixed [$arg])"
	# sockleak.nofile: the guest's processes get this run's open-file limit
	# (the kernel's default for PID 1 is 1024, at most 4096: port-scan.test.js
	# holds 12 000 sockets, more than that allows).
	start=$(date +%s)
	rc=0
	# Host-side limit: the guest's own limit plus time to boot, load and power off.
	watched "$arg" "$out/console.log" \
		timeout --foreground --kill-after=10 $((limit + 300)) qemu-system-x86_64 \
		-accel "$accel" -cpu max -m 2G -smp "$smp" \
		-nographic -no-reboot -nic none \
		-kernel "$vmlinuz" -initrd "$image" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off rdinit=/init sockleak.kernel=$dir sockleak.out=$out sockleak.share=$share sockleak.nofile=$(ulimit -n)" \
		"${fs_args[@]}" || rc=$?
	echo $(($(date +%s) - start)) > "$out/wall-seconds"
	if [ -n "$sockets" ]; then
		stop_helpers
		remove_sockets "$sockets"
	fi
	[ "$rc" = 0 ] || log "qemu for $kver exited with $rc (124: host-side timeout)"
	[ -f "$out/guest.rc" ] || log "the guest for $kver did not finish (see $out/console.log)"
}

run_host() {
	local out=$1 start rc=0
	log "running on the host kernel $(uname -r) (no VM; output prefixed [host])"
	echo "(host)" > "$out/package"
	start=$(date +%s)
	if [ -n "$run_cmd" ]; then
		uname -r > "$out/kernel"
		watched host "$out/console.log" bash -c 'cd "$1" && eval "$2"' bash "$tree" "$run_cmd" || rc=$?
		echo "$rc" > "$out/guest.rc"
	else
		SOCKLEAK_REFUSE=$refuse watched host "$out/console.log" "$tree/scripts/vm/run-tests.sh" "$out" "$limit" "${test_files[@]}" || true
		cp "$out/tests.rc" "$out/guest.rc"
	fi
	echo $(($(date +%s) - start)) > "$out/wall-seconds"
}

ensure_packages
mkdir -p "$cache/runs"
# The time, plus a unique suffix: two runs started in the same second (from
# two checkouts) must not share a tree.
run_dir=$(mktemp -d "$cache/runs/$(date +%Y%m%d-%H%M%S).XXXX")
chmod 755 "$run_dir"
# Keep the last five runs, but never one still running: the cache is shared
# by every checkout on the machine, and a run started elsewhere once deleted
# the tree and results share of a run in progress (its next VM found no test
# files). A run holds a lock on its .lock until it exits (the fd is
# inherited by qemu and the tests, so it stays held while they run); pruning
# skips a run whose lock is taken.
exec {run_lock}> "$run_dir/.lock"
flock "$run_lock"
ls -1d "$cache"/runs/*/ 2>/dev/null | sort | head -n -5 | while read -r old; do
	flock -n "${old}.lock" true 2> /dev/null && rm -rf "$old" || log "not pruning $old: still running"
done
tree=$run_dir/tree
mkdir -p "$tree"
tar -C "$repo" --exclude=./.git --exclude=./node_modules --exclude=./build-cmake -cf - . | tar -C "$tree" -xf -
ln -s "$repo/node_modules" "$tree/node_modules"
log "tests: ${test_files[*]}"
log "results: $run_dir (the checkout as tested: $tree)"

columns=()
for k in "${kernels[@]}"; do
	out=$run_dir/$(echo "$k" | tr -c 'A-Za-z0-9.+_\n-' '_')
	mkdir -p "$out"
	columns+=("$k=$out")
	if [ "$k" = host ]; then
		run_host "$out"
	else
		run_vm "$k" "$out" || true
	fi
done

if [ -n "$run_cmd" ]; then
	status=0
	for c in "${columns[@]}"; do
		rc=$(cat "${c#*=}/guest.rc" 2>/dev/null || echo 'did not finish')
		log "${c%%=*} ($(cat "${c#*=}/kernel" 2>/dev/null)): exit $rc"
		[ "$rc" = 0 ] || status=1
	done
	exit "$status"
fi
node "$repo/scripts/vm/table.mjs" "${columns[@]}"
