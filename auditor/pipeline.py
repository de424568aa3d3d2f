"""The pipeline `auditor audit` and `auditor.audit` run: config -> model, data -> sweep -> run directory -> findings
-> report."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditor import __version__, faithfulness
from auditor.architectures import layer_reshape
from auditor.baseline import mark_accepted
from auditor.cams import captured_activation, get_method, preserved_model_state
from auditor.config import Config
from auditor.data import AuditDataset, Sample, build_samples, read_class_names, with_model_preprocessing
from auditor.distributed import Ranks, barrier, init_ranks, shutdown
from auditor.errors import AuditorError
from auditor.geometry import measure_geometry
from auditor.heap import hand_back, map_large_allocations
from auditor.outdir import claimed
from auditor.models import LoadedModel, find_target_layer, hookable, model_fingerprint, open_model
from auditor.runs import (
    ShardWriter,
    clean_floats,
    merge_shard_arrays,
    read_shards,
    save_parquet_atomic,
    shard_paths,
    write_atomic,
    write_json,
)
from auditor.sweep import metric_prefix, pick_device, run_sweep, uses_channels_last
from auditor.threads import fit_threads, one_thread
from auditor.timing import peak_memory_mib, recording, stage, work_counts

log = logging.getLogger("auditor")

# Settings that change how a run is carried out, not what it computes: a resumed run may differ in them.
_EXECUTION_ONLY = {("run", "out_dir"), ("run", "resume"), ("run", "fail_on"), ("run", "baseline"),
                   ("sweep", "num_workers"), ("sweep", "device"), ("report", None)}


def data_fingerprint(samples: list[Sample]) -> str:
    """sha256 over every sample's id, label, file size and mask: changes when the data set changes."""
    digest = hashlib.sha256()
    for sample in samples:
        try:
            size = os.stat(sample.path).st_size
        except OSError:
            size = -1
        digest.update(f"{sample.id}\0{sample.label}\0{size}\0{sample.mask}\0{sample.box}\n".encode())
    return digest.hexdigest()


def _computation_digest(cfg: Config) -> dict:
    kept = {}
    for section, values in cfg.to_dict().items():
        if (section, None) in _EXECUTION_ONLY:
            continue
        kept[section] = {k: v for k, v in values.items() if (section, k) not in _EXECUTION_ONLY}
    return kept


def _versions() -> dict:
    names = ["torch", "torchvision", "numpy", "pandas", "scikit-learn", "plotly", "pillow"]
    versions = {"auditor": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def first_example(dataset: AuditDataset) -> torch.Tensor:
    """The first decodable image as a batch of one: probes the model's output and its target layer."""
    for index in range(len(dataset)):
        item = dataset[index]
        if item["ok"]:
            return item["image"][None]
    raise AuditorError("None of the images could be decoded; see the paths in the config and the files' formats.")


def _map_shape(model, layer, example: torch.Tensor, reshape) -> tuple[int, ...]:
    """The shape of the layer's output for `example`, read as a map ([B, C, H, W] when it is one)."""
    with captured_activation(layer) as store, torch.no_grad():
        model(example)
    output = store["activation"]
    return tuple((reshape(output) if reshape else output).shape)


# What the stages after the sweep import (the rules' scipy and scikit-learn, cleanlab, plotly): seconds of imports
# that neither start-up before the first batch nor the stages after the sweep should wait for.
AFTER_SWEEP_MODULES = ("auditor.judge", "auditor.confusion", "auditor.report", "cleanlab.filter", "cleanlab.rank",
                       "cleanlab.count")


def preload(modules) -> threading.Thread:
    """Import `modules` on a background thread while the sweep runs: its batches spend their time in torch, which
    releases the GIL. Join the thread before using them: Python's per-module import locks make a second thread wait
    for a module, but a package whose modules import each other (cleanlab) can be met half-initialised. An import
    that fails here fails again, with its message, where the module is used."""

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="auditor-preload", daemon=True)
    thread.start()
    return thread


