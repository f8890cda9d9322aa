"""Datamodules on the real files, and the download path against a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, options
from vae_lab.components.data import BinarizedMNIST, DataFileError, Digits, IDXImages, binarize
from vae_lab.components.data.batches import BatchOrder, TensorBatches
from vae_lab.components.data.files import RemoteFile, fetch
from vae_lab.config.validation import ConfigError


@pytest.fixture
def http_server():
    """Serve a folder on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def serve(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_digits_splits_and_ranges():
    dm = Digits(binarize=False)
    dm.setup()
    train, val, test = dm.splits
    assert (len(train), len(val), len(test)) == (1258, 180, 359)
    assert train.shape[1] == dm.data_dim == 64
    assert train.min() == 0 and train.max() == 1
    # the split is fixed by split_seed, not by the run's seed
    other = Digits(binarize=False, seed=7)
    other.setup()
    assert torch.equal(other.splits[2], test)


def test_binarisation_fixed_for_evaluation_and_fresh_for_training():
    dm = Digits(binarize=True)
    dm.setup()
    train, val, test = dm.splits
    assert set(val.unique().tolist()) == {0.0, 1.0} and set(test.unique().tolist()) == {0.0, 1.0}
    again = Digits(binarize=True, seed=3)
    again.setup()
    assert torch.equal(again.splits[2], test)  # same binary test set across runs
    assert train.unique().numel() > 2  # kept grey-level; binarised per batch
    dm.trainer = SimpleNamespace(training=True)
    first = dm.on_after_batch_transfer(train[:50], 0)
    second = dm.on_after_batch_transfer(train[:50], 0)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(val[:5], 0), val[:5])


def test_binarize_draws_bernoulli_pixels():
    """Each pixel is 1 with probability p: over n draws its frequency is within 5 binomial
    standard errors of p (all 200 pixels at once); p = 0 and p = 1 give 0 and 1 exactly."""
    torch.manual_seed(0)
    p = torch.linspace(0.0, 1.0, 200)
    n = 20_000
    draws = binarize(p.expand(n, -1))
    assert draws.dtype == p.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    stderr = (p * (1 - p) / n).sqrt()
    assert ((draws.mean(0) - p).abs() <= 5 * stderr).all()
    assert draws[:, 0].eq(0).all() and draws[:, -1].eq(1).all()
    torch.manual_seed(1)  # one uniform per pixel, from the global stream, as before
    again = binarize(p.expand(3, -1))
    torch.manual_seed(1)
    assert torch.equal(again, (torch.rand(3, 200) < p).to(p.dtype))


def test_grey_level_data_stays_grey_level():
    dm = Digits(binarize=False)
    dm.setup()
    assert dm.splits[2].unique().numel() > 2


IDX_OPTIONS = [  # the data options read from IDX files
    name
    for name in options("data")
    if OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")._target_
    == "vae_lab.components.data.IDXImages"
]


@pytest.mark.parametrize("option", IDX_OPTIONS)
def test_idx_datasets_have_the_real_counts(option, shared_data):
    name = OmegaConf.load(CONF_DIR / "data" / f"{option}.yaml").name
    dm = IDXImages(name=name, root=str(shared_data), binarize=True)
    dm.setup()
    train, val, test = dm.splits
    assert (len(train), len(val), len(test)) == (50000, 10000, 10000)
    assert train.shape[1] == 784
    assert train.min() == 0 and train.max() == 1 and train.unique().numel() > 2
    assert set(test.unique().tolist()) == {0.0, 1.0}
    assert 0.1 < train.mean() < 0.35


def test_binarized_mnist_counts_and_mean(shared_data):
    dm = BinarizedMNIST(root=str(shared_data))
    dm.setup()
    train, val, test = dm.splits
    assert (len(train), len(val), len(test)) == (50000, 10000, 10000)
    assert set(train.unique().tolist()) == {0.0, 1.0}
    assert train.mean().item() == pytest.approx(0.1306, abs=5e-4)
    assert test.mean().item() == pytest.approx(0.1325, abs=5e-4)


def batches(data, batch_size, world_size=1, **kwargs):
    """The batches of every process, in process order."""
    return [
        list(
            TensorBatches(
                data, BatchOrder(len(data), batch_size, rank=r, world_size=world_size, **kwargs)
            )
        )
        for r in range(world_size)
    ]


def test_evaluation_batches_cover_each_datapoint_once_whatever_the_world_size():
    data = torch.arange(103)
    single = batches(data, 10)[0]
    two = batches(data, 10, world_size=2)
    assert [len(p) for p in two] == [6, 5] and [len(p) for p in two] == [
        len(BatchOrder(103, 10, rank=r, world_size=2)) for r in range(2)
    ]
    # global batch i = rank + world_size * local index holds the same datapoints
    for rank, process in enumerate(two):
        for local, batch in enumerate(process):
            assert torch.equal(batch, single[rank + 2 * local])
    assert sorted(torch.cat([b for p in two for b in p]).tolist()) == list(range(103))


