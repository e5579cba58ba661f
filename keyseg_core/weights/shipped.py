"""The model keyseg ships and loads when none is named: KeySeg-Tiny, trained by this project.

Its checkpoint (config.json, trainable.safetensors, meta.json) lives in the package under
`weights/keyseg-tiny/` next to a SHA256SUMS file; the README gives the exact command, seed, data and
wall time that produced it. Every load checks the checksums first, so a truncated or edited file is
named instead of silently giving other masks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from keyseg_core.atomic import atomic_write_text

SHIPPED_NAME = "keyseg-tiny"
SHIPPED_DIR = Path(__file__).resolve().parent / SHIPPED_NAME
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
    atomic_write_text(path, "".join(f"{sha256(directory / n)}  {n}\n" for n in names))
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


def ship(checkpoint: Path, target: Path = SHIPPED_DIR) -> Path:
    """Copy a trained checkpoint's files into `target` with a fresh SHA256SUMS, replacing what was
    there only once the copy is complete (a failed copy leaves the old model in place)."""
    import shutil
    import tempfile

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a keyseg checkpoint (no config.json)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    for path in checkpoint.iterdir():
        if path.is_file():
            shutil.copy2(path, staging / path.name)
    write_checksums(staging)
    verify(staging)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m keyseg_core.weights.shipped",
                                     description="Ship a trained checkpoint as the default model (copy + SHA256SUMS).")
    parser.add_argument("checkpoint", type=Path, help="a keyseg checkpoint dir, e.g. runs/keyseg_tiny/final")
    parser.add_argument("--target", type=Path, default=SHIPPED_DIR, help=f"default: {SHIPPED_DIR}")
    args = parser.parse_args(argv)
    target = ship(args.checkpoint, args.target)
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"shipped {args.checkpoint} -> {target} ({size:.1f} MB, checksums in {CHECKSUM_FILE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
