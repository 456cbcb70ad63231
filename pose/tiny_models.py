"""Tiny ONNX stand-ins with the real signatures of ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``.

They let the real pre/post-processing run in tests without the 200 MB models:

* detector: input ``images`` [N, 3, 640, 640] -> ``output`` [N, 8400, 85] (raw YOLOX head layout).
  Each requested box is written at one stride-32 anchor; it "fires" only when the letterboxed image
  has a pixel brighter than ``trigger`` (so dark frames have no person).
* estimator: input ``input`` [N, 3, 384, 288] -> ``simcc_x`` [N, 133, 576], ``simcc_y`` [N, 133, 768].
  A fixed, left/right-symmetric standing pose (so flip-test averaging keeps the peaks); it fires only
  when the normalised crop has a value above ``trigger`` (a bright pixel).

Variants: fixed batch 1 (``dynamic_batch=False``), float16 input/outputs (``fp16=True``), other
input/output names. Requires the ``onnx`` package (tests only).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .estimator import FLIP_INDICES, NUM_KEYPOINTS
from .detector import STRIDES

OPSET = 13


def _graph_io(input_name: str, input_shape, output_specs, fp16: bool):
    from onnx import TensorProto, helper

    t = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inp = helper.make_tensor_value_info(input_name, t, input_shape)
    outs = [helper.make_tensor_value_info(n, t, s) for n, s in output_specs]
    return inp, outs


def _finish(nodes, inits, inp, outs, path, name):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, [inp], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return Path(path)


def _gate(nodes, inits, source: str, trigger: float, fp16: bool) -> str:
    """Nodes computing flag [N, 1, 1] = (max over C, H, W of ``source``) > trigger, as float."""
    from onnx import TensorProto, helper, numpy_helper

    x = source
    if fp16:
        nodes.append(helper.make_node("Cast", [source], ["input_f32"], to=TensorProto.FLOAT))
        x = "input_f32"
    inits += [numpy_helper.from_array(np.array(trigger, np.float32), "trigger"),
              numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "flag_shape")]
    nodes += [helper.make_node("ReduceMax", [x], ["rmax"], axes=[1, 2, 3], keepdims=1),
              helper.make_node("Greater", ["rmax", "trigger"], ["gt"]),
              helper.make_node("Cast", ["gt"], ["flagf"], to=TensorProto.FLOAT),
              helper.make_node("Reshape", ["flagf", "flag_shape"], ["flag"])]
    return "flag"


def _gated_output(nodes, inits, flag: str, table: np.ndarray, out_name: str, fp16: bool, tag: str) -> None:
    from onnx import TensorProto, helper, numpy_helper

    inits.append(numpy_helper.from_array(table.astype(np.float32)[None], f"table_{tag}"))
    if fp16:
        nodes.append(helper.make_node("Mul", [flag, f"table_{tag}"], [f"{tag}32"]))
        nodes.append(helper.make_node("Cast", [f"{tag}32"], [out_name], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Mul", [flag, f"table_{tag}"], [out_name]))


def build_tiny_yolox(path, boxes: Sequence[tuple[float, float, float, float, float]] = ((320, 320, 200, 400, 0.9),),
                     input_hw: tuple[int, int] = (640, 640), num_classes: int = 80, trigger: float = 250.0,
                     dynamic_batch: bool = True, fp16: bool = False, input_name: str = "images",
                     output_name: str = "output") -> Path:
    """Boxes are (cx, cy, w, h, score) in letterboxed input pixels, class person."""
    sizes = [(input_hw[0] // s) * (input_hw[1] // s) for s in STRIDES]
    table = np.zeros((sum(sizes), 5 + num_classes), np.float32)
    s = STRIDES[-1]
    gw = input_hw[1] // s
    base = sum(sizes[:-1])
    for cx, cy, w, h, score in boxes:
        gx, gy = int(cx // s), int(cy // s)
        row = table[base + gy * gw + gx]
        row[:4] = (cx / s - gx, cy / s - gy, math.log(w / s), math.log(h / s))
        row[4] = row[5] = math.sqrt(score)
    batch = "batch" if dynamic_batch else 1
    inp, outs = _graph_io(input_name, [batch, 3, *input_hw], [(output_name, [batch, table.shape[0], table.shape[1]])], fp16)
    nodes, inits = [], []
    flag = _gate(nodes, inits, input_name, trigger, fp16)
    _gated_output(nodes, inits, flag, table, output_name, fp16, "det")
    return _finish(nodes, inits, inp, outs, path, "tiny_yolox")


def canonical_pose(input_wh: tuple[int, int] = (288, 384), split: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """SimCC bins (x [133], y [133]) of a symmetric standing person filling the crop."""
    body_left = {1: (0.53, 0.10), 3: (0.56, 0.11), 5: (0.63, 0.22), 7: (0.70, 0.36), 9: (0.72, 0.48),
                 11: (0.58, 0.52), 13: (0.59, 0.70), 15: (0.60, 0.88), 17: (0.63, 0.93), 18: (0.58, 0.93),
                 19: (0.60, 0.90)}
    u = np.full(NUM_KEYPOINTS, 0.5)
    v = np.zeros(NUM_KEYPOINTS)
    u[0], v[0] = 0.5, 0.12
    for k, (a, b) in body_left.items():
        u[k], v[k] = a, b
    for j in range(68):  # face: an oval around the nose
        k = 23 + j
        t = j / 67.0
        u[k], v[k] = 0.5 + 0.04 * math.cos(math.pi * t), 0.07 + 0.08 * t
    for j in range(21):  # left hand below the left wrist
        u[91 + j], v[91 + j] = 0.72 + 0.004 * (j % 5), 0.50 + 0.006 * (j // 5)
    nx, ny = int(input_wh[0] * split), int(input_wh[1] * split)
    bx = np.rint(u * (nx - 1)).astype(np.int64)
    by = np.rint(v * (ny - 1)).astype(np.int64)
    for k in range(NUM_KEYPOINTS):  # mirror symmetry: the lower index of each pair is the master
        m = FLIP_INDICES[k]
        if m == k:
            bx[k] = (nx - 1) // 2
        elif k < m:
            bx[m], by[m] = nx - 1 - bx[k], by[k]
    return bx, by


def _peaks(bins: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    pos = np.arange(n)[None, :]
    return values[:, None] - 0.05 * np.abs(pos - bins[:, None])


def build_tiny_dwpose(path, input_wh: tuple[int, int] = (288, 384), split: float = 2.0, peak: float = 0.9,
                      low_keypoints: Sequence[int] = (), low_value: float = 0.2, trigger: float = 2.0,
                      dynamic_batch: bool = True, fp16: bool = False, input_name: str = "input",
                      output_names: tuple[str, str] = ("simcc_x", "simcc_y")) -> Path:
    """``low_keypoints`` (COCO-WholeBody indices) get peak ``low_value`` (below the 0.35 threshold)."""
    bx, by = canonical_pose(input_wh, split)
    values = np.full(NUM_KEYPOINTS, peak, np.float64)
    values[list(low_keypoints)] = low_value
    nx, ny = int(input_wh[0] * split), int(input_wh[1] * split)
    tx, ty = _peaks(bx, nx, values), _peaks(by, ny, values)
    batch = "batch" if dynamic_batch else 1
    inp, outs = _graph_io(input_name, [batch, 3, input_wh[1], input_wh[0]],
                          [(output_names[0], [batch, NUM_KEYPOINTS, nx]), (output_names[1], [batch, NUM_KEYPOINTS, ny])], fp16)
    nodes, inits = [], []
    flag = _gate(nodes, inits, input_name, trigger, fp16)
    _gated_output(nodes, inits, flag, tx, output_names[0], fp16, "x")
    _gated_output(nodes, inits, flag, ty, output_names[1], fp16, "y")
    return _finish(nodes, inits, inp, outs, path, "tiny_dwpose")
