"""Build of int4mm: nvcc compiles src/cuda/*.cu, Cython compiles the bridge,
and both are linked into one extension, ``int4mm._int4mm``, with the CUDA
runtime linked statically (no libcudart.so, no torch at run time).

Environment:
  CUDA_HOME / CUDA_PATH   CUDA toolkit (else the one holding `nvcc` on PATH)
  INT4MM_CUDA_ARCHS       e.g. "80;86;89;90a" (default: every arch >= 80 that
                          this nvcc lists, 90 built as 90a); PTX of the newest
                          arch is added so newer GPUs can JIT it
  INT4MM_BUILD_JOBS       parallel nvcc jobs (default: CPU count)
  INT4MM_NVCC_FLAGS       extra nvcc flags (e.g. "-lineinfo -Xptxas -v")
  INT4MM_CUTLASS_DIR      CUTLASS checkout (also CUTLASS_PATH / CUTLASS_HOME); else
                          the installed nvidia-cutlass package, else an
                          nvidia_cutlass-*.whl in .whl/ (headers unpacked into build/)
  INT4MM_VERSION          package version (default 0.1.0.dev0)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CUDA_SRC = ROOT / "src" / "cuda"
# Objects depend only on sources and flags, not on the Python version: keep
# them in one place so editable and wheel builds share them (and rebuilds
# recompile only what changed).
OBJ_DIR = ROOT / "build" / "int4mm-cuda-obj"


class BuildError(RuntimeError):
    pass


def _toolkit_root(nvcc: Path) -> Path | None:
    for candidate in (nvcc.resolve().parent.parent, nvcc.parent.parent):
        if (candidate / "include" / "cuda_runtime.h").is_file():
            return candidate
    return None


def find_cuda() -> tuple[Path, Path]:
    """(nvcc, toolkit root) from CUDA_HOME, CUDA_PATH or PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            nvcc = Path(value) / "bin" / "nvcc"
            if not nvcc.is_file():
                raise BuildError(f"{var}={value} has no bin/nvcc: point it at a CUDA toolkit")
            return nvcc, Path(value)
    which = shutil.which("nvcc")
    if which is None:
        raise BuildError(
            "int4mm needs the CUDA toolkit to build: nvcc was not found (set CUDA_HOME to "
            "a CUDA toolkit, e.g. /usr/local/cuda, or put nvcc on PATH)")
    nvcc = Path(which)
    root = _toolkit_root(nvcc)
    if root is None:
        for fallback in (Path("/usr/local/cuda"), Path("/opt/cuda")):
            if (fallback / "include" / "cuda_runtime.h").is_file():
                root = fallback
                break
    if root is None:
        raise BuildError(f"found {nvcc} but not the CUDA headers beside it: set CUDA_HOME")
    return nvcc, root


def find_cudart_static(root: Path) -> Path:
    for rel in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib",
                "lib/x64"):
        candidate = root / rel / "libcudart_static.a"
        if candidate.is_file():
            return candidate
    raise BuildError(f"libcudart_static.a not found under {root}: int4mm links the CUDA "
                     "runtime statically")


# ---- CUTLASS / CuTe headers (build-time only) -------------------------------------

CUTLASS_PROBE = Path("cute") / "tensor.hpp"


def _cutlass_include(candidate: Path) -> Path | None:
    """The include directory of a CUTLASS checkout or include dir, or None."""
    for inc in (candidate / "include", candidate):
        if (inc / CUTLASS_PROBE).is_file():
            return inc
    return None


def _cutlass_from_wheel(wheel: Path) -> Path | None:
    """Unpacks the headers of an nvidia-cutlass wheel into build/ (once)."""
    prefix = "cutlass_library/source/include/"
    dest = ROOT / "build" / "cutlass" / wheel.stem
    done = dest / ".complete"
    if not done.is_file():
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not members:
                return None
            for name in members:
                target = dest / "include" / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
        done.write_text(str(wheel))
    return _cutlass_include(dest)


