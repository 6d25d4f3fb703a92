#!/usr/bin/env bash
# build-tiny-guest.sh — smallest bootable x86_64 guest from Debian packages.
#
# Produces, in OUTDIR (default ./guest):
#   vmlinuz        Debian cloud kernel (linux-image-<ver>-cloud-amd64), extracted with dpkg -x
#   vmlinux        the same kernel uncompressed (ELF with PVH note; boots ~1 s faster
#                  under TCG: `-kernel vmlinux`); needs the lz4 binary (apt-get install lz4)
#   initramfs.gz   busybox-static + virtio modules + /init (gzip'd newc cpio)
#   KVER           the kernel version string
#
# Nothing is installed on the host; packages are downloaded with `apt-get download`
# (run `apt-get update` once before).  Needs: apt-get, dpkg, cpio, gzip, strings.
#
# The guest /init understands these kernel command-line switches:
# This copy (from shared/tools/vm) differs: the default mode is hotplug with no
# time limit (an instance booted by the node controller, whose kernel command line
# is Eucalyptus' `root=/dev/vda console=ttyS0`, runs until it is terminated), and
# TG-DISK also prints `before='…'`, what was at 1 MiB before the write, so a second
# instance shows the marker the first one wrote on a volume.
#
#   tg.mode=disk     print marker, for every /dev/vd*: read sector 0,
#                    write "TG-WRITE <dev> <uptime>" at byte offset 1 MiB, sync,
#                    read it back, print result; then power off.
#   tg.mode=hotplug  (default) print marker, then poll /sys/block every 100 ms for tg.wait
#                    seconds (default 120); a new vdX gets the same read/write
#                    test, a vanished one prints TG-HOTPLUG-REMOVE; then power off.
#   tg.mode=shell    print marker, start a busybox shell on the console.
#   tg.wait=N        seconds to wait in hotplug mode (default 0: forever).
# Marker lines (grep for them on the serial console):
#   TG-BOOTED uptime=<s>     /init reached, modules loaded
#   TG-DISK <dev> ...        per-disk results
#   TG-DONE                  about to power off
#   TG-POWERDOWN             the ACPI power button was pressed: powering off
# Networking (issue 14), in the background so the markers above keep their timing,
# when the guest has an eth0 (a NIC on a network):
#   TG-LEASE ip=<ip> mask=<dotted mask> router=<gw> mac=<eth0 mac> uptime=<s>
#                            udhcpc got a lease (the address comes only from DHCP)
#   TG-LEASE-FAILED          no lease within a minute
#   TG-META instance-id=<id> the metadata service answered (TG-META-FAILED: it did not)
#   TG-USERDATA bytes=<n>    user-data that is not a script (`#!…` user-data is run in
#                            the background, its output on the console)
# busybox httpd serves /index.html (`instance-id=<id>`) on port 80 once a lease is had.
set -euo pipefail

OUT=${1:-./guest}
FLAVOUR=${FLAVOUR:-cloud-amd64}          # or amd64 for the generic kernel
WORK=$OUT/.build
mkdir -p "$OUT" "$WORK/debs"

# ---- 1. download packages (cached) ----------------------------------------
meta=linux-image-$FLAVOUR
kpkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || { echo "cannot resolve $meta (apt-get update?)" >&2; exit 1; }
KVER=${kpkg#linux-image-}
( cd "$WORK/debs"
  ls ${kpkg}_*.deb >/dev/null 2>&1 || apt-get download "$kpkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
  ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true )

# ---- 2. extract ------------------------------------------------------------
rm -rf "$WORK/k" "$WORK/bb" "$WORK/root"
mkdir -p "$WORK/k" "$WORK/bb"
dpkg -x "$WORK"/debs/${kpkg}_*.deb "$WORK/k"
dpkg -x "$WORK"/debs/busybox-static_*.deb "$WORK/bb"
cp "$WORK/k/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" > "$OUT/KVER"

# ---- 3. initramfs tree -----------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,mnt,lib/modules}
cp "$WORK/bb/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done
# modules in dependency order (Debian 6.1 modules are plain .ko)
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
      virtio_mmio virtio_blk failover net_failover virtio_net virtio-rng
      evdev button"
KD=$WORK/k/lib/modules/$KVER/kernel
: > "$R/lib/modules/order"
for m in $MODS; do
  f=$(find "$KD" -name "$m.ko" -o -name "$m.ko.xz" | head -1)
  if [ -z "$f" ]; then echo "note: $m not a module (built in?)" >&2; continue; fi
  case $f in *.xz) xz -dc "$f" > "$R/lib/modules/$m.ko" ;; *) cp "$f" "$R/lib/modules/$m.ko" ;; esac
  echo "$m" >> "$R/lib/modules/order"
