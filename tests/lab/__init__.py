"""Lab tier: real Xen under QEMU (a package so its module names cannot clash with unit tests)."""
