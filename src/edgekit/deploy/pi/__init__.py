"""A device check without the device: a bundle's runtime in an emulated Raspberry Pi OS userland (arm64 chroot)."""
