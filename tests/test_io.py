"""Safe files: atomic writes, safetensors weights, refused pickles, checked loads, archives, YAML."""

import io
import os
import pickle
import re
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


# ----------------------------------------------------------------------- hostile inputs (issue 12)

import json  # noqa: E402
import stat  # noqa: E402

from descend.io import check_layout, check_tree, load_json, read_limited  # noqa: E402


def _evil_pickles(marker):
    """Pickles that would run code in several ways; torch's weights-only loader refuses each."""
    code = f"open({str(marker)!r}, 'w').close()"
    sbu = lambda s: b"\x8c" + bytes([len(s)]) + s.encode()  # noqa: E731 - SHORT_BINUNICODE
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, buf)
    return {
        "protocol 2 GLOBAL": pickle.dumps(_Payload(marker), protocol=2),
        "protocol 4 STACK_GLOBAL": pickle.dumps([_Payload(marker)], protocol=4),
        "torch zip": buf.getvalue(),
        "STACK_GLOBAL from the memo": b"\x80\x04" + sbu("builtins") + b"\x94" + sbu("exec") + b"\x94" + b"00"
                                      + b"h\x00h\x01\x93" + sbu(code) + b"\x85R.",
        "INST": b"(S" + repr(code).encode() + b"\nibuiltins\nexec\n.",
        "OBJ": b"(cbuiltins\nexec\nS" + repr(code).encode() + b"\no.",
        "EXT1": b"\x80\x02\x82\x01)R.",
        "cut short": pickle.dumps(_Payload(marker), protocol=2)[:-3],
    }


def test_every_malicious_pickle_is_reported_unsafe_never_corrupt(tmp_path):
    marker = tmp_path / "ran"
    for what, data in _evil_pickles(marker).items():
        p = tmp_path / "s.pt"
        p.write_bytes(data)
        with pytest.raises(UnsafeFileError, match="was refused: its pickle would import or call code") as e:
            load_state(p)
        assert "weights_only=False" in str(e.value) and "\n" not in str(e.value), what
        assert not marker.exists(), what
    # damaged bytes that name no code are corrupt, and say nothing ran
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorruptFileError, match="nothing in it was run"):
        load_state(p)


def test_yaml_limits_name_the_file(tmp_path):
    p = tmp_path / "r.yaml"
    cases = {
        b"a: 1\na: 2\n": "found the key 'a' twice (first at line 1), line 2",
        b"caf\xe9: 1\n": "is not UTF-8 text (byte 0xe9 at offset 3)",
        b"a: 1\x00\n": "is a binary file (it contains NUL bytes",
        b"&a [*a]\n": "nested more than 64 levels deep",
        ("x: " + "[" * 3000 + "]" * 3000).encode(): "nested more than 64 levels deep; it was refused",
        ("- " * 3000 + "x").encode(): "nested too deeply",
        (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode() for p, c in zip("abcde", "bcdef"))): "billion laughs",
        b"? [1, 2]\n: 3\n": "a key that is not a string or number",
        b"x: 1\n" + b"# pad\n" * 200_000: "is larger than 1048576 bytes",
    }
    for data, expected in cases.items():
        p.write_bytes(data)
        with pytest.raises(CorruptFileError, match=re.escape(expected)) as e:
            load_yaml(p)
        assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert load_yaml("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: 2}", text=True) == \
        {"a": {"b": 1}, "c": {"b": 1}, "d": {"b": 1, "e": 2}}  # aliases and merge keys still work


def test_check_tree_counts_aliases_at_each_use():
    shared = list(range(10))
    assert check_tree({"a": shared, "b": shared}) == 1 + 2 + 2 * 11
    with pytest.raises(CorruptFileError, match="more than 20 values"):
        check_tree([shared] * 3, max_nodes=20)


def test_json_and_layout(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"sha256": {"state.pt": "ab"}}))
    assert check_layout(load_json(p), {"sha256": {str: str}}, str(p))["sha256"] == {"state.pt": "ab"}
    for data, expected in [(b"[" * 50_000, "nested too deeply"), (b"{", "not valid JSON"),
                           (b"\xff", "not UTF-8"), (b" " * 2000, "larger than 1000 bytes")]:
        p.write_bytes(data)
        with pytest.raises(CorruptFileError, match=expected):
            load_json(p, max_bytes=1000 if len(data) == 2000 else 10**6)
    for obj, expected in [([1], "it must be a mapping. Received: list"), ({"sha256": "x"}, "`sha256` must be a mapping"),
                          ({"sha256": {"a": 1}}, "`sha256['a']` must be a string. Received: int"),
                          ({}, "`sha256` is missing")]:
        with pytest.raises(CorruptFileError, match=re.escape(expected)):
            check_layout(obj, {"sha256": {str: str}}, "m.json")
    assert read_limited(p, 10_000) == b" " * 2000


