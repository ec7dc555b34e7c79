"""Issue 6: a messy folder, generated here, mixed with valid images. Nothing may be lost."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from job.config import JobConfig
from job.pipeline import run
from tests.conftest import fruit_images

pytestmark = pytest.mark.slow

GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG],png}"


def save(path: Path, img: Image.Image, fmt: str, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    path.write_bytes(buffer.getvalue())


def build_corpus(root: Path) -> tuple[set[str], dict[str, str]]:
    """Write the corpus; return (names expected featurized, {name expected rejected: reason prefix})."""
    real = fruit_images()
    ok: set[str] = set()
    for src in real[:8]:
        dest = root / "valid" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        ok.add(src.name)
    photo = Image.open(real[0]).convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    save(root / "odd" / "alpha_png_named.jpg", rgba, "PNG")
    save(root / "odd" / "grey.jpg", photo.convert("L"), "JPEG")
    save(root / "odd" / "cmyk.jpg", photo.convert("CMYK"), "JPEG")
    save(root / "odd" / "sixteen_bit.png", Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG")
    save(root / "odd" / "one_pixel.jpg", Image.new("RGB", (1, 1), (250, 10, 10)), "JPEG")
    save(root / "odd" / "huge.jpg", photo.resize((6000, 6000)), "JPEG", quality=70)
    exif = Image.Exif()
    exif[0x0112] = 6
    save(root / "odd" / "rotated.jpg", photo.resize((200, 100)), "JPEG", exif=exif.tobytes())
    save(root / "Äpfel und Birnen" / "große Äpfel.jpg", photo, "JPEG")
    save(root / "りんご" / "赤い りんご.JPG", photo, "JPEG")
    save(root / "valid" / "UPPER.JPEG", photo, "JPEG")
    save(root / "a" / "b" / "c" / "d" / "deep leaf" / "nested.jpg", photo, "JPEG")
    (root / "links").mkdir()
    os.symlink(root / "valid" / real[0].name, root / "links" / "symlinked.jpg")
    (root / "empty class").mkdir()
    ok |= {
        "alpha_png_named.jpg", "grey.jpg", "cmyk.jpg", "sixteen_bit.png", "one_pixel.jpg", "huge.jpg",
        "rotated.jpg", "große Äpfel.jpg", "赤い りんご.JPG", "UPPER.JPEG", "nested.jpg", "symlinked.jpg",
    }  # fmt: skip
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    data = real[1].read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (bad / "text.jpg").write_text("just some text, not a picture\n")
    (bad / ".hidden.jpg").write_bytes(data)
    (bad / "notes.txt").write_text("not matched by the glob: not an input")
    rejected = {
        "zero.jpg": "empty file",
        "truncated.jpg": "corrupt or truncated",
        "random.jpg": "not an image",
        "text.jpg": "not an image",
    }
    return ok, rejected


def test_every_input_is_featurized_or_rejected_with_its_reason(spark, weights_file, tmp_path) -> None:
    root = tmp_path / "corpus"
    ok, expected_rejected = build_corpus(root)
    out = tmp_path / "out"
    metadata = run(spark, JobConfig(input=str(root), output=str(out), weights=str(weights_file), glob=GLOB, k=4))

    features = pq.read_table(out / "features").to_pandas()
    rejected = pq.read_table(out / "rejected").to_pandas()
    featurized_names = {p.rsplit("/", 1)[-1] for p in features["path"]}
    rejected_reasons = {p.rsplit("/", 1)[-1]: r for p, r in zip(rejected["path"], rejected["reason"], strict=True)}

    assert featurized_names == ok
    assert ".hidden.jpg" not in rejected_reasons  # hidden by Hadoop convention: not an input
    assert set(rejected_reasons) == set(expected_rejected)
    for name, prefix in expected_rejected.items():
        assert rejected_reasons[name].startswith(prefix), (name, rejected_reasons[name])
    counts = metadata["counts"]
    assert counts["listed"] == len(ok) + len(expected_rejected) == counts["featurized"] + counts["rejected"]
    assert counts["model_processed"] == counts["featurized"]

    vectors = np.stack(features["features"])
    assert np.all(np.isfinite(vectors)) and np.all(np.abs(vectors).sum(axis=1) > 0)  # no silent zero vectors
    labels = dict(zip((p.rsplit("/", 1)[-1] for p in features["path"]), features["label"], strict=True))
    assert labels["nested.jpg"] == "deep leaf"
    assert labels["große Äpfel.jpg"] == "Äpfel und Birnen"
    assert labels["赤い りんご.JPG"] == "りんご"
    assert labels["symlinked.jpg"] == "links"
    assert any(p.endswith("/Äpfel und Birnen/große Äpfel.jpg") for p in features["path"])
