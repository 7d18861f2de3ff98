"""Safe files: atomic writes, safetensors weights, refused pickles, checked loads, archives, YAML."""

import io
import os
import pickle
import tarfile
import zipfile

import pytest
import torch

from descend.io import (
    CorruptFileError,
    StateMismatchError,
    UnsafeFileError,
    atomic_write,
    check_state_dict,
    load_state,
    load_weights,
    load_yaml,
    safe_extract,
    save_state,
    save_weights,
)


class _Payload:
    """Unpickling this would create ``marker`` (proof that code ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


# ----------------------------------------------------------------------- atomic writes

def test_atomic_write_replaces_on_success(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with atomic_write(p) as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]  # no temp file left


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_rejects_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="`mode` must be one of 'wb', 'w'. Received: mode='a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_save_state_that_cannot_be_read_back_is_refused_before_writing(tmp_path):
    p = tmp_path / "s.pt"
    save_state(p, {"step": 1})
    with pytest.raises(TypeError, match="`state` must hold only tensors"):
        save_state(p, {"step": 2, "bad": _Payload(tmp_path / "m")})
    assert load_state(p) == {"step": 1}


# ----------------------------------------------------------------------- weights

def test_weights_roundtrip_is_bitwise_and_safetensors(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    p = save_weights(tmp_path / "w.safetensors", m, metadata={"step": "7"})
    from safetensors import safe_open

    with safe_open(p, "pt") as f:  # a real safetensors file
        assert f.metadata() == {"step": "7"}
        assert set(f.keys()) == set(m.state_dict())
    m2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    load_weights(p, m2)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]) and v.dtype == m2.state_dict()[k].dtype


def test_weights_mismatch_names_key_shape_and_dtype(tmp_path):
    p = save_weights(tmp_path / "w.safetensors", {"fc.weight": torch.zeros(4, 4), "extra": torch.zeros(1)})
    m = torch.nn.Sequential()
    m.add_module("fc", torch.nn.Linear(4, 3))
    with pytest.raises(StateMismatchError) as e:
        load_weights(p, m)
    msg = str(e.value)
    assert str(p) in msg
    assert "shape of 'fc.weight': expected (3, 4), found (4, 4)" in msg
    assert "missing keys: 'fc.bias'" in msg and "unexpected keys: 'extra'" in msg
    with pytest.raises(StateMismatchError, match=r"dtype of 'w': expected torch.float32, found torch.float64"):
        check_state_dict({"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float64)})
    # A failed check leaves the model untouched.
    assert m.fc.weight.shape == (3, 4)


def test_truncated_or_garbage_weights_give_clear_error(tmp_path):
    p = save_weights(tmp_path / "w.safetensors", {"w": torch.arange(100.0)})
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="w.safetensors is not a readable safetensors file"):
        load_weights(p)
    p.write_bytes(b"\xff" * 64)
    with pytest.raises(CorruptFileError, match="w.safetensors"):
        load_weights(p)
    with pytest.raises(FileNotFoundError, match="`path` must be an existing file"):
        load_weights(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------- refused pickles

def test_malicious_torch_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"model": torch.zeros(1), "x": _Payload(marker)}, p)  # a real torch zip file
    with pytest.raises(UnsafeFileError, match=r"evil.pt was refused: .*exec"):
        load_state(p)
    assert not marker.exists()
    # Sanity: the payload is real — unrestricted unpickling would have run it.
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_malicious_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=4))
    with pytest.raises(UnsafeFileError, match=r"builtins.exec"):
        load_state(p)
    assert not marker.exists()


def test_truncated_and_corrupted_state_give_clear_error(tmp_path):
    p = save_state(tmp_path / "s.pt", {"buf": torch.arange(1000.0), "step": 3})
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CorruptFileError, match="s.pt is corrupted or truncated"):
        load_state(p)
    p.write_bytes(b"\x00not a checkpoint" * 8)
    with pytest.raises(CorruptFileError, match="s.pt is corrupted or truncated"):
        load_state(p)


# ----------------------------------------------------------------------- yaml

def test_yaml_python_tags_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    doc = f"optimizer: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(UnsafeFileError, match="would build a Python object"):
        load_yaml(doc, text=True)
    p = tmp_path / "r.yaml"
    p.write_text("model: !!python/object:collections.OrderedDict {}\n")
    with pytest.raises(UnsafeFileError, match="r.yaml was refused"):
        load_yaml(p)
    assert not marker.exists()
    assert load_yaml("lr: [0.1, 0.01]\nname: x", text=True) == {"lr": [0.1, 0.01], "name": "x"}
    with pytest.raises(CorruptFileError, match="not valid YAML"):
        load_yaml("a: [1, 2", text=True)


# ----------------------------------------------------------------------- archives

def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize("member, why", [
    (_file("../escape.txt"), "outside the target folder"),
    (_file("/abs.txt"), "absolute path"),
    (_file("a/../../escape.txt"), "outside the target folder"),
    (_link("ln", "../../etc/passwd"), "links outside"),
    (_link("ln", "/etc/passwd"), "links outside"),
    (_link("hard", "../outside", tarfile.LNKTYPE), "links outside"),
])
def test_tar_traversal_is_refused_and_nothing_is_written(tmp_path, member, why):
    arc = tmp_path / "a.tar"
    _tar(arc, [_file("ok.txt"), member])
    out = tmp_path / "sub" / "out"
    with pytest.raises(UnsafeFileError, match=why):
        safe_extract(arc, out)
    assert not (out / "ok.txt").exists()  # all members checked before any is written
    assert not (tmp_path / "sub" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_safe_extract_extracts_good_archives(tmp_path):
    arc = tmp_path / "a.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for info, data in [_file("d/a.txt", b"A"), _link("d/l", "a.txt")]:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    safe_extract(arc, tmp_path / "o")
    assert (tmp_path / "o" / "d" / "a.txt").read_bytes() == b"A"
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x/y.txt", "hi")
    safe_extract(z, tmp_path / "o2")
    assert (tmp_path / "o2" / "x" / "y.txt").read_text() == "hi"


def test_zip_traversal_is_refused(tmp_path):
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(UnsafeFileError, match="outside the target folder"):
        safe_extract(z, tmp_path / "o")
    assert not (tmp_path.parent / "evil.txt").exists()
    bad = tmp_path / "c.tar"
    bad.write_bytes(os.urandom(10))
    with pytest.raises((CorruptFileError, UnsafeFileError)):
        safe_extract(bad, tmp_path / "o3")


def test_recipe_loader_refuses_python_tags(tmp_path):
    from descend.experiments.recipe import RecipeError, load

    marker = tmp_path / "pwned"
    p = tmp_path / "evil.yaml"
    p.write_text(f"name: x\noptimizer: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RecipeError, match=r"evil.yaml was refused: it uses a YAML tag that would build"):
        load(p)
    assert not marker.exists()


@pytest.mark.parametrize("module", ["descend.io", "descend.train.checkpoint", "descend.train.distributed"])
def test_docstring_examples_run(module, monkeypatch):
    import doctest
    import importlib

    import descend.io

    monkeypatch.setattr(descend.io, "FSYNC", False)
    m = importlib.import_module(module)
    result = doctest.testmod(m, optionflags=doctest.ELLIPSIS, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
