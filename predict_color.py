"""Colorize grey photos and films: python predict_color.py -image x.jpg|film.mp4 [-model CKPT] [-output OUT]

The command line only: flags, finding the inputs, planning the outputs and mapping over them. The
pipeline is colorizer.Colorizer; reading and writing files (and every error about them) is image_io, and
for films video.colorize_video (video_io, temporal), imported only when a film is given.
Every input gets its full-resolution result or one line on stderr naming it; a bad file never stops a
batch, and SIGINT / SIGTERM leave no partial file. Only onnxruntime, numpy and PIL are imported on the
way (matplotlib for -histo, tqdm for several images, PyAV for films; torch only for a .pt checkpoint).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from PIL import Image

# Colorizer and DEFAULT_MODEL are also imported from here
from colorizer import DEFAULT_MODEL, DEFAULT_TORCH_MODEL, Colorizer, decode_overrides, ordered_map, torch_available
from colour_prior import REFERENCE_STRENGTH, ColourPrior, PriorError
from memory import Bank, Predictor, load_memory
from hints import Hint, HintError, check_inside, load_hints, parse_hint
from image_io import (INPUT_EXTENSIONS, MAX_PIXELS, STDERR_LOCK, InputError, first_line, format_for_extension,
                      open_image, output_format, read_grey, save_histogram, save_image)
from files import CheckpointError, remove_temporaries_on_signals
from video_io import CONTAINERS, is_video

HERE = os.path.dirname(os.path.abspath(__file__))


def output_path(src: str, output: str | None, many: bool, subfolder: str = "", video: bool = False) -> str:
    """Where the result of src goes: Coloured_<name> beside it, into a folder (keeping the subfolder of
    a searched input folder), or the given file. A video keeps its container (mp4 if it has none we write)."""
    stem, ext = os.path.splitext(os.path.basename(src))
    if video:
        ext = ext if ext.lower() in CONTAINERS else ".mp4"
    # A GIF's palette would throw the colours away; a name without an image extension (a photo called
    # `scan`, or `x.txt`, which then fails to read, naming the input) gives a PNG.
    elif ext.lower() == ".gif" or format_for_extension(ext) is None:
        ext = ".png"
    coloured = f"Coloured_{stem}{ext}"
    if output is None:
        return os.path.join(os.path.dirname(src), coloured)
    if many or os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]:
        return os.path.join(output, subfolder, coloured)
    return output


def find_inputs(items: list[str]) -> list[tuple[str, str]]:
    """(file, subfolder) pairs: files as given (subfolder ''); folders searched recursively for images,
    skipping our own Coloured_/Histo_ outputs and hidden files; subfolder is the path below the folder."""
    out = []
    for item in items:
        if not os.path.isdir(item):
            out.append((item, ""))
            continue
        found = []
        for dirpath, dirnames, files in os.walk(item):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, item)
            found += [(os.path.join(dirpath, f), "" if rel == "." else rel) for f in sorted(files)
                      if f.lower().endswith(INPUT_EXTENSIONS)
                      and not f.startswith(("Coloured_", "Histo_Coloured_", "."))]
        out += found if found else [(item, "")]  # an empty folder is reported as an error
    return out


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given; folders searched recursively for images (skipping our own Coloured_/Histo_ files)."""
    return [path for path, _ in find_inputs(items)]


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "t", "yes", "y", "1", "on"):
        return True
    if v.lower() in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def _pixel_count(v: str) -> int:
    """--max-pixels: a number of pixels such as 300000000 or 3e8; 0 for no limit."""
    try:
        n = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {v!r}") from None
    if not 0 <= n < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v!r}")
    return int(n)


def _positive(kind: type, zero: bool = False) -> Callable[[str], int | float]:
    """An argparse type: a number above 0 (or at least 0 with zero=True)."""
    def parse(v: str):
        x = kind(v)
        if not (x >= 0 if zero else x > 0):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, got {v!r}")
        return x
    return parse


