# Source this on the GPU machine (the `device` tool), from the repository root, with `.whl` (wheels) and
# `.torch_ext` carried:   source tools/device_setup.sh
# It installs the carried wheels (gsplat ...) into /tmp/site and makes gsplat load a carried build of its
# CUDA code (.torch_ext/gsplat_cuda.so) instead of compiling for 90 s; without one it compiles and leaves
# the build in $OUT/gsplat_cuda.so to be carried next time.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
# The shared real capture, when carried in .device_data/ (tests look for it there through this variable).
[ -f .device_data/real_small_sh3.ply ] && export ANIMATE_GAUSSIANS_REAL_PLY=$PWD/.device_data/real_small_sh3.ply
if [ -f .torch_ext/gsplat_cuda.so ]; then
    # gsplat imports `gsplat.csrc` before it tries to compile: make that module the carried library.
    cat > /tmp/site/gsplat/csrc.py <<PY
import importlib.util, sys
_spec = importlib.util.spec_from_file_location("gsplat_cuda", "$PWD/.torch_ext/gsplat_cuda.so")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
sys.modules[__name__] = _module
PY
    python3 -c "import torch; from gsplat.cuda._backend import _C; assert _C is not None; print('gsplat: carried build loaded')" || return 1
else
    start=$(date +%s)
    python3 -c "import torch; from gsplat.cuda._backend import _C; assert _C is not None" || return 1
    echo "gsplat: compiled in $(( $(date +%s) - start )) s"
    [ -n "${OUT:-}" ] && cp "$(find /tmp/torch_ext -name gsplat_cuda.so | head -1)" "$OUT/gsplat_cuda.so"
fi
