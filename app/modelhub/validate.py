"""Checking a GGUF text model + mmproj pair before llama.cpp touches it.

llama.cpp aborts the whole process (GGML_ASSERT) on some mismatches instead of returning an error,
so anything we can check from the metadata we check here first, with a message a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InputError

GGUF_MAGIC = b"GGUF"


class ModelFileError(InputError):
    """A model file is missing, corrupt, of the wrong kind, or does not match its partner."""


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's data lies in a GGUF file, so it can be memory-mapped without re-parsing."""

    offset: int  # absolute byte offset in the file
    n_bytes: int
    ggml_type: int  # a gguf.GGMLQuantizationType value
    shape: tuple[int, ...]  # numpy order (rows, columns): (n_vocab, n_embd) for token_embd


@dataclass(frozen=True)
class PairInfo:
    model: Path
    mmproj: Path
    n_embd: int
    n_layers: int
    vocab_size: int
    file_type: int | None
    projector: str
    token_embd: TensorLocation | None = None  # the input embedding matrix (see app.engine.token_embd)


def _read_meta(path: Path, role: str) -> dict:
    import gguf

    if not path.exists():
        raise ModelFileError(f"{path}: {role} file not found")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; expected a .gguf {role} file")
    if not path.is_file():  # a FIFO or a device would block the open or never end
        raise ModelFileError(f"{path}: not a regular file; expected a .gguf {role} file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the {role} ({e.strerror})") from None
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (bad magic); re-download or re-convert the {role}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/IndexError/struct.error on truncation
        raise ModelFileError(f"{path}: corrupt or truncated GGUF {role} ({type(e).__name__}: {e})") from e
    meta = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception:
            continue
    meta["__n_tensors__"] = len(reader.tensors)
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            meta["__token_embd__"] = TensorLocation(int(t.data_offset), int(t.n_bytes), int(t.tensor_type),
                                                    tuple(int(d) for d in reversed(t.shape)))
    return meta


def check_pair(model: Path | str, mmproj: Path | str) -> PairInfo:
    """Validate that ``model`` is a Qwen2.5-VL text GGUF and ``mmproj`` its vision projector."""
    model, mmproj = Path(model), Path(mmproj)
    m = _read_meta(model, "model")
    arch = m.get("general.architecture")
    if arch == "clip":
        raise ModelFileError(f"{model}: this is a vision projector (mmproj), not the text model; swap the two files")
    if arch != "qwen2vl":
        raise ModelFileError(
            f"{model}: architecture is {arch!r}; Duet runs MMDuet2 / Qwen2.5-VL models (architecture 'qwen2vl')")
    if "qwen2vl.rope.dimension_sections" not in m:
        raise ModelFileError(f"{model}: lacks qwen2vl.rope.dimension_sections (M-RoPE); re-convert it with `duet models convert`")
    p = _read_meta(mmproj, "mmproj")
    if p.get("general.architecture") != "clip":
        raise ModelFileError(
            f"{mmproj}: architecture is {p.get('general.architecture')!r}; expected a vision projector ('clip')")
    proj = p.get("clip.projector_type") or p.get("clip.vision.projector_type")
    if proj != "qwen2.5vl_merger":
        raise ModelFileError(f"{mmproj}: projector type {proj!r}; MMDuet2 needs a 'qwen2.5vl_merger' mmproj")
    n_embd = int(m.get("qwen2vl.embedding_length", 0))
    proj_dim = int(p.get("clip.vision.projection_dim", -1))
    if proj_dim != n_embd:
        raise ModelFileError(
            f"{mmproj} does not belong to {model}: it projects to {proj_dim} dimensions but the model has {n_embd}")
    return PairInfo(model, mmproj, n_embd, int(m.get("qwen2vl.block_count", 0)),
                    len(m.get("tokenizer.ggml.tokens", [])), m.get("general.file_type"), proj,
                    m.get("__token_embd__"))


def find_mmproj(model: Path) -> Path | None:
    """The mmproj beside a model: ``mmproj-<stem>.gguf`` first, else the only ``mmproj*.gguf`` there."""
    exact = model.with_name(f"mmproj-{model.name}")
    if exact.exists():
        return exact
    candidates = sorted(model.parent.glob("mmproj*.gguf"))
    return candidates[0] if len(candidates) == 1 else None
