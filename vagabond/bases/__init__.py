"""Making box artifacts: base boxes of each kind (mmdebstrap, cloud image, Vagrant's), disk images, archives."""
