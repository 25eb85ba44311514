#!/bin/bash
# SPDX-License-Identifier: MIT
# kernel61.sh: the unit suite on Debian 12's kernel, whatever kernel runs here.
#
#   tests/vm/kernel61.sh BUILD_DIR [TEST...]
#
# Linux 6.1 has no UFFDIO_MOVE, PAGEMAP_SCAN, UFFDIO_POISON, WP_ASYNC or
# PROCMAP_QUERY: the runtime takes its older ways there. This boots the
# kernel of Debian's current linux-image-6.1.*-amd64 package in QEMU (TCG),
# with the host's filesystem read-only over 9p under a tmpfs overlay, runs
# each test of BUILD_DIR's unit suite (or the TESTs named) as root, and
# prints a line per test, the skip reasons, the output of failures and a
# summary. Exit status: 0 none failed, 1 one did, 77 (skip) it cannot run
# here: qemu-system-x86, busybox-static or cpio missing, or no kernel.
#
# The package (about 70 MB) is fetched once with apt-get download into
# $UHMM_VM_CACHE (default /var/tmp/uhmm-vm) and unpacked there; nothing is
# installed. UHMM_VM_KERNEL=6.1.0-57-amd64 picks a version. Each test gets
# $UHMM_VM_SLOWDOWN (default 4) times its meson timeout: code runs several
# times slower under TCG. Guest: 2 GiB, 2 vCPUs; its /tmp is a tmpfs (6.1's
# overlayfs has no O_TMPFILE) with the host's /tmp entries bound back, and
# /var/tmp an ext4 disk (O_DIRECT).
set -euo pipefail

skip() { echo "kernel61: skipped: $*"; exit 77; }
die() { echo "kernel61: $*" >&2; exit 1; }

[[ $# -ge 1 && -d $1 ]] || die "usage: $0 BUILD_DIR [TEST...]"
BUILD=$(realpath "$1")
shift
for tool in qemu-system-x86_64 cpio mkfs.ext4 apt-get dpkg-deb python3 meson; do
	command -v "$tool" >/dev/null ||
		skip "$tool missing (apt-get install qemu-system-x86 busybox-static cpio e2fsprogs)"
done
[[ -x /bin/busybox && $(ldd /bin/busybox 2>&1 || true) == *"not a dynamic"* ]] ||
	skip "no static /bin/busybox (apt-get install busybox-static)"

# --- the kernel: Debian's newest 6.1, fetched once -----------------------------
CACHE=${UHMM_VM_CACHE:-/var/tmp/uhmm-vm}
newest_61() {
	local k
	k=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/.*Depends: linux-image-\(6\.1\..*-amd64\)$/\1/p' | head -1)
	[[ -n $k ]] || k=$(apt-cache search --names-only '^linux-image-6\.1\.[0-9.-]*-amd64$' 2>/dev/null |
		sed 's/^linux-image-\([^ ]*\) .*/\1/' | sort -V | tail -1)
	# Offline: the newest one already unpacked.
	[[ -n $k ]] || k=$(ls "$CACHE" 2>/dev/null | grep '^6\.1\..*-amd64$' | sort -V | tail -1)
	echo "$k"
}
KVER=${UHMM_VM_KERNEL:-$(newest_61)}
[[ -n $KVER ]] || skip "no linux-image-6.1 package known to apt (apt-get update)"
KDIR=$CACHE/$KVER
VMLINUZ=$KDIR/boot/vmlinuz-$KVER
MODDIR=$KDIR/lib/modules/$KVER
if [[ ! -f $VMLINUZ || ! -f $MODDIR/modules.dep ]]; then
	mkdir -p "$CACHE"
	dl=$(mktemp -d "$CACHE/dl.XXXXXX")
	chmod 755 "$dl" # apt's _apt user writes there
	if ! (cd "$dl" && apt-get download -q "linux-image-$KVER" >&2); then
		rm -rf "$dl"
		skip "cannot fetch linux-image-$KVER"
	fi
	rm -rf "$KDIR"
	dpkg-deb -x "$dl"/linux-image-*.deb "$KDIR"
	rm -rf "$dl"
	/bin/busybox depmod -b "$KDIR" "$KVER"
fi

WORK=$(mktemp -d /tmp/kernel61.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,dev,proc,sys,mnt/lower,mnt/rw,mnt/root,mnt/hosttmp,lib/modules}
cp /bin/busybox "$R/bin/"

# --- the tests: what meson would run, as one sh script -------------------------
meson introspect --tests "$BUILD" >"$WORK/tests.json"
python3 - "$WORK/tests.json" "$BUILD" "${UHMM_VM_SLOWDOWN:-4}" "$@" >"$R/tests.sh" <<'EOF'
import json, shlex, sys

build, slowdown, names = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
tests = [t for t in json.load(open(sys.argv[1]))
         if (t["name"] in names if names else
             any(s.split(":")[-1] == "unit" for s in t["suite"]))]
missing = set(names) - {t["name"] for t in tests}
if missing:
    sys.exit("kernel61: no such test: " + " ".join(sorted(missing)))
for t in tests:
    env = ["%s=%s" % kv for kv in sorted(t["env"].items())]
    cmd = "cd %s && exec env %s" % (shlex.quote(t["workdir"] or build),
                                     " ".join(shlex.quote(a) for a in env + t["cmd"]))
    print("run %s %d %s" % (shlex.quote(t["name"]), (t["timeout"] or 30) * slowdown,
                            shlex.quote(cmd)))
EOF
[[ -s $R/tests.sh ]] || die "no unit tests in $BUILD"

# --- modules: 9p and overlayfs for the share, virtio_blk and ext4 for /var/tmp --
declare -A seen=()
want_mod() {
	local rel dep
	rel=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -1 | cut -d: -f1)
	[[ -n $rel && -z ${seen[$rel]:-} ]] || return 0 # built in, or listed
	seen[$rel]=1
	for dep in $(grep -E "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2); do
		want_mod "$(basename "${dep%%.ko*}")"
	done
	cp "$MODDIR/$rel" "$R/lib/modules/"
	basename "$rel" >>"$R/modules.list"
}
for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk crc32c_generic ext4; do
	want_mod "$m"
done

# --- in the guest ---------------------------------------------------------------
cat >"$R/run-tests.sh" <<'EOF'
# Runs in the guest, chrooted into the host's filesystem, as POSIX sh.
pass=0 skipped=0 failed=0
run() { # name timeout command
	t0=$(cut -d' ' -f1 /proc/uptime)
	timeout "$2" sh -c "$3" >/tmp/.kernel61.out 2>&1
	rc=$?
	t=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
	case $rc in
	0) pass=$((pass + 1)); echo "kernel61: ok   $1 (${t} s)" ;;
	77) skipped=$((skipped + 1)); echo "kernel61: skip $1 (${t} s)" ;;
	*) failed=$((failed + 1)); echo "kernel61: FAIL $1 (exit $rc, ${t} s)"
	   sed 's/^/    /' /tmp/.kernel61.out ;;
	esac
	# Cases skipped inside a program, with their reasons.
	[ "$rc" = 0 ] || [ "$rc" = 77 ] && grep -E '^(skip |  # )' /tmp/.kernel61.out | sed 's/^/    /'
	return 0
}
echo "kernel61: $(uname -r)"
. /.kernel61-tests.sh
echo "kernel61: $pass passed, $skipped skipped, $failed failed"
[ "$failed" = 0 ]
EOF

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "kernel61: $*"; echo "kernel61-exit: 125"; poweroff -f; }
for m in $(cat /modules.list); do
	insmod "/lib/modules/$m" || fail "insmod $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /mnt/lower ||
	fail "mount 9p"
