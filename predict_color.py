"""Colorize grey photos: python predict_color.py -image x.jpg [-model CKPT] [-output OUT] [-histo True]

The network runs on a resized copy of the image (short side --size); its ab prediction is upsampled
bilinearly and merged, in strips, with the L of the original, so the result has the input's resolution.
Only torch, numpy and PIL are imported on the way (matplotlib for -histo, tqdm for several images).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from model import ModelConfig, build_model
from utils import CheckpointError, grey_to_l, lab_to_rgb, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "checkpoints", "colorizer.pt")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
STRIP_PIXELS = 2 ** 22  # pixels merged at a time: bounds peak memory on huge images


class InputError(Exception):
    """An input that cannot be colorized; the message names the file and the problem."""


def _grey_and_alpha(im: Image.Image) -> tuple[np.ndarray, Image.Image | None]:
    """Any PIL image -> (grey levels (H, W) float32 in [0, 1], alpha channel or None), upright."""
    im = ImageOps.exif_transpose(im)
    alpha = None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode != "F" and a.max() > 255 else (1.0 if im.mode == "F" else 255.0)
        return np.clip(a / peak, 0, 1), alpha
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0, alpha


def _sample_rows(ab: torch.Tensor, y0: int, y1: int, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of ab (1,2,h,w) to rows y0:y1 of a (height, width) image."""
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * 2 / height - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * 2 / width - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None].to(ab.device)
    return F.grid_sample(ab, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Colorizer:
    """The inference pipeline shared by every front end (CLI, evaluation, benchmark).

    Colorizer.from_checkpoint(path).colorize(PIL image) -> PIL image (RGB, or RGBA if the input had alpha)
    """

    def __init__(self, model, size: int, temperature: float, prior_correction: float, device="cpu"):
        self.model = model.eval().to(device)
        self.norm = model.cfg.norm
        self.size, self.temperature, self.prior_correction = size, temperature, prior_correction
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str = DEFAULT_MODEL, device: str = "cpu", size: int | None = None,
                        temperature: float | None = None, prior_correction: float | None = None
                        ) -> "Colorizer":
        ckpt = load_checkpoint(path)
        try:
            model = build_model(ModelConfig(**ckpt["model_config"]))
            model.load_state_dict({k: v.float() for k, v in ckpt["model"].items()}, strict=True)
        except (TypeError, ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path}: does not match this model ({msg[:160]})") from None
        # Decode settings: the checkpoint's own (tuned on held-out images), unless overridden.
        inf = ckpt.get("inference", {})
        tc = ckpt.get("train_config", {})
        size = size or inf.get("size") or tc.get("resize") or round(tc.get("crop_size", 128) * 1.25)
        temperature = temperature if temperature is not None else inf.get("temperature", 0.38)
        prior_correction = (prior_correction if prior_correction is not None
                            else inf.get("prior_correction", 0.0))
        return cls(model, int(size), float(temperature), float(prior_correction), device)

    def net_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the network sees: short side `size`, long side at most 4 x size."""
        s = min(self.size / min(width, height), 4 * self.size / max(width, height))
        return max(1, round(width * s)), max(1, round(height * s))

    @torch.inference_mode()
    def predict_ab(self, grey: np.ndarray) -> torch.Tensor:
        """Grey (H, W) in [0, 1] -> ab in Lab units at the network's resolution, (1, 2, h, w)."""
        h, w = grey.shape
        nw, nh = self.net_size(w, h)
        small = Image.fromarray(grey, mode="F").resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        l_small = grey_to_l(torch.from_numpy(np.array(small)).clamp(0, 1))[None, None].to(self.device)
        ab_n = self.model.decode(self.model(self.norm.l(l_small)), temperature=self.temperature,
                                 prior_correction=self.prior_correction)
        ab_n = F.interpolate(ab_n, size=(nh, nw), mode="bilinear", align_corners=False)
        return self.norm.ab_inv(ab_n).float()

    @torch.inference_mode()
    def colorize_grey(self, grey: np.ndarray) -> np.ndarray:
        """Grey (H, W) float in [0, 1] -> RGB (H, W, 3) uint8 at full resolution, merged in strips."""
        h, w = grey.shape
        ab = self.predict_ab(grey)
        out = np.empty((h, w, 3), dtype=np.uint8)
        rows = max(1, STRIP_PIXELS // w)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            L = grey_to_l(torch.from_numpy(grey[y0:y1]).to(self.device))[None, None]
            lab = torch.cat([L, _sample_rows(ab, y0, y1, h, w)], dim=1)
            rgb = lab_to_rgb(lab)[0].mul_(255).round_().to(torch.uint8)
            out[y0:y1] = rgb.permute(1, 2, 0).cpu().numpy()
        return out

    def colorize(self, image: Image.Image) -> Image.Image:
        """PIL image of any mode -> colorized PIL image of the same size (alpha kept)."""
        grey, alpha = _grey_and_alpha(image)
        out = Image.fromarray(self.colorize_grey(grey), "RGB")
        if alpha is not None:
            out.putalpha(alpha)
        return out


# ---------------------------------------------------------------------------------------------------
def open_image(path: str) -> Image.Image:
    """Open and fully decode an image (first frame of an animation); errors become InputError."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder with no images")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
    try:
        im = Image.open(path)
        im.seek(0)
        im.load()
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image too large for PIL's safety limit") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, Image.UnidentifiedImageError):
            msg = "not an image file (or a format PIL cannot read)"
        raise InputError(f"{path}: cannot read image ({msg})") from None
    return im


def output_path(src: str, output: str | None, many: bool) -> str:
    """Where the result of src goes: Coloured_<name> beside it, into a folder, or the given file."""
    name = os.path.basename(src)
    stem, ext = os.path.splitext(name)
    if ext.lower() in (".gif",):  # palette formats would throw the colours away
        ext = ".png"
    coloured = f"Coloured_{stem}{ext}"
    if output is None:
        return os.path.join(os.path.dirname(src), coloured)
    if many or os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]:
        return os.path.join(output, coloured)
    return output


def _publish(tmp: str, path: str) -> None:
    """Give a finished temporary file the usual permissions and move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_image(im: Image.Image, path: str) -> None:
    """Write atomically (temporary file, then rename): a failure leaves no partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot create output folder ({e.strerror})") from None
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jpg", ".jpeg", ".bmp") and im.mode == "RGBA":
        im = im.convert("RGB")  # these formats have no alpha
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise InputError(f"{path}: unknown output format {ext!r}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=ext, dir=folder)
    except OSError as e:
        raise InputError(f"{path}: cannot write to {folder} ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        _publish(tmp, path)
    except OSError as e:
        os.unlink(tmp) if os.path.exists(tmp) else None
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None


def save_histogram(im: Image.Image, path: str) -> str:
    """Total, R, G and B histograms of a colorized image as a PNG; returns a one-line colour summary."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = np.asarray(im.convert("RGB"))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, (title, data, colour) in zip(axes, [("total", rgb.reshape(-1), "black"),
                                               ("red", rgb[..., 0].ravel(), "red"),
                                               ("green", rgb[..., 1].ravel(), "green"),
                                               ("blue", rgb[..., 2].ravel(), "blue")]):
        ax.hist(data, bins=256, range=(0, 256), color=colour, alpha=0.8)
        ax.set_title(title), ax.set_xlim(0, 255), ax.set_yticks([])
    fig.suptitle(os.path.basename(path))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return mood(rgb)


