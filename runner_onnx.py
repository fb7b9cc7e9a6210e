"""The network run by onnxruntime: checkpoints/colorizer.onnx as export_model.py writes it, with no torch.

The graph (model.InferenceGraph, exported) takes `l` (1, 1, h, w) normalised L, `bias` (1, Q) for a
classification head, `hints` (1, 3, h, w) for a model trained with a hint input and `memory` (1,) for one with
a predicted colour prior (model.PriorHead: 1 on, 0 off), and gives `ab`,
`embedding` and, for a classification head, `probs`. Its metadata_props hold, as JSON, what the numpy side
needs: model_config, decode, size, hint_propagation, bins and prior.
"""
from __future__ import annotations

import json
import os

import numpy as np

from colorizer import Runner
from decoding import Decode
from files import CheckpointError

METADATA_KEYS = ("model_config", "decode", "size", "hint_propagation", "bins", "prior")


class OnnxRunner(Runner):
    """An exported model on onnxruntime: run(l, hints, bias) -> the same dict of numpy arrays as TorchRunner.

    threads: onnxruntime's intra-op threads. 1 by default: the CLI runs images (or a film's frames) on
    threads of its own, and an idle-spinning thread pool stalls on cores shared with other work."""

    def __init__(self, path: str, threads: int = 1):
        import onnxruntime as ort
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: model not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no notes about unused initializers on stderr
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            meta = {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                    if k in METADATA_KEYS}
        except Exception as e:  # onnxruntime raises its own types for truncated or foreign files
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: not a readable ONNX model ({reason})") from None
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise CheckpointError(f"{path}: not a colorizer ONNX model (no {', '.join(missing)} in its metadata; "
                                  "export one with export_model.py)")
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        bins = None if meta["bins"] is None else np.asarray(meta["bins"], dtype=np.float32)
        prior = None if meta["prior"] is None else np.asarray(meta["prior"], dtype=np.float32)
        propagation = None if meta["hint_propagation"] is None else tuple(meta["hint_propagation"])
        super().__init__(meta["model_config"], Decode.from_dict(meta["decode"]), int(meta["size"]), propagation,
                         bins, prior)
        self.predicts_prior = "memory" in self.inputs

    def run(self, l: np.ndarray, hints: np.ndarray | None = None, bias: np.ndarray | None = None,
            outputs: tuple[str, ...] | None = None, memory: float = 1.0) -> dict:
        feed = {"l": np.ascontiguousarray(l, dtype=np.float32)}
        if "bias" in self.inputs:
            feed["bias"] = (np.zeros((1, len(self.bins)), np.float32) if bias is None
                            else np.ascontiguousarray(bias, dtype=np.float32).reshape(1, -1))
        elif bias is not None:
            raise ValueError("a colour prior (bias) needs a classification head")
        if "hints" in self.inputs:
            feed["hints"] = (np.zeros((1, 3, *l.shape[-2:]), np.float32) if hints is None
                             else np.ascontiguousarray(hints, dtype=np.float32))
        if "memory" in self.inputs:
            feed["memory"] = np.full(1, memory, np.float32)
        names = self.outputs if outputs is None else [n for n in self.outputs if n in outputs]
        return dict(zip(names, self.session.run(names, feed)))  # probs alone is 12 MB at 192x288
