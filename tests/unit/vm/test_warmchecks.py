"""The domain a warm image from elsewhere may define: the XML libvirt kept in a real memory image
of a vagabond VM passes (its recorded disk chain dropped); each host resource a hostile image
could ask libvirtd, as root, for refuses it, naming what it asked for."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from vagabond.errors import WarmError
from vagabond.vm import warmchecks

DOMAIN = "vagabond-wx-6b60becd-default"
DISK = f"/var/lib/libvirt/images/{DOMAIN}.img"
SERIAL = f"/var/log/libvirt/qemu/{DOMAIN}-serial.log"
EMULATOR = "/usr/bin/qemu-system-x86_64"

# As `virsh save-image-dumpxml` printed it for a VM `vagabond up` made (libvirt 9.0), with the
# disk's recorded backing chain that a save keeps, and a guest agent channel.
SAVED = f"""<domain type='qemu'>
  <name>{DOMAIN}</name>
  <uuid>5435e76c-8002-4a5d-9bf3-16076bcc8f32</uuid>
  <description>Debian 12</description>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <sysinfo type='smbios'>
    <oemStrings><entry>vagabond:authorized-key=ssh-ed25519 AAAA vagabond</entry></oemStrings>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
    <bootmenu enable='no'/>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/><apic/><pae/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
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
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='network'>
      <mac address='52:54:00:20:d1:fc'/>
      <source network='vagrant-libvirt'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{SERIAL}'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
    </serial>
    <console type='file'>
      <source path='{SERIAL}'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-1-{DOMAIN}/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <audio id='1' type='none'/>
    <memballoon model='virtio'/>
    <rng model='virtio'><backend model='random'>/dev/random</backend></rng>
  </devices>
</domain>
"""


def check(xml: str) -> str:
    return warmchecks.domain(
        xml,
        domain=DOMAIN,
        disk=DISK,
        networks={"vagrant-libvirt"},
        serial_log=SERIAL,
        emulators={EMULATOR},
        where="warm.tar: the memory image of default",
    )


def test_the_domain_vagabond_made_passes_without_its_recorded_disk_chain():
    cleaned = ElementTree.fromstring(check(SAVED))
    assert cleaned.find("devices/disk/backingStore") is None, "libvirt finds the chain from the disk"
    assert cleaned.find("devices/disk/source").get("file") == DISK
    assert cleaned.findtext("name") == DOMAIN and cleaned.find("devices/interface/mac") is not None


def swap(old: str, new: str) -> str:
    assert old in SAVED
    return SAVED.replace(old, new, 1)


HOSTDEV = "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source></hostdev>"
COMMANDLINE = "<qemu:commandline><qemu:arg value='-fw_cfg'/></qemu:commandline>"


@pytest.mark.parametrize(
    "xml, said",
    [
        (swap("<memballoon", HOSTDEV + "<memballoon"), "the device <hostdev>"),
        (swap(f"<emulator>{EMULATOR}", "<emulator>/bin/sh"), "the program '/bin/sh'"),
        (swap(f"<source file='{DISK}'/>", "<source file='/dev/sda'/>"), "a disk other than its own ('/dev/sda')"),
        (
            swap(
                "<controller type='usb'",
                f"<disk type='file' device='disk'><source file='{DISK}'/></disk><controller type='usb'",
            ),
            "2 disks",
        ),
        (swap("<disk type='file' device='disk'>", "<disk type='block' device='disk'>"), "a disk other than its own"),
        (
            swap("<source network='vagrant-libvirt'/>", "<source network='production'/>"),
            "a network interface other than",
        ),
        (swap("<interface type='network'>", "<interface type='bridge'>"), "a network interface other than"),
        (
            swap("<model type='virtio'/>\n    </interface>", "<script path='/tmp/x.sh'/></interface>"),
            "an interface with <script>",
        ),
        (
            swap(
                f"<serial type='file'>\n      <source path='{SERIAL}'/>",
                "<serial type='file'><source path='/etc/cron.d/x'/>",
            ),
            "a serial of type 'file' (/etc/cron.d/x)",
        ),
        (swap("<serial type='file'>", "<serial type='tcp'>"), "a serial of type 'tcp'"),
        (
            swap("listen='127.0.0.1'>\n      <listen type='address' address='127.0.0.1'/>", "listen='0.0.0.0'>"),
            "graphics listening beyond this host",
        ),
        (
            swap("<listen type='address' address='127.0.0.1'/>", "<listen type='socket' socket='/tmp/s'/>"),
            "graphics on a socket",
        ),
        (
            swap("<backend model='random'>/dev/random", "<backend model='random'>/dev/sda"),
            "randomness from anything but",
        ),
        (swap("<backend model='random'>", "<backend model='egd' type='tcp'>"), "randomness from anything but"),
        (swap("<boot dev='hd'/>", "<kernel>/boot/vmlinuz</kernel><boot dev='hd'/>"), "a host file in <os> (<kernel>)"),
        (swap("<boot dev='hd'/>", "<loader>/etc/shadow</loader><boot dev='hd'/>"), "a host file in <os> (<loader>)"),
        (swap("<clock offset='utc'/>", "<clock offset='utc'/><seclabel type='none'/>"), "no confinement of QEMU"),
        (
            swap(
                "<clock offset='utc'/>",
                "<clock offset='utc'/><blkiotune><device><path>/dev/sda</path></device></blkiotune>",
            ),
            "<blkiotune>",
        ),
        (
            swap(
                "<domain type='qemu'>", "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
            ).replace("</devices>", "</devices>" + COMMANDLINE),
            "<{http://libvirt.org/schemas/domain/qemu/1.0}commandline>",
        ),
        (
            swap(
                "<target type='virtio' name='org.qemu.guest_agent.0'/>",
                "<target type='virtio' name='x'/><log file='/etc/passwd'/>",
            ).replace("/var/lib/libvirt/qemu/channel/target/", "/root/"),
            "a channel of type 'unix' (/root/",
        ),
        (
            swap("<audio id='1' type='none'/>", "<audio id='1' type='file'><output path='/tmp/a'/></audio>"),
            "audio of type 'file'",
        ),
        (swap("<vcpu", "<memoryBacking><source type='file'/></memoryBacking><vcpu"), "memory backed by a host file"),
        (swap(f"<name>{DOMAIN}</name>", "<name>someone-elses-vm</name>"), "the name 'someone-elses-vm'"),
        (swap("<domain type='qemu'>", "<domain type='xen'>"), "a domain of type 'xen'"),
        (swap("<graphics type='vnc'", "<graphics type='rdp'"), "graphics of type 'rdp'"),
    ],
)
def test_a_domain_that_asks_for_any_other_host_resource_is_refused_naming_it(xml, said):
    with pytest.raises(WarmError, match="which a VM of vagabond's never has: not restored") as caught:
        check(xml)
    assert said in caught.value.message
    assert caught.value.message.startswith("warm.tar: the memory image of default asks for ")


def test_what_is_not_a_domains_xml_is_said_so():
    with pytest.raises(WarmError, match="is not a domain's XML"):
        check("<domain")
