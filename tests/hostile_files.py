"""A corpus of hostile files for every loader of descend, and a harness that feeds each one
to every entry point that reads it.

Every file is generated here (nothing binary is committed). Each pickle's payload would
create a marker file ``<marker dir>/ran-<case>`` if any of its code ran, so "0 code
executed" is checked by looking for markers; each case is also checked to leave nothing
outside the folder it was given.

Entry points: ``descend train --resume`` (checkpoint files), ``descend doctor``
(results.json, monitors.json, CSV logs), ``descend compare --check`` and
``descend train --check`` (recipes and the data files a recipe names), and the Python API
(``load_state``, ``load_weights``, ``restore``, ``load_histories``, ``recipe.load``,
``safe_extract``, ``load_idx``, ``load_cifar10``). ``descend reproduce`` and
``descend playground`` read no file a user hands them.

Run from outside the test suite (each CLI call in its own process)::

    python tests/hostile_files.py OUT_DIR            # write the corpus, run it, print the table
    python tests/hostile_files.py OUT_DIR --in-process --big

The verdict of one (case, entry point): *refused* when the CLI exits with status 2 and
prints exactly one line, ``descend: error: ...``, and no traceback, or the Python call
raises one of descend's errors (``FileSafetyError``, ``ValueError``, ``TypeError``) with a
one-line message; and no marker exists; and nothing appeared outside the case's folder.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

RECIPE = """name: h
data: {name: digits, val_fraction: 0.1}
model: {name: mlp, hidden: [8]}
optimizer: {name: sgd, lr: 0.1}
batch_size: 256
epochs: 2
seeds: [0]
monitors: false
"""


@dataclass
class Case:
    """One hostile file (or folder) and the entry points that read it."""

    name: str
    kind: str          # state | weights | manifest | checkpoint | recipe | results | archive | idx | cifar
    path: Path
    what: str
    entries: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- pickles

class _Reduce:
    """An object whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _sbu(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def pickle_payloads(marker: Callable[[str], Path]) -> dict[str, tuple[bytes, str]]:
    """``{name: (bytes, what)}``: pickles that would run code (each touches ``marker(name)``)."""
    import torch

    out: dict[str, tuple[bytes, str]] = {}

    def code(name):
        return _touch_code(marker(name))

    out["exec-proto2"] = (pickle.dumps(_Reduce(exec, code("exec-proto2")), protocol=2),
                          "GLOBAL builtins.exec + REDUCE (protocol 2)")
    out["system-proto4"] = (pickle.dumps({"optimizer": _Reduce(os.system, f"touch {marker('system-proto4')}")},
                                         protocol=4), "STACK_GLOBAL posix.system inside a dict (protocol 4)")
    buf = io.BytesIO()
    torch.save({"format": 1, "w": torch.zeros(2), "x": _Reduce(exec, code("torch-zip-exec"))}, buf)
    out["torch-zip-exec"] = (buf.getvalue(), "a real torch zip file whose data.pkl calls exec")
    # STACK_GLOBAL whose names come from the memo, not from the two previous pushes
    memo = (b"\x80\x04" + _sbu("builtins") + b"\x94" + _sbu("exec") + b"\x94" + b"0" + b"0"
            + b"h\x00" + b"h\x01" + b"\x93" + _sbu(code("memo-stack-global")) + b"\x85" + b"R" + b".")
    out["memo-stack-global"] = (memo, "STACK_GLOBAL with its names fetched from the memo (BINGET)")
    inst = b"(S" + repr(code("inst-opcode")).encode() + b"\nibuiltins\nexec\n."
    out["inst-opcode"] = (inst, "protocol-0 INST opcode calling builtins.exec")
    obj = b"(cbuiltins\nexec\nS" + repr(code("obj-opcode")).encode() + b"\no."
    out["obj-opcode"] = (obj, "OBJ opcode calling builtins.exec")
    inner = pickle.dumps(_Reduce(exec, code("torch-gadget")), protocol=2)
    out["torch-gadget"] = (pickle.dumps(_Reduce(torch.storage._load_from_bytes, inner), protocol=2),
                           "torch.storage._load_from_bytes: a torch global that unpickles without limits")
    out["numpy-runstring"] = (b"\x80\x02cnumpy.testing._private.utils\nrunstring\n" + _sbu(code("numpy-runstring"))
                              + b"}\x86R.", "numpy.testing's runstring (exec) gadget")
    out["getattr-chain"] = (b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
                            b"X\x06\x00\x00\x00system\x86R" + _sbu(f"touch {marker('getattr-chain')}")
                            + b"\x85R.", "builtins.getattr(__import__('os'), 'system')(...)")
    out["ext-opcode"] = (b"\x80\x02\x82\x01)R.", "EXT1 opcode: a copyreg extension code")
    full = pickle.dumps(_Reduce(exec, code("truncated-payload")), protocol=2)
    out["truncated-payload"] = (full[:-3], "a malicious pickle cut short (damaged AND unsafe)")
    return out


def _torch_bytes(obj) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def state_structures() -> dict[str, tuple[bytes, str]]:
    """Valid torch files (no code) whose content is not a checkpoint's state."""
    import torch
    return {
        "state-empty-dict": (_torch_bytes({}), "state.pt = {}"),
        "state-list": (_torch_bytes([1, 2, 3]), "state.pt = a list"),
        "state-int": (_torch_bytes(5), "state.pt = 5"),
        "state-format-2": (_torch_bytes({"format": 2}), "state.pt of a future format"),
        "state-bad-callbacks": (_torch_bytes({"format": 1, "callbacks": "x", "schedulers": [],
                                              "optimizer": {}, "trainer": {}, "rng": {}}),
                                "callbacks is a string"),
        "state-bad-trainer": (_torch_bytes({"format": 1, "callbacks": [], "schedulers": [],
                                            "optimizer": {"state": {}, "param_groups": []},
                                            "trainer": 5, "rng": {}}), "trainer state is an int"),
        "state-garbage-bytes": (b"\x00not a checkpoint" * 8, "random bytes"),
        "state-empty-file": (b"", "an empty file"),
        "state-tensor-bomb": (_torch_bytes({"format": 1, "x": torch.zeros(1)})[:200], "a torch zip cut short"),
    }


def weights_files() -> dict[str, tuple[bytes, str]]:
    import torch
    from safetensors.torch import save
    h8 = struct.pack("<Q", 2**63)
    return {
        "weights-garbage": (os.urandom(256), "random bytes as model.safetensors"),
        "weights-empty": (b"", "an empty model.safetensors"),
        "weights-huge-header": (h8 + b"{}", "a header length of 2**63"),
        "weights-bad-json": (struct.pack("<Q", 10) + b"{not json}", "a header that is not JSON"),
        "weights-offsets-beyond": (struct.pack("<Q", 80) + json.dumps(
            {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}).encode().ljust(80)
            + b"\x00" * 16, "data offsets past the end of the file"),
        "weights-wrong-shape": (save({"0.weight": torch.zeros(3, 3)}), "tensors of the wrong keys and shapes"),
        "weights-pickle": (pickle.dumps(_Reduce(print, "x"), protocol=2), "a pickle named model.safetensors"),
    }


def manifest_files() -> dict[str, tuple[bytes, str]]:
    return {
        "manifest-not-json": (b"{not json", "manifest.json that is not JSON"),
        "manifest-list": (b"[1, 2]", "manifest.json that is a list"),
        "manifest-sha-string": (b'{"format": 1, "sha256": "x"}', "sha256 is a string"),
        "manifest-sha-escape": (json.dumps({"format": 1, "sha256": {"../../../../etc/passwd": "0" * 64}}).encode(),
                                "sha256 names a file outside the checkpoint"),
        "manifest-binary": (b"\xff\xfe\x00\x01" * 20, "manifest.json that is not UTF-8"),
        "manifest-deep": (b"[" * 100000, "manifest.json nested 100000 deep"),
    }


# ----------------------------------------------------------------------------- text files

def recipe_files(big: bool) -> dict[str, tuple[bytes, str]]:
    base = RECIPE
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join('*' + p for _ in range(10))}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    out = {
        "recipe-python-tag": (base.replace("optimizer: {name: sgd, lr: 0.1}",
                                           "optimizer: !!python/object/apply:os.system ['touch ran']").encode(),
                              "a !!python/object/apply tag"),
        "recipe-billion-laughs": ((base + laughs + "description: *i\n").encode(), "anchors expanding to 10**9 values"),
        "recipe-binary": (bytes(range(256)) * 4, "a binary file"),
        "recipe-latin1": (base.replace("name: h", "name: h\ndescription: caf\xe9").encode("latin-1"), "latin-1, not UTF-8"),
        "recipe-nul": (base.encode() + b"\x00\x00", "NUL bytes"),
        "recipe-deep": (("x: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nesting 5000 deep"),
        "recipe-duplicate-key": ((base + "epochs: 5\n").encode(), "epochs written twice"),
        "recipe-self-alias": (b"&a [*a]\n", "a list that contains itself"),
        "recipe-complex-key": ((base + "? [a, b]\n: 1\n").encode(), "a list as a mapping key"),
        "recipe-not-mapping": (b"- 1\n- 2\n", "a list, not a mapping"),
        "recipe-seeds-huge": (base.replace("seeds: [0]", "seeds: [1000000000000000000000000000000]").encode(), "seeds: [10**30]"),
        "recipe-variants-int": ((base + "variants: -1\n").encode(), "variants: -1"),
        "recipe-variant-name-map": ((base + "variants: [{name: {a: 1}}]\n").encode(), "a mapping as a variant name"),
        "recipe-hidden-huge": (base.replace("hidden: [8]", "hidden: [1099511627776]").encode(), "hidden: [2**40]"),
        "recipe-lr-negative": ((base + "schedule: {lr: -1}\n").encode(), "schedule: {lr: -1}"),
        "recipe-variant-path": ((base + "variants: [{name: ../../../../victim}]\n").encode(), "a variant named ../../../../victim"),
        "recipe-grid-bomb": ((base + "grid: {" + ", ".join(f"optimizer.x{i}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" for i in range(10))
                              + "}\n").encode(), "a grid of 10**10 combinations"),
        "recipe-nan": (base.replace("lr: 0.1", "lr: .nan").encode(), "lr: .nan"),
        "recipe-epochs-huge": (base.replace("epochs: 2", "epochs: 10000000000").encode(), "epochs: 10**10"),
    }
    if big:
        out["recipe-huge"] = ((base + "description: '" + "x" * (2 << 20) + "'\n").encode(), "a 2 MiB recipe")
    return out


def run_folders(root: Path, big: bool) -> dict[str, tuple[Path, str]]:
    """Folders for ``descend doctor``: hostile results.json, monitors.json, CSV logs."""
    def folder(name, files):
        d = root / name
        d.mkdir(parents=True)
        for fname, data in files.items():
            (d / fname).parent.mkdir(parents=True, exist_ok=True)
            (d / fname).write_bytes(data)
        return d

    ok_steps = {"loss": [1.0, 0.5]}
    out = {
        "results-not-json": ({"results.json": b"{nope"}, "results.json that is not JSON"),
        "results-binary": ({"results.json": b"\x89PNG\r\n\x1a\n\x00" * 10}, "results.json that is binary"),
        "results-deep": ({"results.json": b"[" * 200000}, "results.json nested 200000 deep"),
        "results-variants-int": ({"results.json": b'{"variants": 5}'}, "variants: 5"),
        "results-variant-int": ({"results.json": b'{"variants": [5]}'}, "variants: [5]"),
        "results-steps-int": ({"results.json": json.dumps({"variants": [{"name": "a", "runs": [{"steps": 5}]}]}).encode()},
                              "a run's steps is a number"),
        "results-result-str": ({"results.json": b'{"result": "x"}'}, "result is a string"),
        "results-monitors-escape": ({"results.json": json.dumps({"variants": [{"name": "a", "runs": [
            {"steps": ok_steps, "monitors_file": "../../../../../../etc/passwd"}]}]}).encode()},
            "monitors_file pointing outside the run folder"),
        "results-monitors-absolute": ({"results.json": json.dumps({"variants": [{"name": "a", "runs": [
            {"steps": ok_steps, "monitors_file": "/etc/hostname"}]}]}).encode()}, "an absolute monitors_file"),
        "monitors-list": ({"results.json": json.dumps({"result": {"steps": ok_steps}}).encode(),
                           "monitors.json": b"[1, 2]"}, "monitors.json that is a list"),
        "monitors-table-int": ({"results.json": json.dumps({"result": {"steps": ok_steps}}).encode(),
                                "monitors.json": b'{"grad_norm_monitor": 3}'}, "a monitor table that is a number"),
        "csv-binary": ({"steps.csv": os.urandom(4096)}, "steps.csv of random bytes"),
        "csv-huge-field": ({"steps.csv": b"loss\n\"" + b"x" * 200000 + b"\"\n"}, "a CSV field of 200000 characters"),
        "csv-ragged": ({"epochs.csv": b"a,b\n1,2,3,4\n"}, "a CSV row longer than its header"),
    }
    if big:
        out["results-huge"] = ({}, "a 300 MiB results.json (sparse)")
    made = {}
    for name, (files, what) in out.items():
        d = folder(name, files)
        if name == "results-huge":
            with open(d / "results.json", "wb") as f:
                f.truncate(300 << 20)
        made[name] = (d, what)
    return made


# ----------------------------------------------------------------------------- archives

def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind=tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        return ti, data
    return ti, None


def archives(root: Path) -> dict[str, tuple[Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    S, L, D = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
    f = _info
    out = {
        "tar-dotdot": ([f("../escaped.txt", data=b"x")], "a member named ../escaped.txt"),
        "tar-absolute": ([f("/tmp/escaped-abs.txt", data=b"x")], "an absolute member name"),
        "tar-symlink-abs": ([f("l", S, link="/etc"), f("l/x", data=b"x")], "a link to /etc, then a file through it"),
        "tar-symlink-chain": ([f("a", S, link="."), f("a/b", S, link=".."), f("b/x", data=b"x")],
                              "the chain a -> ., a/b -> .., b/x"),
        "tar-symlink-late": ([f("a", S, link="b/../.."), f("b", S, link=".")],
                             "a link whose meaning a later link would change"),
        "tar-symlink-through": ([f("b", S, link="."), f("a", S, link="b/..")],
                                "b -> . then a -> b/.. (outside once b exists)"),
        "tar-symlink-dangling-out": ([f("d", S, link="nowhere/../../x")], "a dangling link leaving the folder"),
        "tar-hardlink-passwd": ([f("h", L, link="/etc/passwd")], "a hard link to /etc/passwd"),
        "tar-hardlink-dotdot": ([f("h", L, link="../outside")], "a hard link to ../outside"),
        "tar-device": ([f("dev", tarfile.CHRTYPE)], "a character device"),
        "tar-fifo": ([f("fifo", tarfile.FIFOTYPE)], "a FIFO"),
        "tar-file-over-dir": ([f("d", D), f("d/x", data=b"x"), f("d", S, link="/")], "a link replacing a folder"),
    }
    made = {}
    for name, (members, what) in out.items():
        made[name] = (_tar(root / f"{name}.tar", members), what)
    bomb = root / "tar-gzip-bomb.tar.gz"  # 24 MiB of zeros in ~24 KiB
    with tarfile.open(bomb, "w:gz") as tf:
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = 24 << 20

        class Zeros(io.RawIOBase):
            left = 24 << 20

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n
        tf.addfile(ti, io.BufferedReader(Zeros()))
    made["tar-gzip-bomb"] = (bomb, "24 MiB of zeros from a 24 KiB tar.gz")
    many = root / "tar-many-members.tar.gz"
    with tarfile.open(many, "w:gz") as tf:
        for i in range(2000):
            ti = tarfile.TarInfo(f"f{i}")
            tf.addfile(ti, io.BytesIO(b""))
    made["tar-many-members"] = (many, "2000 members (limit set to 1000 for the case)")
    z = root / "zip-slip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../zip-escaped.txt", "x")
    made["zip-slip"] = (z, "a zip member named ../zip-escaped.txt")
    z = root / "zip-symlink.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zi = zipfile.ZipInfo("link")
        zi.external_attr = (0o120777 << 16)
        zf.writestr(zi, "/etc/passwd")
    made["zip-symlink"] = (z, "a zip symlink to /etc/passwd")
    z = root / "zip-bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(24 << 20))
    made["zip-bomb"] = (z, "24 MiB of zeros from a 24 KiB zip")
    z = root / "not-an-archive.tar"
    z.write_bytes(os.urandom(4096))
    made["not-an-archive"] = (z, "random bytes named .tar")
    return made


# ----------------------------------------------------------------------------- data files

def _idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def data_folders(root: Path) -> dict[str, tuple[Path, str]]:
    """Folders of MNIST-like IDX files (``data: {name: mnist, root: ..., verify: false}``) and
    CIFAR-10 files, one hostile file each."""
    made = {}

    def mnist(name, bad: bytes, what: str, raw: bool = False):
        d = root / name
        d.mkdir(parents=True)
        good_img = _idx_header(8, (20, 28, 28)) + bytes(20 * 784)
        good_lbl = _idx_header(8, (20,)) + bytes(20)
        stems = {"train-images-idx3-ubyte": bad, "train-labels-idx1-ubyte": good_lbl,
                 "t10k-images-idx3-ubyte": good_img, "t10k-labels-idx1-ubyte": good_lbl}
        for stem, data in stems.items():
            as_is = raw and stem == "train-images-idx3-ubyte"  # already the (bad) .gz bytes
            (d / f"{stem}.gz").write_bytes(data if as_is else gzip.compress(data, compresslevel=9))
        made[name] = (d, what)

    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as g:
        g.write(_idx_header(8, (20, 28, 28)) + bytes(20 * 784))
        for _ in range(64):
            g.write(bytes(1 << 20))
    d = root / "idx-gzip-bomb"
    d.mkdir(parents=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes(bomb.getvalue())
    for stem, data in {"train-labels-idx1-ubyte": _idx_header(8, (20,)) + bytes(20),
                       "t10k-images-idx3-ubyte": _idx_header(8, (20, 28, 28)) + bytes(20 * 784),
                       "t10k-labels-idx1-ubyte": _idx_header(8, (20,)) + bytes(20)}.items():
        (d / f"{stem}.gz").write_bytes(gzip.compress(data))
    made["idx-gzip-bomb"] = (d, "64 MiB of trailing zeros behind a valid header, in a 64 KiB .gz")
    mnist("idx-huge-shape", _idx_header(8, (2**32 - 1, 2**32 - 1, 28)), "a header announcing 2**64 * 28 bytes")
    mnist("idx-truncated-gz", gzip.compress(_idx_header(8, (20, 28, 28)) + bytes(20 * 784))[:-20],
          "a .gz cut short", raw=True)
    mnist("idx-not-gzip", os.urandom(512), "random bytes named .gz", raw=True)

    c = root / "cifar-huge-member"
    c.mkdir(parents=True)
    ti = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
    ti.size = 10 << 30  # the header claims 10 GiB; the body is missing
    (c / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(ti.tobuf(tarfile.GNU_FORMAT)))
    made["cifar-huge-member"] = (c, "an archive member claiming 10 GiB")
    c = root / "cifar-meta-binary"
    (c / "cifar-10-batches-bin").mkdir(parents=True)
    for n in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (c / "cifar-10-batches-bin" / n).write_bytes(bytes(3073 * 2))
    (c / "cifar-10-batches-bin" / "batches.meta.txt").write_bytes(b"\xff\xfe" * 50)
    made["cifar-meta-binary"] = (c, "a class list that is not UTF-8")
    c = root / "cifar-huge-batch"
    (c / "cifar-10-batches-bin").mkdir(parents=True)
    for n in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        with open(c / "cifar-10-batches-bin" / n, "wb") as fh:
            fh.truncate(3 << 30)  # sparse: no disk used
    made["cifar-huge-batch"] = (c, "3 GiB batches (sparse files)")
    return made


# ----------------------------------------------------------------------------- the corpus

def build(out: Path, *, big: bool = False) -> tuple[list[Case], Path]:
    """Write the corpus under ``out``; return its cases and the marker folder."""
    out.mkdir(parents=True, exist_ok=True)
    markers = out / "markers"
    markers.mkdir(exist_ok=True)
    files = out / "files"
    files.mkdir(exist_ok=True)
    cases: list[Case] = []
    for name, (data, what) in pickle_payloads(lambda n: markers / f"ran-{n}").items():
        p = files / f"{name}.pt"
        p.write_bytes(data)
        cases.append(Case(name, "state", p, what, ["api:load_state", "api:restore", "cli:train --resume"]))
    for name, (data, what) in state_structures().items():
        p = files / f"{name}.pt"
        p.write_bytes(data)
        entries = ["api:restore", "cli:train --resume"]
        if name in ("state-garbage-bytes", "state-empty-file", "state-tensor-bomb"):
            entries.insert(0, "api:load_state")
        cases.append(Case(name, "state", p, what, entries))
    for name, (data, what) in weights_files().items():
        p = files / f"{name}.safetensors"
        p.write_bytes(data)
        cases.append(Case(name, "weights", p, what, ["api:load_weights", "api:restore", "cli:train --resume"]))
    for name, (data, what) in manifest_files().items():
        p = files / f"{name}.json"
        p.write_bytes(data)
        cases.append(Case(name, "manifest", p, what, ["api:restore", "cli:train --resume"]))
    cases.append(Case("checkpoint-other-model", "checkpoint", files, "a checkpoint of hidden [8], resumed with hidden [16]",
                      ["cli:train --resume"]))
    for name, (data, what) in recipe_files(big).items():
        p = files / f"{name}.yaml"
        p.write_bytes(data)
        cases.append(Case(name, "recipe", p, what, ["api:recipe.load", "cli:compare --check", "cli:train --check"]))
    for name, (d, what) in run_folders(out / "runs", big).items():
        cases.append(Case(name, "results", d, what, ["api:load_histories", "cli:doctor"]))
    for name, (p, what) in archives(out / "archives").items():
        cases.append(Case(name, "archive", p, what, ["api:safe_extract"]))
    for name, (d, what) in data_folders(out / "data").items():
        api = "api:load_idx_dataset" if name.startswith("idx") else "api:load_cifar10"
        cases.append(Case(name, "idx" if name.startswith("idx") else "cifar", d, what, [api, "cli:compare --check"]))
    return cases, markers


# ----------------------------------------------------------------------------- running

@dataclass
class Outcome:
    case: str
    entry: str
    refused: bool
    detail: str


class Harness:
    """Runs cases through entry points; the CLI either in this process or in subprocesses."""

    def __init__(self, out: Path, markers: Path, *, in_process: bool = True):
        self.out, self.markers, self.in_process = out, markers, in_process
        self.work = out / "work"
        self.work.mkdir(exist_ok=True)
        self.recipe = self.work / "h.yaml"
        self.recipe.write_text(RECIPE)
        self._template: Path | None = None

    # -- the CLI
    def cli(self, argv: list[str], cwd: Path | None = None) -> tuple[int, str]:
        """(exit status, stderr) of ``descend ARGV``."""
        if self.in_process:
            import contextlib
            from descend.cli import main
            err, outbuf = io.StringIO(), io.StringIO()
            old = os.getcwd()
            try:
                if cwd:
                    os.chdir(cwd)
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outbuf):
                    try:
                        rc = main(argv)
                    except SystemExit as e:  # argparse
                        rc = int(e.code or 0)
                    except BaseException as e:  # a traceback would reach the user
                        import traceback
                        rc = 99
                        err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
            finally:
                os.chdir(old)
            return rc, err.getvalue()
        env = dict(os.environ, OMP_NUM_THREADS="1", DESCEND_NO_FSYNC="1")
        env.pop("DESCEND_TRACEBACK", None)
        p = subprocess.run([sys.executable, "-m", "descend", *argv], capture_output=True, text=True,
                           cwd=cwd, env=env, timeout=600)
        return p.returncode, p.stderr

    @staticmethod
    def one_line(rc: int, err: str) -> tuple[bool, str]:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        ok = rc == 2 and len(lines) == 1 and lines[0].startswith("descend: error: ") and "Traceback" not in err
        return ok, (lines[-1] if lines else f"(no output, rc {rc})")[:300] if ok else f"rc {rc}: {err[-600:]}"

    # -- checkpoints
    def template(self) -> Path:
        """A run folder holding a real checkpoint (trained once)."""
        if self._template is None:
            t = self.work / "template"
            rc, err = self.cli(["train", str(self.recipe), "--out", str(t), "--epochs", "1",
                                "--checkpoint-every", "2", "--quiet"])
            if rc != 0:
                raise RuntimeError(f"the template run failed: {err}")
            self._template = t
        return self._template

    def checkpoint_copy(self, case: Case) -> tuple[Path, Path]:
        """A copy of the template run folder whose newest checkpoint holds ``case``'s file."""
        from descend.train.checkpoint import latest_checkpoint
        t = self.template()
        d = self.work / f"ck-{case.name}"
        if d.exists():
            shutil.rmtree(d)
        folder = next(p for p in t.iterdir() if p.name.endswith(".checkpoints"))
        shutil.copytree(folder, d / folder.name)
        ck = latest_checkpoint(d / folder.name)
        target = {"state": "state.pt", "weights": "model.safetensors", "manifest": "manifest.json"}.get(case.kind)
        if target:
            shutil.copyfile(case.path, ck / target)
            if target != "manifest.json":  # an attacker rewrites the checksums too
                import hashlib
                mf = json.loads((ck / "manifest.json").read_text())
                mf["sha256"][target] = hashlib.sha256((ck / target).read_bytes()).hexdigest()
                (ck / "manifest.json").write_text(json.dumps(mf))
        return d, ck

    # -- entry points
    def run(self, case: Case, entry: str) -> Outcome:
        before = set(os.listdir(self.out.parent)) if self.out.parent != Path("/") else set()
        try:
            refused, detail = getattr(self, "_" + entry.replace(":", "_").replace(" ", "_")
                                      .replace("-", "").replace(".", "_"))(case)
        except Exception as e:  # noqa: BLE001 - a harness error is a failed case
            refused, detail = False, f"harness: {type(e).__name__}: {e}"
        ran = sorted(p.name for p in self.markers.iterdir())
        if ran:
            refused, detail = False, f"CODE RAN: {ran}"
            for p in self.markers.iterdir():
                p.unlink()
        after = set(os.listdir(self.out.parent)) if self.out.parent != Path("/") else set()
        if after - before:
            refused, detail = False, f"wrote outside: {sorted(after - before)}"
        return Outcome(case.name, entry, refused, detail)

    @staticmethod
    def _api(fn) -> tuple[bool, str]:
        from descend.io import FileSafetyError
        try:
            fn()
        except (FileSafetyError, ValueError, TypeError) as e:
            msg = str(e)
            return "\n" not in msg.strip() and bool(msg), f"{type(e).__name__}: {msg[:300]}"
        except Exception as e:  # noqa: BLE001
            return False, f"unexpected {type(e).__name__}: {str(e)[:300]}"
        return False, "accepted"

    def _api_load_state(self, case):
        from descend.io import UnsafeFileError, load_state
        refused, detail = self._api(lambda: load_state(case.path))
        if refused and case.name in pickle_payloads(lambda n: Path(n)) and not detail.startswith("UnsafeFileError"):
            return False, "a malicious pickle reported as " + detail
        del UnsafeFileError
        return refused, detail

    def _api_load_weights(self, case):
        import torch
        from descend.io import load_weights
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))
        return self._api(lambda: load_weights(case.path, model))

    def _trainer(self, hidden=8):
        from descend.experiments import recipe as recipes, runner
        r = recipes.load(self.recipe)
        run = r.runs()[0]
        return runner.build(run, 0).trainer

    def _api_restore(self, case):
        from descend.train.checkpoint import restore
        _, ck = self.checkpoint_copy(case)
        trainer = self._trainer()
        return self._api(lambda: restore(trainer, ck))

    def _cli_train_resume(self, case):
        d, _ = self.checkpoint_copy(case)
        recipe = self.recipe
        if case.kind == "checkpoint":
            recipe = self.work / "h16.yaml"
            recipe.write_text(RECIPE.replace("hidden: [8]", "hidden: [16]"))
        return self.one_line(*self.cli(["train", str(recipe), "--out", str(d), "--resume", "--quiet"]))

    def _api_recipe_load(self, case):
        from descend.experiments import recipe as recipes, runner
        def go():
            for run in recipes.load(case.path).runs():
                runner.build(run, run.spec.seeds[0])
        return self._api(go)

    def _cli_compare_check(self, case):
        path = case.path if case.kind == "recipe" else self._data_recipe(case)
        return self.one_line(*self.cli(["compare", str(path), "--check", "--out", str(self.work / "o")]))

    def _cli_train_check(self, case):
        return self.one_line(*self.cli(["train", str(case.path), "--check", "--out", str(self.work / "o")]))

    def _data_recipe(self, case) -> Path:
        name = "mnist" if case.kind == "idx" else "cifar10"
        p = self.work / f"data-{case.name}.yaml"
        p.write_text(RECIPE.replace("data: {name: digits, val_fraction: 0.1}",
                                    f"data: {{name: {name}, root: {json.dumps(str(case.path))}, verify: false}}"))
        return p

    def _api_load_histories(self, case):
        from descend.analysis.doctor import doctor
        return self._api(lambda: doctor(case.path))

    def _cli_doctor(self, case):
        return self.one_line(*self.cli(["doctor", str(case.path)]))

    def _api_safe_extract(self, case):
        from descend.io import safe_extract
        dest = self.work / f"x-{case.name}" / "inside"
        if dest.parent.exists():
            shutil.rmtree(dest.parent)
        dest.mkdir(parents=True)
        limit = {"max_members": 1000} if case.name == "tar-many-members" else {}
        refused, detail = self._api(lambda: safe_extract(case.path, dest, **limit))
        outside = [p.name for p in dest.parent.iterdir() if p != dest]
        if outside:
            return False, f"wrote next to the target folder: {outside}"
        if refused and any(dest.iterdir()):
            return False, f"left files behind after refusing: {sorted(os.listdir(dest))}"
        return refused, detail

    def _api_load_idx_dataset(self, case):
        from descend.data.files import load_idx_dataset
        return self._api(lambda: load_idx_dataset(case.path, verify=False))

    def _api_load_cifar10(self, case):
        from descend.data.files import load_cifar10
        return self._api(lambda: load_cifar10(case.path, verify=False))


