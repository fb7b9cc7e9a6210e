"""The network run by torch: a checkpoint (.pt) loaded strictly, run as model.InferenceGraph. The steps
around the network are colorizer.py's (numpy); this file is what differs from the ONNX runner."""
from __future__ import annotations

import numpy as np
import torch

from colorizer import Runner
from decoding import Decode
from hints import PROPAGATION
from model import InferenceGraph, ModelConfig, PriorHead, build_model
from utils import CheckpointError, float_weights, load_checkpoint, prior_from_weights


def _state_dict_mismatch(expected: dict, got: dict) -> str | None:
    """None if `got` has exactly the keys and shapes of `expected`, else a short description."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if shaped:
        k = shaped[0]
        parts.append(f"{len(shaped)} of another shape, e.g. {k} {list(got[k].shape)} "
                     f"where the model has {list(expected[k].shape)}")
    return "; ".join(parts) or None


def model_from_checkpoint(ckpt: dict, path: str) -> torch.nn.Module:
    """Build the checkpoint's model (no random init: built on the meta device) and load it strictly."""
    sd = ckpt["model"]
    members = ckpt.get("members", 1)
    try:
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive integer, not {members!r}")
        cfg = ModelConfig(**ckpt["model_config"])
        with torch.device("meta"):
            model = build_model(cfg, members)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model_config ({str(e).strip()[:160]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    # Shipped checkpoints may be half precision or int8 (utils.int8_weights); inference runs in float32.
    sd = float_weights(sd)
    problem = _state_dict_mismatch(model.state_dict(), sd)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the model its model_config describes ({problem})")
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def training_prior(model: torch.nn.Module, ckpt: dict | None = None) -> np.ndarray | None:
    """The training colour prior over the bins (Q,): the checkpoint's ab_prior entry, else the one the
    rebalancing weights imply (utils.prior_from_weights); None for a regression head."""
    if model.cfg.head != "classification":
        return None
    entry = (ckpt or {}).get("ab_prior")
    if entry is not None and "prior" in entry:
        return entry["prior"].float().numpy()
    net = model.members[0] if hasattr(model, "members") else model
    if getattr(net, "ab_prior", None) is not None:
        return net.ab_prior.float().cpu().numpy()
    lam = ((ckpt or {}).get("train_config") or {}).get("rebalance_lambda", 0.5)
    return prior_from_weights(net.log_weights.detach().cpu(), lam).numpy()


def prior_head(ckpt: dict, prior: np.ndarray | None, path: str) -> PriorHead | None:
    """The checkpoint's predicted colour prior (its colour_predictor entry, export_model.py --predictor) as a
    PriorHead, or None."""
    entry = ckpt.get("colour_predictor")
    if entry is None:
        return None
    try:
        gate = entry.get("gate")
        return PriorHead(entry["weights"], entry["offset"], entry["mean"], entry["std"], torch.from_numpy(prior),
                         float(entry["strength"]), float(entry.get("correction", 0.0)),
                         gate=None if gate is None else (float(gate[0]), float(gate[1])))
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: a bad colour_predictor entry ({type(e).__name__}: {e})") from None


class TorchRunner(Runner):
    """model.InferenceGraph on torch: run(l, hints, bias) -> the same dict of numpy arrays as OnnxRunner."""

    def __init__(self, model: torch.nn.Module, decode: Decode = Decode(), device: str = "cpu",
                 size: int | None = None, propagation: tuple[float, float] | None = PROPAGATION,
                 prior: np.ndarray | None = None, predictor: PriorHead | None = None):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.predictor = predictor
        self.graph = InferenceGraph(self.model, decode, None if predictor is None else predictor.to(device))
        net = model.members[0] if hasattr(model, "members") else model
        bins = net.bins.detach().float().cpu().numpy() if model.cfg.head == "classification" else None
        super().__init__(model.cfg.to_dict(), decode, size, propagation, bins,
                         prior if prior is not None else training_prior(model))
        self.predicts_prior = predictor is not None

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu") -> "TorchRunner":
        """A .pt checkpoint (weights_only, strict); any problem is a one-line CheckpointError naming it."""
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, path)
        inf = ckpt.get("inference") or {}
        tc = ckpt.get("train_config") or {}
        size = inf.get("size") or tc.get("resize") or round(tc.get("crop_size", 128) * 1.25)
        propagation = tuple(inf.get("hint_propagation", PROPAGATION))
        prior = training_prior(model, ckpt)
        return cls(model, Decode.from_dict(inf), device, int(size), propagation, prior,
                   prior_head(ckpt, prior, path))

    def with_decode(self, decode: Decode) -> "TorchRunner":
        return TorchRunner(self.model, decode, self.device, self.size, self.propagation, self.prior, self.predictor)

    @torch.inference_mode()
    def run(self, l: np.ndarray, hints: np.ndarray | None = None, bias: np.ndarray | None = None,
            outputs: tuple[str, ...] | None = None, memory: float = 1.0) -> dict:
        def tensor(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
        if bias is not None and self.bins is None:
            raise ValueError("a colour prior (bias) needs a classification head")
        outs = self.graph(tensor(l), tensor(bias), tensor(hints) if self.takes_hints else None,
                          tensor(np.full(1, memory)))
        names = ("ab", "embedding", "probs")
        return {k: v.float().cpu().numpy() for k, v in zip(names, outs) if outputs is None or k in outputs}
