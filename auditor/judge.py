"""Judge a swept run with the model at hand: rules -> place evidence -> causal check -> repeated marks ->
image properties -> findings.json, once.

The findings package decides from records and maps alone; this module, above it and above `auditor.causal`,
adds what needs the model and the images, then writes findings.json and label_errors.csv once, then the
counterfactual maps of the evidence images the report shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from auditor.budget import classes_in_budget, counting_forwards, flagged_classes, sampling_note, share_of_run
from auditor.batch_norm_check import batch_norm_check, batch_norm_room, check_indices, write_batch_norm
from auditor.causal import (
    bands_from_findings,
    causal_check,
    causal_indices,
    regions_from_findings,
    sweep_predictions,
    write_causal,
)
from auditor.config import Config
from auditor.data import AuditDataset, positions
from auditor.evidence import write_evidence_counterfactuals
from auditor.heap import heap_for_forwards
from auditor.findings import find_all, number, scope_of
from auditor.findings.causal_evidence import causal_can_change
from auditor.findings.place_evidence import needs_place_check
from auditor.findings.model_health import state as health_state
from auditor.findings.run import (
    BATCH_NORM_FILE,
    apply_causal,
    run_context,
    write_document,
)
from auditor.findings.suspected_label_error import with_shortcut_costs
from auditor.mark_search import with_marks
from auditor.one_cause import absorb_property, one_cause
from auditor.place_check import Pixels, check_places
from auditor.properties import property_check
from auditor.runs import load_run
from auditor.sweep import channels_last_inputs, make_loader, uses_channels_last

log = logging.getLogger("auditor")


def causal_classes(findings, classes: list[str], every_class: bool, most: int | None = None,
                   seed: int = 0) -> list[int]:
    """The classes the causal check reads, at most `most` (the run's budget): those a class finding names, most
    severe first, or every class when asked to or when the maps miss the objects everywhere (then no heatmap rule
    can single out a class that is recognised by its background, and only erasing the objects can tell), then a
    seeded sample of those."""
    flagged = list(range(len(classes))) if every_class else flagged_classes(findings, classes)
    if most is None or len(flagged) <= most:
        return flagged
    if every_class:
        return classes_in_budget([], len(classes), most, seed)
    return flagged[:most]


def control_classes(flagged: set[int], n_classes: int, seed: int) -> set[int]:
    """A seeded choice of classes under no suspicion, as many as are flagged (at least two, while there are),
    for the causal check to measure beside the flagged ones: its baselines (what erasing objects or changing
    backgrounds does to any class, `findings.causal_evidence.typical_background_gap`) must not come from
    suspects alone."""
    unflagged = sorted(set(range(n_classes)) - flagged)
    if not flagged or not unflagged:
        return set()
    size = min(len(unflagged), max(2, len(flagged)))
    return {int(c) for c in np.random.default_rng(seed).choice(unflagged, size=size, replace=False)}


def check_batch_norm(run_dir: Path, cfg: Config, model, dataset: AuditDataset, predictions: dict[int, int],
                     device: torch.device) -> None:
    """batch_norm.json for model_health, from a seeded mixed-class sample of the swept images. A probe of the
    model's health: a model it cannot run that way (an error from torch) is audited without it, with a warning.
    Not run where the sample's own errors leave batch statistics no room to gain health_batch_norm_gain
    (`batch_norm_room`): the model would not be called suspect whatever they did."""
    sample = check_indices(len(dataset), share_of_run(cfg.findings.health_batch_norm_images, len(predictions), "batch_norm_check"),
                           cfg.findings.seed)
    sample = [i for i in sample if i in predictions]
    room = batch_norm_room(sample, predictions, [s.label for s in dataset.samples], cfg.sweep.batch_size)
    if room < cfg.findings.health_batch_norm_gain:
        log.info("batch-norm check not run: batch statistics could gain %.0f%% accuracy at most on its sample",
                 100 * room)
        return
    loader = make_loader(dataset, sample, cfg, device)
    try:
        write_batch_norm(run_dir, batch_norm_check(model, loader, predictions, device))
    except RuntimeError as error:
        log.warning("batch-norm check skipped: the model cannot run with batch statistics (%s)", error)


def judge(
    run_dir: Path, cfg: Config, model, dataset: AuditDataset, classes: list[str], device: torch.device,
    layer=None, reshape=None, geometry=None,
) -> dict:
    """Find, check with the model, write. Returns findings per severity and the model's health, for the summary."""
    run_dir = Path(run_dir)
    for stale in ("causal.csv", BATCH_NORM_FILE):  # never let an earlier run's checks bear on these findings
        (run_dir / stale).unlink(missing_ok=True)
    run = load_run(run_dir)
    predictions = sweep_predictions(run.records, dataset.samples)
    with counting_forwards(model), heap_for_forwards(model), \
            channels_last_inputs(model, uses_channels_last(device, cfg)):
        if cfg.findings.health_batch_norm_images > 0:
            check_batch_norm(run_dir, cfg, model, dataset, predictions, device)
        context = run_context(run, cfg.findings)
        findings, notes = find_all(run.records, run.maps, run.masks, run.classes, cfg.findings, context=context)
        if health_state(findings) == "broken":
            notes.append("The model is broken (see its model_health finding), so every other finding is capped at "
                         "low: the place check, the causal check, the repeated-mark search and the counterfactual "
                         "maps were skipped, since nothing they found could rise above low.")
            log.info("model broken: checks after the rules skipped")
            doc = write_document(run_dir, findings, notes, context)
            return _verdict(doc)
        findings = model_checks(run, findings, notes, model, dataset, classes, device, cfg, predictions, context)
        findings = with_shortcut_costs(findings, context)  # the place findings' model figures are final now
    doc = write_document(run_dir, findings, notes, context)
    if layer is not None:
        shown = write_evidence_counterfactuals(run_dir, cfg, model, layer, dataset, doc["findings"], reshape, geometry)
        if shown:
            log.info("counterfactual maps for %d evidence images", shown)
    return _verdict(doc)


def _verdict(doc: dict) -> dict:
    counts = {severity: 0 for severity in ("high", "medium", "low")}
    for finding in doc["findings"]:
        counts[finding["severity"]] += 1
    log.info("findings: %d high, %d medium, %d low", counts["high"], counts["medium"], counts["low"])
    return {"counts": counts, "model_health": health_state(doc["findings"])}


def model_checks(run, findings, notes: list[str], model, dataset: AuditDataset, classes: list[str], device,
                 cfg: Config, predictions: dict[int, int], context) -> list:
    """The rules' findings checked on the model, within the run's budget (`auditor.budget`): place evidence, the
    causal check, the repeated-mark search, the look-alike places of one cause grouped (`one_cause`), then the
    image-property check, a property of the backgrounds folded into the class's background finding
    (`absorb_property`). Notes say what each check sampled."""
    references_of: dict = {}  # each class's other-class images: the place check and the mark search share them
    rows = thumb_rows(run, dataset)
    thumbs = Pixels(dataset, run.thumbs, rows) if rows else None
    findings = number(check_places(findings, model, dataset, classes, device, cfg.findings, references_of,
                                   predictions, thumbs, share_of_run(None, len(predictions), "place_check"), notes))
    place_classes = {f.classes[0] for f in findings if needs_place_check(f)}
    note = sampling_note("Place check", min(len(place_classes), cfg.findings.check_max_classes), len(place_classes),
                         "check_max_classes")
    notes.extend(n for n in [note] if n)
    if cfg.findings.causal != "off":
        every_class = cfg.findings.causal == "all" or context.maps_miss_objects
        masks = bool(run.records["has_mask"].any())
        checkable = [f for f in findings if scope_of(f.kind) != "class" or causal_can_change(f, cfg.findings, masks)]
        wanted = set(causal_classes(checkable, classes, every_class, cfg.findings.check_max_classes,
                                    cfg.findings.seed))
        suspects = len(causal_classes(checkable, classes, every_class))
        note = sampling_note("Causal check", len(wanted), suspects, "check_max_classes")
        notes.extend(n for n in [note] if n)
        wanted |= control_classes(wanted, len(classes), cfg.findings.seed)
        most = share_of_run(cfg.findings.causal_max_images, len(predictions), "causal_check")
        indices = causal_indices(dataset.samples, wanted, most, cfg.findings.seed)
        if indices:
            log.info("causal check on %d images of %d classes", len(indices), len(wanted))
            loader = make_loader(dataset, indices, cfg, device)
            causal = causal_check(model, loader, classes, regions_from_findings(findings, classes), device,
                                  predictions=predictions, seed=cfg.findings.seed,
                                  mixed_per_class=cfg.findings.causal_mixed_images,
                                  bands=bands_from_findings(findings, classes))
            write_causal(run.path, causal)
            findings = apply_causal(findings, causal, cfg.findings)
    findings = with_marks(findings, model, dataset, classes, device, cfg.findings, references_of, thumbs=thumbs,
                          notes=notes, predictions=predictions, audited=len(predictions))
    findings = number(one_cause(findings, run.records, run.thumbs, classes, cfg.findings))
    findings = property_check(findings, model, dataset, classes, device, cfg, make_loader, notes,
                              audited=len(predictions), predictions=predictions)
    return number(absorb_property(findings, run.records, run.thumbs, run.masks, classes, cfg.findings))


def thumb_rows(run, dataset: AuditDataset) -> dict[int, int]:
    """Dataset index -> the records row of its thumb in thumbs.npy (empty where the run kept none)."""
    if run.thumbs is None:
        return {}
    position = positions(dataset.samples)
    return {position[str(i)]: int(r) for i, r in zip(run.records["id"], run.records["row"]) if str(i) in position}