def find_cutlass() -> Path | None:
    """CUTLASS include dir from, in order: INT4MM_CUTLASS_DIR / CUTLASS_PATH /
    CUTLASS_HOME, the installed nvidia-cutlass package (cutlass_library), an
    nvidia_cutlass-*.whl in the checkout's .whl/ folder, third_party/cutlass."""
    for var in ("INT4MM_CUTLASS_DIR", "CUTLASS_PATH", "CUTLASS_HOME"):
        value = os.environ.get(var)
        if value:
            inc = _cutlass_include(Path(value))
            if inc is None:
                raise BuildError(f"{var}={value} holds no {CUTLASS_PROBE} (nor include/"
                                 f"{CUTLASS_PROBE}): point it at a CUTLASS checkout")
            return inc
    spec = importlib.util.find_spec("cutlass_library")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            inc = _cutlass_include(Path(location) / "source")
            if inc is not None:
                return inc
    for wheel in sorted((ROOT / ".whl").glob("nvidia_cutlass-*.whl"), reverse=True):
        inc = _cutlass_from_wheel(wheel)
        if inc is not None:
            return inc
    return _cutlass_include(ROOT / "third_party" / "cutlass")


def _uses_cutlass(sources) -> bool:
    pattern = re.compile(r'#\s*include\s*[<"](cute|cutlass)/')
    files = [*sources, *CUDA_SRC.rglob("*.cuh"), *CUDA_SRC.rglob("*.h")]
    return any(pattern.search(p.read_text(errors="replace")) for p in files)


# ---- GPU targets ---------------------------------------------------------------------

def _parse_arch(entry: str) -> str:
    """'90a', 'sm_90a', '9.0' -> '90a'."""
    text = entry.strip().lower()
    for prefix in ("sm_", "compute_"):
        text = text.removeprefix(prefix)
    text = text.replace(".", "")
    if not re.fullmatch(r"\d+[af]?", text):
        raise BuildError(f"INT4MM_CUDA_ARCHS: cannot read {entry!r} (write e.g. 80, 90a, 120)")
    return text


def _arch_number(arch: str) -> int:
    return int(arch.rstrip("af"))


def default_archs(nvcc: Path) -> list[str]:
    out = subprocess.run([str(nvcc), "--list-gpu-arch"], check=True, capture_output=True,
                         text=True).stdout
    numbers = sorted({int(m) for m in re.findall(r"compute_(\d+)", out) if int(m) >= 80})
    return ["90a" if n == 90 else str(n) for n in numbers]


def gpu_targets(nvcc: Path) -> tuple[list[str], list[str]]:
    """(nvcc -gencode flags, target names such as sm_90a / compute_120)."""
    env = os.environ.get("INT4MM_CUDA_ARCHS", "").strip()
    if env:
        archs = [_parse_arch(e) for e in re.split(r"[;, ]+", env) if e.strip()]
    else:
        archs = default_archs(nvcc)
    if not archs:
        raise BuildError("no GPU architecture to build for (INT4MM_CUDA_ARCHS is empty?)")
    archs = sorted(dict.fromkeys(archs), key=lambda a: (_arch_number(a), a))
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    names = [f"sm_{a}" for a in archs]
    # PTX of the newest arch for GPUs newer than any listed.  Arch-specific
    # ('a') and family ('f') PTX does not run on later GPUs, so the PTX is the
    # plain compute_XX of that arch.
    ptx = str(_arch_number(archs[-1]))
    flags.append(f"-gencode=arch=compute_{ptx},code=compute_{ptx}")
    names.append(f"compute_{ptx}")
    return flags, names


# ---- nvcc compilation ----------------------------------------------------------------

