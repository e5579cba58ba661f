"""Generated samples on disk in the ReasonSeg / Reason-Seg-Key layout (see docs/data.md):

<out>/reason_seg/ReasonSeg/<split>/<stem>.jpg + <stem>.json
<out>/reason_seg/ReasonSeg/masks/<split>/<stem>.png        exact mask (outside the split folder,
                                                           whose .png files the reader takes as images)
<out>/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json
<out>/reason_seg/ReasonSeg/<split>_manifest.json
<out>/contact_<split>.png
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keyseg_core.atomic import atomic_write_json
from keyseg_core.data.keyword_file import KEYWORD_FILE, KeywordEntry, read_keyword_file, write_keyword_file
from keyseg_core.scenes.backgrounds import background_names
from keyseg_core.scenes.generator import GENERATOR_VERSION, SPLIT_IDS, Sample, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import Knowledge, load_knowledge
from keyseg_core.scenes.queries import HELD_OUT_TEMPLATES, explanation
from keyseg_core.scenes.render import attribution, check_glyphs

JPEG_QUALITY = 92


def reasonseg_root(out: str | Path) -> Path:
    return Path(out) / "reason_seg" / "ReasonSeg"


def split_paths(out: str | Path, split: str) -> dict[str, Path]:
    rs = reasonseg_root(out)
    return {
        "images": rs / split,
        "masks": rs / "masks" / split,
        "manifest": rs / f"{split}_manifest.json",
        "contact": Path(out) / f"contact_{split}.png",
        "keywords": rs / KEYWORD_FILE,
    }


def _stem_pattern(split: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(split)}_\d{{6}}$")


def existing_split_files(out: str | Path, split: str) -> list[Path]:
    """Files that make the split 'already there' (anything in its image or mask folder, its manifest)."""
    paths = split_paths(out, split)
    found = [p for key in ("images", "masks") if paths[key].is_dir() for p in sorted(paths[key].iterdir())]
    if paths["manifest"].is_file():
        found.append(paths["manifest"])
    return found


def remove_split(out: str | Path, split: str) -> int:
    """Delete one split's generated files (other splits and foreign files stay); returns the count.

    Refuses when the split folders hold files this generator does not write, so --overwrite can not
    wipe a real data set that shares the folder."""
    paths = split_paths(out, split)
    pattern = _stem_pattern(split)
    victims, foreign = [], []
    for key, suffixes in (("images", {".jpg", ".json"}), ("masks", {".png"})):
        if paths[key].is_dir():
            for p in sorted(paths[key].iterdir()):
                ok = p.is_file() and p.suffix in suffixes and pattern.match(p.stem)
                (victims if ok else foreign).append(p)
    if foreign:
        raise ValueError(
            f"{paths['images'].parent}: {split} holds files keyseg generate did not write, "
            f"e.g. {foreign[0]}; refusing to overwrite"
        )
    for p in victims:
        p.unlink()
    for key in ("manifest", "contact"):
        if paths[key].is_file():
            paths[key].unlink()
            victims.append(paths[key])
    return len(victims)


def mask_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """Outer contours of the mask as labelme point lists (holes and shapes under 3 points are lost:
    the PNG mask is the exact one)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in contours if len(c) >= 3]


def annotation(sample: Sample) -> dict:
    """The per-image JSON: ReasonSeg fields, plus the exact mask path and what the scene holds."""
    q0 = sample.queries[0]
    height, width = sample.scene.labels.shape
    return {
        "text": [q.text for q in sample.queries],
        "is_sentence": q0.is_sentence,
        "shapes": [
            {"label": "target", "points": pts, "group_id": None, "shape_type": "polygon", "flags": {}}
            for pts in mask_polygons(sample.target_mask)
        ],
        "mask": f"../masks/{sample.split}/{sample.stem}.png",
        "keyword": sample.keyword,
        "query_type": q0.spec.type,
        "query_types": [q.spec.type for q in sample.queries],
        "queries": [q.to_json() for q in sample.queries],
        "objects": [o.to_json() for o in sample.scene.objects],
        "background": sample.background,
        "seed": sample.seed,
        "split": sample.split,
        "index": sample.index,
        "imageHeight": height,
        "imageWidth": width,
    }


def encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_sample(out: str | Path, sample: Sample, kb: Knowledge) -> dict:
    """Write image, JSON and mask; return the summary the manifest and keyword file need."""
    paths = split_paths(out, sample.split)
    stem = sample.stem
    (paths["images"] / f"{stem}.jpg").write_bytes(encode_jpeg(sample.scene.image))
    (paths["masks"] / f"{stem}.png").write_bytes(encode_mask_png(sample.target_mask))
    text = json.dumps(annotation(sample), ensure_ascii=False, separators=(",", ":")) + "\n"
    (paths["images"] / f"{stem}.json").write_text(text, encoding="utf-8")
    return {
        "stem": stem,
        "keyword": sample.keyword,
        "query": sample.queries[0].text,
        "outputs": explanation(sample.queries[0], kb),
        "query_type": sample.queries[0].spec.type,
        "background": sample.background,
    }


