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
    "check_layout",
    "check_tree",
    "load_json",
    "load_yaml",
    "read_limited",
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
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if e.filename is None:  # a write error (a full disk) names no file: name the target
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
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
        # torch refused the pickle: it asks for code (unsafe), or its bytes are damaged.
        bad, complete = _pickle_verdict(path)
        torch_says = re.search(r"Unsupported (global|class)|unrecognized function|not an allowed", str(e))
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if m and not bad:
            bad.append(m.group(1))
        if bad or complete or torch_says:
            what = ", ".join(bad) if bad else "pickle operations that a checkpoint never needs"
            raise UnsafeFileError(
                f"{path} was refused: its pickle would import or call code ({what}), which a "
                f"checkpoint must never do. Nothing in it was run; only tensors, numbers, strings "
                f"and containers are loaded. Do not retry with weights_only=False."
            ) from None
        raise CorruptFileError(f"{path} is corrupted or truncated (its pickle cannot be read; "
                               f"nothing in it was run).") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError,
            TypeError, OverflowError, MemoryError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptFileError(f"{path} is corrupted or truncated: {first}") from None


def _allowed_globals() -> set[str]:
    """The globals torch's weights-only unpickler loads (tensor rebuilds, dtypes, containers)."""
    try:
        from torch import _weights_only_unpickler as wou
        names = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
        if names:
            return names
    except Exception:  # pragma: no cover - a torch without these private helpers
        pass
    return set()


# Globals of torch's allow-list, for a torch whose private list cannot be read.
_SAFE_GLOBAL_PREFIXES = ("torch._utils._rebuild", "torch.FloatStorage", "torch.serialization._get_layout",
                         "collections.OrderedDict", "builtins.set", "builtins.frozenset",
                         "builtins.bytearray", "builtins.complex", "builtins.slice", "builtins.range")
# Opcodes that name code without a module.name pair (copyreg extensions, persistent ids in raw files).
_CODE_OPS = {"EXT1", "EXT2", "EXT4", "PERSID", "OBJ"}
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "BINUNICODE8"}


def _pickle_bytes(path: Path) -> tuple[bytes, bool]:
    """The pickle of a file (raw, or ``data.pkl`` inside a torch zip) and whether it is a zip."""
    with open(path, "rb") as f:
        raw = f.read()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                return (zf.read(name) if name else b""), True
        except (zipfile.BadZipFile, OSError, KeyError, ValueError, RuntimeError, EOFError):
            return b"", True
    if raw.startswith(b"PK"):  # a damaged zip, not a pickle
        return b"", True
    return raw, False


def _pickle_verdict(path: Path) -> tuple[list[str], bool]:
    """``(what, complete)``: the globals and code-naming opcodes of a pickle that torch's
    weights-only loader does not allow, and whether the stream is whole (it reads to STOP).

    Read statically with ``pickletools.genops``: no byte of the pickle is executed. The
    names that ``STACK_GLOBAL`` takes from the stack are followed through the memo
    (``BINPUT`` / ``BINGET``) and ``DUP``; a name that cannot be followed is reported.
    """
    import pickletools

    raw, _ = _pickle_bytes(path)
    allowed = _allowed_globals()

    def ok(name: str) -> bool:
        return name in allowed if allowed else name.startswith(_SAFE_GLOBAL_PREFIXES)

    bad: list[str] = []
    pushed: list[Any] = []
    memo: dict[Any, Any] = {}
    complete = False
    try:
        for op, arg, _ in pickletools.genops(raw):
            name = op.name
            if name in ("GLOBAL", "INST"):
                g = str(arg).replace(" ", ".")
                if not ok(g):
                    bad.append(g)
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                mod, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                g = f"{mod}.{attr}" if isinstance(mod, str) and isinstance(attr, str) else \
                    "a global whose name is computed"
                if not ok(g):
                    bad.append(g)
                pushed.append(None)
            elif name in _CODE_OPS:
                bad.append(f"pickle opcode {name}")
                pushed.append(None)
            elif name in _STRING_OPS:
                pushed.append(arg if isinstance(arg, str) else (arg.decode("latin-1") if isinstance(arg, bytes) else None))
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif name == "DUP":
                pushed.append(pushed[-1] if pushed else None)
            elif op.stack_after:
                pushed.append(None)
            if name == "STOP":
                complete = True
                break
    except Exception:  # a damaged stream: report what was read before the damage
        pass
    seen: set[str] = set()
    return [b for b in bad if not (b in seen or seen.add(b))], complete


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


