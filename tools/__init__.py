"""Tools for working on the project that are neither the package nor its benchmarks: the check
of a lent GPU machine (`tools/device_check.sh`, docs/gpu.md#the-device-check)."""
