"""Weights sources: Keras' ImageNet loader (offline here: its failure path), files, random."""

from __future__ import annotations

import numpy as np
import pytest

from job import model as model_lib


def test_imagenet_goes_through_keras_loader_and_fails_clearly_offline(monkeypatch) -> None:
    from tensorflow import keras

    seen: dict = {}

    def fake_mobilenet(**kwargs):
        seen.update(kwargs)
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake_mobilenet)
    with pytest.raises(model_lib.WeightsUnavailable, match="--weights PATH_OR_S3_URI"):
        model_lib.imagenet_blob()
    assert seen == {"input_shape": (224, 224, 3), "include_top": False, "pooling": "avg", "weights": "imagenet"}


@pytest.mark.slow
def test_random_weights_are_deterministic_and_not_degenerate() -> None:
    first, second = model_lib.random_blob(), model_lib.random_blob()
    assert first.sha256 == second.sha256 and first.source == "random"
    model = model_lib.load_model(first.data, first.suffix)
    x = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    out = model_lib.tf_predictor(model)(x)
    assert out.shape == (4, 1280)
    assert float(np.abs(out).mean()) > 1e-3  # raw random init would give ~1e-11


@pytest.mark.slow
def test_weights_file_round_trip_and_legacy_h5(weights_file, tmp_path) -> None:
    """A Keras 3 .weights.h5 and a legacy .h5 (the format of Keras' *_no_top.h5) both load."""
    blob = model_lib.WeightsBlob.of(weights_file.read_bytes(), model_lib.file_suffix(str(weights_file)), "x")
    assert blob.suffix == ".weights.h5"
    reference = model_lib.load_model(blob.data, blob.suffix)
    legacy = tmp_path / "mobilenet_v2_no_top.h5"
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    assert model_lib.file_suffix(str(legacy)) == ".h5"
    loaded = model_lib.load_model(legacy.read_bytes(), ".h5")
    x = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        model_lib.tf_predictor(loaded)(x), model_lib.tf_predictor(reference)(x), rtol=1e-5, atol=1e-6
    )


_WORKER = """
import os, sys
import numpy as np
from job import model as model_lib

path = sys.argv[1]
model = model_lib.load_model(open(path, "rb").read(), model_lib.file_suffix(path))
x = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
model_lib.calibrate_batchnorm(model, x.astype("float32") / 127.5 - 1)
assert model_lib.tf_predictor(model)(x).shape == (2, 1280)
sys.stdout.flush()
os._exit(0)  # as a PySpark Python worker ends: no atexit handlers
"""


@pytest.mark.slow
def test_tf_engine_leaves_no_files_in_tmp(weights_file, tmp_path) -> None:
    """A process that runs the model and ends like a PySpark worker leaves its temporary folder empty
    (autograph's generated-source files were only removed at a normal interpreter exit)."""
    import os
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(weights_file)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp.iterdir()) == []
