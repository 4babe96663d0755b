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
  INT4MM_VARIANT          a binary variant of int4mm/_variants.py (cu121 ... cu130): the
                          distribution is named int4mm-<variant> and built for that
                          variant's architectures with that toolkit line's nvcc (checked).
                          Unset: the sdist / source build, named `int4mm`
  INT4MM_VERSION          package version (default: from the git tag, see tools/version.py)
  NVCC_CCBIN              host compiler for nvcc (default: gcc, or an older
                          /opt/rh/gcc-toolset-N when gcc is newer than the toolkit accepts)
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


def _load(path: Path, name: str):
    """A module of this tree loaded by path (the package itself is not importable
    before it is built)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # NamedTuple and dataclasses look their module up
    spec.loader.exec_module(module)
    return module


VARIANTS = _load(ROOT / "int4mm" / "_variants.py", "_int4mm_variants")
VERSION = _load(ROOT / "tools" / "version.py", "_int4mm_version_tool").version()


def selected_variant():
    name = os.environ.get("INT4MM_VARIANT", "").strip()
    if not name:
        return None
    try:
        return VARIANTS.get(name)
    except KeyError as exc:
        sys.exit(f"error: INT4MM_VARIANT: {exc.args[0]}")


VARIANT = selected_variant()
DIST_NAME = VARIANT.dist if VARIANT else "int4mm"
RELEASE_VARIANT = (VARIANT.name if VARIANT and not os.environ.get("INT4MM_CUDA_ARCHS", "").strip()
                   else None)


def nvcc_release(nvcc: Path) -> str:
    out = subprocess.run([str(nvcc), "--version"], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        raise BuildError(f"cannot read the CUDA release from `{nvcc} --version`")
    return f"{m.group(1)}.{m.group(2)}"


def _gcc_major(compiler: str) -> int | None:
    try:
        out = subprocess.run([compiler, "-dumpversion"], check=True, capture_output=True,
                             text=True).stdout
        return int(out.strip().split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def host_compiler_flags() -> list[str]:
    """-ccbin for nvcc when the default gcc is newer than the variant's toolkit
    accepts and an older gcc-toolset is installed (tools/cibw_before_all.sh
    installs it in the manylinux container)."""
    if VARIANT is None or os.environ.get("NVCC_CCBIN") or "-ccbin" in os.environ.get(
            "INT4MM_NVCC_FLAGS", ""):
        return []
    major = _gcc_major(os.environ.get("CXX") or "g++")
    if major is None or major <= VARIANT.max_gcc:
        return []
    for n in range(VARIANT.max_gcc, 10, -1):
        gxx = Path(f"/opt/rh/gcc-toolset-{n}/root/usr/bin/g++")
        if gxx.is_file():
            return ["-ccbin", str(gxx)]
    raise BuildError(f"{VARIANT.dist}: CUDA {VARIANT.toolkit} accepts gcc <= {VARIANT.max_gcc}, "
                     f"but g++ is {major}: install gcc-toolset-{VARIANT.max_gcc} or set NVCC_CCBIN")


def write_build_version() -> None:
    """int4mm/_build_version.py: what `int4mm.__version__` and `info()` report
    (written before build_py copies the package)."""
    path = ROOT / "int4mm" / "_build_version.py"
    text = (
        "# Written by setup.py at build time; not in git.\n"
        f"version = {VERSION!r}\n"
        # A variant with its archs overridden is not that variant's release build.
        f"variant = {RELEASE_VARIANT!r}\n"
        f"dist = {DIST_NAME!r}\n"
    )
    try:
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    except OSError as exc:  # a read-only tree: the version falls back to _version.py's
        print(f"int4mm: cannot write {path}: {exc}", file=sys.stderr)


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
        if VARIANT is not None:
            print(f"int4mm: WARNING: INT4MM_CUDA_ARCHS={env} replaces the archs of "
                  f"{VARIANT.dist} ({';'.join(VARIANT.archs)}): not for release", flush=True)
    elif VARIANT is not None:
        archs = list(VARIANT.archs)
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
    if VARIANT is not None and not env:
        ptx = VARIANT.ptx
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
    # -DNDEBUG: CUTLASS's device-side asserts are calls, and a call inside the
    # wgmma mainloop makes ptxas serialize the wgmma pipeline (warning C7510).
    flags = [
        "-std=c++17", "-O3", "-DNDEBUG", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
        f"-I{CUDA_SRC}", f"-I{root / 'include'}",
        *([f"-I{cutlass}"] if cutlass is not None else []),
        f'-DINT4MM_COMPILED_TARGETS="{targets_define}"',
        *host_compiler_flags(),
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
            release = nvcc_release(nvcc)
            if VARIANT is not None and release != VARIANT.toolkit:
                raise BuildError(
                    f"{VARIANT.dist} is built with CUDA {VARIANT.toolkit}, but {nvcc} is CUDA "
                    f"{release}: point CUDA_HOME at a {VARIANT.toolkit} toolkit or pick the "
                    f"variant of this toolkit (INT4MM_VARIANT, see int4mm/_variants.py)")
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


# Metadata lives here, not in pyproject's [project], because the distribution
# name depends on the variant (PEP 621 forbids a dynamic name).
write_build_version()
_README = (ROOT / "README.md").read_text(encoding="utf-8")
_SUMMARY = "fp16 x int4 matrix multiplication for NVIDIA GPUs, usable from any CUDA Python stack"
if VARIANT is not None:
    _SUMMARY += (f" (CUDA {VARIANT.toolkit} build: NVIDIA driver >= {VARIANT.min_driver}; "
                 f"import name int4mm)")

setup(
    name=DIST_NAME,
    version=VERSION,
    description=_SUMMARY,
    long_description=_README,
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    install_requires=["numpy"],
    extras_require={"test": ["pytest"]},
    packages=["int4mm"],
    package_data={"int4mm": ["py.typed"]},
    zip_safe=False,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Programming Language :: Cython",
        "Environment :: GPU :: NVIDIA CUDA",
        *([f"Environment :: GPU :: NVIDIA CUDA :: {VARIANT.cuda_major}"] if VARIANT else []),
        "Operating System :: POSIX :: Linux",
    ],
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
