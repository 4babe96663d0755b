#!/usr/bin/env bash
# cibuildwheel before-all (runs once per manylinux_2_28 container, in the
# project root): install the CUDA toolkit line of $INT4MM_VARIANT from
# NVIDIA's RHEL 8 repository, an older gcc-toolset when the image's gcc is
# newer than that nvcc accepts, and fetch the CUTLASS headers wheel into .whl/.
# Everything is read from int4mm/_variants.py.
set -euxo pipefail
: "${INT4MM_VARIANT:?set INT4MM_VARIANT (e.g. cu130): see int4mm/_variants.py}"
PY=$(find /opt/python -maxdepth 3 -path '*cp312-cp312/bin/python' | head -n 1)
PY=${PY:-python3}
table() { "$PY" int4mm/_variants.py "$@"; }

toolkit=$(table get "$INT4MM_VARIANT" toolkit)
max_gcc=$(table get "$INT4MM_VARIANT" max_gcc)
dash=${toolkit/./-}
case "$(uname -m)" in
    x86_64) repo=x86_64 ;;
    aarch64) repo=sbsa ;;
    *) echo "unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

dnf install -y dnf-plugins-core
dnf config-manager --add-repo \
    "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/${repo}/cuda-rhel8.repo"
pkgs=("cuda-nvcc-$dash" "cuda-cudart-devel-$dash" "cuda-cccl-$dash")
# CUDA 13 split the compiler's runtime headers into cuda-crt.
if dnf list --available "cuda-crt-$dash" > /dev/null 2>&1; then pkgs+=("cuda-crt-$dash"); fi
dnf install -y --setopt=install_weak_deps=False "${pkgs[@]}"
ln -sfn "/usr/local/cuda-$toolkit" /usr/local/cuda
/usr/local/cuda/bin/nvcc --version

gcc_major=$(g++ -dumpversion | cut -d. -f1)
if ((gcc_major > max_gcc)); then
    # setup.py passes -ccbin /opt/rh/gcc-toolset-N/root/usr/bin/g++ to nvcc.
    dnf install -y "gcc-toolset-${max_gcc}-gcc-c++"
fi

if ! compgen -G ".whl/nvidia_cutlass-*.whl" > /dev/null; then
    "$PY" -m pip download --no-deps -d .whl "$(table cutlass)"
fi
