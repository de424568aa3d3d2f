"""What an audit costs as the number of classes grows: everything after the sweep against the sweep itself.

For each C in --classes this writes an ImageFolder of C classes x K images (each class its own background and
object colours, the object at a jittered place, a corner mark on part of every tenth class; PNG at small sizes,
JPEG at ImageNet-like ones), fits a resnet18's head to it in this script (so the model is healthy and every check
after the sweep runs as it would on a real model), and runs the whole `auditor audit` command in a fresh process. It prints, per C, the sweep's seconds,
every later stage's seconds and share of the sweep, the images each stage decoded and ran through the model
(manifest.json's `work`, where the audit records it), the audit process's peak memory (manifest.json), and last the targets' ratios:
after-the-sweep / sweep at C = 100 and 1,000, and peak memory at 1,000 over 100.

    python benchmarks/scale.py                              # C = 10, 100, 1000; 8 images of 48 px each
    python benchmarks/scale.py --classes 10 100 --size 224  # ImageNet-like photos
    python benchmarks/scale.py --markdown                   # also write the table into README and benchmarks/README

Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.pipeline import STAGES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = 0.5, 0.25

# manifest.json timings keys after the sweep, in the order a run goes through them (each stage's own seconds: a
# stage nested in another is taken out of it, so they add up).
AFTER_SWEEP = STAGES[STAGES.index("sweep_s") + 1 :]


def scale_model(num_classes: int = 10) -> nn.Module:
    """torchvision's resnet18 (batch norm, a stride-32 grid: the usual audited model), its convolutions seeded and
    random, its head trained by `train`: a healthy model in seconds, at the cost per image of a real one."""
    import torchvision  # noqa: PLC0415

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def make_images(classes: int, per_class: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [C * K, size, size, 3] and labels: class c has its own background and object colours (drawn once per
    class), the object a square a third of the side at a jittered place, and pixel noise; every tenth class
    carries a white mark in the top-left corner on 60 % of its images, so the place check, the causal check and
    the repeated-mark search have something to examine, as they would in a real data set."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (classes, 3))
    foreground = rng.integers(0, 256, (classes, 3))
    labels = np.repeat(np.arange(classes), per_class)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    side, mark = max(2, size // 3), max(2, size // 10)
    for i, c in enumerate(labels):
        image = np.broadcast_to(background[c], (size, size, 3)).astype(np.int16)
        top, left = rng.integers(mark, size - side + 1, 2)
        image[top : top + side, left : left + side] = foreground[c]
        image += rng.integers(-12, 13, image.shape, dtype=np.int16)
        if c % 10 == 0 and rng.random() < 0.6:
            image[:mark, :mark] = 255
        images[i] = image.clip(0, 255)
    return images, labels


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, jpeg: bool) -> None:
    for i, (image, c) in enumerate(zip(images, labels)):
        folder = root / f"class{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / (f"{i:06d}.jpg" if jpeg else f"{i:06d}.png"), quality=90)


def train(images: np.ndarray, labels: np.ndarray, classes: int, epochs: int, seed: int = 0,
          device: str = "cpu") -> tuple[nn.Module, float]:
    """`scale_model` with its head fitted to the images it will be audited on (the audit measures the model, not
    generalisation). Returns it and its accuracy there."""
    torch.manual_seed(seed)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    return fit_head(scale_model(classes), x, torch.from_numpy(labels), epochs, device)


def fit_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
             device: str | torch.device = "cpu") -> tuple[nn.Module, float]:
    """A torchvision ResNet (`fc` head) with its head alone fitted to (x, y): the features once, in eval mode, then
    a standardised linear fit folded back into `fc`. A healthy model in seconds, at a real model's cost per image.
    Returns the model and its accuracy on x."""
    model = model.eval().to(device)
    body = nn.Sequential(*list(model.children())[:-1], nn.Flatten())
    with torch.no_grad():
        features = torch.cat([body(part.to(device)).float().cpu() for part in x.split(64)])
    mu, sigma = features.mean(0), features.std(0).clamp_min(1e-6)
    standard = (features - mu) / sigma
    head = nn.Linear(features.shape[1], model.fc.out_features)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(256):
            optimiser.zero_grad()
            nn.functional.cross_entropy(head(standard[batch]), y[batch]).backward()
            optimiser.step()
    with torch.no_grad():  # logits = W (f - mu) / sigma + b
        model.fc.weight.copy_(head.weight / sigma)
        model.fc.bias.copy_(head.bias - (head.weight / sigma) @ mu)
        accuracy = float(torch.cat([model(part.to(device)).argmax(1).cpu() for part in x.split(64)]).eq(y).float().mean())
    return model.cpu(), accuracy


def audit(root: Path, checkpoint: Path, classes: int, out: Path, extra: list[str],
          threads: int | None = None) -> tuple[float, float, int]:
    """Run `auditor audit` in a fresh process; returns its wall seconds and exit code."""
    command = [
        sys.executable, "-m", "auditor", "audit", "--data.root", str(root),
        "--model.factory", "benchmarks.scale:scale_model", "--model.factory_kwargs", f"{{num_classes: {classes}}}",
        "--model.checkpoint", str(checkpoint), "--data.mean", f"[{MEAN}, {MEAN}, {MEAN}]",
        "--data.std", f"[{STD}, {STD}, {STD}]", "--sweep.batch_size", "64", "--run.resume", "false",
        "--out", str(out), *extra,
    ]  # fmt: skip
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}), "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr).returncode
        seconds = time.perf_counter() - started
        stderr.seek(0)
        if code not in (0, 3):
            sys.exit(f"scale: auditor audit exited {code}:\n{stderr.read()[-3000:]}")
    return seconds, code


def one_scale(classes: int, args, work: Path) -> dict:
    images, labels = make_images(classes, args.per_class, args.size, args.seed)
    root = work / f"c{classes}" / "data"
    write_folder(root, images, labels, jpeg=args.size >= 128)
    model, accuracy = train(images, labels, classes, args.epochs, args.seed,
                            "cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = work / f"c{classes}" / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    out = work / f"c{classes}" / "run"
    seconds, code = audit(root, checkpoint, classes, out, [f"--set={item}" for item in args.set], args.threads)
    manifest = json.loads((out / "manifest.json").read_text())
    # The audit's own peak (manifest.json, VmHWM). Not os.wait4's ru_maxrss: the kernel carries a process's
    # high-water mark across fork and exec, so that would count this script's images, held while it starts the
    # audit (11 GB at 1,000 classes of 224 px, of which the audit used 2).
    peak = manifest["peak_memory_mib"]
    summary = json.loads((out / "summary.json").read_text())
    return {"classes": classes, "images": len(labels), "train_accuracy": accuracy, "command_s": seconds,
            "peak_mib": peak, "exit": code, "timings": manifest["timings"], "work": manifest.get("work", {}),
            "health": summary.get("model_health"), "findings": summary.get("findings"),
            "sampled": manifest.get("sampled")}


def table(results: list[dict], args) -> str:
    lines = [
        f"{args.per_class} images of {args.size} px per class, resnet18 with its head fitted in the script; "
        f"`python benchmarks/scale.py --classes {' '.join(map(str, args.classes))} --size {args.size}"
        f"{f' --threads {args.threads}' if args.threads else ''}`; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| classes | images | sweep s | after the sweep s | after / sweep | largest stage after | whole command s | "
        "peak MiB | model health |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        t = r["timings"]
        after = {k: t.get(k, 0.0) for k in AFTER_SWEEP}
        total_after = sum(after.values())
        worst = max(after, key=after.get)
        lines.append(
            f"| {r['classes']} | {r['images']} | {t['sweep_s']:.1f} | {total_after:.1f} | "
            f"{total_after / t['sweep_s']:.0%} | {worst[:-2]} {after[worst]:.1f} s | {r['command_s']:.1f} | "
            f"{r['peak_mib']:.0f} | {r['health']} |"
        )
    lines += ["", "| classes | " + " | ".join(k[:-2] for k in AFTER_SWEEP) + " |",
              "|---:|" + "---:|" * len(AFTER_SWEEP)]
    for r in results:
        t = r["timings"]
        lines.append(f"| {r['classes']} | " + " | ".join(f"{t.get(k, 0.0):.2f}" for k in AFTER_SWEEP) + " |")
    if any(r["work"] for r in results):
        stages = sorted({s for r in results for s in r["work"]})
        lines += ["", "Images decoded / images run through the model, per stage after the sweep (manifest.json "
                      "`work`):", "", "| classes | " + " | ".join(stages) + " |", "|---:|" + "---:|" * len(stages)]
        for r in results:
            cells = [r["work"].get(s, {}) for s in stages]
            lines.append(f"| {r['classes']} | " + " | ".join(
                f"{c.get('images_read', 0)} / {c.get('forward_images', 0)}" for c in cells) + " |")
    by_classes = {r["classes"]: r for r in results}
    lines.append("")
    for c in (100, 1000):
        if c in by_classes:
            t = by_classes[c]["timings"]
            ratio = sum(t.get(k, 0.0) for k in AFTER_SWEEP) / t["sweep_s"]
            lines.append(f"- after the sweep at {c} classes: {ratio:.0%} of the sweep")
    if 100 in by_classes and 1000 in by_classes:
        lines.append(f"- peak memory, 1,000 classes over 100: {by_classes[1000]['peak_mib'] / by_classes[100]['peak_mib']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="image side in pixels (48 small, 224 ImageNet-like)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the head's training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads of the audit (OMP_NUM_THREADS; default: all usable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra audit config")
    parser.add_argument("--keep", help="keep the data and run directories in this folder")
    parser.add_argument("--markdown", action="store_true",
                        help="write the table into README.md (speed section) and benchmarks/README.md")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        for classes in args.classes:
            results.append(one_scale(classes, args, work))
            r = results[-1]
            print(f"{classes} classes: train accuracy {r['train_accuracy']:.2f}, command {r['command_s']:.1f} s, "
                  f"sweep {r['timings']['sweep_s']:.1f} s, peak {r['peak_mib']:.0f} MiB, health {r['health']}",
                  flush=True)
    text = table(results, args)
    print("\n" + text)
    if args.markdown:
        from benchmarks.markdown_sections import replace_section  # noqa: PLC0415

        name = f"scale-{args.size}px"
        replace_section(REPO / "benchmarks" / "README.md", name, text)
        replace_section(REPO / "README.md", f"speed-{name}", text)
    return results


if __name__ == "__main__":
    main()
