"""The shipped-model checksum guard: a changed or missing file is named, a good directory passes."""

from __future__ import annotations

import pytest

from keyseg_core.weights import shipped


def _checkpoint(tmp_path):
    for name, body in (("config.json", b"{}"), ("trainable.safetensors", b"weights"), ("meta.json", b"{}")):
        (tmp_path / name).write_bytes(body)
    shipped.write_checksums(tmp_path)
    return tmp_path


def test_checksums_round_trip(tmp_path):
    directory = _checkpoint(tmp_path)
    assert set(shipped.read_checksums(directory)) == {"config.json", "trainable.safetensors", "meta.json"}
    shipped.verify(directory)


def test_changed_file_is_named(tmp_path):
    directory = _checkpoint(tmp_path)
    (directory / "trainable.safetensors").write_bytes(b"weightz")
    with pytest.raises(ValueError, match="trainable.safetensors: sha256 .* does not match"):
        shipped.verify(directory)


def test_missing_file_and_missing_sums_are_named(tmp_path):
    directory = _checkpoint(tmp_path)
    (directory / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json: missing"):
        shipped.verify(directory)
    (directory / shipped.CHECKSUM_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="SHA256SUMS: missing"):
        shipped.verify(directory)


def test_malformed_sums_line_is_named(tmp_path):
    directory = _checkpoint(tmp_path)
    (directory / shipped.CHECKSUM_FILE).write_text("abc config.json\n")
    with pytest.raises(ValueError, match="SHA256SUMS:1"):
        shipped.read_checksums(directory)


def test_ship_replaces_the_target_with_a_verified_copy(tmp_path):
    source = tmp_path / "final"
    source.mkdir()
    for name, body in (("config.json", b"{}"), ("trainable.safetensors", b"new"), ("meta.json", b"{}")):
        (source / name).write_bytes(body)
    (tmp_path / "weights").mkdir()
    target = _checkpoint(tmp_path / "weights")  # an older model is there
    assert shipped.ship(source, target) == target
    assert (target / "trainable.safetensors").read_bytes() == b"new"
    shipped.verify(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "weights"]  # no staging or old copy left


def test_ship_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a keyseg checkpoint"):
        shipped.ship(tmp_path, tmp_path / "weights")
