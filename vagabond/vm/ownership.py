"""What a run of `up` made, and so may take away again, and nothing else: other projects share the
pool and the network, and a volume or network that merely appeared meanwhile may be another job's."""

from __future__ import annotations

from dataclasses import dataclass, field

from vagabond import ui
from vagabond.host import ledger, libvirt
from vagabond.vm import remote
from vagabond.vm.workdir import Workdir


@dataclass
class MadeByUp:
    """The objects of one `up`: the domains and volumes with the work directory's prefix; the box's
    image volume only when this run started uploading it (vagrant-libvirt says so) and no domain
    uses it; the management network only when it did not exist before this run and no domain uses it."""

    network_existed: bool
    box_name: str = ""
    images_before: set[str] = field(default_factory=set)
    upload_started: bool = False

    UPLOAD = "Uploading base box image as volume"

    @classmethod
    def before(cls) -> MadeByUp:
        return cls(network_existed=libvirt.MGMT_NETWORK in libvirt.networks())

    def before_boot(self, box_name: str) -> None:
        """What the pool holds of the box's image before `vagrant up` may upload one."""
        self.box_name = box_name
        self.images_before = set(libvirt.box_images(box_name))

    def see(self, line: str) -> None:
        """A line of `vagrant up`'s output."""
        if self.UPLOAD in line:
            self.upload_started = True

    def uploaded(self) -> list[str]:
        return sorted(set(libvirt.box_images(self.box_name)) - self.images_before) if self.upload_started else []

    def record(self) -> None:
        """After a successful up: what `vagabond gc` and `destroy` may take later, by the record."""
        if not self.network_existed and libvirt.MGMT_NETWORK in libvirt.networks():
            ledger.add_networks([libvirt.MGMT_NETWORK])
        if self.upload_started:
            ledger.add_volumes(self.uploaded())

    def undo(self, wd: Workdir) -> list[str]:
        """After a failed up: remove what it made (an incomplete upload too), say what."""
        removed = remove_vm(wd)
        # The upload this run started may be incomplete; another job's finished image is in use, or not ours.
        for vol in sorted(set(self.uploaded()) - libvirt.volumes_in_use()):
            if libvirt.delete_volume(vol):
                removed.append(f"volume {vol}")
        net = libvirt.MGMT_NETWORK
        if not self.network_existed and libvirt.remove_network_if_unused(net):
            removed.append(f"network {net}")
        wd.remove_state()
        for item in removed:
            ui.info(f"removed {item}")
        return removed


def remove_vm(wd: Workdir) -> list[str]:
    """The work directory's domains and their volumes, found by name (no Vagrant state needed)."""
    removed = []
    for machine in wd.box.machine_names():
        remote.close_master(wd, machine)
    for name in libvirt.domains(wd.prefix):
        removed += libvirt.remove_domain(name)
    for vol in libvirt.volumes(wd.prefix):
        if libvirt.delete_volume(vol):
            removed.append(f"volume {vol}")
    wd.forget_console(wd.box.machine_names())
    return removed