mount -t tmpfs tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
	/mnt/root || fail "mount overlay"
N=/mnt/root
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm $N/var/tmp
mount -t devpts devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
mount -t tmpfs tmpfs $N/run
mount -t ext4 /dev/vda $N/var/tmp || fail "mount the scratch disk"
chmod 1777 $N/var/tmp
# /tmp: a tmpfs holding the host's /tmp entries, bound back one by one.
mount --bind $N/tmp /mnt/hosttmp
mount -t tmpfs -o mode=1777 tmpfs $N/tmp
for e in /mnt/hosttmp/* /mnt/hosttmp/.[!.]*; do
	[ -e "$e" ] || [ -L "$e" ] || continue
	n=$N/tmp/${e##*/}
	if [ -L "$e" ]; then cp -a "$e" "$n"; continue; fi
	if [ -d "$e" ]; then mkdir "$n"; else touch "$n"; fi
	mount --bind "$e" "$n"
done
cp /run-tests.sh $N/.kernel61-run.sh
cp /tests.sh $N/.kernel61-tests.sh
chroot $N /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh /.kernel61-run.sh
echo "kernel61-exit: $?"
sync
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.gz"
truncate -s 1G "$WORK/scratch.img"
mkfs.ext4 -q -F "$WORK/scratch.img"

# --- QEMU ------------------------------------------------------------------------
start=$(date +%s)
set +e
timeout "${UHMM_VM_TIMEOUT:-3600}" qemu-system-x86_64 -m 2G -smp 2 -nic none -display none \
	-serial stdio -no-reboot -accel tcg,thread=multi -cpu max \
	-kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
	-drive "file=$WORK/scratch.img,format=raw,if=virtio,cache=unsafe" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	</dev/null 2>&1 | sed -u 's/\r$//' | tee "$WORK/console.log"
set -e
rc=$(sed -n 's/^kernel61-exit: \([0-9]*\)$/\1/p' "$WORK/console.log" | tail -1)
echo "kernel61: $(($(date +%s) - start)) s wall on the host, guest exit ${rc:-none}"
case ${rc:-none} in
0) exit 0 ;;
1) exit 1 ;;
*) die "the guest did not finish (see the console above)" ;;
esac
