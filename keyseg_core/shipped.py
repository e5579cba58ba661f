"""The model keyseg ships and loads when none is named: KeySeg-Tiny, trained by this project.

Its checkpoint (config.json, trainable.safetensors, meta.json) lives in the package under
`weights/keyseg-tiny/` next to a SHA256SUMS file; the README gives the exact command, seed, data and
wall time that produced it. Every load checks the checksums first, so a truncated or edited file is
named instead of silently giving other masks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SHIPPED_NAME = "keyseg-tiny"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / SHIPPED_NAME
CHECKSUM_FILE = "SHA256SUMS"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(directory: Path) -> dict[str, str]:
    """file name -> sha256 from `directory/SHA256SUMS` (sha256sum's format: '<hex>  <name>')."""
    path = directory / CHECKSUM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the shipped model cannot be verified (reinstall keyseg)")
    sums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition("  ")
        if len(digest) != 64 or not name:
            raise ValueError(f"{path}:{number}: expected '<sha256>  <file>', got {line!r}")
        sums[name] = digest
    return sums


def write_checksums(directory: Path) -> Path:
    """Write SHA256SUMS for every file of a checkpoint directory (done once when a model is shipped)."""
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKSUM_FILE)
    path = directory / CHECKSUM_FILE
    path.write_text("".join(f"{sha256(directory / n)}  {n}\n" for n in names), encoding="utf-8")
    return path


def verify(directory: Path) -> None:
    """Raise ValueError naming the first file whose sha256 differs from SHA256SUMS (or is missing)."""
    for name, expected in read_checksums(directory).items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the shipped model (reinstall keyseg)")
        actual = sha256(path)
        if actual != expected:
            raise ValueError(f"{path}: sha256 {actual[:16]}... does not match {CHECKSUM_FILE} "
                             f"({expected[:16]}...); the file is corrupt or was changed (reinstall keyseg)")


def shipped_checkpoint() -> Path:
    """The verified directory of the shipped checkpoint."""
    if not (SHIPPED_DIR / "config.json").is_file():
        raise FileNotFoundError(f"{SHIPPED_DIR}: the shipped {SHIPPED_NAME} model is missing (reinstall keyseg, "
                                "or name a model with --model)")
    verify(SHIPPED_DIR)
    return SHIPPED_DIR
