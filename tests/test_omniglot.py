"""data=omniglot: the two small background sets of Omniglot, read from the shared data."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SHARED_DATA, compose_config
from vae_lab.training.build import build_datamodule

FOLDER = SHARED_DATA / "omniglot_lake_small"


@pytest.fixture(scope="module")
def omniglot():
    if not FOLDER.is_dir():
        pytest.skip(f"the shared Omniglot sets are not at {FOLDER} (set VAE_LAB_TEST_DATA)")
    cfg = compose_config(["data=omniglot", f"data.root={SHARED_DATA}"])
    datamodule = build_datamodule(cfg)  # a Bernoulli likelihood: binarised
    datamodule.setup()
    return datamodule


def test_the_two_sets_less_their_shared_images_split_by_seed(omniglot):
    """2,720 + 3,120 images, of which 1,000 (Greek, Latin) are in both: 4,840, split 70/10/20."""
    train, val, test = omniglot.splits
    assert (len(train), len(val), len(test)) == (3388, 484, 968)
    assert omniglot.image_shape == (28, 28) and train.shape[1] == 784


def test_strokes_are_bright_grey_levels_binarised_for_bernoulli(omniglot):
    """Inverted (strokes 1) and area-averaged: grey levels k/255 in training, a sparse image
    (strokes cover a tenth of it at most); the test split binarised once."""
    train, _, test = omniglot.splits
    levels = train * 255
    assert levels.equal(levels.round()) and train.unique().numel() > 2
    assert 0.03 < train.mean() < 0.12
    assert set(test.unique().tolist()) == {0.0, 1.0}


def test_the_labels_are_the_242_characters_of_20_drawers(omniglot):
    """136 + 156 characters, 50 of them (Greek, Latin) in both sets; the labels split as the
    images (the sample-quality classifier is trained on them)."""
    labels = omniglot.load_labels()
    assert [len(y) for y in labels] == [len(x) for x in omniglot.splits]
    counts = torch.bincount(torch.cat(labels))
    assert len(counts) == 242 and counts.eq(20).all()