def _port(v: str) -> int:
    """--port: 0 (a free port) to 65535."""
    port = int(v)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {v!r}")
    return port


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-image", "--image", nargs="+", required=True, help="image files and/or folders (searched recursively)")
    p.add_argument("-model", "--model",
                   help="model file: .onnx (onnxruntime) or a torch checkpoint (.pt, needs requirements-train.txt), "
                        "or a name found as NAME.pt or in checkpoints/ (default: the shipped model, "
                        "checkpoints/colorizer.onnx; with a decode flag and torch installed, colorizer.pt)")
    p.add_argument("-output", "--output", help="output file (one input) or folder; default: Coloured_<name> beside each input")
    p.add_argument("-histo", "--histo", type=str2bool, nargs="?", const=True, default=False,
                   help="True/False: also write Histo_Coloured_<name>.png (total, R, G, B) and print the mood")
    p.add_argument("--size", type=_positive(int), help="short side of the copy the network sees (default: the checkpoint's)")
    p.add_argument("--temperature", type=_positive(float), help="classification models: annealed-mean T; lower is more vivid")
    p.add_argument("--prior-correction", type=float, help="classification models: 0 = as trained (rebalanced, vivid), 1 = calibrated (safer)")
    p.add_argument("--gain", type=_positive(float), help="any model: colour spread around the photo's mean colour; "
                   "1 = as decoded, above 1 more vivid (default: the checkpoint's)")
    p.add_argument("--spread", type=_positive(float, zero=True), help="models with a variance head: stretch each photo's colours by "
                   "how unsure the network is of them; 0 = none, 1 = the colourfulness it expects (default: the checkpoint's)")
    p.add_argument("--evenness", type=_positive(float, zero=True), help="any model: stretch washed-out photos more than vivid "
                   "ones; 0 = the same gain for every photo, 1 = every photo to the same spread (default: the checkpoint's)")
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace its input")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--max-pixels", type=_pixel_count, default=MAX_PIXELS,
                   help=f"refuse larger images, from their header, before decoding (default {MAX_PIXELS:,}; 0: no limit)")
    p.add_argument("--hint", action="append", default=[], metavar="X,Y,COLOUR",
                   help="a point of known colour, in the input's pixels: e.g. 120,340,#c0392b or 40,20,skyblue "
                        "(repeatable; one input image only; the colour's chroma is used, the brightness stays)")
    p.add_argument("--hints", metavar="FILE", help='JSON list of hints: [{"x": 120, "y": 340, "color": "#c0392b", '
                                                  '"radius": 6}, ...] (radius in pixels, optional)')
    p.add_argument("--threads", type=int, default=0,
                   help="images (or strips of one image, or a film's next frames) worked on at once, one CPU thread "
                        "each (0: one per core)")
    p.add_argument("--video", action="store_true",
                   help="read every input as a film, whatever its extension (e.g. .mpg, .ts or an animated GIF; "
                        ".mp4 .m4v .mov .mkv .webm .avi always are)")
    p.add_argument("--no-stabilize", dest="stabilize", action="store_false",
                   help="films: colorize each frame on its own (no temporal smoothing; it flickers)")
    p.add_argument("--crf", type=int, help="films: H.264 quality, 0 (lossless) to 51; default 18 (VP9 for .webm: 31)")
    p.add_argument("--reference", action="append", default=[], metavar="PHOTO",
                   help="a colour photo whose colours the result should take (repeatable: several pool their "
                        "colours; one reference serves every photo of a folder and every frame of a film)")
    p.add_argument("--reference-strength", type=_positive(float, zero=True), default=REFERENCE_STRENGTH,
                   help=f"how strongly the reference steers the colours: 0 = not at all, {REFERENCE_STRENGTH:g} = "
                        "the default, higher = more of its colours at the cost of accuracy")
    p.add_argument("--memory", metavar="BANK", help="a colour memory built with build_memory.py from your own colour "
                   "photos: each photo borrows the colours of the most similar ones, as far as they can be trusted; "
                   "or a colour predictor (build_memory.py --predictor; checkpoints/colour_predictor.npz, fitted on "
                   "16,000 photos, people and rooms among them) (photos only; a film takes --reference)")
    p.add_argument("--no-memory", action="store_true", help="decode without the colour prior a model predicts from "
                   "each photo (a model exported with one, docs/priors.md); the network's colours alone")
    p.add_argument("--edit", action="store_true", help="open the photo in the colour editor, a page in the browser "
                   "(docs/editor.md): click points, pick colours, save; starts from --hint/--hints if given")
    p.add_argument("--port", type=_port, default=0, help="--edit: the local port (default: a free one)")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="--edit: only print the address")
    return p.parse_args(argv)


