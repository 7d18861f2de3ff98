"""Readers for the standard files a user downloads: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary.

Nothing is downloaded. Files are looked up in a directory the user gives, checked
(checksums of the official archives where known, then structure: magic numbers, sizes,
counts, label ranges) and every failure names the file and what is wrong.

Checksums recorded here: SHA-256 of the four official MNIST ``.gz`` archives, MD5 of the
four official Fashion-MNIST ``.gz`` archives and MD5 of ``cifar-10-binary.tar.gz`` (the
digests their distributors publish; no SHA-256 is published for the last two).
Uncompressed IDX files and the extracted CIFAR-10 ``.bin`` batches have no published
digest; for them ``verify=True`` checks the official counts and shapes (60000/10000
images of 28x28; 10000 records of 3073 bytes per batch) and the label range.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import tarfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from descend._validation import check_bool, check_choice

# IDX type codes -> big-endian numpy dtypes (LeCun's IDX format description).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Digests of the official .gz archives: (algorithm, hex digest).
OFFICIAL_DIGESTS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": ("sha256", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": ("sha256", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": ("sha256", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}

# Official shapes of the IDX arrays (the same for MNIST and Fashion-MNIST).
IDX_SHAPES = {
    "train_images": (60000, 28, 28), "train_labels": (60000,),
    "test_images": (10000, 28, 28), "test_labels": (10000,),
}

CIFAR10_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR10_TEST = "test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_PER_BATCH = 10000
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE_DIGEST = ("md5", "c32a1d4ab5d03f1284b67883e8d87530")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


class DataFileError(ValueError):
    """A data file is missing, corrupt or not the expected one (the message names it).

    >>> try:
    ...     verify_digest(__file__, "sha256", "0" * 64)
    ... except DataFileError as e:
    ...     print("checksum mismatch" in str(e))
    True
    """


class RawSplits(NamedTuple):
    """Official train/test arrays as stored in the files (uint8 images, int64 labels).

    >>> s = RawSplits(np.zeros((2, 4, 4), np.uint8), np.array([0, 1]), np.zeros((1, 4, 4), np.uint8),
    ...               np.array([1]), ["a", "b"])
    >>> s.x_train.shape, s.y_test.tolist(), s.class_names
    ((2, 4, 4), [1], ['a', 'b'])
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "f"); _ = open(p, "wb").write(b"abc")
        >>> file_digest(p)[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_digest(path, algorithm: str, expected: str) -> None:
    """Raise :class:`DataFileError` naming ``path`` if its digest is not ``expected``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "data.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> verify_digest(p, "md5", "900150983cd24fb0d6963f7d28e17f72")   # md5("abc"): passes
    >>> verify_digest(p, "md5", "0" * 32)
    Traceback (most recent call last):
        ...
    descend.data.files.DataFileError: .../data.bin: md5 checksum mismatch: got 9001...
    """
    got = file_digest(path, algorithm)
    if got != expected:
        raise DataFileError(
            f"{path}: {algorithm} checksum mismatch: got {got}, expected {expected} (the "
            f"official file). The file is corrupt, truncated or a different version; "
            f"download it again, or pass verify=False to load a modified copy.")


# The most bytes one data file may hold (uncompressed): an IDX or CIFAR file whose header or
# size says more is refused before it is read. The official files are at most 47 MB.
MAX_FILE_BYTES = 1 << 30


def _open(path: Path):
    """A binary stream of ``path``, decompressed on the fly for ``.gz`` files."""
    try:
        return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None


def _decompress_error(path: Path, e: BaseException) -> DataFileError:
    return DataFileError(f"{path}: cannot decompress ({type(e).__name__}: {e}); the "
                         f"gzip file is corrupt or truncated")


def _read(f, n: int, path: Path) -> bytes:
    """Up to ``n`` bytes from the stream ``f`` (fewer at its end)."""
    try:
        return f.read(n)
    except (OSError, EOFError, zlib.error) as e:
        raise _decompress_error(path, e) from None


def load_idx(path, *, expected_shape: tuple | None = None, digest: tuple | None = None,
             max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Read one IDX file (``.gz`` or not) into a numpy array of its stored type.

    Format: 2 zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
    dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data, big-endian.
    The file is read as a stream (a ``.gz`` is decompressed on the fly): the header is
    checked first, then exactly the bytes it announces are read, so a file whose header
    announces more than ``max_bytes``, or that holds more than it announces (a gzip
    bomb), is refused without decompressing the rest.

    Args:
        path: the file.
        expected_shape: if given, the array must have this shape (checked on the header).
        digest: if given, ``(algorithm, hex)`` the file must match (checked first).
        max_bytes: the largest array read, in bytes (default :data:`MAX_FILE_BYTES`, 1 GiB).

    Raises:
        DataFileError: naming the file: missing, checksum mismatch, bad magic number,
        unknown type code, truncated or trailing data, unexpected shape, too large.

    Example:
        >>> import tempfile, os, struct
        >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
        >>> _ = open(p, "wb").write(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 8, 9]))
        >>> load_idx(p).tolist()
        [7, 8, 9]
    """
    from descend._validation import check_int

    check_int("max_bytes", max_bytes, ge=0)
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    if digest is not None:
        verify_digest(path, *digest)
    with _open(path) as f:
        head = _read(f, 4, path)
        if len(head) < 4:
            raise DataFileError(f"{path}: truncated IDX file ({len(head)} bytes, the header needs 4)")
        zero, code, ndim = struct.unpack(">HBB", head)
        if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
            raise DataFileError(
                f"{path}: not an IDX file (magic number 0x{head.hex()}; expected 0x0000 then a "
                f"type code in {sorted(hex(c) for c in _IDX_DTYPES)} and a dimension count >= 1)")
        header = 4 + 4 * ndim
        dims = _read(f, 4 * ndim, path)
        if len(dims) < 4 * ndim:
            raise DataFileError(f"{path}: truncated IDX header ({4 + len(dims)} bytes, expected {header})")
        shape = struct.unpack(f">{ndim}I", dims)
        dtype = np.dtype(_IDX_DTYPES[code])
        size = math.prod(shape) * dtype.itemsize
        expected = header + size
        if expected_shape is not None and tuple(shape) != tuple(expected_shape):
            raise DataFileError(f"{path}: shape {tuple(shape)}, expected {tuple(expected_shape)}")
        if size > max_bytes:
            raise DataFileError(f"{path}: header says shape {tuple(shape)} of {dtype.name} ({size} "
                                f"bytes), more than the limit of {max_bytes} bytes (max_bytes); "
                                f"it was not read")
        data = _read(f, size, path)
        if len(data) < size:
            raise DataFileError(f"{path}: truncated: header says shape {tuple(shape)} of {dtype.name} "
                                f"({expected} bytes), file has {header + len(data)} bytes")
        if _read(f, 1, path):
            raise DataFileError(f"{path}: trailing data: header says shape {tuple(shape)} of "
                                f"{dtype.name} ({expected} bytes), file has more")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, names: list[str], subdirs: list[str], what: str) -> Path:
    """The first existing ``root/sub/name``; a clear error listing what was expected."""
    if not root.is_dir():
        raise DataFileError(f"{what}: data directory {root} does not exist; expected it to "
                            f"hold: {', '.join(names)}")
    for sub in subdirs:
        for name in names:
            p = root / sub / name
            if p.is_file():
                return p
    places = ", ".join(str(root / s) if s else str(root) for s in subdirs)
    raise DataFileError(f"{what}: none of {', '.join(names)} found in {places}")


def load_idx_dataset(root, dataset: str = "mnist", *, verify: bool = True) -> RawSplits:
    """The four IDX files of MNIST or Fashion-MNIST from ``root`` (``.gz`` or uncompressed).

    Looks in ``root``, ``root/raw`` and ``root/<MNIST|FashionMNIST>/raw`` (torchvision's
    layout). With ``verify=True``: official digests of ``.gz`` archives, official shapes
    (60000 and 10000 images of 28x28) and labels in 0..9; with ``verify=False``: the
    structure and label range only (for subsets or re-packed copies).

    Example:
        >>> load_idx_dataset("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        descend.data.files.DataFileError: mnist: data directory /nonexistent does not exist; ...
    """
    check_choice("dataset", dataset, list(OFFICIAL_DIGESTS))
    check_bool("verify", verify)
    root = Path(root)
    subdirs = ["", "raw", ("MNIST" if dataset == "mnist" else "FashionMNIST") + "/raw"]
    arrays = {}
    for key, stem in IDX_FILES.items():
        p = _find(root, [stem + ".gz", stem], subdirs, dataset)
        digest = OFFICIAL_DIGESTS[dataset].get(p.name) if verify else None
        arrays[key] = load_idx(p, digest=digest,
                               expected_shape=IDX_SHAPES[key] if verify else None)
        if key.endswith("images") and (arrays[key].ndim != 3 or arrays[key].dtype != np.uint8):
            raise DataFileError(f"{p}: expected uint8 images of shape (N, H, W), got "
                                f"{arrays[key].dtype} {arrays[key].shape}")
        if key.endswith("labels"):
            y = arrays[key]
            if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() > 9)):
                raise DataFileError(f"{p}: expected a 1-D array of labels in 0..9, got shape "
                                    f"{y.shape} with range [{y.min()}, {y.max()}]")
            paired = arrays[key.replace("labels", "images")]
            if len(paired) != len(y):
                raise DataFileError(f"{p}: {len(y)} labels for {len(paired)} images")
    names = ([str(i) for i in range(10)] if dataset == "mnist" else
             ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot"])
    return RawSplits(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                     arrays["test_images"], arrays["test_labels"].astype(np.int64), names)


def _parse_cifar_batch(data: np.ndarray, where: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    if data.size == 0 or data.size % CIFAR10_RECORD:
        raise DataFileError(f"{where}: {data.size} bytes is not a whole number of "
                            f"{CIFAR10_RECORD}-byte records (1 label + 3x32x32 pixels); the file "
                            f"is truncated or not a CIFAR-10 binary batch")
    records = data.reshape(-1, CIFAR10_RECORD)
    if verify and len(records) != CIFAR10_PER_BATCH:
        raise DataFileError(f"{where}: {len(records)} records, expected {CIFAR10_PER_BATCH} "
                            f"(official batch); pass verify=False to load a subset")
    y = records[:, 0].astype(np.int64)
    if y.max() > 9:
        bad = int(np.argmax(y > 9))
        raise DataFileError(f"{where}: record {bad} has label {y[bad]}, expected 0..9; the file "
                            f"is corrupt or not a CIFAR-10 batch (CIFAR-100 has 2 label bytes)")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), y


def _class_names(raw: bytes, where: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                            f"{e.start}); expected 10 class names, one a line") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != 10:
        raise DataFileError(f"{where}: {len(lines)} class names, expected 10")
    return lines


_META_MAX_BYTES = 1 << 16  # batches.meta.txt: ten short lines
_ARCHIVE_MAX_MEMBERS = 1000  # the official archive has 8


def _batch_limit(verify: bool) -> int:
    return CIFAR10_PER_BATCH * CIFAR10_RECORD if verify else MAX_FILE_BYTES


def _cifar_from_archive(path: Path, verify: bool) -> tuple[dict, list[str]]:
    """The batches inside ``cifar-10-binary.tar.gz``, read in one pass without extracting
    anything; a member larger than a batch can be (or than :data:`MAX_FILE_BYTES` with
    ``verify=False``) or more than 1000 members are refused before they are read."""
    if verify:
        verify_digest(path, *CIFAR10_ARCHIVE_DIGEST)
    batches, names = {}, list(CIFAR10_CLASSES)
    wanted = {f"cifar-10-batches-bin/{n}": n for n in CIFAR10_TRAIN + [CIFAR10_TEST, "batches.meta.txt"]}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for count, member in enumerate(tar):
                if count >= _ARCHIVE_MAX_MEMBERS:
                    raise DataFileError(f"{path}: more than {_ARCHIVE_MAX_MEMBERS} members; not the "
                                        f"CIFAR-10 archive (it has 8)")
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                where = f"{path}:{member.name}"
                limit = _META_MAX_BYTES if name.endswith(".txt") else _batch_limit(verify)
                if member.size > limit:
                    raise DataFileError(f"{where}: {member.size} bytes, more than the {limit} a "
                                        f"{'class list' if name.endswith('.txt') else 'batch'} can "
                                        f"hold; it was not read")
                raw = tar.extractfile(member).read()
                if name.endswith(".txt"):
                    names = _class_names(raw, where)
                else:
                    batches[name] = _parse_cifar_batch(np.frombuffer(raw, np.uint8), where, verify)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataFileError(f"{path}: cannot read the archive ({type(e).__name__}: {e}); it is "
                            f"corrupt or truncated") from None
    for name in CIFAR10_TRAIN + [CIFAR10_TEST]:
        if name not in batches:
            raise DataFileError(f"{path}: the archive has no member cifar-10-batches-bin/{name}")
    return batches, names


def _read_batch(path: Path, verify: bool) -> np.ndarray:
    size, limit = path.stat().st_size, _batch_limit(verify)
    if size > limit:
        raise DataFileError(f"{path}: {size} bytes, more than the {limit} a CIFAR-10 batch can hold "
                            f"({'10000 records of 3073 bytes' if verify else 'MAX_FILE_BYTES'}); it "
                            f"was not read")
    return np.fromfile(path, dtype=np.uint8)


def load_cifar10(root, *, verify: bool = True) -> RawSplits:
    """CIFAR-10 from its binary version (``data_batch_1..5.bin``, ``test_batch.bin``).

    Looks in ``root`` and ``root/cifar-10-batches-bin`` (the archive's folder), else reads
    the official archive ``root/cifar-10-binary.tar.gz`` directly (nothing is extracted;
    with ``verify=True`` its MD5, the digest the dataset's page publishes, is checked).
    Each record is 1 label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
    row-major), so images come out as ``(N, 3, 32, 32)`` uint8. Class names are read from
    ``batches.meta.txt`` when present. No digests are published for the individual
    batches: ``verify=True`` checks 10000 records per batch; both modes check sizes and
    labels.

    Example:
        >>> load_cifar10("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        descend.data.files.DataFileError: cifar10: data directory /nonexistent does not exist; ...
    """
    check_bool("verify", verify)
    root = Path(root)
    subdirs = ["", "cifar-10-batches-bin"]
    archive = root / CIFAR10_ARCHIVE
    have_bins = any((root / sub / CIFAR10_TEST).is_file() for sub in subdirs)
    if not have_bins and archive.is_file():
        batches, names = _cifar_from_archive(archive, verify)
    else:
        batches, names = {}, list(CIFAR10_CLASSES)
        for name in CIFAR10_TRAIN + [CIFAR10_TEST]:
            try:
                path = _find(root, [name], subdirs, "cifar10")
            except DataFileError as e:
                raise DataFileError(f"{e} (or the archive {CIFAR10_ARCHIVE} in {root})") from None
            batches[name] = _parse_cifar_batch(_read_batch(path, verify), str(path), verify)
            meta = path.parent / "batches.meta.txt"
        if meta.is_file():
            if meta.stat().st_size > _META_MAX_BYTES:
                raise DataFileError(f"{meta}: {meta.stat().st_size} bytes, more than a list of 10 "
                                    f"class names can hold; it was not read")
            names = _class_names(meta.read_bytes(), str(meta))
    x_train = np.concatenate([batches[n][0] for n in CIFAR10_TRAIN])
    y_train = np.concatenate([batches[n][1] for n in CIFAR10_TRAIN])
    return RawSplits(x_train, y_train, *batches[CIFAR10_TEST], names)
