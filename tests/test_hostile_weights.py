"""Hostile and damaged weight files: every value a file states about itself is checked before it sizes anything,
and every problem is one ``WeightFileError`` line naming the file and the fix; pickles never run."""
import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from steadydancer_core import WeightFileError
from steadydancer_core.loading import header_checks
from steadydancer_core.loading.key_names import DIT_CONFIG_METADATA_KEY
from steadydancer_core.loading.loaders import load_dit
from steadydancer_core.loading.weight_files import open_state_dict
from steadydancer_core.tiny_kit import dit_state_dict, lora_state_dict, tiny_configs


def _raw_safetensors(path, header, data: bytes = b"\0" * 16):
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    raw = text.encode() if isinstance(text, str) else text
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _one_line(error, path) -> str:
    text = str(error.value)
    assert "\n" not in text and str(path) in text, text
    return text


OK = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("header, message", [
    ({"w": {"dtype": "F32", "shape": [2, 2]}}, "invalid data_offsets"),                 # no data_offsets
    ({"w": 5}, "is a int, not a tensor description"),
    ({"w": [1, 2, 3]}, "is a list, not a tensor description"),
    ({"w": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}}, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [4] * 9, "data_offsets": [0, 16]}}, "invalid shape"),
    ({"w": {"dtype": "F32", "shape": [0, 2 ** 40], "data_offsets": [0, 0]}}, "invalid shape"),
    ({"w": {"dtype": "Q9", "shape": [2, 2], "data_offsets": [0, 16]}}, "unknown dtype"),
    ({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}, "needs 4000000 bytes"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}}, "invalid data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", 16]}}, "invalid data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 2 ** 62]}}, "needs 16 bytes"),
    ({"w": OK, "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "share bytes"),
    ({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, "truncated"),
    ({"__metadata__": {"a": 1}, "w": OK}, "__metadata__ must map names to strings"),
    ({"__metadata__": [1], "w": OK}, "__metadata__ must map names to strings"),
    ([1, 2], "its header is a list"),
    ('{"w": ' + "[" * 50000 + "]" * 50000 + "}", "nests its JSON 50001 levels deep"),
    ('{"w": {"dtype": "F32"', "not valid JSON"),
    (b'{"w": "\xff\xfe"}', "not valid JSON"),
])
def test_malformed_headers_are_one_line(tmp_path, header, message):
    path = _raw_safetensors(tmp_path / "w.safetensors", header)
    with pytest.raises(WeightFileError, match=message) as info:
        open_state_dict(path)
    assert "download it again" in _one_line(info, path)


def test_the_header_length_field_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 2 ** 63) + b"{}" * 8)
    with pytest.raises(WeightFileError, match="header length field") as info:
        open_state_dict(path)
    assert str(2 ** 63) not in _one_line(info, path)        # the field's value is not echoed
    save_file({"w": torch.zeros(4)}, tmp_path / "ok.safetensors")
    from steadydancer_core.loading import weight_files

    monkeypatch.setattr(weight_files, "MAX_HEADER_BYTES", 16)
    with pytest.raises(WeightFileError, match="header length field"):
        open_state_dict(tmp_path / "ok.safetensors")


def test_a_valid_file_still_opens(tmp_path):
    save_file({"a": torch.ones(2, 3), "b": torch.zeros(0, 5), "c": torch.ones(4).half()}, tmp_path / "ok.safetensors",
              metadata={"note": "x"})
    lazy = open_state_dict(tmp_path / "ok.safetensors")
    assert lazy.shape_of("b") == (0, 5) and float(lazy["a"].sum()) == 6 and lazy.metadata == {"note": "x"}


@pytest.mark.parametrize("name", ["../outside.safetensors", "../../outside.safetensors", "/etc/passwd",
                                  "C:\\\\Windows\\\\x.safetensors", "sub/../../outside.safetensors",
                                  "shard.bin", 7, ""])
