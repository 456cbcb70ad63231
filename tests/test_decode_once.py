"""Every output frame is VAE-decoded once: the segments generate() decodes while sampling are kept on disk
(``DecodedSegments``) and read back by iter_decoded / decode; the files are removed with the result. And the
conditioning that does not change is computed once per job, not per segment or step."""
import gc

import pytest
import torch

from steadydancer_core.sampling.decoded_store import FOLDER_PREFIX, DecodedSegments
from steadydancer_core.sampling.pipeline import decode, generate, iter_decoded
from helpers import build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings

LONG = dict(segment_frames=5, segment_overlap=1, first_frame="exact", steps=1, text_cfg=1.0, pose_cfg=0.0)


@pytest.fixture(scope="module")
def counted_model():
    """The tiny model with its VAE decode / encode, text and image encoders counted."""
    model = _build_tiny_model()
    model.calls = {"decode": 0, "encode": 0, "text": 0, "image": 0}
    for name, owner in (("decode", model.vae), ("encode", model.vae), ("text", model.text_encoder),
                        ("image", model.image_encoder)):
        attr = "encode" if name in ("text", "image") else name
        original = getattr(owner, attr)

        def counted(*args, _original=original, _name=name, **kwargs):
            model.calls[_name] += 1
            return _original(*args, **kwargs)
        setattr(owner, attr, counted)
    return model


def _reset(model):
    for key in model.calls:
        model.calls[key] = 0


def test_each_segment_is_decoded_once(counted_model, tmp_path):
    model = counted_model
    photo, pos, neg = _inputs(13)
    _reset(model)
    result = generate(model, photo, pos, neg, _settings(**LONG), spill_dir=tmp_path)
    assert len(result.segments) == 3
    assert model.calls["decode"] == 2                     # segments 1 and 2 were decoded for the next one's frames
    assert isinstance(result.decoded, DecodedSegments) and len(result.decoded) == 2
    assert result.decoded.path.parent == tmp_path and result.decoded.path.name.startswith(FOLDER_PREFIX)
    seen = []
    video = torch.cat([f for _, f in iter_decoded(model, result, tiling="off",
                                                  on_segment=lambda s, decoded: seen.append((s, decoded)))])
    assert model.calls["decode"] == 3 and seen == [(0, False), (1, False), (2, True)]
    assert torch.equal(video[0], photo)                   # exact mode: frame 0 is the photo, pixel for pixel
    again = decode(model, result, tiling="off")             # DecodeVideo can run again on the same result
    assert model.calls["decode"] == 4 and torch.equal(again, video)

    # the same video as decoding every segment again, within the float16 storage (< 1/16 of an 8-bit step)
    store, result.decoded = result.decoded, None
    full = decode(model, result, tiling="off")
    result.decoded = store
    assert model.calls["decode"] == 7
    assert torch.equal(full[0], video[0]) and (full - video).abs().max() < 2.5e-4

    # a missing file is decoded again, not an error
    next(store.path.glob("segment_00001*")).unlink()
    _reset(model)
    assert (decode(model, result, tiling="off") - video).abs().max() < 2.5e-4
    assert model.calls["decode"] == 2


def test_streaming_callers_decode_once_and_short_videos_keep_nothing(counted_model, tmp_path):
    model = counted_model
    photo, pos, neg = _inputs(13)
    _reset(model)
    chunks = []
    result = generate(model, photo, pos, neg, _settings(**LONG), on_frames=lambda s, f: chunks.append(f))
    assert model.calls["decode"] == 3 and result.decoded is None and sum(c.shape[0] for c in chunks) == 13
    short = generate(model, *_inputs(5), _settings(steps=1), spill_dir=tmp_path)
    assert short.decoded is None and not list(tmp_path.iterdir())


def test_the_kept_segments_are_removed_with_the_result(counted_model, tmp_path):
    model = counted_model
    photo, pos, neg = _inputs(9)
    user_file = tmp_path / "keep.txt"
    user_file.write_text("a file of the user's")
    result = generate(model, photo, pos, neg, _settings(**LONG), spill_dir=tmp_path)
    folder = result.decoded.path
    assert folder.is_dir() and len(list(folder.iterdir())) == 1
    del result
    gc.collect()
    assert not folder.exists() and user_file.read_text() == "a file of the user's"
    result = generate(model, photo, pos, neg, _settings(**LONG), spill_dir=tmp_path)
    result.decoded.close()
    result.decoded.close()                                # idempotent
    assert not result.decoded.path.exists() and result.decoded.get(0) is None
    assert decode(model, result, tiling="off").shape[0] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_full_disk_is_a_warning_and_a_second_decode(tmp_path, caplog):
    store = DecodedSegments(tmp_path)
    store.path.rmdir()                                    # writes now fail
    assert not store.put(0, torch.rand(2, 4, 4, 3)) and store.get(0) is None
    assert "decoded again" in caplog.text


def test_unchanging_conditioning_is_computed_once_per_job(counted_model):
    model = counted_model
    photo, pos, neg = _inputs(13)
    _reset(model)
    result = generate(model, photo, pos, neg, _settings(**dict(LONG, steps=3, text_cfg=3.0, pose_cfg=1.0,
                                                                 pose_cfg_start=0.0, pose_cfg_end=1.0)))
    segments = len(result.segments)
    assert segments == 3
    assert model.calls["text"] == 1                       # prompt and negative prompt, one call
    assert model.calls["image"] == 2                      # CLIP of the photo and of the first pose
    # reference latents (photo, first pose) once; per segment: positive poses, negative poses, known frames
    assert model.calls["encode"] == 2 + 3 * segments
