"""This machine: driver detection, doctor, prepare, install routes, libvirt, Vagrant, and the
record of what vagabond made."""
