"""Run-time conventions shared by every part: device choice, seeding, atomic files, provenance."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import hashlib
import io
import json
import os
import platform
import random
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

AUTO_DEVICE = "FSL_CORE_AUTO_DEVICE"
"""The environment variable naming the device that ``"auto"`` stands for ("cpu", "cuda", "cuda:N"); unset,
CUDA when present, else CPU. The test suite sets it to "cpu" (unless it is set already): its bit-exact checks
hold on CPU, and its CUDA tests ask for "cuda" by name."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks the device named by ``FSL_CORE_AUTO_DEVICE`` when it is set, else CUDA when present,
    else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        chosen = os.environ.get(AUTO_DEVICE, "").strip()
        if chosen in ("", "auto"):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return resolve_device(chosen)
        except ValueError as error:
            raise ValueError(
                f"{AUTO_DEVICE}={chosen!r} (what device 'auto' stands for): {error}, or unset {AUTO_DEVICE}"
            ) from None
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'"
        )
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(
            f"device={device!r}: this machine has {count} CUDA device{'s' if count > 1 else ''}; expected "
            f"'cuda' or one of {[f'cuda:{index}' for index in range(count)]}"
        )
    return resolved


def device_name(device: str | torch.device = "cpu") -> str:
    """What a benchmark table should name: the GPU's model, or the CPU's (Linux /proc/cpuinfo, else ``platform``).

    On x86 the CPU's family and model numbers follow its name: virtual machines often show only "AMD EPYC",
    and two EPYC generations ran this project's matrix products at 475 and 171–214 GFLOP/s on two cores.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            numbers = (
                f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
            )
            return fields["model name"] + numbers
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes in bfloat16 natively, so that bfloat16 autocast (``amp``) speeds it up: a
    CUDA GPU of compute capability 8.0 or more (Ampere on; ``torch.cuda.is_bf16_supported()`` also counts
    older GPUs that emulate it), or a CPU with AMX or AVX-512 BF16 instructions (elsewhere the CPU would emulate
    bfloat16, more slowly than it computes in float32)."""
    device = torch.device(device)
    if device.type == "cuda":  # from compute capability 8 (Ampere) on; older GPUs emulate it
        return torch.version.hip is not None or torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