def test_training_batches_shuffle_per_epoch_with_equal_steps():
    data = torch.arange(103)
    shards = batches(data, 10, world_size=2, shuffle=True)
    assert len(shards[0]) == len(shards[1])  # equal steps on every process
    epoch = torch.cat([b for p in shards for b in p])
    assert epoch.unique().numel() == epoch.numel() == 102
    order = BatchOrder(103, 10, shuffle=True)
    first = torch.cat(list(order))
    order.set_epoch(1)
    second = torch.cat(list(order))
    order.set_epoch(0)
    assert not torch.equal(first, second) and torch.equal(torch.cat(list(order)), first)


def test_replicate_seeds_never_share_an_order():
    """Every (seed, epoch) of 4 seeds x 10 epochs shuffles differently: no replicate runs
    through another's sequence of orders shifted by an epoch."""

    def order(seed: int, epoch: int) -> tuple[int, ...]:
        batch_order = BatchOrder(1000, 100, shuffle=True, seed=seed)
        batch_order.set_epoch(epoch)
        return tuple(torch.cat(list(batch_order)).tolist())

    orders = [order(seed, epoch) for seed in range(4) for epoch in range(10)]
    assert len(set(orders)) == len(orders)


def test_missing_file_without_download_names_the_file(tmp_path):
    with pytest.raises(
        DataFileError, match=r"missing data file .*mnist/train-images-idx3-ubyte\.gz"
    ):
        IDXImages(root=str(tmp_path), download=False).prepare_data()


def test_download_from_a_local_server(tmp_path, shared_data, http_server):
    mirror = http_server(shared_data)
    dm = IDXImages(name="mnist", root=str(tmp_path), download=True, mirror=mirror)
    dm.prepare_data()
    for split in ("train", "test"):
        name = dm.files[split].name
        assert (tmp_path / "mnist" / name).read_bytes() == (
            shared_data / "mnist" / name
        ).read_bytes()
    dm.setup()
    assert len(dm.splits[0]) == 50000


def _toy(folder: Path, content: bytes, compress: bool) -> RemoteFile:
    (folder / "toy").mkdir(parents=True)
    (folder / "toy" / "file.gz").write_bytes(gzip.compress(content) if compress else content)
    return RemoteFile("toy", "file.gz", "unused", hashlib.sha256(content).hexdigest())


def test_a_file_served_uncompressed_is_stored_compressed(tmp_path, http_server):
    served = tmp_path / "served"
    file = _toy(served, b"0 1 0\n1 1 0\n", compress=False)
    assert (
        fetch(file, tmp_path / "root", download=True, mirror=http_server(served))
        == b"0 1 0\n1 1 0\n"
    )
    assert (
        gzip.decompress((tmp_path / "root" / "toy" / "file.gz").read_bytes()) == b"0 1 0\n1 1 0\n"
    )


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path, http_server):
    served = tmp_path / "served"
    file = _toy(served, b"right", compress=True)
    (served / "toy" / "file.gz").write_bytes(gzip.compress(b"wrong"))
    with pytest.raises(DataFileError, match="fails its checksum"):
        fetch(file, tmp_path / "root", download=True, mirror=http_server(served))
    assert not (tmp_path / "root" / "toy" / "file.gz").exists()
    assert list((tmp_path / "root" / "toy").iterdir()) == []  # no partial file left


def test_a_mirror_that_is_not_a_url_is_named_and_leaves_no_partial_file(tmp_path):
    file = _toy(tmp_path / "served", b"right", compress=True)
    with pytest.raises(DataFileError, match="data.mirror must be a URL"):
        fetch(file, tmp_path / "root", download=True, mirror="notaurl")
    assert list((tmp_path / "root" / "toy").iterdir()) == []


@pytest.mark.parametrize("val_size", [0, 60000, 70000])
def test_a_validation_size_that_leaves_no_split_is_refused(val_size, shared_data):
    dm = IDXImages(name="mnist", root=str(shared_data), val_size=val_size)
    with pytest.raises(ConfigError, match=f"data.val_size={val_size} is invalid"):
        dm.setup()


def test_an_empty_split_is_refused():
    dm = Digits(binarize=False, val_fraction=0.5, test_fraction=0.6)
    with pytest.raises(ConfigError, match="0 training, .* each split needs some"):
        dm.setup()


def test_corrupt_local_files_are_named(tmp_path, shared_data):
    root = tmp_path / "root"
    shutil.copytree(shared_data / "mnist", root / "mnist")
    target = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte\.gz is corrupt"):
        IDXImages(root=str(root)).setup()
    target.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(12)))
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte\.gz fails its checksum"):
        IDXImages(root=str(root)).setup()
