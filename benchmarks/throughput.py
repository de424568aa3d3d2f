"""Throughput of the auditor sweep against plain inference, pytorch-grad-cam and Captum, in one run.

Every contender reads the same synthetic ImageFolder through the same AuditDataset + collate DataLoader, with the
same model (random weights), batch and device, and produces the maps of the predicted and the true class:

  plain inference    model(images) under torch.inference_mode: the ceiling
  auditor sweep      run_sweep: both maps, upsampling, attention metrics, records written to shards
  pytorch-grad-cam   the same two maps, one call per class (each a full forward and backward)
  Captum             LayerGradCam, one attribute call per class (and a forward for the predictions)

then one row per CAM method: the auditor sweep with that method alone beside pytorch-grad-cam's class for it.
Each timing is the best of --repeat rounds over the data (every contender once per round), after one
untimed warm-up batch.

    python benchmarks/throughput.py --arch resnet18 --size 224 --batch 16 --images 64
    python benchmarks/throughput.py --device cuda --arch resnet50 --batch 128 --images 1024 --workers 8 \
        --amp on --channels-last on          # and vit_b_16; benchmarks/gpu.sh runs every combination

--amp and --channels-last apply alike to plain inference and the sweep (sweep.amp, sweep.channels_last): bf16
autocast works on CUDA only; channels_last on CUDA and the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from auditor.architectures import layer_reshape
from auditor.cams import METHODS, get_method, preserved_model_state
from auditor.config import Config
from auditor.data import AuditDataset, build_samples
from auditor.geometry import measure_geometry
from auditor.models import find_target_layer
from auditor.runs import ShardWriter
from auditor.sweep import make_loader, pick_device, run_sweep, uses_channels_last

# Our method -> pytorch-grad-cam class. It has no CAM: its Grad-CAM gives the same map up to scale on the GAP +
# linear heads CAM needs. Counterfactual is its Grad-CAM on the negated score.
REFERENCE_CLASS = {"cam": "GradCAM", "gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                   "hirescam": "HiResCAM", "layercam": "LayerCAM", "counterfactual": "GradCAM"}


def write_image_folder(root: Path, images: int, size: int, classes: int, seed: int = 0) -> Path:
    """root/<class>/<i>.jpg: random-noise JPEGs, spread evenly over the classes."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / f"class_{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")]
            name = names[0] if names else name
    return (f"{name} ({device.type}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def best_rates(runs: dict, images: int, repeat: int, device: torch.device) -> dict[str, float]:
    """Images per second of each `run(warmup=False)`, the best of `repeat` rounds, after one warm-up call each.

    Rounds visit every contender in turn, so a burst of load from other processes slows all of them alike rather
    than the one that happened to be running.
    """
    for run in runs.values():
        run(warmup=True)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run(warmup=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: images / seconds for name, seconds in best.items()}


class Negated:
    """A pytorch-grad-cam target: the class score negated (counterfactual Grad-CAM)."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, output):
        return -output[..., self.category]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", help="a torchvision architecture (random weights)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated CAM methods for the rows")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (sweep.num_workers)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds over all contenders; the best counts")
    parser.add_argument("--amp", choices=("on", "off"), default="on", help="bf16 autocast on CUDA (sweep.amp)")
    parser.add_argument("--channels-last", choices=("on", "off"), default="on",
                        help="channels_last model and images on CUDA and the CPU (sweep.channels_last)")
    args = parser.parse_args(argv)
    amp, channels_last = args.amp == "on", args.channels_last == "on"
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    for name in methods:
        get_method(name)  # fails early on an unknown name

    device = pick_device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch, weights=None, num_classes=args.classes).eval().to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = Config()
        cfg.data.root = str(write_image_folder(tmp / "data", args.images, args.size, args.classes))
        cfg.sweep.batch_size, cfg.sweep.num_workers, cfg.sweep.device = args.batch, args.workers, str(device)
        cfg.sweep.amp, cfg.sweep.channels_last = amp, channels_last
        channels_last = uses_channels_last(device, cfg)
        if channels_last:  # as auditor.pipeline prepares the model
            model = model.to(memory_format=torch.channels_last)
        samples, _ = build_samples(cfg.data, None)
        dataset = AuditDataset(samples, cfg.data)
        loader = make_loader(dataset, range(len(dataset)), cfg, device)
        example = dataset[0]["image"][None].to(device)
        layer_name, layer = find_target_layer(model, example)
        reshape = layer_reshape(model, layer_name, layer, example)
        with preserved_model_state(model):
            geometry = measure_geometry(model, layer, example, reshape)

        def batches(warmup: bool):
            """The whole data set through a fresh loader (as run_sweep makes its own), or the first batch for the
            warm-up."""
            return [next(iter(loader))] if warmup else make_loader(dataset, range(len(dataset)), cfg, device)

        def to_device(batch):
            images = batch["image"].to(device, non_blocking=True)
            return images.contiguous(memory_format=torch.channels_last) if channels_last else images

        def plain(warmup):
            with torch.inference_mode(), autocast:
                for batch in batches(warmup):
                    model(to_device(batch))

        runs = iter(range(10**6))

        def sweep_with(names):
            def run(warmup):
                # run_sweep makes its own DataLoader (the same dataset, batch and collate) and writes shards.
                sweep_cfg = Config(data=cfg.data, sweep=dataclasses.replace(cfg.sweep, methods=names))
                writer = ShardWriter(tmp / f"run{next(runs)}", "benchmark", resume=False)
                run_sweep(model, layer, dataset, [get_method(n) for n in names], sweep_cfg, writer, device, reshape,
                          geometry, indices=range(args.batch) if warmup else None)
            return run

        def grad_cam_with(name):
            import pytorch_grad_cam  # noqa: PLC0415 - optional dependency
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: PLC0415

            target = Negated if name == "counterfactual" else ClassifierOutputTarget

            def run(warmup):
                reference = getattr(pytorch_grad_cam, REFERENCE_CLASS[name])
                # No autocast: pytorch-grad-cam turns the outputs into numpy, which has no bfloat16, so it runs
                # in float32 whatever --amp says.
                with reference(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
                    for batch in batches(warmup):
                        images = to_device(batch)
                        predicted = None  # targets=None: their argmax of the call's own forward
                        if name == "counterfactual":
                            with torch.no_grad():
                                predicted = [target(int(c)) for c in model(images).argmax(1)]
                        cam(input_tensor=images, targets=predicted)
                        cam(input_tensor=images, targets=[target(int(c)) for c in batch["label"]])
            return run

        def captum_run(warmup):
            from captum.attr import LayerGradCam  # noqa: PLC0415 - optional dependency

            explainer = LayerGradCam(model, layer)
            for batch in batches(warmup):
                images = to_device(batch)
                with torch.no_grad(), autocast:  # Captum's backward cannot use inference tensors
                    predicted = model(images).argmax(1)
                for target in (predicted, batch["label"].to(device)):
                    with autocast:
                        explainer.attribute(images, target=target, relu_attributions=True)

        primary = methods[0]
        # pytorch-grad-cam's Grad-CAM serves both gradcam and cam: it is timed once.
        reference_key = {name: name if name == "counterfactual" else REFERENCE_CLASS[name] for name in methods}
        contenders = {"plain": plain, "captum": captum_run}
        contenders.update({f"ours {name}": sweep_with([name]) for name in methods})
        contenders.update({f"theirs {key}": grad_cam_with(name) for name, key in reference_key.items()})
        rates = best_rates(contenders, len(dataset), args.repeat, device)
        plain_rate, captum_rate = rates["plain"], rates["captum"]
        ours = {name: rates[f"ours {name}"] for name in methods}
        theirs = {name: rates[f"theirs {reference_key[name]}"] for name in methods}

    def ratio(value):
        return f"{value:.1f} | {value / plain_rate:.2f}"

    theirs_precision = ", float32: it cannot run under bf16 autocast" if amp and device.type == "cuda" else ""
    print(f"\nmachine: {machine(device)}")
    print(f"model: {args.arch} (random weights, {args.classes} classes), target layer {layer_name}, "
          f"{args.size} px, batch {args.batch}, {len(dataset)} images, {args.workers} DataLoader workers, "
          f"bf16 autocast {'on' if amp and device.type == 'cuda' else 'off'}, channels_last "
          f"{'on' if channels_last else 'off'}, best of {args.repeat}\n")
    print("| contender (pred + true class maps) | images/s | x plain inference |")
    print("|---|---:|---:|")
    print(f"| plain inference (torch.inference_mode, no maps) | {ratio(plain_rate)} |")
    print(f"| auditor sweep ({primary}; maps, metrics, records) | {ratio(ours[primary])} |")
    print(f"| pytorch-grad-cam ({REFERENCE_CLASS[primary]}{theirs_precision}) | {ratio(theirs[primary])} |")
    print(f"| Captum LayerGradCam | {ratio(captum_rate)} |")
    print(f"\nauditor sweep / pytorch-grad-cam: {ours[primary] / theirs[primary]:.1f}x; "
          f"auditor sweep / Captum: {ours[primary] / captum_rate:.1f}x\n")
    print("| method | auditor images/s | x plain | pytorch-grad-cam images/s | x plain | auditor / pytorch-grad-cam |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in methods:
        print(f"| {name} (theirs: {REFERENCE_CLASS[name]}) | {ratio(ours[name])} | {ratio(theirs[name])} | "
              f"{ours[name] / theirs[name]:.1f}x |")


if __name__ == "__main__":
    main()
