#!/usr/bin/env bash
# CUDA check for a session that is lent a GPU machine (the `device` tool): trains the CNN and the
# LSTM policies on the GPU side by side with their peers on the same GPU, then runs the test suite
# with CUDA visible (every test that trains in-process then trains on the GPU). One call, each stage bounded,
# each stage's whole log under $OUT; the reply shows the end of each.
#
# Before the call, on the machine that has a registry: the peers' wheels in .whl/ and a copy of
# ../shared in .devshared/ (both ignored by git, named in `carry`):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl gymnasium farama-notifications pettingzoo mpe2 \
#     pygame-ce stable_baselines3 sb3_contrib
#   cp -r ../shared .devshared
# Usage there: bash bench/cuda_check.sh [stages...]   (default: cnn lstm tests; also cnn-cpu, devices
# (bench/device_choice.py: each policy kind on the CPU and on the GPU) and tests-all; CNN_STEPS,
# LSTM_STEPS, DEVICES_S, TESTS_S and TESTS_ARGS change their sizes). The tests' in-process runs train
# on the GPU (PALAESTRA_TEST_DEVICE=cuda: tests/conftest.py), not where --torch-device auto would put
# them; runs a test starts as a subprocess go where auto puts them. The whole suite takes longer than one call allows
# (session 25: 1,228 tests in 240 s, the training files last), so the `tests` stage runs, unless
# TESTS_ARGS names others, the files whose tests train through the CLI (on the GPU); `tests-all`
# runs the whole suite.
set -u
TRAINING_FILES="tests/test_visual.py tests/test_training_visual_memory.py tests/test_recurrent.py
tests/test_visual_signals.py tests/test_training.py tests/test_training_recurrent_gym.py tests/test_sac.py
tests/test_gail.py tests/test_reward_signals.py tests/test_behavioral_cloning.py tests/test_imitation_trainers.py
tests/test_walljump.py tests/test_pyramids.py tests/test_late_behaviors.py tests/test_workers.py"
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .devshared ] && [ ! -e ../shared ]; then cp -r .devshared ../shared; fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

# stage NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (then an interrupt, so pytest still
# prints its summary), its log in $OUT/NAME.log
stage() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local start=$SECONDS
    timeout -s INT -k 15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    grep -v -E "^\s*$|Warning|warn\(" "$OUT/$name.log" | tail -n "${TAIL:-12}"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

for s in "${@:-cnn lstm tests}"; do
    for name in $s; do
        case $name in
        cnn) stage cnn 120 python3 bench/cnn_gridworld.py --device cuda --steps ${CNN_STEPS:-20000} --image-size 84 --seeds 1 ;;
        cnn-cpu) stage cnn-cpu 170 python3 bench/cnn_gridworld.py --device cpu --steps 5000 --image-size 84 --seeds 1 ;;
        devices) stage devices "${DEVICES_S:-300}" python3 bench/device_choice.py --json "$OUT/devices.jsonl" ;;
        lstm) stage lstm 110 python3 bench/recurrent_cartpole.py --device cuda --steps ${LSTM_STEPS:-30000} --seeds 1 ;;
        # one torch thread per test process: 14 processes of 16 threads each on 16 cores made a
        # 1 s behavioral-cloning fit on the CPU take over 150 s
        tests | tests-all)
            if [ "$name" = tests ]; then files=${TESTS_ARGS:-$TRAINING_FILES}; else files=${TESTS_ARGS:-}; fi
            # shellcheck disable=SC2086  # the file list splits into arguments
            PALAESTRA_TEST_DEVICE=cuda OMP_NUM_THREADS=1 TAIL=40 stage "$name" "${TESTS_S:-230}" python3 -m pytest -q -p no:cacheprovider -n 14 \
                --timeout 300 -rfE --durations=12 --junitxml="$OUT/$name.xml" $files ;;
        *) echo "unknown stage $name" ;;
        esac
    done
done
