//! Oracle tests against qemu-img.