def test_index_shards_stay_inside_their_folder(tmp_path, name):
    folder = tmp_path / "models" / "dit"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, tmp_path / "models" / "outside.safetensors")
    (tmp_path / "outside.safetensors").write_bytes(b"SECRET!!" * 4)      # first bytes would read as a length
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": name}}))
    with pytest.raises(WeightFileError, match="folder|not a file name|not a .safetensors") as info:
        open_state_dict(folder)
    assert str(struct.unpack("<Q", b"SECRET!!")[0]) not in _one_line(info, index)


@pytest.mark.parametrize("content", [{"weight_map": [1]}, {"weight_map": {"w": None}}, [], "[" * 5000])
def test_malformed_indexes_are_one_line(tmp_path, content):
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(WeightFileError) as info:
        open_state_dict(tmp_path)
    _one_line(info, index)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch_zip", "torch_legacy", "pickle_2", "pickle_4"])
def test_a_pickle_with_a_payload_never_runs_and_is_named_for_what_it_is(tmp_path, how):
    marker = str(tmp_path / "payload_ran")
    obj = {"w": torch.zeros(2), "x": _Payload(marker)}
    path = tmp_path / "model.pth"
    if how.startswith("torch"):
        torch.save(obj, path, _use_new_zipfile_serialization=how == "torch_zip")
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(how[-1])))
    with pytest.raises(WeightFileError) as info:
        open_state_dict(path)
    text = _one_line(info, path)
    assert not os.path.exists(marker)
    assert "contains Python objects besides tensors (a pickle); the pack never runs them" in text
    assert "weights_only" not in text and "damaged" not in text and text.endswith(".")


def test_a_damaged_pth_never_quotes_unsafe_advice(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightFileError, match="damaged") as info:
        open_state_dict(path)
    text = _one_line(info, path).lower()
    assert "weights_only" not in text and "trust" not in text


@pytest.fixture(scope="module")
def dit_sd():
    return {k: v.half() for k, v in dit_state_dict(tiny_configs()[0], 0).items()}


@pytest.mark.parametrize("stated, message", [
    ({"text_len": 300000000}, "text_len = 300000000, not an integer from 1 to 4096"),
    ({"text_len": 0}, "text_len = 0"),
    ({"num_heads": True}, "num_heads = True"),
    ({"num_heads": 2.5}, "num_heads = 2.5"),
    ({"num_heads": 10 ** 30}, "num_heads = "),
    ({"eps": float("nan")}, "eps = nan"),
    ({"eps": 5.0}, "eps = 5.0, not a number"),
    ({"eps": "small"}, "eps = small"),
])
def test_config_metadata_is_bounded(tmp_path, dit_sd, stated, message):
    path = tmp_path / "dit.safetensors"
    save_file(dit_sd, path, metadata={DIT_CONFIG_METADATA_KEY: json.dumps(stated)})
    with pytest.raises(WeightFileError, match=message) as info:
        load_dit(path, dtype=torch.float32)
    assert "fix or remove it" in _one_line(info, path)


def test_deeply_nested_config_metadata_is_one_line(tmp_path, dit_sd):
    path = tmp_path / "dit.safetensors"
    save_file(dit_sd, path, metadata={DIT_CONFIG_METADATA_KEY: "[" * 100000 + "]" * 100000})
    with pytest.raises(WeightFileError, match="nests its JSON"):
        load_dit(path, dtype=torch.float32)


def test_official_config_json_is_bounded(tmp_path, dit_sd):
    folder = tmp_path / "official"
    folder.mkdir()
    save_file(dit_sd, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({"num_heads": 1, "text_len": 10 ** 9}))
    with pytest.raises(WeightFileError, match="text_len = 1000000000") as info:
        load_dit(folder, dtype=torch.float32)
    _one_line(info, folder / "config.json")


