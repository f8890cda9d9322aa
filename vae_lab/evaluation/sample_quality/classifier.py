"""The feature space of the sample metrics: a small classifier trained once per dataset.

FID, KID and precision/recall compare images through features of a network that knows the
data; Heusel et al. (2017) use Inception-v3 on ImageNet, which sees nothing of 28 x 28 digits.
Here, as is usual for MNIST-scale data (e.g. Bińkowski et al. 2018, section 5, "LeNet features"),
the features are the last hidden layer of an MLP classifier trained on the dataset's own
training split,

    x [N, X] -> ReLU(W1 x + b1) -> h(x) = ReLU(W2 . + b2) [N, F] -> logits W3 h + b3,

trained with Adam on cross-entropy, seeded, and with every image binarised (x ~ Bernoulli(x))
with probability 1/2, so that grey decoder means and binary images map to the same features.
It is trained once per dataset and cached as ``<cache>/classifiers/<dataset>-<hash>.pt``
(``hash`` of its settings) with its test accuracy, so every run and sweep scores in the same
feature space. Jobs of a sweep that need it at once train it once: the first takes
``<file>.lock`` and trains, the others wait for the lock and read what it cached. The file is
written atomically (a temporary file, then ``os.replace``), so a reader never sees part of one.
An unreadable or corrupt file is retrained and replaced, with a warning; a cache folder that
cannot be written is a one-line error naming ``VAE_LAB_CACHE``. Datasets without labels use the
classifier of the dataset they come from (binarised MNIST: MNIST's).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_lab.components.data import BinarizedMNIST, Digits, IDXImages, InMemoryDataModule, Omniglot
from vae_lab.components.minibatch_adam import minibatch_adam
from vae_lab.config.validation import ConfigError

log = logging.getLogger(__name__)


@dataclass
class ClassifierSpec:
    """How the feature classifier is built and trained (``sample_quality.classifier``)."""

    hidden: list[int] = field(default_factory=lambda: [512, 64])
    epochs: int = 12
    min_steps: int = 1000  # small datasets (digits) still get this many steps
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    cache_dir: str | None = None  # null: $VAE_LAB_CACHE, else ~/.cache/vae_lab

    def key(self) -> str:
        """A hash of the settings that change the trained network (not where it is cached)."""
        settings = {k: v for k, v in asdict(self).items() if k != "cache_dir"}
        settings["hidden"] = list(settings["hidden"])
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]

    def folder(self) -> Path:
        default = Path(os.environ.get("VAE_LAB_CACHE", Path.home() / ".cache" / "vae_lab"))
        return Path(self.cache_dir).expanduser() if self.cache_dir else default

    def path(self, source: InMemoryDataModule) -> Path:
        """The cache file of ``source``'s classifier."""
        return self.folder() / "classifiers" / f"{source_name(source)}-{self.key()}.pt"


class FeatureClassifier(nn.Module):
    """``forward`` gives the features h(x) [N, F] (what the metrics use); ``logits`` the classes."""

    def __init__(self, data_dim: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width_in, width in zip([data_dim, *hidden[:-1]], hidden, strict=True):
            layers += [nn.Linear(width_in, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1], num_classes)
        self.num_features = hidden[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.flatten(1).float())

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self(x))


def classifier_source(datamodule: InMemoryDataModule) -> InMemoryDataModule | None:
    """The labelled dataset whose classifier scores ``datamodule``'s images (None: no images)."""
    if isinstance(datamodule, Digits):
        return Digits()
    if isinstance(datamodule, Omniglot):
        return Omniglot(
            root=datamodule.root, download=datamodule.download, mirror=datamodule.mirror
        )
    if isinstance(datamodule, IDXImages | BinarizedMNIST):
        name = datamodule.name if isinstance(datamodule, IDXImages) else "mnist"
        return IDXImages(
            name=name, root=datamodule.root, download=datamodule.download, mirror=datamodule.mirror
        )
    return None


def source_name(source: InMemoryDataModule) -> str:
    return source.name if isinstance(source, IDXImages | Omniglot) else "digits"


