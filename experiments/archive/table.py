"""Print a Markdown table from evaluate.py summary.json files: python experiments/archive/table.py FILE..."""
import json
import os
import sys

print("| run | set | PSNR dB (grey) | SSIM | CF (originals) | AuC % |")
print("|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    with open(path) as f:
        s = json.load(f)
    m, st = s["mean"], s["settings"]
    name = os.path.splitext(os.path.basename(path))[0]
    print(f"| {name} | {os.path.basename(os.path.normpath(st['data']))} | {m['psnr']:.2f} ({m['grey_psnr']:.2f}) "
          f"| {m['ssim']:.3f} | {m['cf']:.1f} ({m['cf_orig']:.1f}) | {m['auc']:.1f} |")
