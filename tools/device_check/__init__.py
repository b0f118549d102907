"""The check of a lent GPU machine (docs/gpu.md#the-device-check), prepared here, run there.

`bash tools/device_check.sh prepare` (here: `make device-check`) pins and downloads the wheels
the GPU image lacks, packs them with a copy of MNIST into `storage/device/` and checks the
carry's size (`prepare`, `wheels`). `bash tools/device_check.sh run` (there, with carry
["storage/device"]) starts `run` on the image's own Python, which unpacks the wheels, has the
shell script make a venv with them offline, and runs the steps (`steps`), each timed under its
own timeout within one budget, with one summary line per step (`reports`, run in the venv).

The run's modules import only the standard library: they start before anything is installed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "tools/device_check.sh"
DEVICE_DIR = Path("storage/device")  # carried: just what the run needs, nothing else
PACK = DEVICE_DIR / "wheels.tar.xz"  # the wheels' files, xz-compressed, and their names
MANIFEST = DEVICE_DIR / "wheels.txt"
REQUIREMENTS = DEVICE_DIR / "requirements.txt"
MNIST = DEVICE_DIR / "mnist.npz"
WHEELS = Path("storage/device-wheels")  # prepare's download folder (not carried)
