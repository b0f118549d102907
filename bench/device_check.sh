#!/usr/bin/env bash
# The check to run on a lent GPU machine (Python 3.12 with JAX, PyTorch, NumPy, SciPy and
# scikit-learn, but no TensorFlow and no package index), prepared here.
#
#   bash bench/device_check.sh prepare   here (`make device-check`): download the wheels that
#                                        machine lacks (storage/device-wheels/), pack them for the
#                                        carry with requirements.txt and a copy of $TUNING_MNIST
#                                        into storage/device/; check the carry size
#   bash bench/device_check.sh run       there, with carry ["storage/device"]: install the wheels
#                                        offline, then run the steps below under KERAS_BACKEND=jax,
#                                        each timed, under its own timeout, log in $OUT/<step>-*.log
#
# Steps (STEPS="a b c d e f" by default; e.g. STEPS="f" runs what an earlier call left out):
#   a  what is there: GPU, Python, JAX devices, PyTorch CUDA, the project's imports (no TensorFlow)
#   b  python -m bench.backends: the seed network's img/s under JAX and PyTorch, peak GPU memory
#   c  the smoke study (studies/smoke.toml)
#   d  the default study's seed trial (studies/mnist_cnn.toml --trials 1: trial 0) and its time
#   e  an export of it (1 seed, 0.2 of its epochs) and its test accuracy
#   f  python -m bench.workers: trials per hour with 1, 2 and 4 workers sharing the GPU
#
# Environment for `run`: OUT (default /tmp/device-check) gets everything that should come back;
# STEPS; QUICK=1 shrinks every step to seconds (tiny data; a rehearsal on a CPU); BUDGET: seconds
# for all steps together (default 330, QUICK: none): a step that no longer fits is left out and the
# summary says how to run it; FRESH=1 ignores the study database an earlier call on the same
# machine left; PYTHON: the image's interpreter (default: the first of python3, python,
# python3.12 that imports jax); WORKER_SECONDS (default 45): step f's time per layout.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
DEVICE_DIR=storage/device            # carried: just what the run needs, nothing else
PACK=$DEVICE_DIR/wheels.tar.xz         # the wheels' files, xz-compressed (a third smaller than
MANIFEST=$DEVICE_DIR/wheels.txt        # the .whl files); `run` zips them back into wheels
REQUIREMENTS=$DEVICE_DIR/requirements.txt
WHEELS=storage/device-wheels           # prepare's download folder (not carried)
LIMIT_MIB=60  # the carry may be 64 MiB with the working tree; keep some room

# What the GPU image lacks, for CPython 3.12 on manylinux x86_64, pinned to the versions in .venv
# (pyproject.toml pins the direct ones). The image brings jax, jaxlib (with ml-dtypes, opt-einsum),
# torch, numpy, scipy and scikit-learn; tensorflow, tensorboard, psycopg, playwright and the dev
# tools are not needed under JAX.
PACKAGES=(
    keras keras-tuner kt-legacy namex optree h5py absl-py rich markdown-it-py mdurl pygments
    grpcio protobuf  # keras-tuner requires them (its distributed-tuning protocol)
    optuna alembic mako markupsafe sqlalchemy greenlet colorlog pyyaml tqdm
    optuna-dashboard bottle  # `tuning study` writes the study's dashboard note through it
    packaging typing-extensions requests certifi charset-normalizer idna urllib3
    pillow matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
    tzdata  # python-dateutil 4 requires it
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any)

