"""The files of an offline LIBERO bundle (``scripts/bundle_libero.py``): PNG textures stored as lossless WebP and
written back with their ancillary chunks, and an archive cut into parts that travel one per transfer.

Kept apart from the bundler so that each stays readable; ``bundle_libero`` imports everything here."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pixel_digest(img) -> str:
    import hashlib

    import numpy as np

    arr = np.ascontiguousarray(np.asarray(img))
    return hashlib.sha256(repr((img.mode, arr.shape)).encode() + arr.tobytes()).hexdigest()


def png_chunks(data: bytes) -> list[list[str]]:
    """The ancillary chunks of a PNG before its image data, as [type, base64 data]: ``sRGB``, ``gAMA``, ``iCCP``...
    MuJoCo >= 3.3.3 reads the sRGB chunk to decide a texture's colour space, so a bundle that dropped it would
    render another world (the WebP round trip keeps pixels only)."""
    import base64
    import struct

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            break
        if kind[:1].islower():  # ancillary (lower-case first letter); critical ones are rebuilt from the pixels
            chunks.append([kind.decode("ascii"), base64.b64encode(data[pos + 8 : pos + 8 + length]).decode()])
        pos += 12 + length
    return chunks


def png_as_webp(data: bytes) -> tuple[bytes, list] | None:
    """Lossless WebP of a PNG with the PNG's mode, pixel digest and ancillary chunks; None when it would not decode
    to the same pixels.

    LIBERO's textures are loosely compressed PNGs (38 MiB for libero_object, which xz hardly shrinks); lossless WebP
    halves them, and that is what makes the bundle fit one 64 MiB transfer. The target re-encodes them as PNG with
    the same ancillary chunks (colour space included)."""
    import io

    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True, quality=100, method=4)
    back = Image.open(io.BytesIO(buf.getvalue()))
    back.load()
    if back.mode != img.mode:
        back = back.convert(img.mode)  # an opaque RGBA comes back as RGB; converting restores alpha 255
    if back.mode != img.mode or not np.array_equal(np.asarray(img), np.asarray(back)):
        return None
    return buf.getvalue(), [img.mode, pixel_digest(img), png_chunks(data)]


def webp_to_png(webp_path: Path, png_path: Path, mode: str, chunks: list[list[str]]) -> None:
    """Write the PNG back: the WebP's pixels in ``mode``, then the original's ancillary chunks spliced in right after
    the header (PIL writes none of sRGB, gAMA, pHYs... from a PngInfo)."""
    import base64
    import io
    import struct
    import zlib

    from PIL import Image

    img = Image.open(webp_path)
    img.load()
    if img.mode != mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    data = buf.getvalue()
    header_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]  # signature, then IHDR (length, type, data, crc)
    extra = b""
    for kind, payload in chunks:
        body = kind.encode("ascii") + base64.b64decode(payload)
        extra += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    png_path.write_bytes(data[:header_end] + extra + data[header_end:])


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_archive(bundle: Path, mib: float) -> list[str]:
    """Cut ``bundle/site.tar.xz`` into ``site.tar.xz.part-NN`` files of at most ``mib`` MiB (their sha256 in the
    manifest) and remove the whole: a bundle larger than one transfer travels in several calls, one part each.

    Why not smaller instead: the four suites' textures alone are ~55 MiB as lossless WebP (the best lossless codec
    at hand: WebP's slowest method and lossless JPEG 2000 measured no smaller), and shrinking them in any lossy way
    would change what MuJoCo renders."""
    archive = bundle / "site.tar.xz"
    if not archive.is_file():
        sys.exit(f"bundle_libero: {archive}: no archive to split (build the bundle first)")
    size, step, names = archive.stat().st_size, int(mib * 2**20), []
    with open(archive, "rb") as f:
        for k in range(-(-size // step)):
            name = f"site.tar.xz.part-{k:02d}"
            (bundle / name).write_bytes(f.read(step))
            names.append(name)
    manifest_file = bundle / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["parts"] = {name: _sha256(bundle / name) for name in names}
    manifest["archive_sha256"] = _sha256(archive)
    manifest_file.write_text(json.dumps(manifest, indent=1) + "\n")
    archive.unlink()
    return names


def join_parts(bundle: Path) -> None:
    """Put ``site.tar.xz`` back together from its parts (a split bundle), each checked against the manifest; a
    missing or changed part is one line naming it."""
    if (bundle / "site.tar.xz").is_file():
        return
    manifest = bundle / "manifest.json"
    parts = json.loads(manifest.read_text()).get("parts") if manifest.is_file() else None
    if not parts:
        sys.exit(f"bundle_libero: {bundle}: neither site.tar.xz nor the parts of a split one (manifest.json)")
    for name, digest in parts.items():
        if not (bundle / name).is_file():
            sys.exit(f"bundle_libero: {bundle / name}: missing ({len(parts)} parts make the bundle; carry them all)")
        if _sha256(bundle / name) != digest:
            sys.exit(f"bundle_libero: {bundle / name}: sha256 differs from manifest.json (a partial or changed copy)")
    tmp = bundle / "site.tar.xz.tmp"
    with open(tmp, "wb") as out:
        for name in parts:
            out.write((bundle / name).read_bytes())
    tmp.replace(bundle / "site.tar.xz")