done

cat > "$R/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
# The ACPI power button (QEMU's system_powerdown: a node's graceful stop) powers the
# guest off, as a real OS does, so the node's powerdown-then-kill is taken by its
# graceful branch (busybox acpid runs /etc/acpi/PWRF/00000080).
acpid -c /etc/acpi -l /tmp/acpid.log -p /tmp/acpid.pid 2>/dev/null
mode=hotplug; wait=0
for a in $(cat /proc/cmdline); do
  case $a in tg.mode=*) mode=${a#tg.mode=};; tg.wait=*) wait=${a#tg.wait=};; esac
done
up() { cut -d' ' -f1 /proc/uptime; }
echo "TG-BOOTED uptime=$(up) mode=$mode"

# Networking, in the background (see the header): DHCP, metadata, user-data, httpd.
# busybox 1.35's static wget crashes on -T: `timeout` bounds it instead.
meta() { timeout 2 wget -q -O - "http://169.254.169.254/latest/$1" 2>/dev/null; }
net_main() {
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
  [ -e /sys/class/net/eth0 ] || return 0
  ifconfig lo 127.0.0.1 up
  mac=$(cat /sys/class/net/eth0/address)
  # Foreground udhcpc in a background job: it stays to renew the lease, and keeps
  # trying (-A 1: one second after a failed round) rather than exiting (-n), which
  # busybox does after only 3 unanswered DHCPREQUESTs: an ACK delayed on a loaded
  # node made a guest give up 3 s after its offer. The guest waits a minute.
  # -O staticroutes: ask for option 121 (not every busybox asks by default; a
  # server sends only what is asked).
  udhcpc -f -i eth0 -t 5 -T 1 -A 1 -O staticroutes -s /etc/tg-dhcp >/dev/null 2>&1 &
  i=0; while [ ! -s /tmp/lease ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done
  if [ ! -s /tmp/lease ]; then echo "TG-LEASE-FAILED mac=$mac uptime=$(up)"; return 0; fi
  echo "TG-LEASE $(cat /tmp/lease) mac=$mac uptime=$(up)"
  mkdir -p /www; echo "instance-id=unknown" > /www/index.html
  httpd -p 80 -h /www
  route -n | grep -qE '^(0\.0\.0\.0|169\.254\.169\.254) ' || return 0
  id=; n=0
  while [ -z "$id" ] && [ $n -lt 5 ]; do
    id=$(meta meta-data/instance-id); n=$((n+1)); [ -n "$id" ] || sleep 1
  done
  if [ -z "$id" ]; then echo "TG-META-FAILED uptime=$(up)"; return 0; fi
  echo "TG-META instance-id=$id"
  echo "instance-id=$id" > /www/index.html
  meta user-data > /tmp/user-data
  if [ "$(head -c 2 /tmp/user-data)" = '#!' ]; then
    chmod +x /tmp/user-data; /tmp/user-data 2>&1 &
  else
    echo "TG-USERDATA bytes=$(wc -c < /tmp/user-data)"
  fi
}
net_main &

disk_test() {  # $1 = vda
  d=/dev/$1
  i=0; while [ ! -b $d ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  sz=$(cat /sys/block/$1/size 2>/dev/null)
  ro=$(cat /sys/block/$1/ro 2>/dev/null)
  s0=$(dd if=$d bs=512 count=1 2>/dev/null | md5sum | cut -c1-12)
  head=$(dd if=$d bs=1 count=32 2>/dev/null | tr -c 'A-Za-z0-9._:/=+ -' '.')
  before=$(dd if=$d bs=64 count=1 skip=16384 2>/dev/null | tr -d '\0' | tr -c 'A-Za-z0-9._:/=+ -' '.')
  msg="TG-WRITE $1 $(up) $(cat /proc/sys/kernel/random/uuid | cut -c1-8)"
  if printf '%-64s' "$msg" | dd of=$d bs=64 count=1 seek=16384 conv=notrunc,fsync 2>/dev/null; then
    back=$(dd if=$d bs=64 count=1 skip=16384 2>/dev/null | tr -d '\0')
    echo "TG-DISK $1 sectors=$sz ro=$ro sector0_md5=$s0 head='$head' before='$(echo $before)' wrote='$msg' readback='$(echo $back)'"
  else
    echo "TG-DISK $1 sectors=$sz ro=$ro sector0_md5=$s0 head='$head' WRITE-FAILED"
  fi
}

case $mode in
  disk)
    for b in /sys/block/vd*; do [ -e "$b" ] && disk_test ${b##*/}; done ;;
  hotplug)
    known=" $(cd /sys/block && ls -d vd* 2>/dev/null | tr '\n' ' ')"
    echo "TG-HOTPLUG-READY initial=[$known ]"
    end=$(( $(cut -d. -f1 /proc/uptime) + wait ))
    while [ "$wait" = 0 ] || [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do
      now=" $(cd /sys/block && ls -d vd* 2>/dev/null | tr '\n' ' ')"
      for d in $now; do case "$known" in *" $d "*) ;; *) echo "TG-HOTPLUG-ADD $d uptime=$(up)"; disk_test $d;; esac; done
      for d in $known; do case "$now" in *" $d "*) ;; *) echo "TG-HOTPLUG-REMOVE $d uptime=$(up)";; esac; done
      known="$now"
      sleep 0.1
    done ;;
  shell)
    setsid cttyhack sh; ;;