say() { printf '%s\n' "$*"; }
die() {
    printf 'device_check: %s\n' "$*" >&2
    exit 1
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# prepare (here)

prepare() {
    local py=${PREPARE_PYTHON:-.venv/bin/python}
    [[ -x $py ]] || die "$py not found: run \`make venv\` first (or set PREPARE_PYTHON)"
    local mnist=${TUNING_MNIST:-}
    [[ -n $mnist && -f $mnist ]] || die "TUNING_MNIST must name the Keras-layout mnist.npz"

    say "== the flags the run passes, in this checkout"
    check_flags "$py" || die "a flag the device run passes is missing (see above)"

    say "== pins from $py"
    local pins
    pins=$("$py" -m bench.device_check pins "${PACKAGES[@]}") || die "could not pin the package list"
    mkdir -p "$WHEELS" "$DEVICE_DIR"
    {
        say "# Installed on the GPU machine by \`bash bench/device_check.sh run\`, from the wheels"
        say "# of $PACK: pip install --no-index --find-links WHEELS -r $REQUIREMENTS"
        say "# Written by \`bash bench/device_check.sh prepare\` from the versions in .venv."
        say "$pins"
    } >"$REQUIREMENTS"
    say "$(wc -l <<<"$pins") packages -> $REQUIREMENTS"

    say "== wheels for CPython 3.12, manylinux x86_64 -> $WHEELS"
    local platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    # --no-deps: the list above is the whole set; `run` resolves it offline against the image.
    # shellcheck disable=SC2086
    "$py" -m pip download -qq --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --abi cp312 "${platform_args[@]}" -d "$WHEELS" $pins \
        || die "pip download failed"
    # Wheels of other versions (an earlier prepare) would only make the carry bigger.
    # shellcheck disable=SC2086
    "$py" -m bench.device_check prune "$WHEELS" $pins \
        || die "the wheel folder does not match the pins"
    say "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(mib "$(du -sb "$WHEELS" | cut -f1)") MiB"

    say "== packed -> $PACK"
    local manifest
    manifest=$(cd "$WHEELS" && ls -- *.whl)
    if [[ -f $PACK && "$(cat "$MANIFEST" 2>/dev/null)" == "$manifest" ]]; then
        say "up to date"
    else  # every wheel's files under <wheel name>/, in the wheel's order (about a minute)
        nice -n 10 "$py" -m bench.device_check pack "$WHEELS" "$PACK" \
            || die "packing the wheels failed"
        printf '%s\n' "$manifest" >"$MANIFEST"
    fi
    say "$(mib "$(stat -c %s "$PACK")") MiB"

    say "== MNIST -> $DEVICE_DIR/mnist.npz"
    if ! cmp -s "$mnist" "$DEVICE_DIR/mnist.npz"; then
        cp -f "$mnist" "$DEVICE_DIR/mnist.npz" || die "could not copy $mnist"
        chmod u+w "$DEVICE_DIR/mnist.npz"
    fi

    # Anything else in the carried folder (an earlier layout) would only take room.
    find "$DEVICE_DIR" -mindepth 1 -maxdepth 1 ! -name wheels.tar.xz ! -name wheels.txt \
        ! -name requirements.txt ! -name mnist.npz -exec rm -rf {} + -printf '  removed %p\n'

    say "== carry size"
    local device_bytes tree_bytes total
    device_bytes=$(du -sb "$DEVICE_DIR" | cut -f1)
    # What a device call copies besides the carry: tracked and untracked, not ignored, files.
    tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{ s += $1 } END { print s + 0 }')
    total=$((device_bytes + tree_bytes))
    say "storage/device: $(mib "$device_bytes") MiB; working tree: $(mib "$tree_bytes") MiB;" \
        "together $(mib "$total") MiB (limit $LIMIT_MIB MiB)"
    ((total <= LIMIT_MIB * 1048576)) || die "over $LIMIT_MIB MiB: too big to carry"

    cat <<EOF

Ready. On the GPU machine (the device \`run\` tool), from the repository root:
  command:   bash bench/device_check.sh run
  carry:     ["$DEVICE_DIR"]
  timeout_s: 450   (install ~30 s, then steps a-e within BUDGET=330 s; f usually left out)
then, while it is still warm:
  command:   STEPS="f" bash bench/device_check.sh run      carry ["$DEVICE_DIR"], timeout_s 300
Results come back under \$OUT: summary.txt, steps.tsv, <step>-*.log, bench/, models/, device.db.
Rehearse on a CPU with QUICK=1 (see the header of bench/device_check.sh).
EOF
}

check_flags() {  # the CLI and bench flags the run passes, in this checkout's --help
    local py=$1 ok=0 help
    help=$("$py" -m tuning.cli study --help 2>&1)
    for flag in --trials --no-progress; do
        grep -q -- "$flag" <<<"$help" || { say "tuning study has no $flag"; ok=1; }
    done
    help=$("$py" -m tuning.cli export --help 2>&1)
    for flag in --seeds --no-baseline --epoch-scale --out; do
        grep -q -- "$flag" <<<"$help" || { say "tuning export has no $flag"; ok=1; }
    done
    help=$("$py" -m bench.backends --help 2>&1)
    for flag in --backends --rounds --images --epochs; do
        grep -q -- "$flag" <<<"$help" || { say "bench.backends has no $flag"; ok=1; }
    done
    help=$("$py" -m bench.workers --help 2>&1)
    for flag in --counts --seconds --subset; do
        grep -q -- "$flag" <<<"$help" || { say "bench.workers has no $flag"; ok=1; }
    done
    ((ok == 0)) && say "all there"
    return "$ok"
}

# ---------------------------------------------------------------------------------------------
# run (on the GPU machine)

image_python() {  # $PYTHON, else the first of python3, python, python3.12 that imports jax
    if [[ -n ${PYTHON:-} ]]; then
        printf '%s' "$PYTHON"
        return
    fi
    for candidate in python3 python python3.12; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import jax' 2>/dev/null; then
            printf '%s' "$candidate"
            return
        fi
    done
    printf 'python3'
}

install() {  # a venv over the image's packages, with the wheels installed offline into it
    local base venv=$WORK/venv stamp
    base=$(image_python)
    command -v "$base" >/dev/null || { say "no $base"; return 1; }
    say "-- the image's python: $(command -v "$base"), $("$base" -V 2>&1)"
    "$base" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
        || say "-- warning: the wheels are for CPython 3.12; pip will likely find none that fit"
    [[ -f $REQUIREMENTS && -f $PACK && -f $MANIFEST ]] \
        || { say "no $PACK, $MANIFEST or $REQUIREMENTS: carry $DEVICE_DIR"; return 1; }
    stamp="$("$base" -VV 2>&1) $(cat "$REQUIREMENTS" "$MANIFEST" | cksum)"
    if [[ -x $venv/bin/python && "$(cat "$venv/.installed" 2>/dev/null)" == "$stamp" ]]; then
        say "already installed in $venv (an earlier call)"
        PY=$venv/bin/python
        return 0
    fi
    local wheels=$WORK/wheels
    say "-- unpacking $PACK into $wheels"
    rm -rf "$wheels"
    local unxz=(cat)  # the xz program if there is one, else Python's lzma module
    command -v xz >/dev/null && unxz=(xz -dc)
    "${unxz[@]}" "$PACK" | "$base" -m bench.device_check unpack "$wheels" "$MANIFEST" \
        "$([[ ${unxz[0]} == xz ]] && echo 'r|' || echo 'r|xz')" || return 1
    local pip_args=(install --no-index --find-links "$wheels" -r "$REQUIREMENTS"
        --disable-pip-version-check --no-warn-script-location)
    rm -rf "$venv"
    say "-- $base -m venv --system-site-packages $venv"
    if "$base" -m venv --system-site-packages "$venv"; then
        inherit_site "$base" "$venv" || return 1
        "$venv/bin/python" -m pip "${pip_args[@]}" || return 1
    else  # no ensurepip (e.g. Debian without python3-venv): the image's pip installs into it
        rm -rf "$venv"
        say "-- no venv with pip; trying --without-pip and the image's pip --python"
        if "$base" -m venv --without-pip --system-site-packages "$venv"; then
            inherit_site "$base" "$venv" || return 1
            "$base" -m pip --python "$venv/bin/python" "${pip_args[@]}" || return 1
        else
            say "-- no venv at all: pip install --user"
            "$base" -m pip "${pip_args[@]}" --user --break-system-packages \
                || "$base" -m pip "${pip_args[@]}" --user || return 1
            PY=$(command -v "$base")
            return 0
        fi
    fi
    PY=$venv/bin/python
    printf '%s' "$stamp" >"$venv/.installed"
}

inherit_site() {  # where the image's python is itself a venv, its packages too (a .pth file)
    local base=$1 venv=$2 site
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$base" -c 'import site, sys
paths = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
print("\n".join(p for p in dict.fromkeys(paths)))' >"$site/_image_site.pth"
}

# The steps. Each runs as `bash -c step_X` under `timeout`, its output in its log; `metric KEY
# VALUE` lines feed the summary.
metric() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/metrics.tsv"; }

step_a() {
    local rc=0
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        metric gpu "$(nvidia-smi --query-gpu=name,memory.total,driver_version \
            --format=csv,noheader | head -1)"
    else
        say "nvidia-smi: not found"
    fi
    "$PY" -VV || rc=1
    "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' || rc=1
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
        torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' \
        || say "torch: not importable (step b measures JAX alone)"
    "$PY" -m bench.device_check report-env || rc=1
    return "$rc"
}

step_b() {
    local backends=() sizes
    for b in jax torch; do
        "$PY" -c "import $b" 2>/dev/null && backends+=("$b")
    done
    ((${#backends[@]})) || { say "neither jax nor torch imports"; return 1; }
    say "backends: ${backends[*]}"
    if [[ -n $QUICK ]]; then sizes="--rounds 1 --images 600 --epochs 2"; else sizes="--rounds 1"; fi
    mkdir -p "$WORK/bench-cwd"
    # From a scratch folder: bench.* writes storage/bench/ under the working directory.
    # shellcheck disable=SC2086
    (cd "$WORK/bench-cwd" && "$PY" -m bench.backends --backends "${backends[@]}" $sizes) || return 1
    mkdir -p "$OUT/bench"
    cp "$WORK/bench-cwd/storage/bench/backends."{json,md} "$OUT/bench/" || return 1
    "$PY" -m bench.device_check report-backends "$OUT/bench/backends.json"
}

step_c() {
    "$PY" -m tuning.cli study "$STUDY_SMOKE" --no-progress || return 1
    "$PY" -m bench.device_check report-study smoke
}

step_d() {
    "$PY" -m tuning.cli study "$STUDY_MNIST" --trials 1 --no-progress || return 1
    "$PY" -m bench.device_check report-study mnist_cnn
}

step_e() {
    local out=$OUT/models/mnist_cnn
    "$PY" -m tuning.cli export "$STUDY_MNIST" --seeds 1 --no-baseline \
        --epoch-scale "$EXPORT_SCALE" --out "$out" || return 1
    "$PY" -m bench.device_check report-export "$out/model_card.json"
}

step_f() {
    local sizes
    if [[ -n $QUICK ]]; then
        sizes="--counts 1 2 4 --seconds 10 --subset 300"
    else
        sizes="--counts 1 2 4 --seconds ${WORKER_SECONDS:-45} --subset 4000"
    fi
    mkdir -p "$WORK/bench-cwd"
    # shellcheck disable=SC2086
    (cd "$WORK/bench-cwd" && "$PY" -m bench.workers $sizes) || return 1
    mkdir -p "$OUT/bench"
    cp "$WORK/bench-cwd/storage/bench/workers."{json,md} "$OUT/bench/" || return 1
    "$PY" -m bench.device_check report-workers "$OUT/bench/workers.json"
}

quick_inputs() {  # QUICK: 1,500 training and 500 test images, and the studies shrunk to them
    local dir=$WORK/quick
    mkdir -p "$dir"
    "$PY" -m bench.device_check quick-inputs "$TUNING_MNIST" "$dir" || return 1
    TUNING_MNIST=$dir/mnist.npz STUDY_SMOKE=$dir/smoke.toml STUDY_MNIST=$dir/mnist_cnn.toml
    EXPORT_SCALE=0.07
}

run() {  # with OUT set; its output also goes to $OUT/run.log
    QUICK=${QUICK:-}
    [[ $QUICK == 0 ]] && QUICK=
    WORK=${WORK:-${TMPDIR:-/tmp}/tuning-device-check}
    local steps=${STEPS:-a b c d e f} budget=${BUDGET:-$([[ -n $QUICK ]] && echo 0 || echo 330)}
    mkdir -p "$WORK" || die "cannot write $WORK"
    say "== device check $(date -u +%FT%TZ): STEPS=\"$steps\" QUICK=${QUICK:-0} BUDGET=$budget" \
        "OUT=$OUT"
    : >"$OUT/metrics.tsv"
    printf 'step\trc\tseconds\tnote\n' >"$OUT/steps.tsv"

    local gpu_sampler=
    if command -v nvidia-smi >/dev/null; then  # GPU memory in use, once a second, all along
        nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits \
            -l 1 >"$OUT/gpu.csv" 2>/dev/null &
        gpu_sampler=$!
        trap 'kill "$gpu_sampler" 2>/dev/null' EXIT
    fi

    local start
    start=$(now)
    say "== install: the wheels of $DEVICE_DIR, offline (log: $OUT/install.log)"
    PY=
    install >"$OUT/install.log" 2>&1
    local install_rc=$?
    # `install` ran in this shell, so PY is set; say how it went.
    printf 'install\t%s\t%s\t%s\n' "$install_rc" "$(since "$start")" "$PY" >>"$OUT/steps.tsv"
    say "install: rc $install_rc, $(since "$start") s, python $PY"
    if ((install_rc != 0)) || [[ -z $PY ]]; then
        tail -n 30 "$OUT/install.log"
        die "install failed (see $OUT/install.log)"
    fi

    export OUT QUICK WORK PY
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    export KERAS_BACKEND=jax MPLBACKEND=Agg PYTHONUNBUFFERED=1
    export TUNING_MNIST=$ROOT/$DEVICE_DIR/mnist.npz
    export TUNING_STORAGE=sqlite:///$OUT/device.db TUNING_ARTIFACTS=$OUT/artifacts
    export STUDY_SMOKE=studies/smoke.toml STUDY_MNIST=studies/mnist_cnn.toml EXPORT_SCALE=0.2
    if [[ -n $QUICK ]]; then
        quick_inputs >"$OUT/quick.log" 2>&1 || { cat "$OUT/quick.log"; die "QUICK inputs failed"; }
    fi
    export STUDY_SMOKE STUDY_MNIST EXPORT_SCALE TUNING_MNIST
    export -f say metric step_a step_b step_c step_d step_e step_f

    # A study database from an earlier call on this machine (OUT starts empty on every call), so
    # that e.g. STEPS="e" finds the study d made.
    local state=$WORK/state${QUICK:+-quick}
    [[ -n ${FRESH:-} ]] && rm -rf "$state"
    if [[ ! -e $OUT/device.db && -e $state/device.db ]]; then
        say "== resuming the study database of an earlier call ($state)"
        cp "$state/device.db" "$OUT/" && cp -r "$state/artifacts" "$OUT/" 2>/dev/null
    fi

    # step: name, timeout (s), least time worth starting it with (s), quick timeout
    declare -A label=([a]=env [b]=backends [c]=smoke [d]=seed-trial [e]=export [f]=workers)
    declare -A cap=([a]=90 [b]=180 [c]=180 [d]=300 [e]=200 [f]=300)
    declare -A least=([a]=20 [b]=60 [c]=45 [d]=100 [e]=60 [f]=170)
    declare -A quick_cap=([a]=120 [b]=300 [c]=400 [d]=500 [e]=300 [f]=300)
    local steps_start failed=0 left=()
    steps_start=$(now)
    for s in $steps; do
        [[ -n ${label[$s]:-} ]] || { say "unknown step '$s' (a-f)"; failed=1; continue; }
        local log="$OUT/$s-${label[$s]}.log" t=${cap[$s]}
        [[ -n $QUICK ]] && t=${quick_cap[$s]}
        if ((budget > 0)); then
            local remaining
            remaining=$(awk -v b="$budget" -v u="$(since "$steps_start")" \
                'BEGIN { printf "%d", b - u }')
            if ((remaining < least[$s])); then
                say "== $s ${label[$s]}: left out, ${remaining} s of the budget left"
                printf '%s\t-\t-\tleft out (budget)\n' "$s" >>"$OUT/steps.tsv"
                left+=("$s")
                continue
            fi
            ((remaining < t)) && t=$remaining
        fi
        say "== $s ${label[$s]} (timeout ${t} s, log $log)"
        local t0 rc secs note=
        t0=$(now)
        timeout -k 15 "$t" bash -c "step_$s" >"$log" 2>&1
        rc=$?
        secs=$(since "$t0")
        ((rc == 124 || rc == 137)) && note="timed out after $t s"
        ((rc != 0)) && failed=1
        printf '%s\t%s\t%s\t%s\n' "$s" "$rc" "$secs" "$note" >>"$OUT/steps.tsv"
        say "$s ${label[$s]}: rc $rc, $secs s${note:+ ($note)}"
        if ((rc != 0)); then tail -n 15 "$log" | sed 's/^/    /'; fi
    done

    if [[ -e $OUT/device.db ]]; then  # for the next call
        rm -rf "$state" && mkdir -p "$state" && cp "$OUT/device.db" "$state/"
        [[ -d $OUT/artifacts ]] && cp -r "$OUT/artifacts" "$state/"
    fi
    if [[ -n $gpu_sampler ]]; then
        kill "$gpu_sampler" 2>/dev/null
        wait "$gpu_sampler" 2>/dev/null
        metric "peak GPU memory (nvidia-smi, whole run)" \
            "$(awk -F', *' '$2 > m { m = $2 } END { print m + 0 " MiB" }' "$OUT/gpu.csv")"
    fi
    summary "${left[*]}" | tee "$OUT/summary.txt"
    return "$failed"
}

summary() {
    local left=$1
    say ""
    say "== summary (QUICK=${QUICK:-0}, KERAS_BACKEND=jax, $(since "$RUN_START") s in all)"
    awk -F'\t' 'NR > 1 { printf "  %-8s rc %-4s %8s s  %s\n", $1, $2, $3, $4 }' "$OUT/steps.tsv"
    # The last value of each metric.
    awk -F'\t' '{ if (!($1 in v)) k[n++] = $1; v[$1] = $2 }
        END { for (i = 0; i < n; i++) printf "  %s: %s\n", k[i], v[k[i]] }' "$OUT/metrics.tsv"
    if [[ -n $left ]]; then
        say "  left out for time: $left -> next call:" \
            "${QUICK:+QUICK=1 }STEPS=\"$left\" bash bench/device_check.sh run"
    fi
}

RUN_START=$(now)
case "${1:-}" in
    prepare) prepare ;;
    run)
        export OUT=${OUT:-/tmp/device-check}
        mkdir -p "$OUT" || die "cannot write $OUT"
        run 2>&1 | tee -a "$OUT/run.log"
        exit "${PIPESTATUS[0]}"
        ;;
    *)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
        exit 2
        ;;
esac