def save_figure(fig, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80, format="png")
        _publish(tmp, path)
    except OSError as e:
        os.unlink(tmp) if os.path.exists(tmp) else None
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None


def mood(rgb: np.ndarray) -> str:
    """The average colour and what it leans to, e.g. 'average colour RGB(121, 110, 96): warm'."""
    r, g, b = rgb.reshape(-1, 3).mean(0)
    lean = "warm" if r > b + 4 else "cool" if b > r + 4 else "neutral"
    if g > max(r, b) + 4:
        lean = "green"
    return f"average colour RGB({r:.0f}, {g:.0f}, {b:.0f}): {lean}"


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given; folders searched recursively for images (skipping our own Coloured_/Histo_ files)."""
    out = []
    for item in items:
        if os.path.isdir(item):
            found = []
            for dirpath, dirnames, files in os.walk(item):
                dirnames.sort()
                found += [os.path.join(dirpath, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_EXTENSIONS)
                          and not f.startswith(("Coloured_", "Histo_Coloured_", "."))]
            out += found if found else [item]  # an empty folder is reported as an error
        else:
            out.append(item)
    return out


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "t", "yes", "y", "1", "on"):
        return True
    if v.lower() in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-image", "--image", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("-model", "--model", default=DEFAULT_MODEL, help="checkpoint (default: the shipped model)")
    p.add_argument("-output", "--output", help="output file (one input) or folder; default: Coloured_<name> beside the input")
    p.add_argument("-histo", "--histo", type=str2bool, nargs="?", const=True, default=False,
                   help="also write Histo_Coloured_<name>.png (total, R, G, B histograms) and print the mood")
    p.add_argument("--size", type=int, help="short side of the copy the network sees (default: the checkpoint's)")
    p.add_argument("--temperature", type=float, help="classification models: annealed-mean T; lower is more vivid")
    p.add_argument("--prior-correction", type=float, help="classification models: 0 = as trained (rebalanced, vivid), 1 = calibrated (safer)")
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace its input")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return p.parse_args(argv)


def resolve_model(path: str) -> str:
    """Accept the original project's style too: `-model trainedModel` finds trainedModel.pt or checkpoints/."""
    for cand in (path, path + ".pt", os.path.join(HERE, "checkpoints", path),
                 os.path.join(HERE, "checkpoints", path + ".pt")):
        if os.path.isfile(cand):
            return cand
    return path


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        colorizer = Colorizer.from_checkpoint(resolve_model(args.model), device=args.device, size=args.size,
                                              temperature=args.temperature, prior_correction=args.prior_correction)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inputs = expand_inputs(args.image)
    many = len(inputs) > 1 or any(os.path.isdir(i) for i in args.image)
    failed = 0
    bar = None
    if len(inputs) > 1:
        from tqdm import tqdm
        bar = tqdm(total=len(inputs), desc="colorizing", unit="img")
    for src in inputs:
        try:
            dst = output_path(src, args.output, many)
            if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst) and not args.overwrite:
                raise InputError(f"{src}: output would overwrite the input (use --overwrite to allow it)")
            out = colorizer.colorize(open_image(src))
            save_image(out, dst)
            if args.histo:
                stem = os.path.splitext(os.path.basename(dst))[0]
                summary = save_histogram(out, os.path.join(os.path.dirname(dst), f"Histo_{stem}.png"))
                print(f"{os.path.basename(dst)}: {summary}")
        except InputError as e:
            failed += 1
            (bar.write if bar else lambda m: print(m, file=sys.stderr))(f"error: {e}")
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    if failed:
        print(f"error: {failed} of {len(inputs)} image(s) could not be colorized", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
