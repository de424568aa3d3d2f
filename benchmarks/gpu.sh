#!/usr/bin/env bash
# The GPU figures of issue 13 in one step, on a CUDA machine, all tables into one file:
#   bash benchmarks/gpu.sh [OUT]            (default benchmarks/gpu-results.md; needs ../shared/data/coco128-seg)
# 1. benchmarks/end_to_end.py: the whole `auditor audit` command against plain bf16 inference on real photos,
#    with the JPEGs decoded by the CPU workers and then on the GPU (sweep.decode_on_device), so the table says
#    whether that setting pays on this machine.
# 2. benchmarks/scale.py: everything after the sweep against the sweep, at 100 and 1,000 classes of 224 px photos.
# 3. benchmarks/throughput.py: resnet50 and vit_b_16 at 224 px, batch 128, each with bf16 autocast and
#    channels_last on and off: plain inference, the auditor sweep, pytorch-grad-cam and Captum.
# Environment: PYTHON (default: the repo's .venv, else python), WORKERS (DataLoader workers, default: CPUs, at
# most 16), IMAGES (throughput images, default 1024), E2E_IMAGES (end-to-end photos, default 2048), COCO (the
# coco128-seg folder, default ../shared/data/coco128-seg), AGREE_CONFIG (an audit config: if set, it is audited
# with --device cpu and --device cuda first, and benchmarks/device_agreement.py compares the two runs).
# A failing benchmark is noted in the file and the others still run. About 10 minutes on one recent GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu-results.md}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
CPUS=$(nproc)
WORKERS=${WORKERS:-$(( CPUS < 16 ? CPUS : 16 ))}
IMAGES=${IMAGES:-1024}
E2E_IMAGES=${E2E_IMAGES:-2048}
COCO=${COCO:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device visible to torch')" || exit 1
{
  echo "# GPU benchmarks ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'CUDA', torch.version.cuda)"
  echo "DataLoader workers: $WORKERS, CPUs: $CPUS"
  if [ -n "${AGREE_CONFIG:-}" ]; then
    echo
    echo "## CPU float32 against CUDA bf16: $AGREE_CONFIG"
    agree=$(mktemp -d)
    for device in cpu cuda; do
      "$PY" -m auditor audit --config "$AGREE_CONFIG" --device "$device" --out "$agree/$device" >/dev/null 2>&1 \
        || echo "(the $device audit failed with exit $?)"
    done
    "$PY" benchmarks/device_agreement.py "$agree/cpu" "$agree/cuda" || echo "(device_agreement.py: exit $?)"
  fi
  # The figures that decide defaults come first (a GPU lent for minutes may stop the script part way): the whole
  # command with decode_on_device off and on, then each architecture with the sweep's defaults (bf16 autocast and
  # channels_last on), then the rest. On an H200, 370 s covered five throughput runs (three failed early).
  for decode in false true; do
    echo
    echo "## end to end: resnet50, coco128 photos, batch 128, bf16, channels_last, sweep.decode_on_device $decode"
    "$PY" benchmarks/end_to_end.py --device cuda --arch resnet50 --batch 128 --workers "$WORKERS" \
      --images "$E2E_IMAGES" --repeat 2 ${COCO:+--coco "$COCO"} --set "sweep.decode_on_device=$decode" \
      || echo "(end_to_end.py failed with exit $?)"
  done
  echo
  echo "## scale: 100 and 1,000 classes x 8 images of 224 px, resnet18 (head fitted), the sweep's defaults"
  "$PY" benchmarks/scale.py --classes 100 1000 --size 224 || echo "(scale.py failed with exit $?)"
  for combination in "resnet50 on on" "vit_b_16 on on" "resnet50 off on" "vit_b_16 off on" \
                     "resnet50 on off" "resnet50 off off" "vit_b_16 on off" "vit_b_16 off off"; do
    read -r arch amp cl <<<"$combination"
    echo
    echo "## throughput: $arch, 224 px, batch 128, bf16 autocast $amp, channels_last $cl"
    "$PY" benchmarks/throughput.py --device cuda --arch "$arch" --size 224 --batch 128 --images "$IMAGES" \
      --workers "$WORKERS" --methods gradcam --amp "$amp" --channels-last "$cl" --repeat 2 \
      || echo "(throughput.py failed with exit $?)"
  done
} 2>&1 | tee "$OUT"
echo "gpu.sh: tables written to $OUT"