def default_model(args: argparse.Namespace) -> str:
    """The shipped model the flags call for: the ONNX one (no torch, same photos within one level),
    unless a decode flag asks for what only the torch checkpoint can change and torch is installed."""
    if any(v is not None for v in decode_overrides(args).values()) and torch_available():
        return DEFAULT_TORCH_MODEL
    return DEFAULT_MODEL


def resolve_model(path: str) -> str:
    """Accept the original project's style too: `-model trainedModel` finds trainedModel.pt or checkpoints/."""
    for cand in (path, path + ".pt", path + ".pth", path + ".onnx", os.path.join(HERE, "checkpoints", path),
                 os.path.join(HERE, "checkpoints", path + ".pt"), os.path.join(HERE, "checkpoints", path + ".onnx")):
        if os.path.isfile(cand):
            return cand
    return path


def _device_error(device: str) -> str | None:
    """Why --device cannot be used, or None (imports torch: for torch checkpoints only)."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device}: not a device (use cpu, cuda or cuda:N)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: no CUDA GPU is available here (use --device cpu)"
    return None


def _plan(inputs: list[tuple[str, str]], args: argparse.Namespace, many: bool) -> list[tuple[str, str | None, str | None]]:
    """(src, dst, error) for every input: refuses up front outputs that would replace their input, or
    that two inputs would both write."""
    plan, taken = [], {}
    for src, sub in inputs:
        dst = output_path(src, args.output, many, sub, video=args.video or is_video(src))
        error = None
        key = os.path.normcase(os.path.abspath(dst))
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst) and not args.overwrite:
            error = f"{src}: output would overwrite the input (use --overwrite to allow it)"
        elif key in taken:
            error = f"{src}: its output {dst} would also be written for {taken[key]}; skipped"
        else:
            taken[key] = src
        plan.append((src, dst, error))
    return plan


def colorize_file(colorizer: Colorizer, src: str, dst: str, histo: bool, workers: int = 1,
                  max_pixels: int | None = MAX_PIXELS, notify: Callable[[str], None] | None = None,
                  hints: list[Hint] | None = None, prior: ColourPrior | None = None,
                  memory: Bank | Predictor | None = None) -> str | None:
    """Colorize src into dst (and its histogram); returns the mood line with -histo. Raises InputError.
    notify gets a line before a very large image is decoded (image_io.read_grey); prior: a colour prior
    (--reference) for this photo; memory: a bank or a predictor (--memory) to make this photo's colour prior with."""
    output_format(dst)  # an unknown output format fails before the work, not after
    grey, alpha = read_grey(src, max_pixels, notify)
    try:
        check_inside(hints or [], grey.shape[1], grey.shape[0], src)
    except HintError as e:
        raise InputError(str(e)) from None
    if memory is not None:
        prior = colorizer.memory_prior(grey, memory)
    out = colorizer.colorize_to_image(grey, alpha, workers=workers, hints=hints, prior=prior)
    del grey, alpha
    save_image(out, dst)
    if histo:
        stem = os.path.splitext(os.path.basename(dst))[0]
        summary = save_histogram(out, os.path.join(os.path.dirname(dst), f"Histo_{stem}.png"))
        return f"{os.path.basename(dst)}: {summary}"
    return None


