#!/usr/bin/env bash
# VM boot test: the Debian package of stapsteen, with the unit files of nix/, installed into a
# minimal Debian root file system and booted under real systemd in QEMU (KVM where it can run
# Debian's kernel, else TCG with longer timeouts). Everything is checked from outside the VM:
#
#   hypervisor namespace (admin side)        VM "bastion"                     management namespace
#   10.81.1.2 admin, 10.81.3.2 reviewer --- tapA  10.81.1.1 ssh, 10.81.3.1 console
#                                            tapM  10.81.2.1 --- bridge --- 10.81.2.10 real sshd
#                                                                        \--- probe host (RA control)
#
# The test's only way into the guest is the QEMU guest agent on a virtio serial port (qga.py):
# the appliance has no shell or sshd for anyone, and the agent is no network service. It is in
# the test image only, never in the package.
#
# Root file system: mmdebstrap from Debian's packages, cached as a tarball in target/vm-cache/
# keyed by suite and package list (STAPSTEEN_VM_FRESH=1 builds it anew). Run as root.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
here="$root/tests/vm"
work="$root/target/vm"
cache="$root/target/vm-cache"
SUITE=bookworm
# What the guest has besides the essential set: the kernel, systemd, what the package needs
# (nftables, procps for the unit's /bin/kill, libssl3), iproute2 and the test-only guest agent.
PACKAGES=(systemd systemd-sysv udev linux-image-amd64 kmod nftables iproute2 procps libssl3
  qemu-guest-agent)
CARGO_DEB_VERSION=3.8.0

ADMIN_HOST=10.81.1.2 ADMIN_VM=10.81.1.1
REVIEW_HOST=10.81.3.2 REVIEW_VM=10.81.3.1
MGMT_VM=10.81.2.1 TARGET=10.81.2.10
MAC_ADMIN=52:54:00:81:01:01 MAC_MGMT=52:54:00:81:02:01
NH="stvmH$$" NM="stvmM$$" NP="stvmP$$"
CONFIG=/etc/stapsteen/stapsteen.toml

