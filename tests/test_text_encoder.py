"""umT5 text encoder: tokenisation, model semantics, file formats, errors; fidelity against the umt5_tiny fixtures."""
import io
import json

import pytest
import torch
from conftest import fixture_file
from safetensors.torch import load_file, save_file

from steadydancer_core.loading.loaders import load_text_encoder
from steadydancer_core.models.text_encoder import (
    TextEncoder,
    UMT5Encoder,
    relative_position_buckets,
)
from steadydancer_core.models.text_encoder_config import T5Config
from steadydancer_core.models.tokenizer import (
    TokenizerError,
    UMT5Tokenizer,
    clean_prompt,
    load_tokenizer,
    read_tokenizer_bytes,
)

FIX = "umt5_tiny"
CORPUS = [
    "a woman dances gracefully in a sunlit studio",
    "the man waves and smiles at the camera while music plays",
    "spinning, jumping and landing softly on a wooden floor",
] * 20


# --- helpers ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_bytes() -> bytes:
    """A small umT5-style sentencepiece model (pad 0, eos 1, unk 2, no bos) trained on the spot."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=60, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )
    return buf.getvalue()


def random_official_sd(config: T5Config, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = UMT5Encoder(config)
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = (torch.rand_like(v) + 0.5) if k.endswith("norm1.weight") or k.endswith("norm2.weight") \
            or k == "norm.weight" else torch.randn_like(v) * 0.2
    # values that bf16 and fp16 both hold exactly, so the .pth (bf16) and .safetensors (fp16) copies agree
    return {k: v.bfloat16().half().float() for k, v in sd.items()}


def to_comfy(sd: dict) -> dict:
    """Official -> ComfyUI/HF names (test-side table, written independently of weights.py)."""
    out = {"shared.weight": sd["token_embedding.weight"], "encoder.final_layer_norm.weight": sd["norm.weight"]}
    names = {
        "norm1.weight": "layer.0.layer_norm.weight", "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight", "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight", "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight", "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            out[f"encoder.block.{i}.{names[rest]}"] = v
    return out


# --- tokenisation ------------------------------------------------------------------------------------------------
def test_clean_prompt_matches_wan_cleaning():
    assert clean_prompt("  a  man\n waves &amp; smiles  ") == "a man waves & smiles"
    assert clean_prompt("fish &amp;amp; chips") == "fish & chips"  # unescaped twice
    assert clean_prompt("\t\n") == ""
    assert clean_prompt("cafÃ© dancer") == "café dancer"  # ftfy repairs mojibake
    assert clean_prompt("a\u3000b\u2009c\xa0 d\r\ne") == "a b c d e"  # Unicode whitespace collapses too


def test_tokenizer_eos_no_bos_padding_and_mask(spm_bytes):
    tok = UMT5Tokenizer(spm_bytes, text_len=16)
    ids, mask = tok(["a woman dances", ""])
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == mask.dtype == torch.long
    n = int(mask[0].sum())
    assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all() and (mask[0, :n] == 1).all()
    assert ids[0, 0] != 1 and 1 not in ids[0, : n - 1].tolist()  # no BOS, EOS only at the end
    assert ids[1].tolist() == [1] + [0] * 15 and mask[1].tolist() == [1] + [0] * 15  # empty prompt: EOS only


def test_tokenizer_truncates_to_text_len_minus_one_plus_eos(spm_bytes):
    tok = UMT5Tokenizer(spm_bytes, text_len=8)
    long = " ".join(CORPUS[:3])
    full = tok.sp.encode(clean_prompt(long))
    ids, mask = tok([long])
    assert tok.was_truncated(long) and not tok.was_truncated("a")
    assert ids[0].tolist() == full[:7] + [1] and mask[0].tolist() == [1] * 8


def test_tokenizer_cleans_before_encoding(spm_bytes):
    tok = UMT5Tokenizer(spm_bytes, text_len=32)
    assert tok.token_ids("  the   man &amp;amp; the\tcamera ") == tok.token_ids("the man & the camera")


def test_tokenizer_sources(tmp_path, spm_bytes):
    (tmp_path / "spiece.model").write_bytes(spm_bytes)
    as_tensor = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
    for source in (spm_bytes, as_tensor, tmp_path / "spiece.model", tmp_path):
        assert read_tokenizer_bytes(source) == spm_bytes
    with pytest.raises(TokenizerError, match="spiece.model"):
        read_tokenizer_bytes(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds none of"):
        read_tokenizer_bytes(tmp_path / "empty")


def test_tokenizer_rejects_garbage_and_wrong_special_ids(tmp_path, spm_bytes):
    with pytest.raises(TokenizerError, match="not a valid sentencepiece model"):
        load_tokenizer(b"definitely not a model", text_len=8)
    with pytest.raises(TokenizerError, match="not the umT5 tokenizer"):
        UMT5Tokenizer(spm_bytes, text_len=8, pad_id=5)
    bpe = tmp_path / "tokenizer.json"
    bpe.write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="BPE"):
        read_tokenizer_bytes(bpe)


# --- config and model semantics ------------------------------------------------------------------------------------
def test_t5_config_defaults_tiny_and_validation():
    real = T5Config()
    assert (real.dim, real.dim_ffn, real.num_heads, real.num_layers, real.vocab_size, real.text_len) == (
        4096, 10240, 64, 24, 256384, 512)
    assert T5Config.tiny().head_dim == 16
    with pytest.raises(ValueError, match="divisible"):
        T5Config(dim_attn=100, num_heads=64)
    with pytest.raises(ValueError, match="text_len"):
        T5Config(text_len=1)
    shapes = {k: tuple(v.shape) for k, v in UMT5Encoder(T5Config.tiny()).state_dict().items()}
    assert T5Config.from_shapes(shapes, text_len=32) == T5Config.tiny()


def test_relative_position_buckets_bidirectional():
    b = relative_position_buckets(300, num_buckets=32, max_dist=128)
    assert b.shape == (300, 300)
    assert b[5, 5] == 0 and b[5, 6] == 17 and b[6, 5] == 1  # key after query -> upper half
    assert b[0, 7] == 16 + 7 and b[0, 8] >= 16 + 8  # 8 exact offsets per direction, then log buckets
    assert b[0, 299] == 31 and b[299, 0] == 15  # far offsets saturate
    assert b.min() >= 0 and b.max() < 32


def test_encode_over_true_length_equals_full_padding(spm_bytes):
    """Running only over the real tokens gives the rows the full text_len pass gives (the padding is masked)."""
    config = T5Config.tiny(vocab_size=64, text_len=24)
    model = UMT5Encoder(config)
    model.load_state_dict(random_official_sd(config))
    encoder = TextEncoder(model.eval(), UMT5Tokenizer(spm_bytes, text_len=24))
    prompts = ["a woman dances", "the man waves and smiles at the camera", ""]
    out = encoder.encode(prompts)
    ids, mask = encoder.tokenize(prompts)
    with torch.no_grad():
        full = model(ids, mask)
    for row, n, got in zip(full, mask.sum(1).tolist(), out):
        assert got.shape == (n, config.dim)
        torch.testing.assert_close(got, row[:n], atol=1e-5, rtol=0)


# --- loading and errors ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, spm_bytes):
    root = tmp_path_factory.mktemp("t5")
    config = T5Config.tiny(vocab_size=64)
    sd = random_official_sd(config)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, root / "official.pth")
    comfy = {k: v.half() for k, v in to_comfy(sd).items()}
    comfy["spiece_model"] = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
    save_file(comfy, str(root / "comfy.safetensors"))
    (root / "spiece.model").write_bytes(spm_bytes)
    return root


def test_t5_loads_both_layouts_identically(tiny_files):
    a = load_text_encoder(tiny_files / "official.pth", tokenizer=tiny_files / "spiece.model", dtype=torch.float32)
    b = load_text_encoder(tiny_files / "comfy.safetensors", dtype=torch.float32)  # embedded tokenizer
    assert a.config == b.config and a.config.text_len == 512
    prompts = ["a woman dances gracefully", "the man waves"]
    for x, y in zip(a.encode(prompts), b.encode(prompts)):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    assert a.encode([]) == []
    a.free()
    with pytest.raises(RuntimeError, match="freed"):
        a.encode(prompts)


def test_t5_without_tokenizer_names_the_fix(tiny_files):
    for none_given in (None, ""):
        with pytest.raises(TokenizerError, match="spiece.model"):
            load_text_encoder(tiny_files / "official.pth", tokenizer=none_given)


def test_t5_tokenizer_larger_than_vocab_is_rejected(tmp_path, tiny_files):
    sd = torch.load(tiny_files / "official.pth", weights_only=True)
    sd["token_embedding.weight"] = sd["token_embedding.weight"][:20]
    torch.save(sd, tmp_path / "small_vocab.pth")
    with pytest.raises(TokenizerError, match="not the umT5 tokenizer"):
        load_text_encoder(tmp_path / "small_vocab.pth", tokenizer=tiny_files / "spiece.model")


def test_t5_wrong_component_names_expected_and_found(tmp_path, tiny_files):
    vae_like = {"encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3), "decoder.conv1.weight": torch.zeros(8, 16, 3, 3, 3),
                "conv1.weight": torch.zeros(32, 32, 1, 1, 1)}
    save_file(vae_like, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ValueError, match="this is the Wan 2.1 VAE.*expected the umT5 text encoder") as err:
        load_text_encoder(tmp_path / "vae.safetensors", tokenizer=tiny_files / "spiece.model")
    assert "umt5_xxl" in str(err.value)


def test_t5_truncated_file_gets_a_clear_error(tmp_path, tiny_files):
    data = (tiny_files / "comfy.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_text_encoder(tmp_path / "half.safetensors")


def test_t5_v11_shared_position_table_is_rejected(tmp_path, tiny_files):
    comfy = load_file(str(tiny_files / "comfy.safetensors"))
    del comfy["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"]
    del comfy["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    save_file(comfy, str(tmp_path / "t5xxl.safetensors"))
    with pytest.raises(ValueError, match="umT5"):
        load_text_encoder(tmp_path / "t5xxl.safetensors")


# --- fidelity ----------------------------------------------------------------------------------------------------
def _fixture():
    io_ = load_file(str(fixture_file(FIX, "t5_io.safetensors")))
    meta = json.loads(fixture_file(FIX, "t5_config.json").read_text())
    return io_, meta


@pytest.mark.fidelity
def test_t5_tokenizer_sources_match_fixture_ids():
    io_, meta = _fixture()
    text_len = meta["text_len"]
    prompts = meta["tokenization"]["prompts"]
    assert [clean_prompt(p) for p in prompts] == meta["tokenization"]["cleaned"]
    embedded = load_file(str(fixture_file(FIX, "umt5_tiny_fp16.safetensors")))["spiece_model"]
    sources = [fixture_file(FIX, "tiny_spiece.model"), fixture_file(FIX, "hf_tokenizer"), embedded]
    for source in sources:
        ids, mask = load_tokenizer(source, text_len=text_len)(prompts)
        assert torch.equal(ids, io_["ids"]) and torch.equal(mask, io_["mask"])
        assert [r[: int(m.sum())].tolist() for r, m in zip(ids, mask)] == meta["tokenization"]["official_ids"]


@pytest.mark.fidelity
@pytest.mark.parametrize("name, tokenizer", [
    ("umt5_tiny_official.pth", "tiny_spiece.model"),
    ("umt5_tiny_fp16.safetensors", None),
])
def test_t5_fp32_matches_official(name, tokenizer):
    io_, meta = _fixture()
    tok = fixture_file(FIX, tokenizer) if tokenizer else None
    enc = load_text_encoder(fixture_file(FIX, name), tokenizer=tok, dtype=torch.float32, text_len=meta["text_len"])
    out = enc.encode(meta["tokenization"]["prompts"])
    for i, got in enumerate(out):
        torch.testing.assert_close(got, io_[f"context_{i}"], atol=1e-4, rtol=0)
    assert io_["seq_lens"].tolist() == [len(o) for o in out]
    with torch.no_grad():
        full = enc.model(io_["ids"], io_["mask"])
    torch.testing.assert_close(full, io_["context_full"], atol=1e-4, rtol=0)
    padded = torch.zeros_like(io_["context_zero_padded"])
    for i, got in enumerate(out):
        padded[i, : len(got)] = got
    torch.testing.assert_close(padded, io_["context_zero_padded"], atol=1e-4, rtol=0)


@pytest.mark.fidelity
def test_t5_fp8_scaled_stays_fp8_and_matches():
    from steadydancer_core.loading.quant_ops import PackedLinear

    io_, meta = _fixture()
    enc = load_text_encoder(fixture_file(FIX, "umt5_tiny_fp8_scaled.safetensors"), dtype=torch.float32,
                            text_len=meta["text_len"])
    packed = [m for m in enc.model.modules() if isinstance(m, PackedLinear) and m.is_packed]
    assert len(packed) == 7 * enc.config.num_layers
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in packed)
    out = enc.encode(meta["tokenization"]["prompts"])
    for i, got in enumerate(out):
        torch.testing.assert_close(got, io_["context_zero_padded_fp8"][i, : len(got)], atol=1e-4, rtol=0)


@pytest.mark.fidelity
def test_t5_bf16_compute_close_to_official():
    io_, meta = _fixture()
    enc = load_text_encoder(fixture_file(FIX, "umt5_tiny_official.pth"), tokenizer=fixture_file(FIX, "hf_tokenizer"),
                            dtype=torch.bfloat16, text_len=meta["text_len"])
    for i, got in enumerate(enc.encode(meta["tokenization"]["prompts"])):
        ref = io_[f"context_{i}"]
        assert got.dtype == torch.bfloat16
        assert ((got.float() - ref).norm() / ref.norm()).item() < 2e-2
