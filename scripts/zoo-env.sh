#!/usr/bin/env bash
# The zoo's own environment: the heavy frameworks that write the zoo's model files
# (benchmarks/zoo_build.py). None of them is a dependency of edgesnn or of its tests.
#
#   bash scripts/zoo-env.sh              # creates or completes .zoo-venv/ in the repo (git-ignored)
#   ZOO_VENV=/some/path bash scripts/zoo-env.sh
#   .zoo-venv/bin/python benchmarks/zoo_build.py
#
# Idempotent: a second run installs nothing new. What goes in, and why in this order:
# - torch 2.13.0 CPU first, then a constraints file pins it, so that no later package (timm asks for
#   torch and torchvision) can make pip fetch a CUDA build of several GB.
# - torchvision with --no-deps, only for its model definitions: PyPI's compiled ops do not register
#   beside the CPU torch ("operator torchvision::nms does not exist"), so zoo_build.py loads
#   torchvision.models.* without running torchvision/__init__ (see its `torchvision_models`).
# - TensorFlow 2.19 + tf_keras 2.19 (Keras 2.x) and Keras 3, as BrainChip's akida_models /
#   cnn2snn / quantizeml pin them; tf2onnx; timm (with --no-deps, for the same torchvision reason).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ZOO_VENV:-$repo/.zoo-venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [ ! -x "$venv/bin/python" ]; then
    echo "zoo-env: creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
constraints="$venv/zoo-constraints.txt"

# 1. torch CPU, and the pin that keeps it.
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
    "${pip[@]}" install "torch==2.13.0"
fi
"$venv/bin/python" - "$constraints" <<'EOF'
import sys, torch
with open(sys.argv[1], "w") as f:
    f.write(f"torch=={torch.__version__.split('+')[0]}\n")
EOF

# 2. TensorFlow, Keras 2 and 3, BrainChip's model zoo, tf2onnx, onnx, onnxruntime.
"${pip[@]}" install -c "$constraints" \
    "tensorflow~=2.19.0" "tf_keras~=2.19.0" "akida-models==1.14.2" "tf2onnx" "onnx" "onnxruntime" \
    "scikit-learn" "mlxtend" "tqdm" "h5py"

# 3. timm and torchvision, model code only (see above). timm's own pure-Python deps are named here.
"${pip[@]}" install -c "$constraints" "huggingface_hub" "safetensors" "pyyaml"
"${pip[@]}" install --no-deps "timm==1.0.31" "torchvision==0.28.0"

# 4. torch.onnx's dynamo exporter needs onnxscript / onnx_ir newer than quantizeml pins (onnxscript~=0.4,
#    onnx_ir<=0.1.12, imported by quantizeml at import time): they go to a folder of their own that only
#    zoo_build.py's dynamo-export subprocess puts first on its path.
if [ ! -d "$venv/dynamo-site/onnxscript" ]; then
    "${pip[@]}" install --target "$venv/dynamo-site" --no-deps "onnxscript==0.7.2" "onnx_ir==1.1.0"
fi

"$venv/bin/python" -c "import torch, tensorflow as tf, tf_keras, keras, tf2onnx, onnx; \
print('zoo-env: torch', torch.__version__, '| tensorflow', tf.__version__, '| tf_keras', tf_keras.__version__, \
'| keras', keras.__version__, '| tf2onnx', tf2onnx.__version__, '| onnx', onnx.__version__)"
"$venv/bin/python" -c "import akida_models, cnn2snn, quantizeml; print('zoo-env: akida_models', akida_models.__version__ if hasattr(akida_models, '__version__') else 'ok')" \
    || echo "zoo-env: akida_models does not import; zoo_build.py skips its models" >&2
echo "zoo-env: ready: $venv/bin/python benchmarks/zoo_build.py"