def _headers_digest() -> str:
    """Digest of every header under src/cuda (any change rebuilds every object)."""
    digest = hashlib.sha256()
    for path in sorted(p for ext in ("*.h", "*.cuh", "*.inc", "*.hpp")
                       for p in CUDA_SRC.rglob(ext)):
        digest.update(str(path.relative_to(CUDA_SRC)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_cuda(nvcc: Path, root: Path) -> list[str]:
    gencode, names = gpu_targets(nvcc)
    sources = sorted(CUDA_SRC.glob("*.cu"))
    if not sources:
        raise BuildError(f"no .cu files in {CUDA_SRC}")
    OBJ_DIR.mkdir(parents=True, exist_ok=True)
    cutlass = find_cutlass()
    if cutlass is None and _uses_cutlass(sources):
        raise BuildError(
            "the CUDA sources include CUTLASS/CuTe headers, which were not found: "
            "`pip install nvidia-cutlass` and build with --no-build-isolation, put an "
            "nvidia_cutlass-*.whl in the checkout's .whl/ folder, or set INT4MM_CUTLASS_DIR "
            "to a CUTLASS checkout")
    targets_define = " ".join(names)
    flags = [
        "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
        f"-I{CUDA_SRC}", f"-I{root / 'include'}",
        *([f"-I{cutlass}"] if cutlass is not None else []),
        f'-DINT4MM_COMPILED_TARGETS="{targets_define}"',
        *gencode,
        *shlex.split(os.environ.get("INT4MM_NVCC_FLAGS", "")),
    ]
    headers = _headers_digest()

    def one(src: Path) -> tuple[str, str | None]:
        obj = OBJ_DIR / (src.stem + ".o")
        stamp = OBJ_DIR / (src.stem + ".cmd")
        cmd = [str(nvcc), "-c", str(src), "-o", str(obj), *flags]
        cmd_text = shlex.join(cmd)
        # The object is reused only when the command, the source and the headers
        # are byte-identical to its last build (content, not mtimes: checkouts
        # copied between machines keep no reliable mtimes).
        key = "\n".join([cmd_text, hashlib.sha256(src.read_bytes()).hexdigest(), headers])
        if obj.is_file() and stamp.is_file() and stamp.read_text() == key:
            return str(obj), None
        print(f"nvcc {src.relative_to(ROOT)}", flush=True)
        stamp.unlink(missing_ok=True)
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        log = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            return str(obj), f"{cmd_text}\n{log}"
        if log:
            print(log, flush=True)
        stamp.write_text(key)
        return str(obj), None

    jobs = int(os.environ.get("INT4MM_BUILD_JOBS") or os.cpu_count() or 1)
    print(f"int4mm: {len(sources)} CUDA files for {targets_define} ({jobs} nvcc job(s); "
          f"unchanged objects are reused from {OBJ_DIR.relative_to(ROOT)})", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, sources))
    failures = [err for _, err in results if err]
    if failures:
        raise BuildError("nvcc failed:\n" + "\n\n".join(failures))
    return [obj for obj, _ in results]


class BuildExt(build_ext):
    def build_extension(self, ext):
        try:
            nvcc, root = find_cuda()
            objects = compile_cuda(nvcc, root)
            cudart = find_cudart_static(root)
        except BuildError as exc:
            sys.exit(f"error: {exc}")
        # Order matters for the static link: our objects, then cudart, then
        # the system libraries cudart needs.
        ext.extra_objects = [*objects, str(cudart)]
        ext.include_dirs = [*ext.include_dirs, str(root / "include")]
        super().build_extension(ext)


def extensions():
    from Cython.Build import cythonize

    ext = Extension(
        "int4mm._int4mm",
        sources=["src/_int4mm.pyx"],
        language="c++",
        include_dirs=[str(CUDA_SRC)],
        libraries=["dl", "pthread", "rt"],
        extra_compile_args=["-O3", "-std=c++17"],
        # Keep the static CUDA runtime's symbols out of our dynamic symbol
        # table, so they never clash with another copy of cudart in-process.
        extra_link_args=["-Wl,--exclude-libs,ALL"],
    )
    return cythonize(
        [ext],
        include_path=["src"],
        compiler_directives={"language_level": "3"},
    )


setup(
    version=os.environ.get("INT4MM_VERSION", "0.1.0.dev0"),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