def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.mark.parametrize("members, why", [
    ([_link("a", "."), _link("a/b", ".."), _file("b/x")], "is written through the link 'a'"),
    ([_link("b", "."), _link("a", "b/..")], "links outside the target folder ('b/..')"),
    ([_link("a", "b/../.."), _link("b", ".")], "links outside"),
    ([_link("d", "nowhere")], "dangling or circular"),
    ([_link("x", "y"), _link("y", "x")], "dangling or circular"),
    ([_link("h", "/etc/passwd", tarfile.LNKTYPE)], "links outside"),
    ([_link("h", "missing.txt", tarfile.LNKTYPE)], "not a file of the archive"),
    ([(tarfile.TarInfo("fifo"), None)], None),
])
def test_link_chains_and_odd_links_are_refused(tmp_path, members, why):
    if why is None:  # a FIFO
        members[0][0].type = tarfile.FIFOTYPE
        why = "device, FIFO"
    arc = tmp_path / "a.tar"
    _tar(arc, [_file("ok.txt")] + members)
    (tmp_path / "sandbox").mkdir()
    out = tmp_path / "sandbox" / "out"
    with pytest.raises(UnsafeFileError, match=re.escape(why)):
        safe_extract(arc, out)
    assert sorted(os.listdir(tmp_path / "sandbox")) == ["out"] and os.listdir(out) == []  # nothing is left


def test_extraction_writes_itself_and_keeps_good_links(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tarfile's extract was called")
    monkeypatch.setattr(tarfile.TarFile, "extract", refuse)
    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse)
    exe, plain = _file("bin/run.sh", b"#!/bin/sh\n"), _file("d/a.txt", b"A")
    exe[0].mode = 0o4755  # set-uid: dropped
    arc = _tgz(tmp_path / "a.tgz", [plain, exe, _link("d/l", "a.txt"), _link("top", "d"),
                                     _link("d/h", "d/a.txt", tarfile.LNKTYPE), _link("chain", "top/l")])
    out = tmp_path / "o"
    paths = safe_extract(arc, out)
    assert [p.relative_to(out).as_posix() for p in paths] == ["d/a.txt", "bin/run.sh", "d/l", "top", "d/h", "chain"]
    assert (out / "chain").read_bytes() == b"A" and os.readlink(out / "chain") == "top/l"
    assert (out / "d" / "h").read_bytes() == b"A" and not (out / "d" / "h").is_symlink()  # a copy
    assert os.stat(out / "d" / "h").st_ino != os.stat(out / "d" / "a.txt").st_ino
    mode = stat.S_IMODE(os.stat(out / "bin" / "run.sh").st_mode)
    assert mode & 0o100 and not mode & stat.S_ISUID


def test_extraction_limits(tmp_path):
    arc = _tgz(tmp_path / "many.tgz", [_file(f"f{i}") for i in range(11)])
    with pytest.raises(UnsafeFileError, match="member 'f10' is beyond the limit of 10 members"):
        safe_extract(arc, tmp_path / "o1", max_members=10)
    arc = _tgz(tmp_path / "big.tgz", [_file("a", b"x" * 600), _file("b", b"x" * 600)])
    with pytest.raises(UnsafeFileError, match="member 'b' takes the total size past the limit of 1000 bytes"):
        safe_extract(arc, tmp_path / "o2", max_bytes=1000)
    assert not (tmp_path / "o2" / "a").exists()  # refused from the headers, before writing
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", bytes(17 << 20))
    with pytest.raises(UnsafeFileError, match="more than 100 times the archive's"):
        safe_extract(bomb, tmp_path / "o3")
    assert safe_extract(bomb, tmp_path / "o4", max_ratio=1e6)[0].stat().st_size == 17 << 20
    with pytest.raises(ValueError, match="max_bytes"):
        safe_extract(bomb, tmp_path / "o5", max_bytes=-1)


def test_extraction_refuses_a_target_folder_with_a_link_out(tmp_path):
    (tmp_path / "outside").mkdir()
    out = tmp_path / "o"
    out.mkdir()
    os.symlink(tmp_path / "outside", out / "data")  # put there by someone else
    arc = tmp_path / "a.tar"
    _tar(arc, [_file("data/x.txt")])
    with pytest.raises(UnsafeFileError, match="outside the target folder"):
        safe_extract(arc, out)
    assert os.listdir(tmp_path / "outside") == []


def test_damaged_archives_are_corrupt_on_one_line(tmp_path):
    arc = _tgz(tmp_path / "a.tgz", [_file("a", os.urandom(50_000))])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(arc.read_bytes()[:20_000])
    for bad in (cut,):
        with pytest.raises(CorruptFileError) as e:
            safe_extract(bad, tmp_path / "o")
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert not (tmp_path / "o" / "a").exists()


def test_atomic_write_names_the_file_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("descend.io.os.fdopen", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(OSError) as e:
        with atomic_write(tmp_path / "r.json", "w") as f:
            f.write("x")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "r.json")
    assert os.listdir(tmp_path) == []