esac
echo "TG-DONE uptime=$(up)"
sync
poweroff -f; reboot -f
EOF
chmod +x "$R/init"

# acpid's power-button action.
mkdir -p "$R/etc/acpi/PWRF"
cat > "$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "TG-POWERDOWN uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
sync
poweroff -f
EOF
chmod +x "$R/etc/acpi/PWRF/00000080"

# udhcpc's event script: configures eth0 from the lease (address, default route,
# option 121's static routes) and leaves it in /tmp/lease for /init to print
# (busybox exports ip, subnet, router, broadcast, staticroutes).
mkdir -p "$R/etc"
cat > "$R/etc/tg-dhcp" <<'EOF'
#!/bin/sh
case $1 in
  deconfig)
    ifconfig "$interface" 0.0.0.0 up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ${broadcast:+broadcast $broadcast} up
    if [ -n "$router" ]; then
      while route del default 2>/dev/null; do :; done
      set -- $router
      route add default gw "$1" dev "$interface"
    fi
    # Option 121 (classless static routes, "dest/len gw" pairs), after the default
    # route so a 0.0.0.0/0 among them wins as RFC 3442 says; static mode's
    # 169.254.169.254/32 via the CC's router namespace comes this way.
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface" 2>/dev/null; shift 2; done
    set -- $router
    echo "ip=$ip mask=${subnet:-} router=${1:-}" > /tmp/lease.new && mv /tmp/lease.new /tmp/lease ;;
esac
exit 0
EOF
chmod +x "$R/etc/tg-dhcp"

( cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) | gzip -9 > "$OUT/initramfs.gz"
rm -rf "$WORK/k" "$WORK/bb"
if command -v lz4 >/dev/null; then
  "$(cd "$(dirname "$0")" && pwd)/extract-vmlinux.py" "$OUT/vmlinuz" "$OUT/vmlinux" >/dev/null
else
  echo "note: lz4 not installed; no vmlinux (PVH) produced" >&2
fi
ls -la "$OUT"/vmlinu* "$OUT/initramfs.gz"
echo "kernel $KVER"