log() { printf '%s vm-test: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
passed=0
ok() {
  log "ok: $*"
  passed=$((passed + 1))
}
fail() {
  log "FAILED: $*"
  exit 1
}
pids=()
qemu_pid=""
SLOW=1
netns_made=0

# Retries CMD until it succeeds; at most SECONDS (scaled under TCG). Polls, so the test goes on
# as soon as the event happens.
wait_for() {
  local what=$1 secs=$(($2 * SLOW))
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || fail "timed out after ${secs}s waiting for: $what"
    sleep 0.2
  done
}

# A command in the guest through the agent (stdin passed along when given with vm_in).
vm() { python3 "$here/qga.py" "$work/qga.sock" exec --timeout $((60 * SLOW)) "$*" </dev/null; }
vm_in() { python3 "$here/qga.py" "$work/qga.sock" exec --timeout $((60 * SLOW)) "$*"; }
in_admin() { ip netns exec "$NH" "$@"; }
in_mgmt() { ip netns exec "$NM" "$@"; }

ssh_opts=()
ssh_admin() { in_admin ssh "${ssh_opts[@]}" "$@"; }

dump() {
  log "--- serial console (last 80 lines) ---"
  tail -n 80 "$work/serial.log" 2>/dev/null >&2 || true
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    log "--- guest journal (last 300 lines) ---"
    python3 "$here/qga.py" "$work/qga.sock" exec --timeout 20 \
      "journalctl -b --no-pager | grep -v qemu-ga | tail -n 300; systemctl --no-pager status stapsteen stapsteen-keygen" \
      </dev/null >&2 || true
  fi
  log "--- target sshd log (last 40 lines) ---"
  tail -n 40 "$work/target.log" 2>/dev/null >&2 || true
}

cleanup() {
  local rc=$?
  set +e
  [ "$rc" = 0 ] || dump
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null
  fi
  if [ "$netns_made" = 1 ]; then
    for ns in "$NH" "$NM" "$NP"; do
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    done
  fi
  [ -d "$work/root/proc" ] && mountpoint -q "$work/root/proc" && umount "$work/root/proc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites: installed when missing; with CI=true nothing is ever skipped -------------
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces, taps, chroot)"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v nmap >/dev/null || need+=(nmap)
command -v curl >/dev/null || need+=(curl)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "installing cargo-deb $CARGO_DEB_VERSION from crates.io"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2
fi

# --- the package ---------------------------------------------------------------------------
log "building the Debian package"
# As the package ships it: without the demo and the software security key (feature `demo`).
cargo build --release --locked --no-default-features
rm -rf "$work"
mkdir -p "$work" "$cache"
cargo deb --no-build --locked --output "$work/stapsteen.deb" >&2
deb="$work/stapsteen.deb"
# One source of truth: the units in the package are nix/'s files, byte for byte.
for unit in stapsteen.service stapsteen-keygen.service; do
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards "*/systemd/system/$unit" |
    cmp -s - "nix/$unit" || fail "$unit in the package differs from nix/$unit"
done
contents=$(dpkg-deb --fsys-tarfile "$deb" | tar -t)
for f in ./usr/bin/stapsteen ./etc/stapsteen/stapsteen.toml ./etc/stapsteen/policy.toml; do
  grep -qx "$f" <<<"$contents" || fail "the package has no ${f#.}"
done
grep -qx /etc/stapsteen/stapsteen.toml <<<"$(dpkg-deb -f "$deb" Conffiles 2>/dev/null; dpkg-deb -I "$deb" conffiles)" ||
  fail "/etc/stapsteen/stapsteen.toml is not a conffile"
grep -q nftables <<<"$(dpkg-deb -f "$deb" Depends)" || fail "the package does not depend on nftables"
log "package: $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version), $(du -h "$deb" | cut -f1)"

# --- root file system (cached by suite and package list) ------------------------------------
key=$(printf '%s\n' "v1" "$SUITE" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
rootfs="$cache/rootfs-$SUITE-$key.tar"
if [ "${STAPSTEEN_VM_FRESH:-0}" = 1 ] || [ ! -s "$rootfs" ]; then
  log "building the root file system with mmdebstrap ($SUITE: ${PACKAGES[*]})"
  t=$SECONDS
  rm -rf "$rootfs.tmp"
  mmdebstrap --quiet --format=tar --variant=apt --include="$(
    IFS=,
    echo "${PACKAGES[*]}"
  )" "$SUITE" "$rootfs.tmp" >&2
  mv "$rootfs.tmp" "$rootfs"
  log "root file system built in $((SECONDS - t))s"
else
  log "root file system from the cache: $rootfs"
fi

# --- the guest: the package installed as an operator would, then configured ------------------
log "installing the package into the guest"
mkdir -p "$work/root"
tar -C "$work/root" -xpf "$rootfs"
mount -t proc proc "$work/root/proc"
cp "$deb" "$work/root/tmp/stapsteen.deb"
chroot "$work/root" dpkg -i /tmp/stapsteen.deb >&2
rm "$work/root/tmp/stapsteen.deb"
umount "$work/root/proc"
g="$work/root"
echo bastion >"$g/etc/hostname"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$g/etc/fstab"
mkdir -p "$g/var/log/journal"
# Interfaces matched by MAC, static addresses, no DHCP and no router advertisements.
cat >"$g/etc/systemd/network/10-admin.network" <<EOF
[Match]
MACAddress=$MAC_ADMIN
[Network]
Address=$ADMIN_VM/24
Address=$REVIEW_VM/24
DHCP=no
IPv6AcceptRA=no
EOF
# The management link takes router advertisements, on purpose: the test shows that the daemon's
# table is what stops them (a production config says IPv6AcceptRA=no as well). Boot does not
# wait for that link: with no router it would sit in "configuring" until router solicitation
# gives up, some 12 s, and network-online.target (which the daemon follows) with it.
cat >"$g/etc/systemd/network/20-management.network" <<EOF
[Match]
MACAddress=$MAC_MGMT
[Link]
RequiredForOnline=no
[Network]
Address=$MGMT_VM/24
DHCP=no
IPv6AcceptRA=yes
EOF
chroot "$g" systemctl enable systemd-networkd.service >&2

# The admin's software security key, and the target's host key, exist before the first boot so
# the policy can name them.
# The admin's side: the software security key and `check` come from a build with the demo
# feature (the package's binary has no software key).
cargo build --locked >&2
bin="$root/target/debug/stapsteen"
"$bin" softkey-agent --socket "$work/agent.sock" --key "$work/alice" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the software security key agent" 10 test -S "$work/agent.sock" -a -s "$work/alice.sk.pub"
ssh-keygen -q -t ed25519 -N "" -C "" -f "$work/target_host"
alice=$(cut -d' ' -f1,2 "$work/alice.sk.pub")
target_hostkey=$(cut -d' ' -f1,2 "$work/target_host.pub")

# The operator's configuration and policy, replacing the package's defaults.
cat >"$g$CONFIG" <<EOF
listen = ["$ADMIN_VM:22"]
policy = "/etc/stapsteen/policy.toml"
state_dir = "/var/lib/stapsteen"
host_key = "/var/lib/stapsteen-keys/host_key"
ca_key = "/var/lib/stapsteen-keys/ca_key"
signing_key = "/var/lib/stapsteen-keys/signing_key"
audit = "journald"

[firewall]
enabled = true
admin_networks = ["10.81.1.0/24"]
management_networks = ["10.81.2.0/24"]
reviewer_networks = ["10.81.3.0/24"]

[console]
listen = ["$REVIEW_VM:443"]
host = "bastion.test"
EOF
cat >"$g/etc/stapsteen/policy.toml" <<EOF
[[admin]]
name = "alice"
full_name = "Alice Admin"
keys = ["$alice"]

[[target]]
name = "pacs01"
address = "$TARGET"
host_keys = ["$target_hostkey"]
accounts = ["root"]

[[grant]]
name = "pacs-beheer"
admins = ["alice"]
targets = ["pacs01"]
accounts = ["root"]

[[reviewer]]
name = "c.visser"
EOF
"$bin" check --policy "$g/etc/stapsteen/policy.toml" >&2
# What an operator does after configuring: enable the daemon (the key generation unit comes with it).
chroot "$g" systemctl enable stapsteen.service >&2

kernel=$(ls "$g"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$g"/boot/initrd.img-* | sort -V | tail -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
# KVM when it can run Debian's kernel; otherwise TCG, everything waited on SLOW times longer.
# A /dev/kvm is not enough: on some hosts it is a paravirtual KVM (kvm-pvm, no VMX/SVM) that
# only runs specially built guest kernels, and a stock kernel hangs before its first message.
# So boot the kernel alone (it panics without a root file system) and wait for its banner.
kvm_boots() {
  [ -c /dev/kvm ] && [ -w /dev/kvm ] || return 1
  local probe=$work/kvm-probe.log end=$((SECONDS + 20)) p
  : >"$probe"
  qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config -display none \
    -no-reboot -serial "file:$probe" -kernel "$work/vmlinuz" -append "console=ttyS0 panic=-1" \
    </dev/null >/dev/null 2>&1 &
  p=$!
  until grep -q 'Linux version' "$probe"; do
    if ! kill -0 "$p" 2>/dev/null || ((SECONDS >= end)); then
      kill "$p" 2>/dev/null
      wait "$p" 2>/dev/null
      return 1
    fi
    sleep 0.2
  done
  kill "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}
case "${STAPSTEEN_VM_ACCEL:-auto}" in
kvm) ACCEL=(-accel kvm -cpu host) ;;
tcg) ACCEL=(-accel tcg -cpu max) SLOW=6 ;;
*)
  if kvm_boots; then
    ACCEL=(-accel kvm -cpu host)
  else
    log "KVM cannot run Debian's kernel here (no /dev/kvm, or a paravirtual one): TCG (software emulation), timeouts x6"
    ACCEL=(-accel tcg -cpu max) SLOW=6
  fi
  ;;
