"""IDX and CIFAR-10 readers on small files written here, including corrupt ones."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from descend import data
from descend.data import files
from descend.data.files import DataFileError


def write_idx(path, array, code=0x08, gz=None):
    """IDX as LeCun describes it: 0, 0, type code, ndim, big-endian sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim)
    raw += b"".join(struct.pack(">I", s) for s in array.shape)
    raw += np.asarray(array).astype(dtype).tobytes()
    gz = str(path).endswith(".gz") if gz is None else gz
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(raw)
    return path


def make_idx_set(root, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, stem in files.IDX_FILES.items():
        write_idx(root / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_round_trip_all_types(tmp_path, code, dtype, gz):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), a, code)
    out = data.load_idx(p)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)


def test_load_idx_corrupt_files_name_the_file_and_the_fault(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((3, 4), np.uint8))
    raw = good.read_bytes()
    cases = {
        "truncated": (raw[:-2], r"truncated: header says shape \(3, 4\) of uint8 \(24 bytes\), "
                                r"file has 22 bytes"),
        "trailing": (raw + b"\x00", "trailing data"),
        "magic": (b"\x01\x02" + raw[2:], "not an IDX file \\(magic number 0x0102"),
        "code": (raw[:2] + b"\x07" + raw[3:], "not an IDX file"),
        "short": (raw[:2], "truncated IDX file \\(2 bytes"),
        "header": (raw[:6], "truncated IDX header"),
    }
    for name, (content, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(DataFileError, match=msg) as e:
            data.load_idx(p)
        assert str(p) in str(e.value)
    bad_gz = tmp_path / "broken.gz"
    bad_gz.write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(DataFileError, match="broken.gz: cannot decompress"):
        data.load_idx(bad_gz)
    with pytest.raises(DataFileError, match="missing: file not found"):
        data.load_idx(tmp_path / "missing")
    with pytest.raises(DataFileError, match=r"shape \(3, 4\), expected \(4, 3\)"):
        data.load_idx(good, expected_shape=(4, 3))


def test_digest_checked_before_reading(tmp_path):
    p = write_idx(tmp_path / "x.gz", np.arange(5, dtype=np.uint8))
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    assert files.file_digest(p) == sha
    np.testing.assert_array_equal(data.load_idx(p, digest=("sha256", sha)), np.arange(5))
    with pytest.raises(DataFileError, match="x.gz: sha256 checksum mismatch: got " + sha):
        data.load_idx(p, digest=("sha256", "0" * 64))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loader_from_small_files(tmp_path, gz):
    arrays = make_idx_set(tmp_path, gz=gz)
    d = data.load("mnist", root=tmp_path, verify=False, val_fraction=0.25)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.train) + len(d.val) == 12 and len(d.test) == 5
    x, y = d.test.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x, torch.tensor(arrays["test_images"][:, None] / 255.0,
                                               dtype=torch.float32), rtol=0, atol=0)
    assert y.tolist() == arrays["test_labels"].tolist()
    f = data.load("fashion_mnist", root=tmp_path, verify=False)
    assert f.class_names[0] == "T-shirt/top"


def test_torchvision_layout_is_found(tmp_path):
    make_idx_set(tmp_path / "MNIST" / "raw")
    assert len(data.load("mnist", root=tmp_path, verify=False).test) == 5


def test_verify_rejects_non_official_files(tmp_path):
    make_idx_set(tmp_path / "gz", gz=True)
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz: sha256 checksum mismatch"):
        data.load("mnist", root=tmp_path / "gz")
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz: md5 checksum mismatch"):
        data.load("fashion_mnist", root=tmp_path / "gz")
    make_idx_set(tmp_path / "raw", gz=False)
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte: shape \(12, 28, 28\), "
                                            r"expected \(60000, 28, 28\)"):
        data.load("mnist", root=tmp_path / "raw")


