"""Colour memory: a bank of colour photos and a lookup that says what colours a grey photo probably has.

Each bank entry is one colour photo: an embedding of its grey version (the network's deepest encoder
features, mean and standard deviation over the image: what the network "sees" in the grey) and its ab
histogram over the model's bins. A grey photo's embedding finds its K most similar entries (cosine); their
histograms, weighted by softmax(similarity / tau), give h; the decode then adds s (log h - log p)
(colour_prior.prior_bias). How far to trust h (s) is decided per photo by a small learned model (Trust) from
how alike the neighbours are to the photo and to each other, and how far h is from the network's own colours.

Stored compactly (.npz): embeddings standardised, projected to `dims` principal axes, unit length, float16;
histograms as uint8 (each row scaled to its maximum). Pure numpy: the ONNX path uses it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from colour_prior import prior_bias

K = 20           # neighbours looked up (experiments/memory_retrieval.py)
TAU = 1.0        # softmax temperature over their cosine similarities (1: nearly an even mix)
DIMS = 64        # principal axes kept of the standardised embedding
LAMBDA = 1000.0   # the Predictor's ridge penalty (experiments/memory_embedding.py)
PREDICTOR_STRENGTH = 0.6    # a predicted prior's s and c, chosen on val/general (experiments/predicted_prior_study.py)
PREDICTOR_CORRECTION = 0.1
PREDICTOR_GATE = (3.25, 0.2)  # its entropy gate (t, w), chosen on val/general (experiments/predicted_prior_gate.py)
TRUST_FEATURES = ("top_similarity", "mean_similarity", "agreement", "distance_to_network")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def entropy(h: np.ndarray) -> np.ndarray:
    """Entropy (nats) of histograms (..., Q) that sum to 1."""
    return -(h * np.log(np.clip(h, 1e-12, None))).sum(-1)


def quantise_hists(hists: np.ndarray) -> np.ndarray:
    """(N, Q) float histograms -> uint8, each row scaled so its largest bin is 255."""
    return np.round(255 * hists / np.maximum(hists.max(1, keepdims=True), 1e-12)).astype(np.uint8)


def dequantise_hists(q: np.ndarray) -> np.ndarray:
    h = q.astype(np.float32)
    return h / np.maximum(h.sum(1, keepdims=True), 1e-12)


@dataclass
class Trust:
    """strength = max_strength x sigmoid(w . standardised features + b): how far to trust a lookup."""
    weights: np.ndarray = field(default_factory=lambda: np.zeros(len(TRUST_FEATURES)))
    bias: float = 0.0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(len(TRUST_FEATURES)))
    std: np.ndarray = field(default_factory=lambda: np.ones(len(TRUST_FEATURES)))
    max_strength: float = 1.0

    def strength(self, features: np.ndarray) -> float:
        z = float(self.weights @ ((features - self.mean) / self.std) + self.bias)
        return float(self.max_strength / (1 + np.exp(-z)))

    def to_arrays(self) -> dict:
        return {"trust_weights": self.weights, "trust_bias": np.float64(self.bias), "trust_mean": self.mean,
                "trust_std": self.std, "trust_max": np.float64(self.max_strength)}

    @classmethod
    def from_arrays(cls, d) -> "Trust":
        return cls(np.asarray(d["trust_weights"], np.float64), float(d["trust_bias"]),
                   np.asarray(d["trust_mean"], np.float64), np.asarray(d["trust_std"], np.float64),
                   float(d["trust_max"]))


@dataclass
class Lookup:
    hist: np.ndarray          # (Q,) the neighbours' weighted histogram
    features: np.ndarray      # (len(TRUST_FEATURES),) what Trust decides from
    strength: float           # the trust's answer
    neighbours: np.ndarray    # (K,) bank indices, most similar first


@dataclass
class Predictor:
    """A grey photo's colours predicted, not looked up: a ridge regression from the standardised raw embedding
    to the square roots of the photo's histogram (where Euclidean distance is Hellinger's), its answer clipped
    at 0, squared and normalised. Fitted in closed form on a bank's photos; (E, Q) weights. The file keeps the
    setting it is used at (strength, correction, gate): --memory FILE and export_model.py --predictor read it."""
    weights: np.ndarray       # (E, Q)
    offset: np.ndarray        # (Q,) the mean square-rooted histogram
    mean: np.ndarray          # (E,) standardisation of the raw embedding
    std: np.ndarray           # (E,)
    bins: np.ndarray          # (Q, 2)
    strength: float = PREDICTOR_STRENGTH
    correction: float = PREDICTOR_CORRECTION
    gate: tuple[float, float] | None = PREDICTOR_GATE

    @classmethod
    def fit(cls, raw: np.ndarray, hists: np.ndarray, bins: np.ndarray, lam: float = LAMBDA) -> "Predictor":
        raw = raw.astype(np.float64)
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        z = (raw - mean) / std
        y = np.sqrt(hists / np.maximum(hists.sum(1, keepdims=True), 1e-12))
        offset = y.mean(0)
        weights = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - offset))
        return cls(weights.astype(np.float32), offset.astype(np.float32), mean.astype(np.float32),
                   std.astype(np.float32), bins.astype(np.float32))

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Raw embeddings (..., E) -> histograms (..., Q) summing to 1."""
        y = np.clip(((raw - self.mean) / self.std) @ self.weights + self.offset, 0, None) ** 2
        return y / np.maximum(y.sum(-1, keepdims=True), 1e-12)

    def bias(self, raw: np.ndarray, prior: np.ndarray, strength: float, correction: float = 0.0,
             gate: tuple[float, float] | None = None) -> np.ndarray:
        """The decode's bias for a photo (model.PriorHead computes the same inside the graph):
        s (log h - log p) - c log p: colour_prior.prior_bias of the prediction h (mixed with FLOOR of the
        training prior p), and c > 0 favours the rarer colours (the colour the pull towards h takes away).
        gate (t, w): the bias times sigmoid((t - H) / w), H the prediction's entropy: an unsure (flat)
        prediction is trusted less (experiments/predicted_prior_gate.py)."""
        pred = self.predict(raw)
        log_p = np.log(np.clip(prior.astype(np.float64), 1e-12, None))
        bias = prior_bias(pred, prior, strength) - correction * log_p
        if gate is not None:
            bias = bias / (1 + np.exp(-(gate[0] - entropy(pred)) / gate[1]))[..., None]
        return bias.astype(np.float32)

    def prior_bias(self, raw: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """bias at the file's own setting (strength, correction, gate)."""
        return self.bias(raw, prior, self.strength, self.correction, self.gate)

    def to_arrays(self) -> dict:
        return {"weights": self.weights, "offset": self.offset, "mean": self.mean, "std": self.std, "bins": self.bins}

    def save(self, path: str) -> None:
        np.savez_compressed(path, **{k: v.astype(np.float16) if k == "weights" else v
                                     for k, v in self.to_arrays().items()},
                            strength=np.float64(self.strength), correction=np.float64(self.correction),
                            gate=np.asarray(self.gate if self.gate is not None else [], np.float64))

    @classmethod
    def load(cls, path: str) -> "Predictor":
        with np.load(path, allow_pickle=False) as d:
            arrays = (np.asarray(d[k], np.float32) for k in ("weights", "offset", "mean", "std", "bins"))
            if "strength" not in d:  # a file from before the setting was kept: the defaults
                return cls(*arrays)
            gate = tuple(float(g) for g in d["gate"]) or None
            return cls(*arrays, float(d["strength"]), float(d["correction"]), gate)


def load_memory(path: str) -> "Bank | Predictor":
    """A --memory file: a bank (build_memory.py) or a predictor (build_memory.py --predictor)."""
    with np.load(path, allow_pickle=False) as d:
        is_predictor = "weights" in d.files
    return Predictor.load(path) if is_predictor else Bank.load(path)


@dataclass
class Bank:
    embeddings: np.ndarray    # (N, D) float16, unit length
    hists: np.ndarray         # (N, Q) uint8
    mean: np.ndarray          # (E,) standardisation of the raw embedding
    std: np.ndarray           # (E,)
    projection: np.ndarray    # (E, D) principal axes
    bins: np.ndarray          # (Q, 2) the model's ab bins the histograms are over
    trust: Trust = field(default_factory=Trust)
    k: int = K
    tau: float = TAU

    @classmethod
    def build(cls, raw: np.ndarray, hists: np.ndarray, bins: np.ndarray, dims: int = DIMS) -> "Bank":
        """raw embeddings (N, E) and float histograms (N, Q) of the bank's photos -> a compact bank."""
        raw = raw.astype(np.float64)
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        z = (raw - mean) / std
        dims = min(dims, z.shape[1], len(z))
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        projection = vt[:dims].T
        return cls(_unit(z @ projection).astype(np.float16), quantise_hists(hists), mean.astype(np.float32),
                   std.astype(np.float32), projection.astype(np.float32), bins.astype(np.float32))

    def embed(self, raw: np.ndarray) -> np.ndarray:
        """Raw embeddings (..., E) -> the bank's space (..., D), unit length, float32."""
        return _unit(((raw - self.mean) / self.std) @ self.projection).astype(np.float32)

    def neighbours(self, raw: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(K,) indices of the most similar entries and their cosine similarities, most similar first."""
        sim = self.embeddings.astype(np.float32) @ self.embed(raw)
        if exclude is not None:
            sim[exclude] = -np.inf
        k = min(self.k, len(sim))
        idx = np.argpartition(-sim, k - 1)[:k]
        idx = idx[np.argsort(-sim[idx])]
        return idx, sim[idx]

    def lookup(self, raw: np.ndarray, network_hist: np.ndarray, exclude: np.ndarray | None = None) -> Lookup:
        """A grey photo's raw embedding (E,) and the network's own colour distribution (Q,) (its
        probabilities averaged over the pixels) -> the looked-up histogram and how far to trust it."""
        idx, sim = self.neighbours(raw, exclude)
        w = np.exp((sim - sim[0]) / self.tau)
        hs = dequantise_hists(self.hists[idx])
        hist = (w[:, None] * hs).sum(0) / w.sum()
        agreement = float(np.mean([0.5 * np.abs(a - hist).sum() for a in hs]))
        distance = float(0.5 * np.abs(hist - network_hist).sum())
        features = np.array([sim[0], sim.mean(), agreement, distance], dtype=np.float64)
        return Lookup(hist, features, self.trust.strength(features), idx)

    def save(self, path: str) -> None:
        np.savez_compressed(path, embeddings=self.embeddings, hists=self.hists, mean=self.mean, std=self.std,
                            projection=self.projection, bins=self.bins, k=np.int64(self.k),
                            tau=np.float64(self.tau), **self.trust.to_arrays())

    @classmethod
    def load(cls, path: str) -> "Bank":
        with np.load(path, allow_pickle=False) as d:
            return cls(d["embeddings"], d["hists"], d["mean"], d["std"], d["projection"], d["bins"],
                       Trust.from_arrays(d), int(d["k"]), float(d["tau"]))
