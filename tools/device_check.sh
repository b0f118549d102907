#!/usr/bin/env bash
# The check of a lent GPU machine (docs/gpu.md#the-device-check). The logic is Python, in
# tools/device_check/; this script only starts it and makes the venv on the GPU machine.
#
#   bash tools/device_check.sh prepare   here (`make device-check`): the wheels that machine
#                                        lacks and a copy of $TUNING_MNIST, into storage/device/
#   bash tools/device_check.sh run       there, with carry ["storage/device"]; its settings
#                                        (STEPS, QUICK, BUDGET, ...) are listed by
#                                        python -m tools.device_check run --help
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

image_python() {  # $PYTHON, else the first of python3, python, python3.12 that imports jax
    if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON" && return; fi
    for candidate in python3 python python3.12; do
        "$candidate" -c 'import jax' 2>/dev/null && echo "$candidate" && return
    done
    echo python3
}

inherit_site() {  # where the image's Python is itself a venv, its packages too (a .pth file)
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
        || return 1
    "$BASE" -c 'import site
paths = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
print("\n".join(dict.fromkeys(paths)))' >"$site/_image_site.pth"
}

make_venv() {  # $VENV over $BASE's packages, with $REQUIREMENTS from $WHEELS, offline
    local pip_args=(install --no-index --find-links "$WHEELS" -r "$REQUIREMENTS"
        --disable-pip-version-check --no-warn-script-location)
    rm -rf "$VENV"
    echo "-- $BASE -m venv --system-site-packages $VENV"
    if "$BASE" -m venv --system-site-packages "$VENV"; then
        inherit_site && "$VENV/bin/python" -m pip "${pip_args[@]}"
        return
    fi
    rm -rf "$VENV"  # no ensurepip (e.g. Debian without python3-venv): the image's pip into it
    echo "-- no venv with pip; trying --without-pip and the image's pip --python"
    if "$BASE" -m venv --without-pip --system-site-packages "$VENV"; then
        inherit_site && "$BASE" -m pip --python "$VENV/bin/python" "${pip_args[@]}"
        return
    fi
    rm -rf "$VENV"
    echo "-- no venv at all: pip install --user"
    "$BASE" -m pip "${pip_args[@]}" --user --break-system-packages \
        || "$BASE" -m pip "${pip_args[@]}" --user
}

case "${1:-}" in
    prepare) exec "${PREPARE_PYTHON:-.venv/bin/python}" -m tools.device_check prepare ;;
    run) exec "$(image_python)" -m tools.device_check run ;;
    venv) make_venv ;;  # from `run`, which sets BASE, VENV, WHEELS and REQUIREMENTS
    *) sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" && exit 2 ;;
esac