def test_verify_accepts_files_matching_the_recorded_digests(tmp_path, monkeypatch):
    make_idx_set(tmp_path, gz=True)
    digests = {stem + ".gz": ("sha256", files.file_digest(tmp_path / (stem + ".gz")))
               for stem in files.IDX_FILES.values()}
    monkeypatch.setitem(files.OFFICIAL_DIGESTS, "mnist", digests)
    monkeypatch.setattr(files, "IDX_SHAPES", {"train_images": (12, 28, 28), "train_labels": (12,),
                                              "test_images": (5, 28, 28), "test_labels": (5,)})
    assert len(data.load("mnist", root=tmp_path).test) == 5


def test_idx_missing_and_inconsistent(tmp_path):
    with pytest.raises(DataFileError, match="data directory .*nowhere does not exist; expected it "
                                            "to hold: train-images-idx3-ubyte.gz"):
        data.load("mnist", root=tmp_path / "nowhere")
    make_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="none of t10k-labels-idx1-ubyte.gz, "
                                            "t10k-labels-idx1-ubyte found in"):
        data.load("mnist", root=tmp_path, verify=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3, 4, 12], np.uint8))
    with pytest.raises(DataFileError, match=r"labels in 0..9, got shape \(5,\) with range \[1, 12\]"):
        data.load("mnist", root=tmp_path, verify=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3], np.uint8))
    with pytest.raises(DataFileError, match="3 labels for 5 images"):
        data.load("mnist", root=tmp_path, verify=False)


def write_cifar(root, n=6, seed=0, label_bytes=None):
    rng = np.random.default_rng(seed)
    out = {}
    for name in files.CIFAR10_TRAIN + [files.CIFAR10_TEST]:
        y = rng.integers(0, 10, n, dtype=np.uint8) if label_bytes is None else label_bytes
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([y[:, None], x], 1).tobytes())
        out[name] = (x.reshape(n, 3, 32, 32), y)
    return out


def test_cifar10_from_small_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    written = write_cifar(folder)
    (folder / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    raw = data.load_cifar10(tmp_path, verify=False)
    assert raw.x_train.shape == (30, 3, 32, 32) and raw.x_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(raw.x_train[6:12], written["data_batch_2.bin"][0])
    np.testing.assert_array_equal(raw.y_test, written["test_batch.bin"][1])
    assert raw.class_names[3] == "c3"
    d = data.load("cifar10", root=tmp_path, verify=False, val_fraction=0.2)
    assert d.input_shape == (3, 32, 32) and len(d.train) + len(d.val) == 30
    # red channel first: pixel bytes 0..1023 are the red plane, row-major
    x0 = d.test.tensors[0][0]
    assert float(x0[0, 0, 1]) == pytest.approx(written["test_batch.bin"][0][0, 0, 0, 1] / 255.0)


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataFileError, match="cifar10: data directory"):
        data.load_cifar10(tmp_path / "nope")
    write_cifar(tmp_path)
    with pytest.raises(DataFileError, match="data_batch_1.bin: 6 records, expected 10000"):
        data.load_cifar10(tmp_path)
    p = tmp_path / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataFileError, match="data_batch_3.bin: 18433 bytes is not a whole number"):
        data.load_cifar10(tmp_path, verify=False)
    write_cifar(tmp_path, label_bytes=np.array([1, 2, 3, 14, 0, 0], np.uint8))
    with pytest.raises(DataFileError, match="data_batch_1.bin: record 3 has label 14"):
        data.load_cifar10(tmp_path, verify=False)
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataFileError, match="none of test_batch.bin found"):
        data.load_cifar10(tmp_path, verify=False)


def _tar_cifar(root, folder):
    import tarfile
    archive = root / files.CIFAR10_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    return archive