def run_all(out: Path, *, big: bool = False, in_process: bool = True,
            only: Callable[[Case], bool] | None = None) -> tuple[list[Case], list[Outcome]]:
    """Build the corpus under ``out`` and run every case through each of its entry points."""
    cases, markers = build(out, big=big)
    h = Harness(out, markers, in_process=in_process)
    results = []
    for case in cases:
        if only is not None and not only(case):
            continue
        for entry in case.entries:
            results.append(h.run(case, entry))
    return cases, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="an empty folder for the corpus (kept afterwards)")
    ap.add_argument("--big", action="store_true", help="also the files of hundreds of MiB (sparse where possible)")
    ap.add_argument("--in-process", action="store_true", help="run the CLI in this process (faster)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cases, results = run_all(args.out.resolve(), big=args.big, in_process=args.in_process)
    for r in results:
        print(f"{'refused' if r.refused else 'FAILED ':8s} {r.case:28s} {r.entry:22s} {r.detail[:150]}")
    bad = [r for r in results if not r.refused]
    entries = sorted({r.entry for r in results})
    print(f"\n{len(cases)} hostile files, {len(results)} (file, entry point) pairs over {len(entries)} entry "
          f"points: {len(results) - len(bad)} refused with one line, {len(bad)} not; markers of executed "
          f"code: {sum('CODE RAN' in r.detail for r in results)}; {time.perf_counter() - t0:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
