"""What every guest vagabond makes carries: Vagrant's insecure public key (until a VM gets its own),
the unit that gives each VM its own SSH key, sshd's settings, host keys made per VM. Boxes made
from these are keyed on RECIPE_VERSION: bump it when any of this changes."""

from __future__ import annotations

# Bump when the guest recipe (here, in mmdebstrap.py or cloudimage.py) changes what ends up in an
# image: cached base boxes are keyed on it.
RECIPE_VERSION = 10

# Vagrant's published insecure public key (RSA). Boxes carry it so `vagrant up` can log in the first
# time; vagabond renders `config.ssh.insert_key = false`, so it stays (see Vagrantfile.j2).
INSECURE_PUBLIC_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v"
    "1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4"
    "O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk"
    "1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure "
    "public key"
)
# Each VM's own SSH key: vagabond hands the guest a public key of its run in an SMBIOS OEM string
# (libvirt's <sysinfo>, rendered by Vagrantfile.j2), and this unit makes it the vagrant user's only
# key before sshd starts. Vagrant's published insecure key then opens nothing, for anyone else on
# the host's libvirt network; a VM started without such a string (plain `vagrant up`) keeps the
# box's key. The string is read from /sys, as every kernel with DMI has it (CentOS 7's too).
#
# A VM restored from a warm image gets a new key through the guest agent before its network comes
# back (`rekey`, the key on stdin): the SMBIOS string is part of the saved machine and cannot change,
# so the script records which key replaced it, and a reboot keeps the new key, not the saved one.
AUTHORIZED_KEY_PREFIX = "vagabond:authorized-key="
AUTHORIZED_KEY_SCRIPT_PATH = "/usr/local/libexec/vagabond-authorized-key"
AUTHORIZED_KEY_STATE = "/var/lib/vagabond/authorized-key"
AUTHORIZED_KEY_SCRIPT = f"""\
#!/bin/sh
# vagabond: this VM's SSH key, handed over by the host in an SMBIOS OEM string (type 11) at boot,
# or by the host's guest agent after a restore from a warm image ("rekey", the key on stdin).
dmi=/sys/firmware/dmi/entries
ssh_dir=/home/vagrant/.ssh
owner=vagrant:
state={AUTHORIZED_KEY_STATE}
host_keys=/etc/ssh
given=""
for f in "$dmi"/11-*/raw; do
  [ -r "$f" ] || continue
  given=$(tr '\\000' '\\n' < "$f" | sed -n 's/^.*{AUTHORIZED_KEY_PREFIX}//p' | head -n 1)
  [ -n "$given" ] && break
done
valid() {{
  printf '%s\\n' "$1" | grep -Eqx '(ssh-ed25519|ssh-rsa|ecdsa-sha2-[a-z0-9]+) [A-Za-z0-9+/=]+( [A-Za-z0-9_.@-]+)?'
}}
umask 077
if [ "$1" = rekey ]; then
  key=$(head -n 1)
  valid "$key" || {{ echo "not one OpenSSH public key line" >&2; exit 2; }}
  # Without the string it replaces, the record could not keep the new key over a reboot.
  [ -n "$given" ] || {{ echo "no vagabond key string in the SMBIOS tables to record" >&2; exit 1; }}
  mkdir -p "${{state%/*}}" || exit 1
  printf '%s\\n%s\\n' "$given" "$key" > "$state.new" && mv -f "$state.new" "$state" || exit 1
  # With --host-keys (a restore, not save's probe): new SSH host keys too, since every VM restored
  # from one image would share the saved ones; sshd is told (from OpenSSH 9.8 on, the listener
  # hands its keys to each session). A key ssh-keygen cannot make stays as it is.
  if [ "$2" = --host-keys ]; then
    renewed=0
    for hk in "$host_keys"/ssh_host_*_key; do
      [ -f "$hk" ] || continue
      kind=${{hk##*/ssh_host_}}
      kind=${{kind%_key}}
      case $kind in ed25519|ecdsa|rsa) ;; *) continue ;; esac
      rm -f "$hk.new" "$hk.new.pub"
      if ssh-keygen -q -t "$kind" -N '' -C '' -f "$hk.new" </dev/null >/dev/null 2>&1; then
        chmod 644 "$hk.new.pub" && mv -f "$hk.new.pub" "$hk.pub" && mv -f "$hk.new" "$hk" || exit 1
        if command -v restorecon >/dev/null 2>&1; then restorecon "$hk" "$hk.pub" || exit 1; fi
        renewed=1
      else
        rm -f "$hk.new" "$hk.new.pub"
      fi
    done
    if [ "$renewed" = 1 ] && command -v systemctl >/dev/null 2>&1; then
      systemctl try-reload-or-restart ssh.service sshd.service >/dev/null 2>&1 || true
    fi
  fi
elif [ -f "$state" ]; then
  key=$(sed -n 2p "$state")  # restored and given a new key since: it stays
  if [ -s "$state" ] && [ "$(sed -n 1p "$state")" != "$given" ]; then
    rm -f "$state"  # written in another VM (a box made from a restored one): this VM's string counts
    key=$given
  elif ! valid "$key"; then
    exit 0  # empty or damaged (cut short by a crash): the key it has stays
  fi
else
  key=$given
fi
valid "$key" || exit 0  # none given: the box's own key stays
mkdir -p "$ssh_dir" || exit 1
printf '%s\\n' "$key" > "$ssh_dir/authorized_keys.new" || exit 1
chown -R "$owner" "$ssh_dir" || exit 1
mv -f "$ssh_dir/authorized_keys.new" "$ssh_dir/authorized_keys" || exit 1
if command -v restorecon >/dev/null 2>&1; then restorecon -R "$ssh_dir" || exit 1; fi
[ "$(cat "$ssh_dir/authorized_keys")" = "$key" ] || {{ echo "authorized_keys does not hold the key" >&2; exit 1; }}
sync
exit 0
"""
AUTHORIZED_KEY_UNIT_NAME = "vagabond-authorized-key.service"
AUTHORIZED_KEY_UNIT = f"""\
[Unit]
Description=vagabond: this VM's own SSH key, from the host (SMBIOS OEM string)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sshd.service ssh.socket multi-user.target

[Service]
Type=oneshot
ExecStart={AUTHORIZED_KEY_SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"""
# sshd takes keys only: a password (the box convention's vagrant/vagrant) would open the VM to anyone
# on the host's libvirt network.
SSHD_DROPIN = "UseDNS no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
# Debian's sshd does not create missing host keys (RHEL's sshd-keygen does); boxes ship none so
# that each VM makes its own: this drop-in makes sshd do so. One ed25519 key: `ssh-keygen -A`
# would also make an RSA key, which costs ~4 s of a boot under software emulation (~10 s with
# ECDSA and the rest) for a key type no client of vagabond's needs.
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSH_KEYGEN_DROPIN = f"""\
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s {HOST_KEY} || ssh-keygen -q -t ed25519 -N "" -f {HOST_KEY}'
ExecStartPre=/usr/sbin/sshd -t
"""
# A cloud image's sshd_config may name only RSA or ECDSA host keys (CentOS 7's lists all three):
# imported images make every type, as their own sshd-keygen would.
SSH_KEYGEN_ALL_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""
# The host key sshd offers (the one made above); in a drop-in read before sshd_config's defaults.
SSHD_HOST_KEY = f"HostKey {HOST_KEY}\n"

# Boot, as fast as software emulation allows (bench/boot.py measures it). GRUB shows no menu
# (GRUB_TIMEOUT=0; its 'hidden' style would cost 3 s of a boot). The kernel's messages
# stay off the serial console unless they are warnings (quiet), which the console log keeps; the
# root file system is not checked (a test VM's disk is a fresh copy, and the box has no fsck.ext4:
# initramfs-tools would wait 5 s after its failed check).
KERNEL_CMDLINE = "console=ttyS0,115200n8"
KERNEL_CMDLINE_DEFAULT = "quiet fsck.mode=skip"
# The initramfs holds only the drivers a libvirt guest's root disk needs (virtio, SCSI, SATA), and
# the network card's, so that the card is there when systemd-networkd starts: 6 MB instead of
# 15 MB with ~190 modules, which GRUB reads and the kernel unpacks at every boot.
INITRAMFS_CONF = "# vagabond: only the drivers listed in /etc/initramfs-tools/modules\nMODULES=list\n"
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "virtio_net"]
# Timers that start work in a test VM at a moment nobody chose: apt-daily takes dpkg's lock from
# the test's own apt-get, the others load the guest's CPU. A test VM lives for minutes.
MASKED_TIMERS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
]