def test_cifar10_read_from_the_archive(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    written = write_cifar(src, n=4)
    (src / "batches.meta.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    root = tmp_path / "root"
    root.mkdir()
    archive = _tar_cifar(root, src)
    raw = data.load_cifar10(root, verify=False)
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.class_names[9] == "k9"
    np.testing.assert_array_equal(raw.x_test, written["test_batch.bin"][0])
    with pytest.raises(DataFileError, match="cifar-10-binary.tar.gz: md5 checksum mismatch"):
        data.load_cifar10(root)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataFileError, match="cifar-10-binary.tar.gz: cannot read the archive"):
        data.load_cifar10(root, verify=False)
    (src / "data_batch_4.bin").unlink()
    _tar_cifar(root, src)
    with pytest.raises(DataFileError, match="has no member cifar-10-batches-bin/data_batch_4.bin"):
        data.load_cifar10(root, verify=False)


# ------------------------------------------------------------------ size limits (issue 12)

class _Counting:
    """A gzip stream that counts the decompressed bytes handed out."""

    def __init__(self, f, seen):
        self.f, self.seen = f, seen

    def read(self, n=-1):
        b = self.f.read(n)
        self.seen[0] += len(b)
        return b

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


def test_a_gzip_bomb_is_stopped_after_the_announced_bytes(tmp_path, monkeypatch):
    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as g:  # a valid 4x4 header and data, then 64 MiB of zeros
        g.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 1, 4, 4) + bytes(16))
        for _ in range(64):
            g.write(bytes(1 << 20))
    assert p.stat().st_size < 200_000
    seen = [0]
    real = gzip.open
    monkeypatch.setattr(files.gzip, "open", lambda *a, **k: _Counting(real(*a, **k), seen))
    with pytest.raises(DataFileError, match=r"trailing data: header says shape \(1, 4, 4\) of uint8"):
        data.load_idx(p)
    assert seen[0] <= 16 + 16 + 1  # the header, the data and one byte: the rest stays compressed


def test_an_idx_header_announcing_too_much_is_refused_before_reading(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(struct.pack(">BBBBIII", 0, 0, 0x0E, 3, 2**32 - 1, 2**32 - 1, 28))
    with pytest.raises(DataFileError, match=r"more than the limit of 1073741824 bytes \(max_bytes\)"):
        data.load_idx(p)
    small = write_idx(tmp_path / "s-idx1-ubyte", np.arange(100, dtype=np.uint8))
    with pytest.raises(DataFileError, match="more than the limit of 99 bytes"):
        data.load_idx(small, max_bytes=99)
    assert data.load_idx(small, max_bytes=100).shape == (100,)


def test_cifar_members_and_files_beyond_a_batch_are_refused(tmp_path):
    import io
    import tarfile
    arc = tmp_path / "cifar-10-binary.tar.gz"
    info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
    info.size = 10 << 30  # the header claims 10 GiB; nothing follows
    arc.write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT)))
    with pytest.raises(DataFileError, match="10737418240 bytes, more than the 1073741824 a batch can hold"):
        files.load_cifar10(tmp_path, verify=False)
    with tarfile.open(arc, "w:gz") as tf:
        for i in range(1001):
            tf.addfile(tarfile.TarInfo(f"junk{i}"), io.BytesIO(b""))
    with pytest.raises(DataFileError, match="more than 1000 members"):
        files.load_cifar10(tmp_path, verify=False)
    arc.unlink()
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for n in files.CIFAR10_TRAIN + [files.CIFAR10_TEST]:
        (d / n).write_bytes(bytes(files.CIFAR10_RECORD))
    (d / "batches.meta.txt").write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(DataFileError, match="batches.meta.txt: not UTF-8 text"):
        files.load_cifar10(tmp_path, verify=False)
    (d / "batches.meta.txt").unlink()
    with open(d / "data_batch_1.bin", "wb") as f:
        f.truncate(files.CIFAR10_PER_BATCH * files.CIFAR10_RECORD + 1)  # sparse
    with pytest.raises(DataFileError, match="data_batch_1.bin: 30730001 bytes, more than the 30730000"):
        files.load_cifar10(tmp_path, verify=True)
