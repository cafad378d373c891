"""What a warm image from elsewhere may hold: the domain XML libvirt kept in a real memory image of a
vagabond VM passes (its recorded disk chain, security labels and tap name dropped); each host
resource a hostile image could ask libvirtd, as root, for refuses it, naming what it asked for; the
SSH configuration keeps Vagrant's keywords, the VM's own key and an address on its network."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from vagabond.errors import WarmError
from vagabond.vm import warmchecks

DOMAIN = "vagabond-wx-6b60becd-default"
UUID = "5435e76c-8002-4a5d-9bf3-16076bcc8f32"
DISK = f"/var/lib/libvirt/images/{DOMAIN}.img"
SERIAL = f"/var/log/libvirt/qemu/{DOMAIN}-serial.log"
EMULATOR = "/usr/bin/qemu-system-x86_64"

# As `virsh save-image-dumpxml` printed it for a VM `vagabond up` made (libvirt 9.0, 2026-12-07;
# the guest agent's channel and its controller as it printed them for a VM of 2026-12-07 14:05),
# with the disk's recorded backing chain a save keeps, a security label and the tap device's name.
SAVED = f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <uuid>{UUID}</uuid>
  <description>Debian 12 for a warm export trial</description>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <sysinfo type='smbios'>
    <oemStrings>
      <entry>vagabond:authorized-key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCeHfOArptlIedHV2K1 vagabond</entry>
    </oemStrings>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
    <bootmenu enable='no'/>
    <smbios mode='sysinfo'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <pae/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{EMULATOR}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{DISK}'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='ua-box-volume-0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='network'>
      <mac address='52:54:00:20:d1:fc'/>
      <source network='vagrant-libvirt'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <driver iommu='off'/>
      <alias name='ua-net-0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </interface>
    <serial type='file'>
      <source path='{SERIAL}'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='{SERIAL}'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <audio id='1' type='none'/>
    <controller type='virtio-serial' index='0'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
    </controller>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/random</backend>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'/>
</domain>
"""


def check(xml: str) -> str:
    return warmchecks.domain(
        xml,
        domain=DOMAIN,
        uuid=UUID,
        memory_mib=1024,
        disk=DISK,
        networks={"vagrant-libvirt"},
        serial_log=SERIAL,
        emulators={EMULATOR},
        where="warm.tar: the memory image of default",
    )


def test_the_domain_vagabond_made_passes_without_what_libvirt_chooses_itself():
    cleaned = ElementTree.fromstring(check(SAVED))
    assert cleaned.find("devices/disk/backingStore") is None, "libvirt finds the chain from the disk"
    assert cleaned.find("seclabel") is None, "the host's own confinement applies"
    assert cleaned.find("devices/interface/target") is None, "the host names the tap device"
    assert cleaned.find("devices/disk/source").get("file") == DISK
    assert cleaned.findtext("name") == DOMAIN and cleaned.find("devices/interface/mac") is not None


def swap(old: str, new: str) -> str:
    assert old in SAVED, old
    return SAVED.replace(old, new, 1)


SERIAL_SOURCE = f"<serial type='file'>\n      <source path='{SERIAL}'/>"
HOSTDEV = "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source></hostdev>"
COMMANDLINE = "<qemu:commandline><qemu:arg value='-fw_cfg'/></qemu:commandline>"
QEMU_NS = "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"


