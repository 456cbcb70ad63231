"""umT5 tokenisation as the Wan 2.1 wrapper does it: text cleaning + sentencepiece, EOS, no BOS, pad/truncate.

Cleaning (official ``HuggingfaceTokenizer(clean='whitespace')``): ``ftfy.fix_text`` -> ``html.unescape`` twice ->
strip -> collapse every whitespace run to one space. Then the sentencepiece ids, truncated to ``text_len - 1``,
EOS appended, padded with the pad id to ``text_len``; the mask is 1 on real tokens and on the EOS.

Tokenizer sources: the raw ``.model`` bytes (ComfyUI embeds them in its umT5 files as a uint8 tensor named
``spiece_model``), a ``.model`` file, or a folder holding ``spiece.model`` (or only a Hugging Face
``tokenizer.json`` of a Unigram model, which is converted to a sentencepiece model in memory).
"""
from __future__ import annotations

import base64
import html
import json
import re
import struct
from pathlib import Path

import torch

SPIECE_TENSOR_KEY = "spiece_model"
SPIECE_FILE_NAMES = ("spiece.model", "tokenizer.model")
HF_TOKENIZER_JSON = "tokenizer.json"
# Upstream collapses whitespace with the ``regex`` package, whose \s is the Unicode White_Space set; Python's ``re``
# \s would also match U+001C..U+001F, so the set is spelled out.
_WHITESPACE_RUN = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


class TokenizerError(ValueError):
    """A tokenizer that is missing, unreadable, or does not fit the text encoder."""


