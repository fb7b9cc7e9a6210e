"""Decode settings: how a head's output becomes colours. Torch-free, so that the ONNX path (whose graph
holds the decode) can read, print and compare them without importing the network's code."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Decode:
    """How a head's output becomes colours (_ColorNet.decode): the knobs that trade vividness for accuracy.
    A checkpoint stores the ones chosen on held-out photos (export_model.py); front ends may override them."""
    temperature: float = 0.38      # classification: annealed-mean T (lower: more vivid)
    prior_correction: float = 0.0  # classification: c, how much of the training's class rebalancing to undo
    gain: float = 1.0              # any head: centred colour gain about each image's mean colour
    spread: float = 0.0            # regression_var: stretch each image by its predicted variance
    evenness: float = 0.0          # any head: stretch washed-out images more than vivid ones (0: no)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d: dict) -> "Decode":
        """The settings a checkpoint's "inference" entry holds (others, e.g. size, are not decode settings)."""
        return cls(**{k: float(d[k]) for k in cls.keys() if k in d})

    def override(self, **values: float | None) -> "Decode":
        """These settings with every value that is not None replaced (a front end's optional flags)."""
        return replace(self, **{k: float(v) for k, v in values.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)