def run(args: argparse.Namespace) -> int:
    """The CLI on parsed arguments; returns the exit status. Process-wide settings are restored after."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    # The CLI colorizes photos of any size: our own --max-pixels check in image_io replaces PIL's
    # decompression-bomb limit (which would refuse a 12000x9000 photo), with a message naming the file.
    Image.MAX_IMAGE_PIXELS = None
    try:
        # A signal mid-write (Ctrl-C, `timeout`, a scheduler) removes the half-written temporary files.
        # The editor stops on Ctrl-C itself, after the request in progress (a save) has finished.
        signals = ("SIGTERM", "SIGHUP") if args.edit else ("SIGINT", "SIGTERM", "SIGHUP")
        with remove_temporaries_on_signals("interrupted ({signal})", signals):
            return _run(args, workers=args.threads or len(os.sched_getaffinity(0)))
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _one_torch_thread() -> Callable[[], None]:
    """Parallel work is done by our threads (several images, or the strips of one); torch's intra-op
    OpenMP threads spin-wait and stall badly when the cores are shared with other jobs. Returns the undo."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(threads)


def _load_colorizer(args: argparse.Namespace) -> Colorizer:
    """The Colorizer the flags ask for; CheckpointError (one line) for a bad device or checkpoint."""
    path = resolve_model(args.model) if args.model else default_model(args)
    if not path.lower().endswith(".onnx") and torch_available():
        device_error = _device_error(args.device)
        if device_error:
            raise CheckpointError(device_error)
    try:
        colorizer = Colorizer.from_checkpoint(path, device=args.device, size=args.size, **decode_overrides(args))
        colorizer.memory = not args.no_memory
        return colorizer
    except CheckpointError as e:
        if not args.model and not os.path.exists(path):
            raise CheckpointError(f"{e} (train one with train.py and export it, or pass -model CKPT)") from None
        raise


def colorize_film(colorizer: Colorizer, src: str, dst: str, args: argparse.Namespace, workers: int,
                  progress: bool, prior: ColourPrior | None = None) -> None:
    """A film src into dst (video.colorize_video, with the flags' settings). Raises InputError."""
    if args.hint or args.hints:
        raise InputError(f"{src}: colour hints (--hint, --hints) are for photos, not films")
    if args.memory:
        raise InputError(f"{src}: --memory is for photos; give a film its colours with --reference")
    from video import colorize_video  # PyAV loads only for films
    colorize_video(colorizer, src, dst, stabilize=args.stabilize, crf=args.crf, workers=workers, progress=progress,
                   prior=prior)


def _colorize_one(colorizer: Colorizer, item: tuple[str, str, str | None], film: Callable[[str, str], None] | None = None,
                  all_films: bool = False, **kw) -> tuple[str | None, str | None]:
    """One planned (src, dst, error) -> (mood line or None, error message or None); never raises.
    film(src, dst) colorizes films: inputs with a video extension, or every input if all_films (--video).
    kw: colorize_file's keyword arguments."""
    src, dst, error = item
    if error:
        return None, error
    try:
        if film is not None and (all_films or is_video(src)):
            return film(src, dst), None
        return colorize_file(colorizer, src, dst, **kw), None
    except InputError as e:
        return None, str(e)
    except (OSError, ValueError, RuntimeError, MemoryError) as e:  # unforeseen: still one line, batch goes on
        return None, f"{src}: {type(e).__name__}: {first_line(e)}"


def _hints(args: argparse.Namespace, colorizer: Colorizer, many: bool) -> list[Hint]:
    """The --hint and --hints points; HintError (one line) for a malformed one or where none can apply."""
    hints = [parse_hint(h) for h in args.hint] + (load_hints(args.hints) if args.hints else [])
    if hints and many:
        raise HintError("hints are in one image's pixels: give a single input image with --hint/--hints")
    return hints


def _memory(args: argparse.Namespace) -> Bank | Predictor | None:
    """The --memory bank or predictor, or None; PriorError (one line) for a file that is neither."""
    if not args.memory:
        return None
    if not os.path.isfile(args.memory):
        raise PriorError(f"{args.memory}: colour memory not found")
    try:
        return load_memory(args.memory)
    except (OSError, ValueError, KeyError, EOFError):
        raise PriorError(f"{args.memory}: not a colour memory (a .npz file that build_memory.py writes)") from None