esac
truncate -s 2G "$work/disk.raw"
mkfs.ext4 -q -F -L root -d "$g" "$work/disk.raw"
rm -rf "$g"

# --- networks --------------------------------------------------------------------------------
log "networks: admin side $NH (with QEMU), management side $NM"
ip netns add "$NH"
ip netns add "$NM"
ip netns add "$NP"
netns_made=1
for ns in "$NH" "$NM" "$NP"; do ip -n "$ns" link set lo up; done
ip -n "$NH" tuntap add dev tapA mode tap
ip -n "$NH" tuntap add dev tapM mode tap
ip -n "$NH" link add brM type bridge
ip -n "$NH" link set tapM master brM
ip -n "$NH" link add vM type veth peer name eth0 netns "$NM"
ip -n "$NH" link set vM master brM
# A probe host on the management segment that takes router advertisements (the control).
ip -n "$NH" link add vP type veth peer name eth0 netns "$NP"
ip -n "$NH" link set vP master brM
ip -n "$NH" link set vP up
ip -n "$NP" link set eth0 up
ip -n "$NH" addr add "$ADMIN_HOST/24" dev tapA
ip -n "$NH" addr add "$REVIEW_HOST/24" dev tapA
for dev in tapA tapM brM vM; do ip -n "$NH" link set "$dev" up; done
ip -n "$NM" addr add "$TARGET/24" dev eth0
ip -n "$NM" link set eth0 up
# As on a real network, both sides route via the bastion, which must not forward.
ip -n "$NM" route add default via "$MGMT_VM"
ip -n "$NH" route add 10.81.2.0/24 via "$ADMIN_VM"