@pytest.mark.parametrize(
    "xml, said",
    [
        (swap("<memballoon", HOSTDEV + "<memballoon"), "the device <hostdev>"),
        (swap(f"<emulator>{EMULATOR}", "<emulator>/bin/sh"), "the program '/bin/sh'"),
        (swap(f"<source file='{DISK}'/>", "<source file='/dev/sda'/>"), "a disk other than its own ('/dev/sda')"),
        (
            swap(
                "<controller type='usb'",
                f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{DISK}'/></disk>"
                "<controller type='usb'",
            ),
            "2 disks",
        ),
        (swap("<disk type='file' device='disk'>", "<disk type='block' device='disk'>"), "a disk other than its own"),
        (
            swap("<driver name='qemu' type='qcow2' discard='unmap'/>", "<driver name='qemu' type='raw'/>"),
            "its disk read other than as qcow2",
        ),
        (
            swap(f"<source file='{DISK}'/>", f"<source file='{DISK}'><reservations managed='no'/></source>"),
            "<reservations> in <devices/disk/source>",
        ),
        (
            swap("<source network='vagrant-libvirt'/>", "<source network='production'/>"),
            "a network interface other than",
        ),
        (swap("<interface type='network'>", "<interface type='bridge'>"), "a network interface other than"),
        (
            swap(
                "<model type='virtio'/>\n      <driver",
                "<script path='/tmp/x.sh'/><model type='virtio'/>\n      <driver",
            ),
            "<script> in <devices/interface>",
        ),
        (
            swap(
                "<model type='virtio'/>\n      <driver",
                "<rom file='/etc/shadow'/><model type='virtio'/>\n      <driver",
            ),
            "<rom> in <devices/interface>",
        ),
        (
            swap(SERIAL_SOURCE, "<serial type='file'><source path='/etc/cron.d/x'/>"),
            "a serial of type 'file' (/etc/cron.d/x)",
        ),
        (
            swap(SERIAL_SOURCE, SERIAL_SOURCE + "<log file='/root/.ssh/authorized_keys' append='on'/>"),
            "<log> in <devices/serial>",
        ),
        (swap("<serial type='file'>", "<serial type='tcp'>"), "a serial of type 'tcp'"),
        (swap("<audio id='1' type='none'/>", "<graphics type='vnc' socket='/tmp/s'/>"), "the device <graphics>"),
        (
            swap(
                "<target type='virtio' name='org.qemu.guest_agent.0'/>",
                "<source mode='connect' path='/run/x'/><target type='virtio' name='org.qemu.guest_agent.0'/>",
            ),
            "a channel other than the guest agent's",
        ),
        (
            swap("name='org.qemu.guest_agent.0'", "name='com.redhat.spice.0'"),
            "a channel other than the guest agent's",
        ),
        (swap("<channel type='unix'>", "<channel type='pty'>"), "a channel other than the guest agent's ('pty')"),
        (
            swap(
                "<target type='virtio' name='org.qemu.guest_agent.0'/>",
                "<target type='guestfwd' address='10.0.2.1' port='80'/>",
            ),
            "the attribute 'address' on <devices/channel/target>",
        ),
        (
            swap("<backend model='random'>/dev/random", "<backend model='random'>/dev/sda"),
            "randomness from anything but",
        ),
        (
            swap("<backend model='random'>", "<backend model='egd' type='tcp'>"),
            "the attribute 'type' on <devices/rng/backend>",
        ),
        (swap("<boot dev='hd'/>", "<kernel>/boot/vmlinuz</kernel><boot dev='hd'/>"), "<kernel> in <os>"),
        (swap("<boot dev='hd'/>", "<loader>/etc/shadow</loader><boot dev='hd'/>"), "<loader> in <os>"),
        (swap("<smbios mode='sysinfo'/>", "<smbios mode='host'/>"), "the host's own SMBIOS tables"),
        (swap("<sysinfo type='smbios'>", "<sysinfo type='fwcfg'>"), "<sysinfo type='fwcfg'>"),
        (swap("<oemStrings>", "<entry file='/etc/shadow'/><oemStrings>"), "<entry> in <sysinfo>"),
        (
            swap(
                "<clock offset='utc'/>",
                "<clock offset='utc'/><blkiotune><device><path>/dev/sda</path></device></blkiotune>",
            ),
            "<blkiotune>",
        ),
        (
            swap(
                "<clock offset='utc'/>",
                "<clock offset='utc'/><cputune><vcpusched vcpus='0' scheduler='fifo' priority='99'/></cputune>",
            ),
            "<cputune>",
        ),
        (
            swap("<clock offset='utc'/>", "<clock offset='utc'/><memoryBacking><locked/></memoryBacking>"),
            "<memoryBacking>",
        ),
        (
            swap("<domain type='qemu'>", QEMU_NS).replace("</devices>", "</devices>" + COMMANDLINE),
            "<{http://libvirt.org/schemas/domain/qemu/1.0}commandline>",
        ),
        (
            swap("<audio id='1' type='none'/>", "<audio id='1' type='file'><output path='/tmp/a'/></audio>"),
            "<output> in <devices/audio>",
        ),
        (swap("<audio id='1' type='none'/>", "<audio id='1' type='file'/>"), "audio of type 'file'"),
        (swap(f"<name>{DOMAIN}</name>", "<name>someone-elses-vm</name>"), "the name 'someone-elses-vm'"),
        (swap(f"<name>{DOMAIN}</name>", f"<name> {DOMAIN}</name>"), "the name ' vagabond-wx"),
        (swap(f"<uuid>{UUID}</uuid>", "<uuid>00000000-0000-4000-8000-000000000000</uuid>"), "the UUID"),
        (
            swap("<memory unit='KiB'>1048576</memory>", "<memory unit='GiB'>64</memory>"),
            "64 GiB of <memory>, not the 1024 MiB",
        ),
        (swap("<domain type='qemu'>", "<domain type='xen'>"), "a domain of type 'xen'"),
        (
            swap(
                "<controller type='pci' index='0' model='pci-root'/>",
                "<controller type='pci' index='0' model='pci-root' evil='1'/>",
            ),
            "the attribute 'evil' on <devices/controller>",
        ),
    ],
)
def test_a_domain_that_asks_for_any_other_host_resource_is_refused_naming_it(xml, said):
    with pytest.raises(WarmError, match="which a VM of vagabond's never has: not restored") as caught:
        check(xml)
    assert said in caught.value.message
    assert caught.value.message.startswith("warm.tar: the memory image of default asks for ")