def update_keyword_file(out: str | Path, split: str, records: Sequence[dict]) -> Path:
    """Replace this split's entries in the Reason-Seg-Key file, keeping every other entry."""
    path = split_paths(out, split)["keywords"]
    pattern = _stem_pattern(split)
    kept = [e for e in read_keyword_file(path).values() if not pattern.match(e.stem)] if path.is_file() else []
    new = [
        KeywordEntry(r["query"], r["outputs"], f"{r['stem']}.jpg", f"{r['stem']}.json", r["keyword"]) for r in records
    ]
    write_keyword_file(path, kept + new)
    return path


def write_manifest(out: str | Path, split: str, manifest: dict) -> Path:
    path = split_paths(out, split)["manifest"]
    atomic_write_json(path, manifest)
    return path


def _caption_font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(text: str, font: ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
    out.append(line)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: max(0, len(out[-1]) - 3)] + "..."
    return out


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, np.ndarray, str, str]], path: str | Path, columns: int = 4
) -> Path:
    """Grid of (image, mask, query, caption) tiles: target tinted and outlined, query written below."""
    from keyseg_core.inference.overlay import overlay

    if not tiles:
        raise ValueError("no samples for the contact sheet")
    height, width = tiles[0][0].shape[:2]
    font = _caption_font()
    line_h = 15
    cap_h = 4 * line_h + 6
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (width + 4), rows * (height + cap_h + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (image, mask, query, caption) in enumerate(tiles):
        x, y = (i % columns) * (width + 4), (i // columns) * (height + cap_h + 4)
        sheet.paste(Image.fromarray(overlay(image, mask.astype(bool))), (x, y))
        lines = _wrap(query, font, width - 4, 3) + [caption]
        for j, line in enumerate(lines):
            colour = (0, 0, 0) if j < len(lines) - 1 else (160, 0, 0)
            draw.text((x + 2, y + height + 2 + j * line_h), line, fill=colour, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _work(job: tuple) -> list[dict]:
    """Generate and write a chunk of indices (runs in worker processes)."""
    out, split, seed, config, indices = job
    kb = load_knowledge()
    return [write_sample(out, make_sample(seed, split, i, config, kb), kb) for i in indices]


def generate_split(
    out: str | Path,
    split: str,
    n: int,
    seed: int,
    config: SceneConfig = SceneConfig(),
    *,
    workers: int = 1,
    overwrite: bool = False,
    contact: int = 24,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write samples 0..n-1 of a split, the keyword file, the manifest and a contact sheet.

    Refuses an output that already holds the split unless `overwrite` (which removes only that
    split's generated files first). Returns the manifest plus the elapsed time."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_IDS)}")
    if n <= 0:
        raise ValueError(f"--n must be > 0, got {n}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    kb = load_knowledge()
    check_glyphs({c: kb.category(c).codepoint for c in config.pool(kb)})
    existing = existing_split_files(out, split)
    if existing and not overwrite:
        raise ValueError(f"{out} already holds the {split} split (e.g. {existing[0]}); pass --overwrite to replace it")
    if existing:
        remove_split(out, split)
    paths = split_paths(out, split)
    paths["images"].mkdir(parents=True, exist_ok=True)
    paths["masks"].mkdir(parents=True, exist_ok=True)
    chunk = 64
    jobs = [(str(out), split, seed, config, range(i, min(n, i + chunk))) for i in range(0, n, chunk)]
    start = time.perf_counter()
    records: list[dict] = []
    if workers <= 1:
        results = map(_work, jobs)
        pool = None
    else:
        pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers)
        results = pool.imap(_work, jobs)
    try:
        for part in results:
            records.extend(part)
            if progress:
                progress(len(records))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    elapsed = time.perf_counter() - start
    update_keyword_file(out, split, records)
    manifest = {
        "generator": GENERATOR_VERSION,
        "split": split,
        "n": n,
        "seed": seed,
        "size": [config.width, config.height],
        "objects": [config.min_objects, config.max_objects],
        "categories": list(config.pool(kb)),
        "query_weights": config.weights,
        "query_type_counts": dict(sorted(Counter(r["query_type"] for r in records).items())),
        "keyword_counts": dict(sorted(Counter(r["keyword"] for r in records).items())),
        "backgrounds": list(background_names(split)),
        "background_counts": dict(sorted(Counter(r["background"] for r in records).items())),
        "held_out_for_test": {
            "templates": f"last {HELD_OUT_TEMPLATES} of each query type",
            "fact_phrasings": "last phrasing of every fact; size words biggest/tiniest",
            "backgrounds": list(background_names("test")),
        },
        "attribution": attribution()[0],
        "license": attribution()[1],
    }
    write_manifest(out, split, manifest)
    if contact:
        write_contact_sheet(out, split, kb, contact)
    return {**manifest, "elapsed_s": elapsed}


def write_contact_sheet(out: str | Path, split: str, kb: Knowledge, count: int = 24) -> Path:
    """Contact sheet of the first samples, read back through the ReasonSeg reader (so it shows what
    training will see: JPEG pixels, the mask from the PNG, queries[0] and the keyword)."""
    from keyseg_core.data.reasonseg import ReasonSegDataset

    ds = ReasonSegDataset(out, split)
    tiles = []
    for i in range(min(count, len(ds))):
        item = ds[i]
        qtype = json.loads(Path(item.annotation_path).read_text(encoding="utf-8"))["query_type"]
        tiles.append((item.image, item.mask == 1, item.queries[0], f"[{qtype}] -> {item.keyword}"))
    return contact_sheet(tiles, split_paths(out, split)["contact"])
