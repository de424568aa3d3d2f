"""Counterfactual maps for the evidence of findings: the regions that argue *against* a class (issue 3).

Counterfactual Grad-CAM (negated gradients) shows what in an image speaks against the labelled class: on a
suspected label error it lights up the object when the object is not what the label says; on a shortcut class
it shows what the model would need to see less of. They are computed once the findings are known, for the
images the report shows as evidence only (the first report.finding_galleries findings, report.gallery_size
images each), so a run pays for a few hundred extra maps instead of a second map per image. A run whose sweep
already computed `counterfactual` for every image (sweep.methods) reuses those maps.

Stored as RUN_DIR/counterfactual.npz: `ids` [M] (str) and `maps` float16 [M, 2, S, S], the predicted- and
the true-class map of each image, scaled to 1 like maps.npy; `Run.counterfactual_maps` reads them back.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditor.cams import ReshapeFn, get_method, preserved_model_state
from auditor.config import Config, ReportConfig
from auditor.data import AuditDataset, positions
from auditor.geometry import MapGeometry, upsample
from auditor.runs import COUNTERFACTUAL_FILE, write_atomic
from auditor.sweep import COUNTERFACTUAL_CELLS, audit_batch, make_loader, small_maps
from auditor.timing import stage

METHOD = "counterfactual"


def evidence_ids(findings: list[dict], cfg: ReportConfig) -> list[str]:
    """The sample ids the report shows beside findings, in order, each once."""
    ids = [str(i) for f in findings[: cfg.finding_galleries] for i in (f.get("samples") or [])[: cfg.gallery_size]]
    return list(dict.fromkeys(ids))


@stage("counterfactual_s")
def write_evidence_counterfactuals(
    run_dir: Path,
    cfg: Config,
    model: torch.nn.Module,
    layer: torch.nn.Module,
    dataset: AuditDataset,
    findings: list[dict],
    reshape: ReshapeFn | None = None,
    geometry: MapGeometry | None = None,
) -> int:
    """Compute and store counterfactual maps for the findings' evidence images; returns how many.

    From the sweep's counterfactual cells (RUN_DIR/maps_counterfactual_cells.npy, computed from the sweep's own
    gradients) when the run has them: no image is read and the model does not run again. Otherwise (a sweep
    without gradients, such as CAM alone) the evidence images go through the sweep's own `audit_batch`. Either
    way the maps are placed and scaled exactly as maps.npy's are.
    """
    path = Path(run_dir) / COUNTERFACTUAL_FILE
    path.unlink(missing_ok=True)  # never show an earlier run's maps beside these findings
    position = positions(dataset.samples)
    indices = [position[i] for i in evidence_ids(findings, cfg.report) if i in position]
    if not indices or METHOD in cfg.sweep.methods:
        return 0
    cells_path = Path(run_dir) / f"{COUNTERFACTUAL_CELLS}.npy"
    if cells_path.is_file():
        ids, maps = _from_cells(Path(run_dir), cells_path, cfg, dataset, indices, geometry)
    else:
        ids, maps = _from_model(cfg, model, layer, dataset, indices, reshape, geometry)
    if not ids:
        return 0
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), maps=np.concatenate(maps).astype(np.float16))
    write_atomic(path, buffer.getvalue())
    return len(ids)


def _from_cells(run_dir, cells_path, cfg, dataset, indices, geometry) -> tuple[list[str], list[np.ndarray]]:
    """Upsample the evidence images' counterfactual cells onto the model input, as audit_batch upsamples maps."""
    wanted = {dataset.samples[i].id for i in indices}
    records = pd.read_parquet(run_dir / "records.parquet", columns=["id", "row"])
    records = records[records["id"].astype(str).isin(wanted)]
    if records.empty:
        return [], []
    size = next((tuple(item["image"].shape[-2:]) for item in map(dataset.__getitem__, indices) if item["ok"]), None)
    if size is None:
        return [], []
    rows = records["row"].to_numpy()
    cells = torch.from_numpy(np.asarray(np.load(cells_path, mmap_mode="r")[rows], dtype=np.float32))
    full = upsample(cells.transpose(0, 1).flatten(0, 1), size, geometry).unflatten(0, (2, len(rows)))
    return [str(i) for i in records["id"]], [small_maps(full, cfg.sweep.map_size).numpy()]


def _from_model(cfg, model, layer, dataset, indices, reshape, geometry) -> tuple[list[str], list[np.ndarray]]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    loader = make_loader(dataset, indices, cfg, device)
    ids, maps = [], []
    with preserved_model_state(model):
        for batch in loader:
            if len(batch["index"]) == 0:
                continue
            fields = audit_batch(model, layer, batch, [get_method(METHOD)], cfg, reshape, geometry)
            maps.append(fields["maps"])
            ids += [dataset.samples[int(i)].id for i in batch["index"]]
    return ids, maps