def accuracy(classifier: FeatureClassifier, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        predicted = torch.cat([classifier.logits(b).argmax(-1) for b in x.split(5000)])
    return float((predicted == y).double().mean())


def binarised(x: Tensor, seed: int) -> Tensor:
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def held_out_accuracies(classifier: FeatureClassifier, x: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy on the grey test images and on one seeded binarisation of them."""
    return {
        "accuracy": accuracy(classifier, x, y),
        "accuracy_binarized": accuracy(classifier, binarised(x, 0), y),
    }


@torch.inference_mode(False)
def train_classifier(x: Tensor, y: Tensor, spec: ClassifierSpec) -> FeatureClassifier:
    """Adam on cross-entropy over seeded minibatches (``spec.epochs`` passes, at least
    ``spec.min_steps`` steps), half of the images binarised. The network is made outside
    inference mode, even when called from a test loop (Lightning runs it in inference mode)."""
    generator = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    x, y = x.clone(), y.clone()  # ordinary tensors, should they come from inference mode
    classifier = FeatureClassifier(x.shape[1], list(spec.hidden), int(y.max()) + 1)

    def loss(rows: Tensor) -> Tensor:
        batch = x[rows]
        binary = torch.rand(len(batch), 1, generator=generator) < 0.5
        batch = torch.where(binary, torch.bernoulli(batch, generator=generator), batch)
        return nn.functional.cross_entropy(classifier.logits(batch), y[rows])

    steps = max(spec.min_steps, spec.epochs * len(x) // spec.batch_size)
    minibatch_adam(
        classifier.parameters(), loss, len(x), steps, spec.batch_size, spec.lr,
        "feature classifier", generator=generator,
    )  # fmt: skip
    return classifier.eval().requires_grad_(False)


def check_writable(folder: Path) -> None:
    """Raise a one-line ConfigError unless files can be created in ``folder`` (made if needed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"the classifier cache {folder} is not writable ({err.strerror or err}): set "
            "VAE_LAB_CACHE (or sample_quality.classifier.cache_dir) to a writable folder"
        ) from err


def check_cache(source: InMemoryDataModule, spec: ClassifierSpec) -> None:
    """Fail now, not after training, when the classifier is not cached and cannot be."""
    path = spec.path(source)
    if not path.is_file():
        check_writable(path.parent)


def _save_atomically(path: Path, payload: dict[str, Any]) -> None:
    check_writable(path.parent)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        try:
            torch.save(payload, tmp)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def load_cached(
    path: Path, spec: ClassifierSpec
) -> tuple[FeatureClassifier, dict[str, Any]] | None:
    """The classifier and record cached at ``path``; None (with a warning) when the file is
    unreadable, corrupt, or not a classifier of ``spec``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        record = payload["record"]
        classifier = FeatureClassifier(record["data_dim"], list(spec.hidden), record["classes"])
        classifier.load_state_dict(payload["state_dict"])
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as err:
        log.warning("the cached classifier %s is unreadable (%s): retraining it", path, err)
        return None
    return classifier.eval().requires_grad_(False), {**record, "file": str(path)}


@contextmanager
def waiting_lock(path: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the body, waiting for it (after logging
    ``waiting``) where another process holds it. Where the file system offers no ``flock``,
    the body runs unlocked, with a warning."""
    with open(os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            log.warning("cannot lock %s (%s): going on unlocked", path, err.strerror or err)
        yield


def cached_classifier(
    source: InMemoryDataModule, spec: ClassifierSpec
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The dataset's classifier from the cache, trained (and cached) on first use or when the
    cached file is unreadable; and its record: dataset, test accuracies, file. Processes that
    need it at once (the jobs of a sweep) train it once: one trains while the others wait on
    ``<file>.lock``, then read what it cached."""
    name, path = source_name(source), spec.path(source)
    if path.is_file() and (cached := load_cached(path, spec)) is not None:
        return cached
    check_writable(path.parent)
    waiting = f"waiting for another process that trains the {name} feature classifier ({path})"
    with waiting_lock(path.with_suffix(".lock"), waiting):
        if path.is_file() and (cached := load_cached(path, spec)) is not None:
            return cached  # trained by the process this one waited for
        return _train_and_cache(source, spec, name, path)


def _train_and_cache(
    source: InMemoryDataModule, spec: ClassifierSpec, name: str, path: Path
) -> tuple[FeatureClassifier, dict[str, Any]]:
    log.info("training the %s feature classifier once; it is cached at %s", name, path)
    train_x, _, test_x = (s.float() for s in source.load_splits())
    train_y, _, test_y = source.load_labels()
    classifier = train_classifier(train_x, train_y, spec)
    record = {
        "dataset": name,
        "data_dim": train_x.shape[1],
        "classes": int(train_y.max()) + 1,
        "num_train": len(train_x),
        "num_test": len(test_x),
        **held_out_accuracies(classifier, test_x, test_y),
    }
    _save_atomically(path, {"state_dict": classifier.state_dict(), "record": record})
    log.info("%s classifier: test accuracy %.4f", name, record["accuracy"])
    return classifier, {**record, "file": str(path)}