def _reference(args: argparse.Namespace, colorizer: Colorizer) -> ColourPrior | None:
    """The --reference photos' colour prior, made once for every input; InputError or PriorError (one line)
    for a reference that cannot be read or a model that cannot take one."""
    if args.reference and args.memory:
        raise PriorError("give --reference or --memory, not both")
    if not args.reference:
        return None
    images = [open_image(path, max_pixels=args.max_pixels or None) for path in args.reference]
    return colorizer.reference_prior(images, args.reference_strength)


def _edit(colorizer: Colorizer, inputs: list[tuple[str, str]], many: bool, hints: list[Hint],
          args: argparse.Namespace, workers: int, prior: ColourPrior | None = None) -> int:
    """--edit: the colour editor (editor_server) on the one input photo, until Ctrl-C; prior: --reference's."""
    if many or args.video or is_video(inputs[0][0]):
        print("error: --edit opens one photo (not a folder, several images or a film)", file=sys.stderr)
        return 2
    if args.memory:
        print("error: --edit takes --reference, not --memory", file=sys.stderr)
        return 2
    (src, dst, error), = _plan(inputs, args, many=False)
    from editor import EditorSession  # the editor's modules load only for --edit
    from editor_server import serve
    try:
        if error:
            raise InputError(error)
        output_format(dst)
        session = EditorSession.open(colorizer, src, dst, hints, args.max_pixels or None, workers=workers,
                                     prior=prior)
        return serve(session, args.port, open_browser=args.browser)
    except (InputError, HintError, PriorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the port is taken, or cannot be listened on
        print(f"error: --port {args.port}: cannot listen on 127.0.0.1 ({e.strerror or e})", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, workers: int) -> int:
    try:
        colorizer = _load_colorizer(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    undo = _one_torch_thread() if colorizer.model is not None else (lambda: None)
    try:
        return _colorize_all(args, colorizer, workers)
    finally:
        undo()


def _colorize_all(args: argparse.Namespace, colorizer: Colorizer, workers: int) -> int:
    inputs = find_inputs(args.image)
    many = len(inputs) > 1 or any(os.path.isdir(i) for i in args.image)
    try:
        hints = _hints(args, colorizer, many)
        prior, memory = _reference(args, colorizer), _memory(args)
    except (HintError, InputError, PriorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.edit:
        return _edit(colorizer, inputs, many, hints, args, workers, prior)
    if many and args.output and os.path.isfile(args.output):
        print(f"error: {args.output}: is a file, but several inputs need an output folder", file=sys.stderr)
        return 2
    bar = None
    if len(inputs) > 1:
        from tqdm import tqdm
        bar = tqdm(total=len(inputs), desc="colorizing", unit="img")

    def say(line: str, out=None) -> None:  # from any thread; never while a decode has stderr redirected
        with STDERR_LOCK:
            (bar.write if bar else print)(line, file=out or sys.stderr)

    # Several images: one per thread, each merged on that thread. One image: its strips share the threads.
    film = functools.partial(colorize_film, colorizer, args=args, workers=1 if many else workers, progress=not many,
                             prior=prior)
    job = functools.partial(_colorize_one, colorizer, film=film, all_films=args.video, histo=args.histo,
                            workers=1 if many else workers, hints=hints, prior=prior, memory=memory, max_pixels=args.max_pixels or None,
                            notify=lambda line: say(f"note: {line}"))
    failed = 0
    for summary, error in ordered_map(job, _plan(inputs, args, many), workers if many else 1):
        failed += error is not None
        if error:
            say(f"error: {error}")
        elif summary:
            say(summary, sys.stdout)
        if bar:
            with STDERR_LOCK:
                bar.update(1)
    if bar:
        bar.close()
    if failed and many:
        print(f"error: {failed} of {len(inputs)} image(s) could not be colorized", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