def clean_prompt(text: str) -> str:
    """Official Wan cleaning: ftfy fix, HTML-unescape twice, strip, collapse whitespace."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip()


class UMT5Tokenizer:
    """Sentencepiece umT5 tokenizer with Wan's cleaning, EOS, padding and truncation.

    Args:
        model_proto: the bytes of a sentencepiece ``.model`` file.
        text_len: tokens per prompt including the EOS (512 for Wan).
        pad_id, eos_id: expected special ids; a model with other ids is rejected.
    """

    def __init__(self, model_proto: bytes, text_len: int, pad_id: int = 0, eos_id: int = 1):
        import sentencepiece

        if text_len < 2:
            raise TokenizerError(f"text_len must be >= 2 (one token + EOS), got {text_len}")
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(bytes(model_proto))
        except (RuntimeError, OSError) as exc:
            raise TokenizerError(
                f"the tokenizer data is not a valid sentencepiece model ({exc}). Give the umT5 tokenizer: "
                f"the spiece.model file of google/umt5-xxl, or a ComfyUI umT5 file that embeds '{SPIECE_TENSOR_KEY}'."
            ) from None
        if self.sp.pad_id() != pad_id or self.sp.eos_id() != eos_id:
            raise TokenizerError(
                f"tokenizer special ids pad={self.sp.pad_id()}, eos={self.sp.eos_id()} differ from the umT5 ids "
                f"pad={pad_id}, eos={eos_id}: this is not the umT5 tokenizer. Use the spiece.model of google/umt5-xxl."
            )
        self.text_len = int(text_len)
        self.pad_id = int(pad_id)
        self.eos_id = int(eos_id)

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def token_ids(self, text: str) -> list[int]:
        """Ids of one cleaned, truncated prompt with the EOS appended (length <= text_len)."""
        ids = self.sp.encode(clean_prompt(text), out_type=int)
        return ids[: self.text_len - 1] + [self.eos_id]

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise a batch.

        Returns:
            ids [B, text_len] int64 (pad id after the EOS), mask [B, text_len] int64 (1 on tokens and EOS).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.full((len(prompts), self.text_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.text_len), dtype=torch.long)
        for row, text in enumerate(prompts):
            if not isinstance(text, str):
                raise TypeError(f"prompt {row} is {type(text).__name__}, expected str")
            tokens = self.token_ids(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask

    def was_truncated(self, text: str) -> bool:
        """True when the cleaned prompt has more than text_len - 1 tokens (the rest is dropped, as upstream)."""
        return len(self.sp.encode(clean_prompt(text), out_type=int)) > self.text_len - 1


def spiece_bytes_from_tensor(tensor: torch.Tensor) -> bytes:
    """The ``.model`` bytes stored in a 1-D uint8 tensor (ComfyUI's ``spiece_model`` entry)."""
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise TokenizerError(
            f"'{SPIECE_TENSOR_KEY}' should be a 1-D uint8 tensor, found {tensor.dtype} {tuple(tensor.shape)}"
        )
    return tensor.cpu().numpy().tobytes()


def read_tokenizer_bytes(source) -> bytes:
    """Sentencepiece model bytes from bytes, a uint8 tensor, a ``.model`` file, a ``tokenizer.json`` or a folder."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, torch.Tensor):
        return spiece_bytes_from_tensor(source)
    path = Path(source)
    if path.is_dir():
        for name in SPIECE_FILE_NAMES:
            if (path / name).is_file():
                return (path / name).read_bytes()
        if (path / HF_TOKENIZER_JSON).is_file():
            return spiece_from_tokenizer_json(path / HF_TOKENIZER_JSON)
        raise TokenizerError(
            f"tokenizer folder {path} holds none of {', '.join(SPIECE_FILE_NAMES + (HF_TOKENIZER_JSON,))}. "
            f"Point to the spiece.model of google/umt5-xxl (or the folder that contains it)."
        )
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist. Give the umT5 spiece.model file or its folder.")
    if path.name.endswith(".json"):
        return spiece_from_tokenizer_json(path)
    return path.read_bytes()


def load_tokenizer(source, text_len: int, pad_id: int = 0, eos_id: int = 1) -> UMT5Tokenizer:
    """``UMT5Tokenizer`` from any source accepted by :func:`read_tokenizer_bytes`."""
    return UMT5Tokenizer(read_tokenizer_bytes(source), text_len=text_len, pad_id=pad_id, eos_id=eos_id)


# --- tokenizer.json (Unigram) -> sentencepiece ModelProto --------------------------------------------------------
# Protobuf field numbers of sentencepiece_model.proto (ModelProto / SentencePiece / TrainerSpec / NormalizerSpec).
_PIECE_NORMAL, _PIECE_UNKNOWN, _PIECE_CONTROL = 1, 2, 3
_UNIGRAM = 1


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values are written as 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _field_float(number: int, value: float) -> bytes:
    return _varint((number << 3) | 5) + struct.pack("<f", float(value))


def _find_step(spec: dict | None, kind: str) -> dict | None:
    if not spec:
        return None
    if spec.get("type") == kind:
        return spec
    for sub in spec.get("normalizers", []) + spec.get("pretokenizers", []):
        found = _find_step(sub, kind)
        if found:
            return found
    return None


def spiece_from_tokenizer_json(path: Path) -> bytes:
    """Build sentencepiece ``.model`` bytes from a Hugging Face Unigram ``tokenizer.json`` (T5/umT5 style)."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        model = spec["model"]
    except (OSError, ValueError, KeyError) as exc:
        raise TokenizerError(f"cannot read {path} as a Hugging Face tokenizer.json ({exc})") from None
    if model.get("type") != "Unigram":
        raise TokenizerError(
            f"{path} holds a {model.get('type')} tokenizer; umT5 uses a sentencepiece Unigram model. "
            f"Give the spiece.model of google/umt5-xxl instead."
        )
    vocab = model["vocab"]
    unk_id = int(model.get("unk_id", 2))
    specials = {tok["content"]: int(tok["id"]) for tok in spec.get("added_tokens", []) if tok.get("special")}
    special_ids = set(specials.values())
    pieces = bytearray()
    for idx, (piece, score) in enumerate(vocab):
        kind = _PIECE_UNKNOWN if idx == unk_id else _PIECE_CONTROL if idx in special_ids else _PIECE_NORMAL
        entry = _field_bytes(1, piece.encode("utf-8")) + _field_float(2, score) + _field_varint(3, kind)
        pieces += _field_bytes(1, entry)
    ids = {piece: idx for idx, (piece, _) in enumerate(vocab)}
    trainer = (
        _field_varint(3, _UNIGRAM) + _field_varint(4, len(vocab))
        + _field_varint(35, bool(model.get("byte_fallback", False)))
        + _field_varint(40, unk_id) + _field_varint(41, ids.get("<s>", -1))
        + _field_varint(42, ids.get("</s>", -1)) + _field_varint(43, ids.get("<pad>", -1))
    )
    charsmap_step = _find_step(spec.get("normalizer"), "Precompiled")
    charsmap = base64.b64decode(charsmap_step["precompiled_charsmap"]) if charsmap_step else b""
    metaspace = _find_step(spec.get("pre_tokenizer"), "Metaspace") or {}
    dummy_prefix = metaspace.get("prepend_scheme", "always") != "never" and metaspace.get("add_prefix_space", True)
    collapse = _find_step(spec.get("pre_tokenizer"), "WhitespaceSplit") is not None
    normalizer = (
        _field_bytes(1, b"nmt_nfkc" if charsmap else b"identity") + _field_bytes(2, charsmap)
        + _field_varint(3, bool(dummy_prefix)) + _field_varint(4, collapse) + _field_varint(5, True)
    )
    return bytes(pieces) + _field_bytes(2, trainer) + _field_bytes(3, normalizer)