# -- CPU threads ---------------------------------------------------------------------------------------------
def usable_cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity set where the system reports one (Linux), else
    ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """The processes of this machine's ``torchrun`` launch (``LOCAL_WORLD_SIZE``), 1 outside one."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(local) if local.isdigit() and int(local) > 0 else 1


THREADS_REASON = "FSL_CORE_THREADS_REASON"
"""The environment variable that says why ``OMP_NUM_THREADS`` is set, when a parent set it for its children (a
sweep sharing the cores between its kernels); ``choose_cpu_threads`` gives it as the reason."""


def choose_cpu_threads(threads: int = 0) -> tuple[int, str]:
    """The number of intra-op CPU threads ``use_cpu_threads(threads)`` sets, and why, in words.

    ``threads > 0`` is taken as given. ``0`` takes, in this order: the cores of this machine divided between
    the local processes of a ``torchrun`` launch (``LOCAL_WORLD_SIZE``); an ``OMP_NUM_THREADS`` setting of the
    environment; every core this process may use (``usable_cpu_cores``).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(
            f"threads={threads!r}: expected a non-negative integer (0: every core this process may use)"
        )
    if threads > 0:
        return threads, "as asked"
    cores = usable_cpu_cores()
    local = local_processes()
    if local > 1:
        return max(1, cores // local), f"{cores} cores shared by {local} processes on this machine"
    setting = os.environ.get("OMP_NUM_THREADS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(
                f"OMP_NUM_THREADS={setting!r} in the environment is not a positive integer; set it to the "
                "number of threads, unset it (every core), or give threads explicitly"
            )
        return int(setting), os.environ.get(THREADS_REASON) or "OMP_NUM_THREADS of the environment"
    total = os.cpu_count() or cores
    return (
        cores,
        "every core of this machine"
        if cores >= total
        else f"the {cores} of {total} cores this process may use",
    )


def use_cpu_threads(threads: int = 0) -> int:
    """Set torch's intra-op CPU threads for this process (``choose_cpu_threads``) and return the number in
    use, ``torch.get_num_threads()``: the number to record with a run."""
    count, _ = choose_cpu_threads(threads)
    torch.set_num_threads(count)
    return torch.get_num_threads()


# -- seeds ---------------------------------------------------------------------------------------------------
# Everything random in fsl_core is a pure function of integer "words" (a run's seed, a stream tag, an epoch,
# an episode index, ...) mixed by NumPy's SeedSequence, which is well spread and the same on every platform.

TORCH_SEED_MASK = (1 << 63) - 1
"""Derived seeds are kept to 63 bits: a seed for Python, NumPy and torch that is non-negative as a signed
64-bit integer."""

SEED_WORD_MASK = (1 << 64) - 1
"""A SeedSequence word of a NumPy generator is taken modulo 2**64 (a negative seed becomes its two's
complement), so every 64-bit integer names a stream."""


def derive_seed(*words: int) -> int:
    """A 63-bit seed (``TORCH_SEED_MASK``) mixed from non-negative integer ``words`` by SeedSequence.

    Raises ``ValueError`` for a negative word.
    """
    low, high = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
    return ((int(high) << 32) | int(low)) & TORCH_SEED_MASK


def seeded_generator(*words: int) -> np.random.Generator:
    """A NumPy generator (PCG64) that is a pure function of integer ``words``, each taken modulo 2**64
    (``SEED_WORD_MASK``); it never touches the global generators."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([w & SEED_WORD_MASK for w in words])))


def seed_host_generators(seed: int) -> None:
    """Seed Python, NumPy (with ``seed`` modulo 2**32) and torch's CPU generator from one integer, leaving the
    GPUs' generators alone: what the training augmentation draws, image by image, on the host."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (with ``seed`` modulo 2**32) and torch (all devices) from one integer."""
    seed_host_generators(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The block runs ``model`` moved to ``device`` and in eval mode (BatchNorm's running statistics, no
    dropout); afterwards every submodule is put back in the mode it had, a frozen backbone of a model in
    training included (the model stays on ``device``)."""
    modes = [(module, module.training) for module in model.modules()]
    model.to(device).eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while ``termination_as_interrupt`` was in force."""


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, ``timeout``, a batch system's pre-emption) stops the main thread as
    Ctrl-C does, raising ``Terminated``, a ``KeyboardInterrupt``: the caller's own handling of an interruption
    (what is kept, where to resume) serves both. Only SIGTERM's default (ending the process at once) is replaced,
    and restored after the block: outside the main thread, or where SIGTERM is ignored or handled by someone else
    (a batch tool that requeues the job), nothing changes."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def some_names(names: Sequence[str], limit: int = 8, separator: str = ", ") -> str:
    """The first ``limit`` of ``names`` joined by ``separator``, and how many more there are, for messages
    ("a, b, c and 57 more"; ``separator="; "`` for entries holding commas); "none" when there are none."""
    if not names:
        return "none"
    shown = separator.join(names[:limit])
    return shown + (f"{separator.rstrip()} and {len(names) - limit} more" if len(names) > limit else "")


def blocking_file(path: str | Path) -> Path | None:
    """The file (not folder) at ``path`` or at one of its parents, which keeps a folder from being made at
    ``path``; None when there is none."""
    path = Path(path).absolute()
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def folder_to_make(path: str | Path) -> Path | None:
    """The outermost missing folder above the file ``path``, which writing it makes (None when its folder
    exists): named when it is made, so that a misspelt folder does not go unseen."""
    missing = [p for p in Path(path).absolute().parents if not p.exists()]
    return missing[-1] if missing else None


_ON_COMMAND_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fsl_core_on_command_line", default=False
)
_Main = TypeVar("_Main", bound=Callable[..., int])


def command_line(main: _Main) -> _Main:
    """Decorate the ``main`` of a command line: while it runs, ``way_out`` words a way out as the flag a terminal
    user types (``--overwrite``), not as the Python call (``overwrite=True``)."""

    @functools.wraps(main)
    def speaking_in_flags(*args: Any, **kwargs: Any) -> int:
        token = _ON_COMMAND_LINE.set(True)
        try:
            return main(*args, **kwargs)
        finally:
            _ON_COMMAND_LINE.reset(token)

    return speaking_in_flags  # type: ignore[return-value]


_CALLER_WORDS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "caller_words", default=()
)


