"""The whole `auditor audit` command against a plain torchvision inference loop, on real photos, in one run.

The coco128-seg photos (JPEG, about 640 px) are repeated to N images as an ImageFolder, each photo under the
class of its largest object. In one run, on the same files, model and settings (resize, crop, batch, workers,
device), this times:

  plain inference    torchvision.datasets.ImageFolder + DataLoader, Resize/CenterCrop/ToTensor/Normalize,
                     model(images) under torch.inference_mode: decode, transform, forward
  auditor audit      the whole command as a subprocess (`python -m auditor audit ...`): start-up, model load,
                     data scan, sweep, merge, findings, causal check, counterfactual evidence, report

and reads the sweep alone and every stage's seconds from the run's manifest.json. It prints the table of
issue 13, the per-stage breakdown, and last the ratio of the whole command to plain inference.

    python benchmarks/end_to_end.py                      # 512 images, resnet18, CPU
    python benchmarks/end_to_end.py --images 128         # quicker, while iterating
    python benchmarks/end_to_end.py --device cuda --arch resnet50 --batch 128 --workers 8

The model has random convolutions (nothing is downloaded) and, by default, its head fitted to the photos
(`benchmarks.scale.fit_head`: a few seconds), so it is healthy and every check after the sweep runs as it would
for a trained model; with --random-head the model is broken and the audit skips the checks that could only
find low findings (measure both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale import fit_head  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COCO = REPO.parent / "shared" / "data" / "coco128-seg"

# manifest.json timings key -> the stage it measures, in the order a run goes through them.
STAGES = {
    "startup_s": "start-up (Python, imports; the command's wall time not inside the run)",
    "model_load_s": "model load and probe (target layer, geometry)",
    "data_scan_s": "data scan (find images, fingerprint)",
    "sweep_s": "sweep (decode, forward, maps, metrics, shards)",
    "merge_s": "merge (records, maps, tables, summary)",
    "findings_s": "findings (the rules)",
    "batch_norm_check_s": "batch-norm check",
    "place_check_s": "place check",
    "causal_check_s": "causal check",
    "mark_search_s": "repeated-mark search",
    "property_check_s": "property check",
    "localisation_s": "localisation (CAM boxes, MaxBoxAccV2)",
    "counterfactual_s": "counterfactual evidence",
    "duplicates_s": "near-duplicate search",
    "report_s": "report",
}
AFTER_SWEEP = [key for key in STAGES if list(STAGES).index(key) > list(STAGES).index("sweep_s")]


def child_environment() -> dict[str, str]:
    """This process's environment with the repo first on PYTHONPATH, keeping what was there (packages installed
    with `pip --target` on a bare GPU machine live only on PYTHONPATH)."""
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def build_image_folder(coco: Path, out: Path, images: int, masks: bool = False) -> tuple[Path, Path | None, list[str]]:
    """out/data/<class>/<stem>_<k>.jpg: the photos (copied) repeated to `images`, each under its largest object's
    class; with masks, that object's mask mirrored under out/masks. Returns the roots and the class names."""
    from auditor.sources import yolo_seg_manifest  # noqa: PLC0415 - labels each photo by its largest object

    table = pd.read_csv(yolo_seg_manifest(coco, out / "labels"))
    data, mask_root = out / "data", out / "masks"
    for k in range(images):
        row = table.iloc[k % len(table)]
        name = f"{row['id']}_{k // len(table):03d}"
        (data / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row["path"], data / row["label"] / f"{name}.jpg")
        if masks:
            (mask_root / row["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "labels" / row["mask"], mask_root / row["label"] / f"{name}.png")
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    return data, (mask_root if masks else None), classes


def photos_as_tensors(root: Path, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Every photo of the folder as the plain loop's model input, and its label."""
    dataset = torchvision.datasets.ImageFolder(str(root), transform=plain_transform(args))
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


def plain_transform(args) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(args.resize), transforms.CenterCrop(args.crop), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip


def warm_cache(root: Path) -> None:
    """Read every file once, so neither contender pays for a cold page cache."""
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def plain_inference(model, root: Path, args, device: torch.device, channels_last: bool = False) -> float:
    """Seconds for the usual torchvision loop over the folder: decode, transform, forward (on CUDA with bf16
    autocast). `channels_last` is the same loop with model and images in that memory format, as the sweep runs."""
    started = time.perf_counter()
    dataset = torchvision.datasets.ImageFolder(str(root), transform=plain_transform(args))
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            model(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def warm_up(model, args, device: torch.device) -> None:
    """One untimed batch in each memory format, so the first timed loop pays no kernel set-up (the audit runs in a
    fresh process and pays its own: that is part of the whole command)."""
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for layout in (torch.contiguous_format, torch.channels_last):
            model.to(memory_format=layout)(images.contiguous(memory_format=layout))
    model.to(memory_format=torch.contiguous_format)


def audit_command(root: Path, masks: Path | None, checkpoint: Path, out: Path, args, device: torch.device) -> list[str]:
    command = [
        sys.executable, "-m", "auditor", "audit", "--data.root", str(root), "--model.arch", args.arch,
        "--model.checkpoint", str(checkpoint), "--data.resize", str(args.resize), "--data.crop", str(args.crop),
        "--sweep.batch_size", str(args.batch), "--sweep.num_workers", str(args.workers), "--device", str(device),
        "--run.resume", "false", "--out", str(out),
    ]
    if masks is not None:
        command += ["--data.masks", str(masks)]
    for item in args.set:
        command += ["--set", item]
    return command


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--arch", default="resnet18", help="a torchvision architecture (random weights)")
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--masks", action="store_true", help="give the audit each photo's object mask too")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (plain, then audit); the best counts")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra audit config")
    parser.add_argument("--coco", default=str(COCO), help="the coco128-seg folder")
    parser.add_argument("--keep", help="keep the data and the run directory in this folder")
    parser.add_argument("--random-head", action="store_true", help="keep the head random (a broken model)")
    parser.add_argument("--markdown", action="store_true", help="also write the tables into README.md's speed section "
                        "and benchmarks/README.md")
    args = parser.parse_args(argv)
    if not Path(args.coco, "images").is_dir():
        sys.exit(f"end_to_end: {args.coco} holds no coco128-seg images (see --coco).")
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root, masks, classes = build_image_folder(Path(args.coco), work / "folder", args.images, args.masks)
        torch.manual_seed(0)
        model = torchvision.models.get_model(args.arch, weights=None, num_classes=len(classes))
        if not args.random_head:
            model, accuracy = fit_head(model, *photos_as_tensors(root, args), epochs=100, device=device)
            print(f"head fitted to the photos: accuracy {accuracy:.2f}")
        checkpoint = work / f"{args.arch}.pt"
        torch.save(model.state_dict(), checkpoint)
        model = model.eval().to(device)
        warm_cache(work / "folder")
        warm_up(model, args, device)

        plain_s, plain_cl_s, command_s, manifest = float("inf"), float("inf"), float("inf"), None
        for round_ in range(args.repeat):
            plain_s = min(plain_s, plain_inference(model, root, args, device))
            plain_cl_s = min(plain_cl_s, plain_inference(model, root, args, device, channels_last=True))
            out = work / f"run{round_}"
            started = time.perf_counter()
            result = subprocess.run(audit_command(root, masks, checkpoint, out, args, device), cwd=REPO,
                                    capture_output=True, text=True, env=child_environment())
            seconds = time.perf_counter() - started
            if result.returncode not in (0, 3):
                sys.exit(f"end_to_end: auditor audit exited {result.returncode}:\n{result.stderr[-3000:]}")
            if seconds < command_s:
                command_s = seconds
                manifest = json.loads((out / "manifest.json").read_text())
                findings = json.loads((out / "findings.json").read_text())["findings"] if (
                    out / "findings.json").is_file() else []
                health = json.loads((out / "summary.json").read_text()).get("model_health")

    timings = dict(manifest["timings"])
    timings["startup_s"] = command_s - timings.get("total_s", command_s)
    n = args.images
    plain_rate, sweep_rate, command_rate = n / plain_s, n / timings["sweep_s"], n / command_s
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.extend(text.split("\n"))

    cpu = torch.cuda.get_device_name(device) if device.type == "cuda" else manifest.get("device_name")
    say(f"\nmachine: {cpu} ({device.type}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average at the end {os.getloadavg()[0]:.1f}")
    say(f"data: {n} coco128-seg photos as an ImageFolder of {len(classes)} classes{' with masks' if masks else ''};"
          f" model {args.arch} ({'random weights' if args.random_head else 'random convolutions, head fitted'});"
        f" resize {args.resize}, crop {args.crop}, batch {args.batch}, "
          f"{args.workers} workers; best of {args.repeat}; {len(findings)} findings\n")
    say("| | images/s | x plain inference |")
    say("|---|---:|---:|")
    say(f"| plain inference (decode, transform, forward) | {plain_rate:.1f} | 1.00 |")
    say(f"| plain inference, channels_last (as the sweep runs the model) | {n / plain_cl_s:.1f} | "
          f"{n / plain_cl_s / plain_rate:.2f} |")
    say(f"| `auditor` sweep alone (`manifest.json` timings) | {sweep_rate:.1f} | {sweep_rate / plain_rate:.2f} |")
    say(f"| `auditor audit`, whole command | {command_rate:.1f} | **{command_rate / plain_rate:.2f}** |")
    say("\n| stage | seconds | share of the command |")
    say("|---|---:|---:|")
    for key, label in STAGES.items():
        if key in timings:
            say(f"| {label} | {timings[key]:.2f} | {timings[key] / command_s:.0%} |")
    after = sum(timings.get(k, 0.0) for k in AFTER_SWEEP)
    say(f"| whole command | {command_s:.2f} | 100% |")
    work = manifest.get("work", {})
    if work:
        say("\n| stage | images decoded | images run through the model |")
        say("|---|---:|---:|")
        for name, counts in work.items():
            say(f"| {name} | {counts.get('images_read', 0)} | {counts.get('forward_images', 0)} |")
    say(f"\nmodel health: {health}; after the sweep: {after:.2f} s, {after / timings['sweep_s']:.0%} of the sweep; "
          f"plain inference {plain_s:.2f} s")
    say(f"whole command / plain inference: {command_rate / plain_rate:.2f}x")
    if args.markdown:
        from benchmarks.markdown_sections import replace_section  # noqa: PLC0415

        command = f"`python benchmarks/end_to_end.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        text = "\n".join([command, *lines]).replace("--markdown", "").strip()
        name = f"end-to-end-{'random' if args.random_head else 'fitted'}"
        replace_section(REPO / "benchmarks" / "README.md", name, text)
        replace_section(REPO / "README.md", f"speed-{name}", text)
    return {"plain_s": plain_s, "plain_channels_last_s": plain_cl_s, "command_s": command_s, "timings": timings}


if __name__ == "__main__":
    main()