def test_a_cdrom_without_media_passes_and_keeps_no_chain():
    cdrom = "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/>"
    cdrom += "<readonly/><backingStore type='file'><source file='/etc/shadow'/></backingStore></disk>"
    cleaned = ElementTree.fromstring(check(swap("<controller type='usb'", cdrom + "<controller type='usb'")))
    assert all(d.find("backingStore") is None for d in cleaned.iter("disk"))


def test_the_guest_agents_channel_passes_with_the_socket_libvirtd_makes_itself():
    bound = "<source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-x/org.qemu.guest_agent.0'/>"
    cleaned = ElementTree.fromstring(
        check(swap("<target type='virtio' name='org.qemu", bound + "<target type='virtio' name='org.qemu"))
    )
    (channel,) = cleaned.iter("channel")
    assert channel.find("source").attrib == {"mode": "bind"}
    assert channel.find("target").get("name") == "org.qemu.guest_agent.0"


def test_what_is_not_a_domains_xml_is_said_so():
    with pytest.raises(WarmError, match="is not a domain's XML"):
        check("<domain")


KEY = Path("/p/.vagabond/b/ssh_key")


def test_the_ssh_configuration_keeps_vagrants_keywords_the_vms_own_key_and_an_address_on_its_network():
    text = (
        "Host default\n  HostName 192.168.121.7\n  User vagrant\n  Port 22\n  UserKnownHostsFile /dev/null\n"
        f"  IdentityFile {KEY}\n  IdentityFile /root/.vagrant.d/insecure_private_key\n  IdentitiesOnly yes\n"
        "\nHost *\n  ControlMaster auto\n  ControlPath /tmp/x/%C\n"
    )
    kept = warmchecks.ssh_config(text, KEY, "192.168.121.0/24")
    assert "insecure_private_key" not in kept and "ControlPath" not in kept and f"IdentityFile {KEY}" in kept


@pytest.mark.parametrize(
    "line, said",
    [
        ("KnownHostsCommand /bin/sh -c id", "says KnownHostsCommand"),
        ("ProxyCommand nc %h %p", "says ProxyCommand"),
        ("ForwardAgent yes", "forwards Agent"),
        ("UserKnownHostsFile /root/.ssh/known_hosts", "names a known-hosts file"),
        ("HostName 10.0.0.5", "goes to '10.0.0.5', not an address on 192.168.121.0/24"),
        ("HostName github.com", "goes to 'github.com'"),
    ],
)
def test_an_ssh_configuration_that_runs_opens_or_goes_elsewhere_is_refused(line, said):
    with pytest.raises(WarmError, match=said):
        warmchecks.ssh_config(f"Host default\n  {line}\n", KEY, "192.168.121.0/24")