def check_spatial(model, layer_name: str, layer, example: torch.Tensor, reshape) -> None:
    """A CAM needs a map of several cells. A flattened or globally pooled layer never has them: a run-level fault.
    A layer that is 1 x 1 only at this input size (a ResNet's layer4 on 32-pixel images) gives uniform maps: a
    warning, since larger inputs would fix it."""
    shape = _map_shape(model, layer, example, reshape)
    if len(shape) == 4 and shape[2] * shape[3] > 1:
        return
    if len(shape) == 4:
        try:
            larger = _map_shape(model, layer, torch.nn.functional.interpolate(example, scale_factor=4), reshape)
        except Exception:  # noqa: BLE001 - a model with a fixed input size
            larger = shape
        if larger[2] * larger[3] > 1:
            log.warning("model.target_layer %r gives a 1 x 1 map on %s inputs, so every map is uniform: use a "
                        "larger data.resize or an earlier layer", layer_name, tuple(example.shape[2:]))
            return
    try:
        hint = f", such as {find_target_layer(model, example)[0]!r}"
    except AuditorError:
        hint = ""
    raise AuditorError(
        f"model.target_layer {layer_name!r} outputs {shape}, not a spatial [B, C, H, W] map of more than one cell, "
        f"so a class activation map has nowhere to point. Name a layer before the global pooling{hint}, or leave "
        "model.target_layer unset to use the last spatial layer."
    )


def prepare(cfg: Config, loaded: LoadedModel | None = None, images: Callable | None = None):
    """Load classes, samples, model, target layer (and how to read it as [B, C, H, W]); check that they fit.

    The Python API (auditor.api) hands in what it holds in memory: `loaded`, a model, and `images(data_cfg,
    classes)`, which wraps a torch Dataset as an AuditDataset with `samples` and `classes`. Everything from here on
    is the same for both.
    """
    # The model first: its class names and preprocessing fill what the config leaves unset.
    with stage("model_load_s"), one_thread():
        loaded = loaded or open_model(cfg.model)
    with stage("data_scan_s"):
        cfg.data = with_model_preprocessing(cfg.data, loaded.preprocessing)
        classes = read_class_names(cfg.model.classes, cfg.model.classes_file) or loaded.classes
        if images is None:
            samples, classes = build_samples(cfg.data, classes)
            dataset = AuditDataset(samples, cfg.data)
        else:
            dataset = images(cfg.data, classes)
            samples, classes = dataset.samples, dataset.classes
    with stage("model_load_s"), one_thread():  # and the probes: output, target layer, geometry
        example = first_example(dataset)
        model = hookable(loaded, example)
        with torch.no_grad():
            try:
                logits = model.eval()(example)
            except RuntimeError as err:
                raise AuditorError(
                    f"The model fails on an input of shape {tuple(example.shape)}: {str(err).splitlines()[0]}. "
                    "Check data.resize, data.crop and data.grayscale against what the model was trained on."
                ) from None
        if classes is None and logits.ndim == 2:  # an in-memory dataset without names: the logits' indices
            classes = dataset.classes = [str(i) for i in range(logits.shape[1])]
        beyond = sorted({s.label for s in samples if s.label >= len(classes)})
        if beyond:
            raise AuditorError(
                f"The data has the labels {beyond[:10]}, beyond the {len(classes)} classes of the model "
                f"({classes[:5]}{' ...' if len(classes) > 5 else ''}): labels are class indices 0 to "
                f"{len(classes) - 1}, in the order of the model's outputs."
            )
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise AuditorError(
                f"The model outputs {tuple(logits.shape[1:])} scores per image but the data has {len(classes)} classes "
                f"({classes[:5]}{' ...' if len(classes) > 5 else ''}). Give the model's class names in logit order in "
                "model.classes or model.classes_file."
            )
        layer_name, layer = find_target_layer(model, example, cfg.model.target_layer)
        reshape = layer_reshape(model, layer_name, layer, example)
        check_spatial(model, layer_name, layer, example, reshape)
        with preserved_model_state(model):
            geometry = measure_geometry(model, layer, example, reshape)
    return classes, samples, dataset, model, layer_name, layer, geometry, reshape


