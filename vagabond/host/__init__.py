"""This machine: driver detection, doctor, prepare, install routes, libvirt, Vagrant, the record of what vagabond made."""