def test_sizes_beyond_any_dit_are_refused_by_the_config():
    from steadydancer_core import DiTConfig

    with pytest.raises(ValueError, match="sizes beyond any DiT"):
        DiTConfig.tiny(text_len=10 ** 6)
    with pytest.raises(ValueError, match="sizes beyond any DiT"):
        DiTConfig.tiny(ffn_dim=10 ** 9)
    with pytest.raises(ValueError, match="eps must be in"):
        DiTConfig.tiny(eps=float("inf"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_dit_tensor_is_found_at_load(tmp_path, dit_sd, value):
    bad = dict(dit_sd)
    key = "blocks.0.ffn.0.weight"
    bad[key] = bad[key].clone()
    bad[key][1, 2] = value
    path = tmp_path / "dit.safetensors"
    save_file(bad, path, metadata={DIT_CONFIG_METADATA_KEY: json.dumps({"num_heads": 1})})
    with pytest.raises(WeightFileError, match=f"tensor '{key}' holds NaN or Inf") as info:
        load_dit(path, dtype=torch.float32)
    assert "download it again" in _one_line(info, path)


def test_a_cast_that_overflows_is_named(tmp_path, dit_sd):
    big = {k: v.float() for k, v in dit_sd.items()}
    big["head.head.weight"] = big["head.head.weight"].clone()
    big["head.head.weight"][0, 0] = 1e6                     # finite in fp32, inf in fp16
    path = tmp_path / "dit.safetensors"
    save_file(big, path, metadata={DIT_CONFIG_METADATA_KEY: json.dumps({"num_heads": 1})})
    with pytest.raises(WeightFileError, match="overflows float16.*precision bf16"):
        load_dit(path, dtype=torch.float16)
    assert load_dit(path, dtype=torch.bfloat16).head.head.weight.dtype == torch.bfloat16


def test_a_non_finite_fp8_weight_is_found_at_load(tmp_path, dit_sd):
    from steadydancer_core import to_fp8

    packed = to_fp8({k: v.float() for k, v in dit_sd.items()}, torch.float8_e4m3fn)
    key = next(k for k, v in packed.items() if v.dtype == torch.float8_e4m3fn)
    raw = packed[key].view(torch.uint8).clone()
    raw.view(-1)[3] = 0x7F                                 # e4m3fn NaN
    packed[key] = raw.view(torch.float8_e4m3fn)
    path = tmp_path / "dit_fp8.safetensors"
    save_file(packed, path, metadata={DIT_CONFIG_METADATA_KEY: json.dumps({"num_heads": 1})})
    with pytest.raises(WeightFileError, match=f"'{key}' holds NaN or Inf"):
        load_dit(path, dtype=torch.float32)


def test_a_non_finite_lora_is_found_at_load(tmp_path, dit_sd):
    dit_path = tmp_path / "dit.safetensors"
    save_file(dit_sd, dit_path, metadata={DIT_CONFIG_METADATA_KEY: json.dumps({"num_heads": 1})})
    lora = lora_state_dict({k: v.float() for k, v in dit_sd.items()}, 4, 1)
    key = next(k for k in lora if k.endswith("lora_up.weight"))
    lora[key] = lora[key].clone()
    lora[key][0, 0] = float("nan")
    lora_path = tmp_path / "lora.safetensors"
    save_file(lora, lora_path)
    with pytest.raises(WeightFileError, match=f"LoRA .*'{key}' holds NaN or Inf") as info:
        load_dit(dit_path, dtype=torch.float32, loras=[(lora_path, 1.0)])
    _one_line(info, lora_path)


def test_a_huge_quantisation_marker_is_refused_unread(tmp_path):
    from steadydancer_core.loading.state_dict import split_quant_entries

    path = tmp_path / "q.safetensors"
    save_file({"l.weight": torch.zeros(4, 4), "l.comfy_quant": torch.zeros(100000, dtype=torch.uint8)}, path)
    with pytest.raises(WeightFileError, match="holds 100000 bytes"):
        split_quant_entries(open_state_dict(path))


def test_json_depth_ignores_brackets_inside_strings():
    assert header_checks.json_depth('{"a": "[[[[[[", "b": [1, [2]]}') == 3
    assert header_checks.json_depth('"\\"[[[["') == 0