def finalize_run(run_dir: Path, samples: list[Sample], classes: list[str],
                 cam_box_threshold: float | None = None) -> pd.DataFrame:
    """Merge the shards into records.parquet, maps.npy, masks.npy and skipped.csv; with `cam_box_threshold`, the
    records get each predicted-class map's CAM box (auditor.localisation), read back from maps.npy in chunks."""
    paths = shard_paths(run_dir)
    columns, rows = read_shards(paths)
    skipped = pd.DataFrame({
        "id": [samples[i].id for i in columns.get("failed_index", [])],
        "path": [samples[i].path for i in columns.get("failed_index", [])],
        "reason": list(columns.get("failed_reason", [])),
    })
    write_atomic(run_dir / "skipped.csv", skipped.to_csv(index=False))
    if rows == 0:
        raise AuditorError(f"No image could be audited ({len(skipped)} skipped); see {run_dir / 'skipped.csv'}.")
    index = columns.pop("index")
    for key in ("failed_index", "failed_reason"):
        columns.pop(key, None)
    records = pd.DataFrame({
        "row": np.arange(rows),
        "id": [samples[i].id for i in index],
        "path": [samples[i].path for i in index],
        "label": [classes[i] for i in columns["label_idx"]],
        "label_idx": columns.pop("label_idx").astype(np.int64),
        "pred": [classes[i] for i in columns["pred_idx"]],
        "pred_idx": columns.pop("pred_idx").astype(np.int64),
    })
    records["has_mask"] = columns.pop("has_mask").astype(bool)
    for name, values in columns.items():
        records[name] = values
    # NaN or infinite logits make no prediction (p_pred is NaN): never counted as correct.
    records.insert(7, "correct", (records["label_idx"] == records["pred_idx"]) & np.isfinite(records["p_pred"]))
    merge_shard_arrays(paths, run_dir, rows)
    if cam_box_threshold is not None:
        from auditor.localisation import cam_box_frame  # noqa: PLC0415 - scipy after the sweep

        records = pd.concat([records, cam_box_frame(np.load(run_dir / "maps.npy", mmap_mode="r"), cam_box_threshold)],
                            axis=1)
    save_parquet_atomic(run_dir / "records.parquet", records)
    return records


def write_tables(run_dir: Path, records: pd.DataFrame, classes: list[str],
                 localisation: pd.DataFrame | None = None) -> dict:
    """confusion.csv, per_class.csv (with the localisation metrics' columns, when given) and confused_pairs.json;
    returns what the summary needs of them."""
    from auditor.confusion import confused_pairs, confusion_frame, per_class_frame  # noqa: PLC0415 - after the sweep

    confusion = confusion_frame(records, classes)
    write_atomic(run_dir / "confusion.csv", confusion.to_csv())
    per_class = per_class_frame(records, classes)
    if set(faithfulness.FAITHFULNESS_COLUMNS) <= set(records.columns):
        per_class = pd.concat([per_class, faithfulness.class_means(records, classes)], axis=1)
    if localisation is not None:
        per_class = pd.concat([per_class, localisation], axis=1)
    write_atomic(run_dir / "per_class.csv", per_class.to_csv(index=False))
    pairs = confused_pairs(records, classes)
    write_json(run_dir / "confused_pairs.json", pairs)
    return {"per_class": per_class, "pairs": pairs}


def _count_kinds(texts: pd.Series) -> dict[str, int]:
    """Counts of "<kind>: <detail>" texts by kind (the part before the first colon); empty texts are not counted."""
    texts = texts.fillna("").astype(str)
    return texts[texts != ""].str.split(":").str[0].value_counts().to_dict()