# Limits on what a loader reads: a hostile file must not exhaust memory or time.
MAX_YAML_BYTES = 1 << 20          # a recipe is a few KiB
MAX_TREE_NODES = 100_000          # values in a parsed document, aliases counted at each use
MAX_TREE_DEPTH = 64               # nesting of lists / mappings
MAX_JSON_BYTES = 256 << 20        # results.json of a long comparison is a few MiB
EXTRACT_MAX_BYTES = 1 << 30       # safe_extract: total bytes written (CIFAR-10 is 178 MiB)
EXTRACT_MAX_MEMBERS = 100_000     # safe_extract: files, folders and links
EXTRACT_MAX_RATIO = 100           # safe_extract: extracted / archive bytes, past 16 MiB
_RATIO_FLOOR = 16 << 20


def read_limited(path: str | os.PathLike, max_bytes: int, *, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing a file larger than ``max_bytes`` without reading it all.

    Raises:
        CorruptFileError: the file is larger than ``max_bytes`` (the message names it).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.txt"; _ = p.write_text("hello")
    >>> read_limited(p, 10)
    b'hello'
    >>> read_limited(p, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    descend.io.CorruptFileError: .../f.txt is larger than 3 bytes, the limit for a file...
    """
    path = Path(path)
    with open(path, "rb") as f:
        too_large = os.fstat(f.fileno()).st_size > max_bytes  # a regular file: not read at all
        data = b"" if too_large else f.read(max_bytes + 1)
    if too_large or len(data) > max_bytes:
        raise CorruptFileError(f"{path} is larger than {max_bytes} bytes, the limit for a {what}; "
                               f"it was not read.")
    return data


def _decode(data: bytes, name: str, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                               f"{e.start}); a {what} is a text file.") from None
    if "\x00" in text:
        raise CorruptFileError(f"{name} is a binary file (it contains NUL bytes at offset "
                               f"{text.index(chr(0))}); a {what} is a text file.")
    return text


def check_tree(obj: Any, source: str = "<data>", *, max_nodes: int = MAX_TREE_NODES,
               max_depth: int = MAX_TREE_DEPTH) -> int:
    """Check that ``obj`` is a finite tree of plain data; return its number of values.

    Lists and mappings are counted at each place they appear (so a YAML document whose
    anchors and aliases expand to billions of values, a "billion laughs", or that refers
    to itself is refused) without recursion.

    Raises:
        CorruptFileError: more than ``max_nodes`` values or nesting deeper than ``max_depth``.

    >>> check_tree({"a": [1, 2, {"b": 3}]})          # 2 mappings, 1 list, 2 keys, 3 numbers
    8
    >>> x = [1]; x.append(x)                        # refers to itself
    >>> check_tree(x, "r.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    descend.io.CorruptFileError: r.yaml is nested more than 64 levels deep...
    """
    stack = [(obj, 0)]
    n = 0
    while stack:
        node, depth = stack.pop()
        n += 1
        if n > max_nodes:
            raise CorruptFileError(
                f"{source} holds more than {max_nodes} values once its YAML anchors and aliases "
                f"are expanded (a 'billion laughs' document?); it was refused.")
        if isinstance(node, (list, tuple, dict)):
            if depth >= max_depth:
                raise CorruptFileError(f"{source} is nested more than {max_depth} levels deep "
                                       f"(or refers to itself); it was refused.")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(node, dict):
                    stack.append((k, depth + 1))
                stack.append((v, depth + 1))
    return n


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses a key written twice in one mapping."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found a key that is not a string or number ({type(key).__name__})",
                            key_node.start_mark) from None
                    if first is not None:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found the key {key!r} twice (first at line {first.line + 1})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


_QUOTED_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|(?:^|(?<=\s))#[^\n]*", re.M)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """The deepest nesting of YAML flow brackets (``[`` / ``{``), quoted strings and
    comments left out: a cheap upper look at a document before it is parsed."""
    depth = deepest = 0
    for c in _NOT_BRACKET.sub("", _QUOTED_OR_COMMENT.sub("", text)):
        depth = depth + 1 if c in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def load_yaml(source: str | os.PathLike, *, text: bool = False, max_bytes: int = MAX_YAML_BYTES,
              max_nodes: int = MAX_TREE_NODES) -> Any:
    """Parse YAML with a ``yaml.SafeLoader``; tags that build Python objects are refused.

    Also refused, with the file's name: a file larger than ``max_bytes`` (default 1 MiB),
    one that is not UTF-8 text, a key written twice in one mapping, nesting deeper than
    64 levels and a document of more than ``max_nodes`` values once anchors and aliases
    are expanded (see :func:`check_tree`).

    Args:
        source: a file path, or the YAML itself with ``text=True``.
        text: treat ``source`` as YAML text (default False).
        max_bytes: the largest file read (default :data:`MAX_YAML_BYTES`).
        max_nodes: the most values in the document (default :data:`MAX_TREE_NODES`).

    Raises:
        UnsafeFileError: the document uses a ``!!python/...`` (or other unknown) tag.
        CorruptFileError: the YAML does not parse, or breaks one of the limits above.

    Example:
        >>> load_yaml("lr: 0.1", text=True)
        {'lr': 0.1}
        >>> load_yaml("lr: 0.1\\nlr: 0.2", text=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        descend.io.CorruptFileError: <text> is not valid YAML: found the key 'lr' twice (first at line 1), line 2, column 1
    """
    import yaml

    name = "<text>" if text else str(source)
    if text:
        if len(source) > max_bytes:
            raise CorruptFileError(f"{name} is longer than {max_bytes} characters; it was not read.")
        content = str(source)
    else:
        content = _decode(read_limited(source, max_bytes, what="YAML file"), name, "YAML file")
    if _flow_depth(content) > MAX_TREE_DEPTH:  # refused before PyYAML's recursive parser runs
        raise CorruptFileError(f"{name} is nested more than {MAX_TREE_DEPTH} levels deep; it was refused.")
    try:
        doc = yaml.load(content, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        pm = e.problem_mark
        mark = f", line {pm.line + 1}, column {pm.column + 1}" if pm else ""
        if "could not determine a constructor" in str(e.problem):
            raise UnsafeFileError(
                f"{name} was refused: it uses a YAML tag that would build a Python object "
                f"({e.problem}{mark}); recipes are plain data (numbers, strings, lists, mappings)."
            ) from None
        raise CorruptFileError(f"{name} is not valid YAML: {e.problem}{mark}") from None
    except yaml.YAMLError as e:
        pm = getattr(e, "problem_mark", None)
        what = getattr(e, "problem", None) or str(e)
        mark = f", line {pm.line + 1}, column {pm.column + 1}" if pm else ""
        raise CorruptFileError(f"{name} is not valid YAML: {what}{mark}") from None
    except RecursionError:
        raise CorruptFileError(f"{name} is nested too deeply to be a YAML document of plain "
                               f"data; it was refused.") from None
    check_tree(doc, name, max_nodes=max_nodes)
    return doc


def check_layout(obj: Any, layout: Any, source: str, path: str = "") -> Any:
    """Check that loaded data has the shape a file of descend has, before anything uses it.

    ``layout`` is a type (``int``, ``str``, ``dict``...; ``float`` accepts ints), a tuple
    of types, a ``{key: layout}`` mapping (those keys must be present; others may be), a
    ``[layout]`` list (every item), or ``{str: layout}`` (every value of a mapping with
    string keys). Returns ``obj``.

    Raises:
        CorruptFileError: ``<source> is not in the expected form: `<path>` must be ...``.

    >>> check_layout({"format": 1, "callbacks": [{"class": "A"}]},
    ...              {"format": int, "callbacks": [{"class": str}]}, "state.pt")
    {'format': 1, 'callbacks': [{'class': 'A'}]}
    >>> check_layout({"format": 1, "callbacks": "x"}, {"callbacks": list}, "state.pt")
    Traceback (most recent call last):
    descend.io.CorruptFileError: state.pt is not in the expected form: `callbacks` must be a list. Received: str
    """
    def bad(want: str):
        what = f"`{path}`" if path else "it"
        raise CorruptFileError(f"{source} is not in the expected form: {what} must be {want}. "
                               f"Received: {type(obj).__name__}")
    if isinstance(layout, dict):
        if not isinstance(obj, dict):
            bad("a mapping")
        if set(layout) == {str}:
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise CorruptFileError(f"{source} is not in the expected form: its keys"
                                           f"{' of `' + path + '`' if path else ''} must be strings. "
                                           f"Received: {k!r}")
                check_layout(v, layout[str], source, f"{path}[{k!r}]")
            return obj
        for k, sub in layout.items():
            if k not in obj:
                raise CorruptFileError(f"{source} is not in the expected form: `{path + '.' if path else ''}"
                                       f"{k}` is missing.")
            check_layout(obj[k], sub, source, f"{path}.{k}" if path else str(k))
        return obj
    if isinstance(layout, list):
        if not isinstance(obj, (list, tuple)):
            bad("a list")
        for i, item in enumerate(obj):
            check_layout(item, layout[0], source, f"{path}[{i}]")
        return obj
    types = layout if isinstance(layout, tuple) else (layout,)
    if float in types:
        types = types + (int,)
    if not isinstance(obj, types) or (isinstance(obj, bool) and bool not in types):
        names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
                 float: "a number", bool: "a bool"}
        bad(" or ".join(names.get(t, t.__name__) for t in types if not (t is int and float in types)))
    return obj


def load_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file, refusing one larger than ``max_bytes``, not UTF-8, or nested too deeply.

    Raises:
        CorruptFileError: naming the file and what is wrong.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"; _ = p.write_text('{"a": [1, 2]}')
    >>> load_json(p)
    {'a': [1, 2]}
    >>> _ = p.write_text("[" * 100000)
    >>> load_json(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    descend.io.CorruptFileError: .../r.json is nested too deeply...
    """
    import json

    path = Path(path)
    text = _decode(read_limited(path, max_bytes, what="JSON file"), str(path), "JSON file")
    try:
        return json.loads(text)
    except RecursionError:
        raise CorruptFileError(f"{path} is nested too deeply to be read.") from None
    except ValueError as e:
        raise CorruptFileError(f"{path} is not valid JSON: {e}") from None


# --------------------------------------------------------------------------- archives


def _member_parts(name: str) -> list[str] | None:
    """The components of an archive member name, or None when it is absolute or climbs out."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or ":" in parts[0]:
        return None
    return parts


def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


class _Member:
    __slots__ = ("name", "kind", "size", "link", "mode", "info")

    def __init__(self, name, kind, size=0, link=None, mode=0o644, info=None):
        self.name, self.kind, self.size, self.link, self.mode, self.info = name, kind, size, link, mode, info


def _check_total(total: int, name: str, refuse, max_bytes: int, max_ratio: float, size: int) -> None:
    if total > max_bytes:
        refuse(name, f"takes the total size past the limit of {max_bytes} bytes (max_bytes); "
                     f"nothing was extracted")
    if total > _RATIO_FLOOR and total > max_ratio * size:
        refuse(name, f"takes the total size to {total} bytes, more than {max_ratio:g} times the "
                     f"archive's {size} bytes (max_ratio: a decompression bomb?); nothing was extracted")


def _tar_members(tf, refuse, max_bytes: int, max_members: int, max_ratio: float, size: int) -> list[_Member]:
    out, total = [], 0
    while True:
        m = tf.next()
        if m is None:
            return out
        if len(out) >= max_members:
            refuse(m.name, f"is beyond the limit of {max_members} members (max_members)")
        if m.isreg():
            total += m.size
            _check_total(total, m.name, refuse, max_bytes, max_ratio, size)
            out.append(_Member(m.name, "file", m.size, mode=m.mode, info=m))
        elif m.isdir():
            out.append(_Member(m.name, "dir", mode=m.mode, info=m))
        elif m.issym():
            out.append(_Member(m.name, "symlink", link=m.linkname, info=m))
        elif m.islnk():
            out.append(_Member(m.name, "hardlink", link=m.linkname, info=m))
        else:
            refuse(m.name, "is a device, FIFO or other special file")


def _zip_members(zf, refuse, max_bytes: int, max_members: int, max_ratio: float, size: int) -> list[_Member]:
    infos = zf.infolist()
    if len(infos) > max_members:
        refuse(infos[max_members].filename, f"is beyond the limit of {max_members} members (max_members)")
    out, total = [], 0
    for info in infos:
        kind = (info.external_attr >> 16) & 0o170000
        if kind == 0o120000:
            refuse(info.filename, "is a symbolic link (links are not extracted from zip archives)")
        if kind not in (0, 0o100000, 0o040000):
            refuse(info.filename, "is a device, FIFO or other special file")
        if info.is_dir():
            out.append(_Member(info.filename, "dir", info=info))
            continue
        total += info.file_size
        _check_total(total, info.filename, refuse, max_bytes, max_ratio, size)
        mode = (info.external_attr >> 16) & 0o777 or 0o644
        out.append(_Member(info.filename, "file", info.file_size, mode=mode, info=info))
    return out


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *,
                 max_bytes: int = EXTRACT_MAX_BYTES, max_members: int = EXTRACT_MAX_MEMBERS,
                 max_ratio: float = EXTRACT_MAX_RATIO) -> list[Path]:
    """Extract a ``.tar[.gz|.bz2|.xz]`` or ``.zip`` archive into ``dest``, safely.

    Every member's final path is resolved (links included) and must stay inside ``dest``;
    descend writes the files itself (it never calls ``tarfile``'s ``extract``, so the
    result does not depend on the Python version's tar filters). Refused with
    :class:`UnsafeFileError` naming the member, before anything is written where the
    check can be made from the member list: absolute names, ``..`` components, device /
    FIFO members, more than ``max_members`` members, more than ``max_bytes`` bytes in
    total, or (past 16 MiB) more than ``max_ratio`` times the archive's own size, a
    decompression bomb (sizes as the headers say, checked as they are read, so a bomb is
    refused without being decompressed; the bytes actually written are counted too). Then:

    * folders and regular files are written first (modes ``0o755`` / ``0o644``, plus
      the owner's execute bit when the archive sets it; no owners, no set-uid bits),
      each under a parent whose real path is inside ``dest``;
    * a hard link becomes a copy of a regular file extracted earlier from the archive;
    * symbolic links are created last, each only once the path it points to exists and
      resolves (through every link already made) inside ``dest``; a link to something
      outside, a dangling or circular link, and a link at a path the archive also writes
      below (``a -> .``, then ``a/b``) are refused. A created link never changes
      afterwards, so nothing created later can redirect it outside.

    On a refusal or an error after writing began, what was written is removed again.

    Args:
        archive: the archive file.
        dest: the target folder (created if missing).
        max_bytes: the most bytes extracted in total (default :data:`EXTRACT_MAX_BYTES`, 1 GiB).
        max_members: the most members (default :data:`EXTRACT_MAX_MEMBERS`, 100,000).
        max_ratio: the most extracted bytes per archive byte once past 16 MiB (default
            :data:`EXTRACT_MAX_RATIO`, 100; real data sets compress 1-10 times).

    Returns:
        the extracted paths, in the archive's order.

    Example:
        >>> import tempfile, pathlib, zipfile
        >>> d = pathlib.Path(tempfile.mkdtemp()); z = d / "a.zip"
        >>> with zipfile.ZipFile(z, "w") as f:
        ...     f.writestr("x/y.txt", "hi")
        >>> [p.name for p in safe_extract(z, d / "out")]
        ['y.txt']
    """
    from descend._validation import check_int, check_range

    check_int("max_bytes", max_bytes, ge=0)
    check_int("max_members", max_members, ge=0)
    check_range("max_ratio", max_ratio, gt=0)
    archive, dest = Path(archive), Path(dest)
    _require_file(archive)

    def refuse(member: str, why: str):
        raise UnsafeFileError(f"{archive} was refused: member {member!r} {why}.")

    is_zip = zipfile.is_zipfile(archive)
    try:
        container = zipfile.ZipFile(archive) if is_zip else tarfile.open(archive)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CorruptFileError(f"{archive} is not a readable tar or zip archive: "
                               f"{' '.join(str(e).split())}") from None

    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    created: list[str] = []
    written = [0]

    def place(parts: list[str], member: str) -> str:
        """The target path of ``parts``, its parent folders created, checked to be inside."""
        parent = root
        for p in parts[:-1]:
            parent = os.path.join(parent, p)
            if not os.path.lexists(parent):
                os.mkdir(parent, 0o755)
                created.append(parent)
            real = os.path.realpath(parent)
            if not _inside(root, real) or not os.path.isdir(real):
                refuse(member, "would be written outside the target folder (through a link)")
        target = os.path.join(parent, parts[-1])
        if not _inside(root, os.path.realpath(parent)):
            refuse(member, "would be written outside the target folder")
        return target

    def write_file(target: str, source, mode: int, member: str) -> None:
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)
        elif os.path.isdir(target):
            refuse(member, "is a file where the archive (or the target folder) has a folder")
        perm = 0o755 if mode & 0o100 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), perm)
        created.append(target)
        with os.fdopen(fd, "wb") as out:
            while True:
                block = source.read(1 << 20)
                if not block:
                    break
                written[0] += len(block)
                if written[0] > max_bytes:
                    refuse(member, f"takes the extracted size past the limit of {max_bytes} bytes "
                                   f"(max_bytes)")
                out.write(block)

    out: list[Path] = []
    try:
        with container:
            members = (_zip_members if is_zip else _tar_members)(
                container, refuse, max_bytes, max_members, max_ratio, archive.stat().st_size)
            parsed = []
            for m in members:
                parts = _member_parts(m.name)
                if parts is None:
                    refuse(m.name, "has an absolute path or a '..' component (it would be written "
                                   "outside the target folder)")
                parsed.append(parts)
            for m, parts in zip(members, parsed):  # links: what the names alone show
                if m.kind == "hardlink" and _member_parts(m.link or "") is None:
                    refuse(m.name, f"links outside the target folder ({m.link!r})")
                if m.kind == "symlink":
                    lexical = os.path.normpath(os.path.join(*parts[:-1], m.link or "")) if m.link else ""
                    if not m.link or os.path.isabs(m.link) or "\x00" in m.link or \
                            lexical == ".." or lexical.startswith(".." + os.sep):
                        refuse(m.name, f"links outside the target folder ({m.link!r})")
            links = {"/".join(p) for m, p in zip(members, parsed) if m.kind == "symlink"}
            for m, parts in zip(members, parsed):
                for i in range(1, len(parts)):
                    if "/".join(parts[:i]) in links:
                        refuse(m.name, f"is written through the link {'/'.join(parts[:i])!r}")
            files: dict[str, str] = {}
            for m, parts in zip(members, parsed):  # 1. folders and files
                if m.kind == "dir":
                    target = place(parts, m.name)
                    if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
                        refuse(m.name, "is a folder where the target folder has a file or link")
                    if not os.path.lexists(target):
                        os.mkdir(target, 0o755)
                        created.append(target)
                elif m.kind == "file":
                    target = place(parts, m.name)
                    src = container.open(m.info) if is_zip else container.extractfile(m.info)
                    with src:
                        write_file(target, src, m.mode, m.name)
                    files["/".join(parts)] = target
            for m, parts in zip(members, parsed):  # 2. hard links: copies of extracted files
                if m.kind != "hardlink":
                    continue
                src_parts = _member_parts(m.link or "")
                src = files.get("/".join(src_parts)) if src_parts else None
                if src is None:
                    refuse(m.name, f"is a hard link to {m.link!r}, which is not a file of the archive")
                target = place(parts, m.name)
                with open(src, "rb") as fh:
                    write_file(target, fh, os.stat(src).st_mode, m.name)
                files["/".join(parts)] = target
            pending = [(m, parts) for m, parts in zip(members, parsed) if m.kind == "symlink"]
            while pending:  # 3. symbolic links, each once its target exists
                left = []
                for m, parts in pending:
                    target = place(parts, m.name)
                    if os.path.lexists(target):
                        refuse(m.name, "is a link at a path that already exists")
                    pointed = os.path.join(os.path.dirname(target), m.link)
                    if not _inside(root, os.path.realpath(pointed)):
                        refuse(m.name, f"links outside the target folder ({m.link!r})")
                    if not os.path.exists(pointed):
                        left.append((m, parts))
                        continue
                    os.symlink(m.link, target)
                    created.append(target)
                if len(left) == len(pending):
                    m = left[0][0]
                    refuse(m.name, f"is a link to {m.link!r}, which the archive does not hold "
                                   f"(dangling or circular links are refused)")
                pending = left
            out = [dest.joinpath(*parts) for parts in parsed]
    except BaseException as e:
        for p in reversed(created):  # what was written goes again
            with contextlib.suppress(OSError):
                if os.path.islink(p) or not os.path.isdir(p):
                    os.unlink(p)
                else:
                    os.rmdir(p)
        if _damaged(e):
            raise CorruptFileError(f"{archive} cannot be read: {type(e).__name__}: "
                                   f"{' '.join(str(e).split())}") from None
        raise
    return out


def _damaged(e: BaseException) -> bool:
    """Whether ``e`` is a decompressor's or an archive reader's complaint about the bytes
    (a disk error, an interrupt or a refusal is not)."""
    import lzma
    import zlib
    if isinstance(e, FileSafetyError):
        return False
    if isinstance(e, OSError):  # gzip.BadGzipFile, bz2's "Invalid data stream": no errno
        return e.errno is None
    return isinstance(e, (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
                          NotImplementedError, RuntimeError, ValueError))


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