# --- first boot ------------------------------------------------------------------------------
boot() {
  log "booting (${ACCEL[*]})"
  in_admin qemu-system-x86_64 -name bastion "${ACCEL[@]}" -smp 2 -m 1024 \
    -nodefaults -no-user-config -display none -serial "file:$work/serial.log" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1" \
    -drive "file=$work/disk.raw,format=raw,if=virtio" \
    -device virtio-rng-pci \
    -netdev tap,id=adm,ifname=tapA,script=no,downscript=no \
    -device "virtio-net-pci,netdev=adm,mac=$MAC_ADMIN" \
    -netdev tap,id=mgmt,ifname=tapM,script=no,downscript=no \
    -device "virtio-net-pci,netdev=mgmt,mac=$MAC_MGMT" \
    -chardev "socket,id=qga,path=$work/qga.sock,server=on,wait=off" \
    -device virtio-serial-pci -device virtserialport,chardev=qga,name=org.qemu.guest_agent.0 &
  qemu_pid=$!
}
ssh_port_open() { in_admin timeout 2 bash -c "exec 3<>/dev/tcp/$ADMIN_VM/22"; }
# The guest-side monotonic time (seconds since the kernel started) of this boot's SERVICE_START.
service_started() { vm "journalctl -b -u stapsteen.service -o cat MESSAGE=SERVICE_START" | grep -q SERVICE_START; }
ready_monotonic() {
  wait_for "SERVICE_START in this boot's journal" 30 service_started
  vm "journalctl -b -u stapsteen.service -o json MESSAGE=SERVICE_START | head -n 1" |
    python3 -c 'import json,sys; print("%.1f" % (int(json.loads(sys.stdin.readline())["__MONOTONIC_TIMESTAMP"]) / 1e6))'
}

t0=$(date +%s.%N)
boot
wait_for "the guest agent" 120 python3 "$here/qga.py" "$work/qga.sock" ping --timeout 5
wait_for "stapsteen on $ADMIN_VM:22" 120 ssh_port_open
t1=$(date +%s.%N)
boot1=$(python3 -c "print(round($t1 - $t0, 1))")
guest1=$(ready_monotonic)
log "first boot: SSH port answers ${boot1}s after QEMU started; SERVICE_START at ${guest1}s guest time"
boot_report() {
  vm "systemctl is-system-running --wait; systemctl --no-pager --failed --plain --no-legend; systemd-analyze; systemd-analyze critical-chain --no-pager stapsteen.service; journalctl -b -o short-monotonic --no-pager -u stapsteen.service -u stapsteen-keygen.service | head -n 16" || true
}
log "the guest's boot:"$'\n'"$(boot_report)"

# 1. First boot generated the keys through the keygen unit; the fingerprints are in the journal.
keygen_log=$(vm "journalctl -b -u stapsteen-keygen.service -o cat")
for k in host_key ca_key signing_key; do
  vm "cat /var/lib/stapsteen-keys/$k.pub" >"$work/$k.pub"
  fp=$(ssh-keygen -lf "$work/$k.pub" | cut -d' ' -f2)
  grep -q "$k: $fp" <<<"$keygen_log" || fail "no fingerprint of $k ($fp) in the keygen unit's journal"
