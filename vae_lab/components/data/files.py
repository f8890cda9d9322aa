"""Dataset files: found under ``data.root``, downloaded on request, always verified.

Files are laid out as ``<root>/<dataset>/<file>`` with the originals' names. A ``.gz`` file's
SHA-256 is taken over its decompressed content, so a file compressed locally (the Larochelle
``.amat`` files are served uncompressed) checks against the same digest as the original; any
other file's (Omniglot's ``.zip``) over its bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


class DataFileError(RuntimeError):
    """A dataset file is missing, unreadable or fails its checksum."""


@dataclass(frozen=True)
class RemoteFile:
    dataset: str  # sub-folder of data.root
    name: str  # file name in that folder (gzip-compressed where it ends in .gz)
    url: str  # canonical source; may serve the file uncompressed
    sha256: str  # of the content (a .gz file's decompressed)


def default_root() -> Path:
    return Path(os.environ.get("VAE_LAB_DATA", Path.home() / ".cache" / "vae_lab"))


def _unreadable(path: Path, err: OSError) -> DataFileError:
    return DataFileError(
        f"cannot read {path} ({err.strerror or err}): make it readable to this user, "
        "or point data.root (or $VAE_LAB_DATA) at a readable copy"
    )


def _read_verified(path: Path, file: RemoteFile) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise _unreadable(path, err) from err
    try:
        content = gzip.decompress(raw) if file.name.endswith(".gz") else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(
            f"{path} is corrupt ({type(err).__name__}: {err}): delete it and set "
            f"data.download=true, or copy a good one from {file.url}"
        ) from err
    digest = hashlib.sha256(content).hexdigest()
    if digest != file.sha256:
        raise DataFileError(
            f"{path} fails its checksum (sha256 {digest[:12]}..., expected "
            f"{file.sha256[:12]}...): delete it and set data.download=true, "
            f"or copy a good one from {file.url}"
        )
    return content


def _download(file: RemoteFile, path: Path, mirror: str | None) -> None:
    url = f"{mirror.rstrip('/')}/{file.dataset}/{file.name}" if mirror else file.url
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataFileError(
            f"cannot create {path.parent} to download into ({err.strerror or err}): point "
            "data.root (or $VAE_LAB_DATA) at a writable folder"
        ) from err
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=file.name) as bar:
                    while chunk := response.read(1 << 20):
                        tmp.write(chunk)
                        bar.update(len(chunk))
        except (OSError, ValueError, http.client.HTTPException) as err:  # ValueError: a bad URL
            os.unlink(tmp.name)
            hint = " (data.mirror must be a URL: http://HOST/PATH)" if mirror else ""
            raise DataFileError(f"could not download {url}: {err}{hint}") from err
    raw = Path(tmp.name).read_bytes()
    if file.name.endswith(".gz") and raw[:2] != b"\x1f\x8b":  # served uncompressed: compress
        Path(tmp.name).write_bytes(gzip.compress(raw, mtime=0))
    try:
        _read_verified(Path(tmp.name), file)
    except DataFileError as err:
        os.unlink(tmp.name)
        raise DataFileError(f"download of {url} is not the expected file: {err}") from err
    shutil.move(tmp.name, path)


def ensure(file: RemoteFile, root: str | Path, download: bool, mirror: str | None = None) -> Path:
    """The local path of ``file``, downloading it first if it is missing and that is allowed."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataFileError(f"data.root={root} is a file, not a folder: point it at a folder")
    path = root / file.dataset / file.name
    try:
        exists = path.exists()
        if exists:
            path.open("rb").close()
    except OSError as err:
        raise _unreadable(path, err) from err
    if not exists:
        if not download:
            raise DataFileError(
                f"missing data file {path}: point data.root (or $VAE_LAB_DATA) at a folder "
                f"holding {file.dataset}/{file.name}, or set data.download=true"
            )
        _download(file, path, mirror)
    return path


def fetch(file: RemoteFile, root: str | Path, download: bool, mirror: str | None = None) -> bytes:
    """The decompressed, checksum-verified content of ``file``."""
    return _read_verified(ensure(file, root, download, mirror), file)
