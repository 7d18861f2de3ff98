"""Safe files: atomic writes, weights in safetensors, state without code, checked loads.

Everything ``descend`` writes or reads goes through this module, so that

* a write is **atomic**: the bytes go to a temporary file in the same folder, are
  flushed and ``fsync``-ed, then ``os.replace``-d over the target (and the folder is
  fsync-ed); a crash or a full disk mid-write leaves the previous file untouched;
* **weights** are stored as safetensors (a flat tensor table, no code at all);
* any other **state** (optimizer buffers, RNG states, counters) is written with
  ``torch.save`` and read only with ``torch.load(weights_only=True)``: a file whose
  pickle would import or call anything beyond tensors and plain containers is refused
  with :class:`UnsafeFileError`, *before* anything in it runs;
* a truncated or corrupted file raises :class:`CorruptFileError` naming the file;
* loaded tensors are **checked against the model** (missing / unexpected keys, shape,
  dtype) with :class:`StateMismatchError` naming every mismatch;
* archives are extracted without path traversal or links leaving the target folder;
* YAML is read with ``yaml.safe_load`` only: ``!!python/object`` tags are refused.

Where this differs from torch: ``torch.save`` writes in place (a crash mid-write
destroys the old file) and ``torch.load`` defaulted to full unpickling before torch
2.6; here both are always the safe variant.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

__all__ = [
    "CorruptFileError",
    "FileSafetyError",
    "StateMismatchError",
    "UnsafeFileError",
    "atomic_write",
    "check_state_dict",
    "load_state",
    "load_weights",
    "load_yaml",
    "safe_extract",
    "save_state",
    "save_weights",
    "write_text",
]


# Durability switch: with ``DESCEND_NO_FSYNC=1`` in the environment (or ``FSYNC = False``)
# writes skip ``fsync``. They stay atomic (a killed process never leaves a half file);
# only a power loss may then lose the newest file. Meant for tests and scratch runs.
FSYNC = os.environ.get("DESCEND_NO_FSYNC", "") not in ("1", "true", "yes")


class FileSafetyError(RuntimeError):
    """Base class of the errors raised when a file cannot be trusted or read.

    >>> issubclass(UnsafeFileError, FileSafetyError), issubclass(CorruptFileError, FileSafetyError)
    (True, True)
    """


class UnsafeFileError(FileSafetyError):
    """The file would run code when loaded (a pickle global, a YAML python tag, a path
    escaping an archive's target folder); it was refused without running anything.

    >>> try:
    ...     load_yaml("x: !!python/object/apply:os.system ['true']", text=True)
    ... except UnsafeFileError:
    ...     print("refused")
    refused
    """


class CorruptFileError(FileSafetyError):
    """The file is truncated, corrupted or not in the expected format.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.pt"
    >>> _ = p.write_bytes(b"not a torch file")
    >>> try:
    ...     load_state(p)
    ... except CorruptFileError:
    ...     print("corrupt")
    corrupt
    """


class StateMismatchError(ValueError):
    """Loaded tensors do not match the model (keys, shapes or dtypes).

    >>> try:
    ...     check_state_dict({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, source="f")
    ... except StateMismatchError:
    ...     print("mismatch")
    mismatch
    """


# --------------------------------------------------------------------------- writing


def _fsync_dir(folder: Path) -> None:
    if not FSYNC:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success it atomically replaces ``path``.

    Steps: create ``.<name>.<random>.tmp`` in the same folder (same file system, so the
    rename is atomic), let the caller write, ``flush`` + ``fsync``, ``os.replace`` onto
    ``path``, ``fsync`` the folder. If the body raises (or the process dies) the
    temporary file is removed (or left as an ignorable ``*.tmp``) and ``path`` keeps
    its previous content.

    Args:
        path: the final file.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(p, "w") as f:
        ...     _ = f.write("hello")
        >>> p.read_text()
        'hello'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"`mode` must be one of 'wb', 'w'. Received: mode={mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if FSYNC:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_weights(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor] | torch.nn.Module,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors (or a module's ``state_dict``) as a safetensors file, atomically.

    Tensors are made contiguous and copied to CPU; tensors sharing memory (tied
    weights) are stored once per name, as safetensors requires distinct buffers.

    Args:
        path: target file (conventionally ``*.safetensors``).
        tensors: a ``{name: tensor}`` mapping or an ``nn.Module``.
        metadata: optional ``{str: str}`` stored in the header.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> _ = save_weights(p, {"w": torch.ones(2)})
        >>> load_weights(p)["w"]
        tensor([1., 1.])
    """
    from safetensors.torch import save

    if isinstance(tensors, torch.nn.Module):
        tensors = tensors.state_dict()
    table = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"`tensors` must map names to tensors. Received: {name}={type(t).__name__}")
        table[name] = t.detach().to("cpu").contiguous().clone()
    data = save(table, metadata=dict(metadata) if metadata else None)
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def save_state(path: str | os.PathLike, state: Any) -> Path:
    """``torch.save(state)`` atomically; ``state`` must be loadable with ``weights_only``.

    Allowed content: tensors, numbers, strings, ``None``, and lists / tuples / dicts
    of these (what optimizer, scheduler and RNG states are). Anything else is refused
    *at save time* (so that a run never writes a checkpoint it could not read back).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.pt"
        >>> _ = save_state(p, {"step": 3, "buf": torch.zeros(1)})
        >>> load_state(p)["step"]
        3
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    try:  # the same check as load_state, before anything is written
        torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TypeError(
            f"`state` must hold only tensors, numbers, strings and containers of these "
            f"(it could not be read back safely). Received: {str(e).splitlines()[0]}"
        ) from None
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- reading


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"`path` must be an existing file. Received: path={str(path)!r}")


def load_state(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a file written by :func:`save_state`, with ``torch.load(weights_only=True)``.

    Raises:
        UnsafeFileError: the pickle references a global that could run code (the
            payload is *not* executed; the message names the offending global).
        CorruptFileError: the file is truncated or is not a torch file.

    Example: see :func:`save_state`.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "opt.pt"
    >>> _ = save_state(p, {"lr": 0.1, "momentum_buffer": torch.ones(2)})
    >>> load_state(p)
    {'lr': 0.1, 'momentum_buffer': tensor([1., 1.])}
    """
    path = Path(path)
    _require_file(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch refused the pickle: either it names globals (code) or the bytes are damaged.
        found = _pickle_globals(path)
        bad = [g for g in found if not g.startswith(_SAFE_GLOBAL_PREFIXES)]
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if m and not bad:
            bad.append(m.group(1))
        if bad:
            raise UnsafeFileError(
                f"{path} was refused: its pickle would import or call code "
                f"({', '.join(bad)}), which a checkpoint must never do. Nothing in it was run; "
                f"only tensors, numbers, strings and containers are loaded."
            ) from None
        raise CorruptFileError(f"{path} is corrupted or truncated (its pickle cannot be read).") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptFileError(f"{path} is corrupted or truncated: {first}") from None


# Globals torch's weights-only unpickler itself allows (tensor rebuilds, storages, dtypes).
_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                         "builtins.bytearray", "builtins.complex", "builtins.slice", "builtins.range")


def _pickle_globals(path: Path) -> list[str]:
    """Names of the globals a pickle (raw, or ``data.pkl`` inside a torch zip) would import.

    Read statically with ``pickletools.genops``: no byte of the pickle is executed.
    """
    import pickletools

    raw = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                raw = zf.read(name) if name else b""
        except (zipfile.BadZipFile, OSError, KeyError):
            return []
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(raw):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # damaged stream: report what was read before the damage
        pass
    return sorted(set(names))


def load_weights(path: str | os.PathLike, model: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
                 *, strict: bool = True, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; with ``model``, check it and load it into the model.

    Args:
        path: a ``*.safetensors`` file.
        model: an ``nn.Module`` (checked, then ``load_state_dict``-ed) or a mapping of
            expected tensors (checked only); ``None`` (default) only reads.
        strict: with ``model``, also require the same set of keys (default True);
            shapes and dtypes are always checked.
        device: where the tensors are put (default ``"cpu"``).

    Returns:
        the ``{name: tensor}`` table read from the file.

    Raises:
        CorruptFileError: truncated / not a safetensors file.
        StateMismatchError: keys, shapes or dtypes differ from the model.

    Example: see :func:`save_weights`.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> src = torch.nn.Linear(2, 1); _ = save_weights(p, src)
    >>> dst = torch.nn.Linear(2, 1)
    >>> sorted(load_weights(p, dst)), torch.equal(dst.weight, src.weight)
    (['bias', 'weight'], True)
    """
    from safetensors.torch import load

    path = Path(path)
    _require_file(path)
    try:
        tensors = load(path.read_bytes())
    except Exception as e:  # safetensors raises its own SafetensorError and others
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptFileError(f"{path} is not a readable safetensors file: {first}") from None
    tensors = {k: v.to(device) for k, v in tensors.items()}
    if model is not None:
        expected = model.state_dict() if isinstance(model, torch.nn.Module) else model
        check_state_dict(expected, tensors, strict=strict, source=str(path))
        if isinstance(model, torch.nn.Module):
            model.load_state_dict(tensors, strict=strict)
    return tensors


def check_state_dict(expected: Mapping[str, torch.Tensor] | torch.nn.Module,
                     loaded: Mapping[str, Any], *, strict: bool = True, source: str = "state") -> None:
    """Check that ``loaded`` fits ``expected``: same keys (if ``strict``), shapes and dtypes.

    Every mismatch is listed in one :class:`StateMismatchError`, e.g.
    ``model.safetensors does not match the model: shape of 'fc.weight': expected (3, 4),
    found (4, 4)``.

    Example:
        >>> check_state_dict({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, source="f")
        Traceback (most recent call last):
        descend.io.StateMismatchError: f does not match the model: shape of 'w': expected (2,), found (3,)
    """
    if isinstance(expected, torch.nn.Module):
        expected = expected.state_dict()
    problems = []
    if strict:
        missing = sorted(set(expected) - set(loaded))
        unexpected = sorted(set(loaded) - set(expected))
        if missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
    for key in sorted(set(expected) & set(loaded)):
        want, got = expected[key], loaded[key]
        if not isinstance(got, torch.Tensor):
            problems.append(f"{key!r} is a {type(got).__name__}, not a tensor")
            continue
        if tuple(want.shape) != tuple(got.shape):
            problems.append(f"shape of {key!r}: expected {tuple(want.shape)}, found {tuple(got.shape)}")
        if want.dtype != got.dtype:
            problems.append(f"dtype of {key!r}: expected {want.dtype}, found {got.dtype}")
    if problems:
        raise StateMismatchError(f"{source} does not match the model: " + "; ".join(problems))


def load_yaml(source: str | os.PathLike, *, text: bool = False) -> Any:
    """Parse YAML with ``yaml.safe_load``; tags that build Python objects are refused.

    Args:
        source: a file path, or the YAML itself with ``text=True``.
        text: treat ``source`` as YAML text (default False).

    Raises:
        UnsafeFileError: the document uses a ``!!python/...`` (or other unknown) tag.
        CorruptFileError: the YAML does not parse.

    Example:
        >>> load_yaml("lr: 0.1", text=True)
        {'lr': 0.1}
    """
    import yaml

    name = "<text>" if text else str(source)
    content = source if text else Path(source).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(content)
    except yaml.constructor.ConstructorError as e:
        raise UnsafeFileError(
            f"{name} was refused: it uses a YAML tag that would build a Python object "
            f"({e.problem}{', ' + str(e.problem_mark).strip() if e.problem_mark else ''}); "
            f"recipes are plain data (numbers, strings, lists, mappings)."
        ) from None
    except yaml.YAMLError as e:
        raise CorruptFileError(f"{name} is not valid YAML: {e}") from None


# --------------------------------------------------------------------------- archives


def _inside(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a ``.tar[.gz|.bz2|.xz]`` or ``.zip`` archive into ``dest``, safely.

    Every member is checked before anything is written: absolute names, ``..``
    components that leave ``dest``, links (symbolic or hard) pointing outside
    ``dest``, and device / FIFO members are refused with :class:`UnsafeFileError`
    naming the member. Unlike ``tarfile.extractall`` without a filter (the default
    before Python 3.14), nothing outside ``dest`` can be created or overwritten.

    Returns:
        the extracted paths.

    Example:
        >>> import tempfile, pathlib, zipfile
        >>> d = pathlib.Path(tempfile.mkdtemp()); z = d / "a.zip"
        >>> with zipfile.ZipFile(z, "w") as f:
        ...     f.writestr("x/y.txt", "hi")
        >>> [p.name for p in safe_extract(z, d / "out")]
        ['y.txt']
    """
    archive, dest = Path(archive), Path(dest)
    _require_file(archive)
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def refuse(member: str, why: str):
        raise UnsafeFileError(f"{archive} was refused: member {member!r} {why}.")

    def check_name(name: str) -> Path:
        if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ":" in Path(name).parts[0]:
            refuse(name, "has an absolute path")
        target = dest / name
        if not _inside(dest, target):
            refuse(name, "would be written outside the target folder")
        return target

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                check_name(info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    refuse(info.filename, "is a symbolic link")
            for info in infos:
                out.append(Path(zf.extract(info, dest)))
        return out
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise CorruptFileError(f"{archive} is not a readable tar or zip archive: {e}") from None
    with tf:
        members = tf.getmembers()
        for m in members:
            target = check_name(m.name)
            if m.issym() or m.islnk():
                base = target.parent if m.issym() else dest
                if os.path.isabs(m.linkname) or not _inside(dest, base / m.linkname):
                    refuse(m.name, f"links outside the target folder ({m.linkname!r})")
            elif not (m.isfile() or m.isdir()):
                refuse(m.name, "is a device, FIFO or other special file")
        for m in members:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extract(m, dest, **kwargs)
            out.append(dest / m.name)
    return out


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`).

    >>> import tempfile, pathlib
    >>> p = write_text(pathlib.Path(tempfile.mkdtemp()) / "notes.txt", "lr: 0.1")
    >>> p.read_text()
    'lr: 0.1'
    """
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