done
vm "stat -c '%a %n' /var/lib/stapsteen-keys/host_key /var/lib/stapsteen-keys/ca_key /var/lib/stapsteen-keys/signing_key" |
  grep -v '^600 ' && fail "a private key is not mode 0600"
ok "keys generated on first boot by stapsteen-keygen, fingerprints in its journal"

# 2. stapsteen.service is active under the shipped unit, unchanged, with its sandbox.
vm "systemctl is-active stapsteen.service" | grep -qx active || fail "stapsteen.service is not active"
vm 'cat "$(systemctl show -p FragmentPath --value stapsteen.service)"' | cmp -s - nix/stapsteen.service ||
  fail "the guest runs another stapsteen.service than nix/stapsteen.service"
dropins=$(vm "systemctl show -p DropInPaths --value stapsteen.service")
[ -z "$dropins" ] || fail "drop-ins change the shipped unit: $dropins"
pid=$(vm "systemctl show -p MainPID --value stapsteen.service")
status=$(vm "cat /proc/$pid/status")
# CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), nothing else.
grep -qx $'CapEff:\t0000000000001400' <<<"$status" || fail "unexpected capabilities: $(grep ^Cap <<<"$status")"
grep -qx $'NoNewPrivs:\t1' <<<"$status" || fail "NoNewPrivs is off"
grep -q $'^Seccomp:\t2' <<<"$status" || fail "no system call filter"
uid=$(awk '/^Uid:/ {print $2}' <<<"$status")
# What an operator runs after editing the config: the daemon's own check, as root in the guest.
vm "stapsteen check --config $CONFIG" >/dev/null || fail "stapsteen check refuses the guest's config"
[ "$uid" -ge 61184 ] || fail "the daemon does not run as a dynamic user (uid $uid)"
exposure=$(vm "systemd-analyze security --no-pager stapsteen.service | tail -n 1")
ok "stapsteen.service active, shipped unit unchanged, uid $uid, CapEff 0x1400, seccomp; $exposure"

# 3. An admin logs in with the stock ssh and the security key; the target's log names her; the
#    recording is sealed.
mkdir -p /run/sshd
cat >"$work/target_sshd_config" <<EOF
ListenAddress $TARGET:22
HostKey $work/target_host
PidFile $work/target.pid
TrustedUserCAKeys $work/ca_key.pub
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
LogLevel VERBOSE
EOF
in_mgmt /usr/sbin/sshd -D -e -f "$work/target_sshd_config" 2>>"$work/target.log" &
pids+=($!)
wait_for "the target's sshd" 10 in_mgmt bash -c "exec 3<>/dev/tcp/$TARGET/22"
echo "$ADMIN_VM $(cat "$work/host_key.pub")" >"$work/known_hosts"
ssh_opts=(-F none -o "IdentityAgent=$work/agent.sock" -o "UserKnownHostsFile=$work/known_hosts"
  -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=$((10 * SLOW)))
# Only through the bastion: the admin side routes the management network via the VM.
in_admin timeout 5 bash -c "exec 3<>/dev/tcp/$TARGET/22" 2>/dev/null &&
  fail "the admin side reaches the target directly"
out=$(ssh_admin -tt "alice@$ADMIN_VM" pacs01 'echo through-the-bastion $(id -un)@$(hostname -I); exit' </dev/null)
grep -q "through-the-bastion root@$TARGET" <<<"$out" || fail "no command output from the target: $out"
grep -q 'stapsteen admin=alice session=' "$work/target.log" ||
  fail "the target's log does not name the admin"
grep -q "Accepted publickey for root from $MGMT_VM" "$work/target.log" ||
  fail "the target did not see the bastion's management address"
verify=$(vm "stapsteen recordings verify --all --config $CONFIG") || fail "recordings verify: $verify"
grep -q sealed <<<"$verify" || fail "the recording is not sealed: $verify"
vm "stapsteen audit verify --config $CONFIG" >/dev/null || fail "audit verify failed"
ok "alice ran a command on pacs01 through the bastion; target log: $(grep -o 'ID stapsteen admin=alice session=[^ ]*' "$work/target.log" | head -n 1); $verify"

