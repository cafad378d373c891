"""vagabond: real VMs for tests (SELinux, FIPS, kernel features) with Vagrant + libvirt, in CI and on laptops."""

__version__ = "0.1.0"
