"""Inside the image (docker/smoke.sh): sim_eval is installed from a wheel, not editable, and every file the wheel
installed under ``sim_eval/`` is byte for byte the file of the checkout given as the argument (sha256 from the wheel's
RECORD), so tests run from that checkout test the code the image runs. Exits non-zero, naming files, otherwise."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import sys
from pathlib import Path


def main(checkout: Path) -> int:
    dist = md.distribution("sim_eval")
    if "editable" in (dist.read_text("direct_url.json") or ""):
        print(f"check_installed: sim_eval is an editable install ({dist.read_text('direct_url.json')})")
        return 1
    files = [f for f in dist.files or [] if f.parts[0] == "sim_eval" and f.hash]
    stale = []
    for f in files:
        source = checkout / f
        digest = hashlib.sha256(source.read_bytes()).digest() if source.is_file() else b""
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != f.hash.value:
            stale.append(str(f))
    where = Path(dist.locate_file("sim_eval")).resolve()
    print(
        f"check_installed: sim_eval {dist.version} installed at {where} (wheel, not editable): {len(files)} files, "
        f"{len(files) - len(stale)} equal to {checkout}/"
    )
    if stale:
        print(f"check_installed: the image was built from other sources, rebuild it: {stale[:10]}")
    return 1 if stale or not files else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/src")))