def build_summary(records: pd.DataFrame, skipped: pd.DataFrame, classes: list[str], tables: dict, timings: dict) -> dict:
    """Headline figures: stable keys for dashboards."""
    with_mask = records[records["has_mask"]]
    correct = with_mask[with_mask["correct"]]
    reasons = _count_kinds(skipped["reason"])
    notes = _count_kinds(records["note"]) if "note" in records else {}
    return clean_floats({
        "n_images": int(len(records) + len(skipped)),
        "n_audited": int(len(records)),
        "n_skipped": int(len(skipped)),
        "n_non_finite_scores": int((~np.isfinite(records["p_pred"])).sum()),
        "skipped_reasons": reasons,
        "notes": notes,
        "n_classes": len(classes),
        "accuracy": float(records["correct"].mean()),
        "n_with_mask": int(len(with_mask)),
        "attention": {
            "median_pred_energy_in_mask_correct": float(correct["pred_energy_in_mask"].median()) if len(correct) else None,
            "median_mask_area": float(with_mask["mask_area"].median()) if len(with_mask) else None,
            "pred_pointing_accuracy": float(with_mask["pred_pointing_hit"].mean()) if len(with_mask) else None,
        },
        "per_class": {str(row.pop("class")): row for row in tables["per_class"].to_dict("records")},
        "top_confused_pairs": [{k: v for k, v in p.items() if k != "ids"} for p in tables["pairs"][:10]],
        "timings": timings,
    })


def run_audit(cfg: Config, loaded: LoadedModel | None = None, images: Callable | None = None) -> Path | None:
    """Audit the configured model on the configured data; returns the run directory (None on ranks > 0).
    `loaded` and `images` stand in for the config's model and data (see prepare)."""
    fit_threads()  # as many CPU threads as this process may really use (affinity, cgroup quota)
    ranks = init_ranks(pick_device(cfg.sweep.device))
    try:
        with recording() as stages, claimed(cfg.run.out_dir, cfg.data):  # ours only, one writer (auditor.outdir)
            return _run_audit(cfg, ranks, stages, loaded, images)
    finally:
        hand_back()  # the allocator as a long session would have it (auditor.heap)
        shutdown(ranks)