# 4. Only port 22 answers from the admin network and only the console from the reviewer network.
# Every TCP port of both guest addresses, from each source address: "address:port ..." open.
scan() {
  in_admin nmap -n -Pn -sS -p- --min-rate 5000 --max-retries 1 --open -oG - "$@" "$ADMIN_VM" "$REVIEW_VM" 2>/dev/null |
    awk '/Ports:/ { n = split($0, f, /[ ,\t]+/); for (i = 1; i <= n; i++) if (f[i] ~ /^[0-9]+\/open\//) { split(f[i], p, "/"); printf "%s:%s ", $2, p[1] } }'
}
from_admin=$(scan -S "$ADMIN_HOST" -e tapA)
from_review=$(scan -S "$REVIEW_HOST" -e tapA)
[ "$from_admin" = "$ADMIN_VM:22 " ] || fail "open TCP ports from the admin network: $from_admin"
[ "$from_review" = "$REVIEW_VM:443 " ] || fail "open TCP ports from the reviewer network: $from_review"
code=$(in_admin curl -sk --interface "$REVIEW_HOST" --resolve "bastion.test:443:$REVIEW_VM" \
  -o /dev/null -w '%{http_code}' https://bastion.test/login)
[ "$code" = 200 ] || fail "the console's login page answered $code"
listening=$(vm "ss -Hlntu")
ok "TCP scan (all ports) from admin: $from_admin; from reviewer: $from_review; console login page 200"
log "sockets listening in the guest:"$'\n'"$listening"
grep -vE '(127\.0\.0\.[0-9]+|\[::1\]|\[::ffff:127\.0\.0\.1\]):[0-9]+ ' <<<"$listening" |
  grep -vE " ($ADMIN_VM:22|$REVIEW_VM:443) " && fail "something else listens on a non-loopback address"

# 5. The nftables table is in place; an unmarked connection from inside the VM to the management
#    network fails, and the kernel's refused_output counter shows it was this table that refused.
table=$(vm "nft list table inet stapsteen")
grep -q 'icmpv6 type { nd-router-advert, nd-redirect } drop' <<<"$table" || fail "no drop of router advertisements"
grep -q 'icmp type redirect drop' <<<"$table" || fail "no drop of ICMP redirects"
refused() { vm "nft list counter inet stapsteen refused_output" | awk '/packets/ {print $2}'; }
before=$(refused)
vm "timeout 5 bash -c 'exec 3<>/dev/tcp/$TARGET/22'" 2>/dev/null &&
  fail "an unmarked connection from the guest reached the target"
after=$(refused)
[ "$after" -gt "$before" ] || fail "refused_output did not count the unmarked connection ($before -> $after)"
# Positive control: the same destination through the bastion's marked socket works.
out=$(ssh_admin "alice@$ADMIN_VM" pacs01 'echo marked-path-ok' </dev/null)
[ "$out" = marked-path-ok ] || fail "the marked path to the target failed: $out"
ok "table inet stapsteen in place; unmarked connect to $TARGET:22 refused (refused_output $before -> $after); marked path works"

# 5b. A router advertisement on the management network (prefix 2001:db8:99::/64 and a default
#     route) does not reach the guest's network stack, although its config would take it; the
#     probe host on the same segment takes the very same advertisements (the control).
send_ra() { in_mgmt python3 "$here/ra.py" eth0; }
target_ll() { ip -n "$NM" -6 addr show dev eth0 scope link | grep -q fe80 && ! ip -n "$NM" -6 addr show dev eth0 | grep -q tentative; }
wait_for "the target's IPv6 link-local address" 30 target_ll
probe_took_ra() { send_ra && ip -n "$NP" -6 addr show dev eth0 | grep -q '2001:db8:99:'; }
wait_for "the probe host to take the router advertisement" 30 probe_took_ra
# Addresses in the advertised prefix, and IPv6 default routes, in the guest: "0 0" until one came.
guest_ra_state() { vm "echo \$(ip -6 -o addr show | grep -c 2001:db8:99:) \$(ip -6 route show default | wc -l)"; }
# Absence can only be shown over a window: RAs keep coming for 5 s (30 s under TCG), and the
# guest, which would configure the prefix within a second of one arriving, must never have it.
end=$((SECONDS + 5 * SLOW))
while ((SECONDS < end)); do
  send_ra
  ra_state=$(guest_ra_state) || fail "the guest agent did not answer"
  [ "$ra_state" = "0 0" ] || fail "a router advertisement reached the guest: $(vm "ip -6 addr show; ip -6 route")"
  sleep 0.5
done
ok "router advertisements on the management network: the probe host configured 2001:db8:99::/64, the guest did not"

# 6. Memory at idle and with 10 sessions.
# MiB in use in the guest (MemTotal - MemAvailable), and the daemon's cgroup.
meminfo() {
  vm_in sh <<'EOF'
used=$(awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print int((t-a)/1024)}' /proc/meminfo)
svc=$(( $(systemctl show -p MemoryCurrent --value stapsteen.service) / 1048576 ))
tasks=$(systemctl show -p TasksCurrent --value stapsteen.service)
fds=$(ls /proc/$(systemctl show -p MainPID --value stapsteen.service)/fd | wc -l)
echo "$used $svc $tasks $fds"
EOF
}
read -r guest_idle svc_idle tasks_idle fds_idle <<<"$(meminfo)"
sess=()
ready() { for i in $(seq "$1" "$2"); do grep -q "session-$i-ready" "$work/s$i.out" || return 1; done; }
# Two waves of 5 logins at once (their key counters reach the bastion out of order): one host
# holds at most max_unauthenticated_per_source (8) connections before they log in.
for first in 1 6; do
  for i in $(seq "$first" $((first + 4))); do
    # Not through a shell function: $! must be ssh itself (ip netns exec execs it).
    ip netns exec "$NH" ssh "${ssh_opts[@]}" -tt "alice@$ADMIN_VM" pacs01 "echo session-$i-ready; sleep 600" \
      </dev/null >"$work/s$i.out" 2>&1 &
    sess+=($!)
  done
  wait_for "sessions $first to $((first + 4)) at once" 60 ready "$first" $((first + 4))
done
read -r guest_10 svc_10 tasks_10 fds_10 <<<"$(meminfo)"
kill "${sess[@]}" 2>/dev/null || true
wait "${sess[@]}" 2>/dev/null || true
ended() { [ "$(vm "journalctl -b -u stapsteen.service -o cat MESSAGE=SESSION_END" | grep -c SESSION_END)" -ge 12 ]; }
wait_for "the 10 sessions to end" 30 ended
log "memory: guest in use (MemTotal - MemAvailable) idle ${guest_idle} MiB, with 10 sessions ${guest_10} MiB; stapsteen.service cgroup idle ${svc_idle} MiB, with 10 sessions ${svc_10} MiB; tasks ${tasks_idle} -> ${tasks_10}; open files ${fds_idle} -> ${fds_10}"

# 7. SIGKILL mid-session: systemd restarts it; the recording shows unterminated; the audit chain
#    verifies; a new session works.
ip netns exec "$NH" ssh "${ssh_opts[@]}" -tt "alice@$ADMIN_VM" pacs01 'echo crash-session-started; sleep 600' \
  </dev/null >"$work/crash.out" 2>&1 &
crash_ssh=$!
wait_for "the session to be killed" 30 grep -q crash-session-started "$work/crash.out"
starts() { vm "journalctl -b -u stapsteen.service -o cat MESSAGE=SERVICE_START" | grep -c SERVICE_START; }
n_starts=$(starts)
old_pid=$(vm "systemctl show -p MainPID --value stapsteen.service")
vm "systemctl kill -s KILL stapsteen.service"
restarted() {
  local p
  p=$(vm "systemctl show -p MainPID --value stapsteen.service")
  [ "$p" != 0 ] && [ "$p" != "$old_pid" ] && [ "$(starts)" -gt "$n_starts" ]
}
wait_for "systemd to restart stapsteen" 30 restarted
wait_for "the killed session's client to end" 30 bash -c "! kill -0 $crash_ssh 2>/dev/null"
wait_for "stapsteen on port 22 again" 30 ssh_port_open
nrestarts=$(vm "systemctl show -p NRestarts --value stapsteen.service")
verify=$(vm "stapsteen recordings verify --all --config $CONFIG" || true)
grep -q 'unterminated (crash)' <<<"$verify" || fail "the killed session's recording is not unterminated: $verify"
[ "$(grep -c 'unterminated' <<<"$verify")" = 1 ] || fail "more than one unterminated recording: $verify"
vm "stapsteen audit verify --config $CONFIG" >/dev/null || fail "audit verify failed after the crash"
out=$(ssh_admin -tt "alice@$ADMIN_VM" pacs01 'echo after-the-crash; exit' </dev/null)
grep -q after-the-crash <<<"$out" || fail "no session after the restart: $out"
ok "SIGKILL -> restarted (NRestarts=$nrestarts, pid $old_pid -> new); $(grep unterminated <<<"$verify"); audit verify clean; new session works"

# 8. Reboot: keys, policy, recordings and the audit chain survive, and the chain continues.
state() {
  vm "sha256sum /var/lib/stapsteen-keys/*.pub /etc/stapsteen/policy.toml | cut -c1-64; stapsteen recordings list --config $CONFIG | wc -l"
}
chain_len() { vm "wc -l < /var/lib/stapsteen/audit/chain.jsonl"; }
state_before=$(state)
len_before=$(chain_len)
head_before=$(vm "head -n $len_before /var/lib/stapsteen/audit/chain.jsonl | sha256sum")
boot_id=$(vm "cat /proc/sys/kernel/random/boot_id")
t0=$(date +%s.%N)
# A timer starts the reboot a second later, so the agent has answered before it stops.
vm "systemd-run --quiet --on-active=1s /bin/systemctl reboot"
# Timed from outside: the port goes away with the old boot and answers again in the new one.
port_closed() { ! ssh_port_open; }
wait_for "the port to close for the reboot" 60 port_closed
wait_for "stapsteen after the reboot" 120 ssh_port_open
t1=$(date +%s.%N)
new_boot() {
  local b
  b=$(vm "cat /proc/sys/kernel/random/boot_id") || return 1
  [ -n "$b" ] && [ "$b" != "$boot_id" ]
}
wait_for "the guest agent in the new boot" 60 new_boot
boot2=$(python3 -c "print(round($t1 - $t0, 1))")
guest2=$(ready_monotonic)
log "the guest's boot after the reboot:"$'\n'"$(boot_report)"
[ "$(state)" = "$state_before" ] || fail "keys, policy or recordings changed across the reboot"
boots=$(vm "journalctl --list-boots --no-pager" | grep -cE '^ *-?[0-9]+ [0-9a-f]{32} ' || true)
[ "$boots" = 2 ] || fail "the journal does not hold both boots ($boots)"
[ "$(vm "systemctl show -p ConditionResult --value stapsteen-keygen.service")" = no ] ||
  fail "the keygen unit ran again on the second boot"
[ "$(vm "head -n $len_before /var/lib/stapsteen/audit/chain.jsonl | sha256sum")" = "$head_before" ] ||
  fail "the audit chain's old entries changed across the reboot"
out=$(ssh_admin -tt "alice@$ADMIN_VM" pacs01 'echo after-the-reboot; exit' </dev/null)
grep -q after-the-reboot <<<"$out" || fail "no session after the reboot: $out"
len_after=$(chain_len)
[ "$len_after" -gt "$len_before" ] || fail "the audit chain did not grow after the reboot"
vm "stapsteen audit verify --config $CONFIG" >/dev/null || fail "audit verify failed after the reboot"
ok "reboot kept keys, policy, $(tail -n 1 <<<"$state_before") recordings; chain $len_before -> $len_after entries, verifies; journal holds $boots boots"

log "boot to ready (SSH port answering): first boot ${boot1}s (with key generation; guest clock ${guest1}s), reboot ${boot2}s (guest clock ${guest2}s); ${ACCEL[1]}"
log "memory: guest idle ${guest_idle} MiB, 10 sessions ${guest_10} MiB; stapsteen.service idle ${svc_idle} MiB, 10 sessions ${svc_10} MiB"
echo "vm boot test: $passed passed, 0 failed"
