"""Image fits encode their fixed training coordinates once when the encoding has nothing to learn (a profile: about
8 % of a full-batch step recomputed them); the fit is the same as without the cache, and encodings that learn are
called every step as before."""

import csv

import numpy as np
import pytest

from rwf_render import cli, image
from rwf_render.imgio import write_image

TINY = ["--steps", "12", "--width", "32", "--features", "16", "--eval-every", "4", "--quiet"]


def _history(run):
    with open(run / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("extra", [[], ["--batch", "50"]])
def test_the_cached_features_fit_exactly_as_the_uncached(tmp_path, monkeypatch, extra):
    photo = tmp_path / "p.png"
    write_image(photo, np.random.default_rng(0).random((20, 24, 3)).astype(np.float32))
    calls = []
    real = image.ImageTask._fixed_features
    monkeypatch.setattr(image.ImageTask, "_fixed_features",
                        lambda self, model: calls.append(1) or real(self, model))
    assert cli.main(["fit", "image", str(photo), "--out", str(tmp_path / "cached"), *TINY, *extra]) == 0
    assert calls  # the cached path ran
    monkeypatch.setattr(image, "FEATURE_CACHE_BYTES", 0)  # too big to cache: the model on the coordinates
    assert cli.main(["fit", "image", str(photo), "--out", str(tmp_path / "plain"), *TINY, *extra]) == 0
    assert _history(tmp_path / "cached") == _history(tmp_path / "plain")


def test_features_are_computed_once_and_only_for_encodings_that_do_not_learn():
    from rwf_render.fields import EncodingConfig, MLPConfig, NeuralField

    img = np.random.default_rng(1).random((8, 10, 3)).astype(np.float32)
    cfg = image.ImageConfig(size=10)
    task = image.ImageTask(img, cfg, image.resolve_device("cpu"))
    fixed = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=2.0), MLPConfig(depth=2, width=16))
    first = task._fixed_features(fixed)
    assert first is not None and first.shape == (task.train_x.shape[0], 16)
    assert task._fixed_features(fixed) is first  # once
    learned = NeuralField(2, 3, EncodingConfig(kind="fourier", m=8, sigma=2.0, trainable=True),
                          MLPConfig(depth=2, width=16))
    assert task._fixed_features(learned) is None