def _run_audit(cfg: Config, ranks: Ranks, stages: dict[str, float], loaded: LoadedModel | None = None,
               images: Callable | None = None) -> Path | None:
    """`stages` collects each stage's seconds as the run goes (auditor.timing); manifest.json records them."""
    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    classes, samples, dataset, model, layer_name, layer, geometry, reshape = prepare(cfg, loaded, images)
    device = ranks.device(pick_device(cfg.sweep.device))
    with stage("model_load_s"):
        model.to(device)
        if uses_channels_last(device, cfg):
            model.to(memory_format=torch.channels_last)
        model_print = model_fingerprint(model)
    methods = [get_method(name) for name in cfg.sweep.methods]
    with stage("data_scan_s"):
        fingerprints = {"model": model_print, "data": data_fingerprint(samples)}
    run_key = hashlib.sha256(json.dumps(
        {"config": _computation_digest(cfg), "fingerprints": fingerprints, "version": __version__}, sort_keys=True
    ).encode()).hexdigest()
    block = ranks.block(len(samples))
    log.info("auditing %d images of %d classes on %s, target layer %s%s", len(block), len(classes), device, layer_name,
             f" (rank {ranks.rank} of {ranks.world})" if ranks.world > 1 else "")
    prepared = time.perf_counter()
    if ranks.is_main:
        writer = ShardWriter(run_dir, run_key, cfg.run.resume)
    barrier(ranks)  # rank 0 has cleared stale shards and stamped the run key
    if not ranks.is_main:
        writer = ShardWriter(run_dir, run_key, resume=True)
    loading = None
    if ranks.is_main and cfg.sweep.num_workers == 0:  # never a thread mid-import while DataLoader workers fork
        loading = preload(AFTER_SWEEP_MODULES)
    stats = run_sweep(model, layer, dataset, methods, cfg, writer, device, reshape, geometry, indices=block)
    barrier(ranks)  # every rank's shards are on disk
    if not ranks.is_main:
        return None
    swept = time.perf_counter()
    map_large_allocations()  # the checks' large temporaries go back to the OS when freed (auditor.heap)
    with stage("merge_s"):
        if loading is not None:  # imports the sweep did not cover count after it; and two threads importing one
            loading.join()  # package whose modules import each other (cleanlab) can meet it half-initialised
        records = finalize_run(run_dir, samples, classes, cfg.attention.cam_box_threshold)
        skipped = pd.read_csv(run_dir / "skipped.csv", dtype=str, keep_default_na=False)
        with stage("localisation_s"):
            from auditor.localisation import localise_run  # noqa: PLC0415 - scipy after the sweep

            localisation = localise_run(run_dir, records, classes, cfg.attention, cfg.sweep.seed)
        tables = write_tables(run_dir, records, classes, localisation["per_class"])
        timings = {"prepare_s": prepared - started, "sweep_s": swept - prepared, "images_per_s": stats["images_per_s"]}
        manifest = {
            "config": cfg.to_dict(),
            "classes": classes,
            "methods": [m.name for m in methods],
            "metric_prefixes": {m.name: metric_prefix(m.name, methods[0].name) for m in methods},
            "target_layer": layer_name,
            "target_reshape": repr(reshape) if reshape else None,
            "map_geometry": dataclasses.asdict(geometry) if geometry else "plain",
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fingerprints": fingerprints,
            "run_key": run_key,
            "versions": _versions(),
            "timings": timings,
        }
        write_json(run_dir / "manifest.json", clean_floats(manifest))
        summary = build_summary(records, skipped, classes, tables, timings)
        summary["localisation"] = clean_floats(localisation["summary"])
        write_json(run_dir / "summary.json", summary)
    with stage("findings_s"):  # the causal check and the counterfactual maps inside time themselves
        if cfg.findings.enabled:
            from auditor.judge import judge  # noqa: PLC0415 - the rules' libraries load after the sweep, not before it

            verdict = judge(run_dir, cfg, model, dataset, classes, device, layer, reshape, geometry)
            summary["findings"], summary["model_health"] = verdict["counts"], verdict["model_health"]
            write_json(run_dir / "summary.json", summary)
    log.info("accuracy %.4f on %d images (%d skipped), %.1f images/s", summary["accuracy"], summary["n_audited"],
             summary["n_skipped"], stats["images_per_s"] or 0.0)
    manifest["timings"] = stage_timings(timings, stages)
    write_json(run_dir / "manifest.json", clean_floats(manifest))  # the report shows the timings so far
    if hasattr(dataset, "write_shown_images"):  # in-memory images (auditor.api) have no file for the thumbnails
        dataset.write_shown_images(run_dir, cfg.report)
    finish_run(run_dir, cfg)
    writer.remove()  # only now: a run stopped in the findings or the report resumes from its shards
    manifest["timings"] = stage_timings(timings, stages, total=time.perf_counter() - started)
    manifest["work"] = work_counts()  # images each stage decoded and ran through the model (auditor.budget)
    manifest["peak_memory_mib"] = round(peak_memory_mib(), 1)  # the process's, DataLoader workers apart
    write_json(run_dir / "manifest.json", clean_floats(manifest))
    return run_dir


STAGES = ("model_load_s", "data_scan_s", "sweep_s", "merge_s", "findings_s", "batch_norm_check_s", "place_check_s",
          "causal_check_s", "mark_search_s", "property_check_s", "localisation_s", "counterfactual_s", "duplicates_s",
          "report_s")


def stage_timings(timings: dict, stages: dict[str, float], total: float | None = None) -> dict:
    """manifest.json's timings: prepare_s, sweep_s and images_per_s as before, then every stage's own seconds
    (0 for a stage that did not run) and, once the run is over, total_s."""
    out = {**timings, **{name: stages.get(name, 0.0) for name in STAGES if name not in timings}}
    if total is not None:
        out["total_s"] = total
    return out


def finish_run(run_dir: Path, cfg: Config) -> None:
    """Everything after the sweep, from the run directory alone: which findings run.baseline accepts, then the
    report."""
    from auditor.report import render_report  # noqa: PLC0415 - the report package is optional at import time

    mark_accepted(run_dir, cfg.run.baseline)
    with stage("report_s"):
        render_report(run_dir)