@contextlib.contextmanager
def in_words(words: dict[str, str]) -> Iterator[None]:
    """Within the block, ``way_out`` names things as the caller does: each key of ``words``, a name or setting as
    the library says it (``"run_dir"``, ``"overwrite=True"``), is said as its value (notebook 02, whose training
    folder is its ``train_dir`` parameter: ``{"run_dir": "train_dir"}``)."""
    token = _CALLER_WORDS.set(tuple(words.items()))
    try:
        yield
    finally:
        _CALLER_WORDS.reset(token)


def way_out(python: str, flag: str) -> str:
    """The way out of an error in the words of the user at hand: ``flag`` inside a command line's ``main``
    (``command_line``), ``python`` from Python and in notebooks ("" leaves it out), with the caller's own names
    for the library's where ``in_words`` gives them."""
    if _ON_COMMAND_LINE.get():
        return flag
    for name, words in _CALLER_WORDS.get():
        python = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", lambda _, said=words: said, python)
    return python


def did_you_mean(name: Any, known: Iterable[Any]) -> str:
    """The hint of an "unknown name" error: `` (did you mean 'x'?)`` where ``x`` is the entry of ``known``
    closest to a misspelt ``name`` (one that differs only in case first, else ``difflib.get_close_matches`` on
    their ``str``), or ``""`` if none is close. ``f"unknown setting {name!r}{did_you_mean(name, known)}"`` gives e.g.
    ``unknown setting 'wya' (did you mean 'way'?)``.
    """
    entries = [str(entry) for entry in known]
    same = [entry for entry in entries if entry.casefold() == str(name).casefold()]  # 'HMDRN' → 'hmdrn'
    close = same or difflib.get_close_matches(str(name), entries, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the source tree holding ``path`` (default: this package), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class NonFiniteError(ValueError):
    """A tensor about to be saved holds NaN or infinite values."""


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names (``a.b.0``) of the floating-point tensors in a nested dict/list/tuple holding NaN or ±inf."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return [] if bool(torch.isfinite(obj).all()) else [prefix or "<tensor>"]
        return []
    items: Any = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    )
    found = []
    for key, value in items:
        found += non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def new_file_mode() -> int:
    """Permissions of a newly created file under the current umask: ``0o666 & ~umask``.

    Reading the umask sets it for a moment, process-wide: code that writes files from several threads reads
    this once beforehand and passes it to ``atomic_write_bytes(..., mode=...)``.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(data: bytes, path: str | Path, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder (``.<name>.*.tmp``) and an
    atomic rename; the file gets permissions ``mode`` (default ``new_file_mode()``).

    A crash or kill at any moment leaves either the old ``path`` or the new one, never a mix; an error (no space
    left, no permission) names ``path`` and leaves the old file as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error
    try:
        # mkstemp creates 0600; give the file the usual permissions
        os.chmod(tmp, new_file_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OSError(
                error.errno, f"cannot write {path}: {error.strerror}; the previous {path.name} is unchanged"
            ) from error
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file under ``path`` and never saves a NaN or an inf.

    Raises ``NonFiniteError`` naming the non-finite tensors (nothing is written).
    """
    bad = non_finite_tensors(obj)
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise NonFiniteError(f"not writing {path}: {len(bad)} tensors hold NaN or inf values ({shown})")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes((json.dumps(obj, indent=2, default=str) + "\n").encode(), path)


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file or folder (``~`` expanded, links followed)."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checked_checkpoint_file(path: str | Path) -> Path:
    """``path``, absolute, when it is a file; otherwise the error with the way out.

    Raises:
        IsADirectoryError: ``path`` is a folder (a run folder, say); the message names the checkpoints in it.
        FileNotFoundError: ``path`` does not exist (``checkpoint_not_found``).
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():  # a training run's folder, or a notebook run's (whose training run is in train/)
        inside = sorted((*path.glob("*.pt"), *path.glob("train/*.pt")), key=lambda p: (len(p.parts), p.name))
        inside.sort(key=lambda p: p.name != "best.pt")  # best.pt first: the checkpoint to use
        hint = f": {inside[0]} is one" if inside else f"; {path} holds no .pt file"
        raise IsADirectoryError(f"checkpoint {path} is a folder; give a checkpoint file{hint}")
    if not path.is_file():
        raise checkpoint_not_found(path)
    return path


def checkpoint_not_found(path: str | Path) -> FileNotFoundError:
    """The error for a checkpoint file that does not exist, with the way out: what its folder holds (the
    closest name first), or that the folder is missing too."""
    path = Path(path).expanduser().absolute()
    if not path.parent.is_dir():
        hint = f" (its folder {path.parent} does not exist either)"
    elif found := sorted(entry.name for entry in path.parent.glob("*.pt")):
        hint = f"; {path.parent} holds {', '.join(found)}{did_you_mean(path.name, found)}"
    else:
        hint = f"; {path.parent} holds no .pt file"
    return FileNotFoundError(f"checkpoint {path} does not exist{hint}")


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` whose errors say in plain words why a file cannot be read.

    Only tensors and plain containers (dict, list, tuple, numbers, strings) are loaded: a file that holds
    other Python objects is refused, since unpickling them can run arbitrary code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        ValueError: the file is empty, a text file, neither a zip archive (the format of ``torch.save``) nor
            a legacy torch pickle, damaged or cut short, or holds objects other than tensors and plain
            containers. The message names the file and what it holds.
        OSError: the file cannot be opened (e.g. no permission); the message names it.
    """
    import pickle
    import re
    import zipfile

    def first_line(error: BaseException) -> str:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return lines[0] if lines else type(error).__name__

    path = checked_checkpoint_file(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise OSError(error.errno, f"cannot read checkpoint {path}: {error.strerror}") from error
    if size == 0:
        raise ValueError(
            f"checkpoint {path} is empty (0 bytes): the write that made it did not finish; "
            "save or copy it again"
        )
    # Text: valid UTF-8 (a character cut by the 4 KiB window allowed) without control characters.
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as error:
        text = head[: error.start].decode("utf-8") if error.start >= len(head) - 3 else None
    if text and all(ch.isprintable() or ch in "\t\n\r\f" for ch in text):
        hint = ""
        if text.startswith("version https://git-lfs"):
            hint = " (a Git LFS pointer: fetch the real file with `git lfs pull`)"
        elif text.lstrip().lower().startswith(("<!doctype html", "<html")):
            hint = " (a web page: the download saved a page instead of the file)"
        raise ValueError(
            f"checkpoint {path} is a text file, not a checkpoint{hint}; it begins with {ascii(text[:60])}"
        )
    legacy_magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # pickled torch.serialization.MAGIC_NUMBER
    is_zip = head.startswith(b"PK\x03\x04")
    if not is_zip and not head.startswith(legacy_magic):
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            kind = f"a plain Python pickle (protocol {head[1]}) that torch.save did not write"
        elif head[8:9] == b"{":
            kind = "apparently a safetensors file (read it with safetensors.torch.load_file)"
        else:
            kind = f"of an unknown format (first bytes: {head[:16].hex(' ')})"
        raise ValueError(
            f"checkpoint {path} is neither a zip archive (the format of torch.save) nor a legacy torch "
            f"pickle: it is {kind}"
        )
    if is_zip and not zipfile.is_zipfile(path):
        raise ValueError(
            f"checkpoint {path} is a zip archive whose end is missing ({size} bytes): the write or copy "
            "that made it did not finish; save or copy it again"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "Weights only load failed" not in message and "WeightsUnpickler" not in message:
            raise ValueError(f"checkpoint {path} is damaged: {first_line(error)}") from error
        found = re.search(r"GLOBAL ([\w.]+)", message)
        example = f" (here {found.group(1)})" if found else ""
        raise ValueError(
            f"checkpoint {path} holds Python objects other than tensors and plain containers{example}; "
            "fsl_core does not load such files, since reading them can run arbitrary code. Save the "
            "weights as tensors only (e.g. a dict holding model.state_dict()) to make a file it can read"
        ) from None
    except Exception as error:  # torch reports damaged archives and pickles with many error types
        what = "zip archive" if is_zip else "legacy torch pickle"
        raise ValueError(
            f"checkpoint {path} is a {what} that torch cannot read (damaged, cut short, or not written by "
            f"torch.save): {first_line(error)}"
        ) from error
