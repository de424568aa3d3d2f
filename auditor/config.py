"""Typed, validated settings: every threshold of the audit lives here.

A config is a tree of small dataclasses. `load_config` reads a YAML file and applies dotted overrides
(`sweep.batch_size=64`), rejecting unknown keys and values of the wrong type with a message that names the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auditor.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Where the model comes from: exactly one of `arch`, `timm`, `huggingface`, `exported`, `torchscript` or
    `factory` (or only `checkpoint`, for a trusted pickled model)."""

    arch: str | None = None  # a torchvision architecture name, e.g. "resnet18"
    timm: str | None = None  # a timm.create_model name, e.g. "convnext_tiny"; built offline, weights from checkpoint
    huggingface: str | None = None  # a folder written by save_pretrained (config.json + model.safetensors)
    exported: str | None = None  # a torch.export program saved with torch.export.save (.pt2)
    checkpoint: str | None = None  # a state_dict file: .safetensors, or torch.save's (loaded with weights_only=True)
    torchscript: str | None = None  # a TorchScript file
    factory: str | None = None  # "package.module:function" returning an nn.Module
    factory_kwargs: dict = field(default_factory=dict)  # keyword arguments of model.factory or timm.create_model
    target_layer: str | None = None  # dotted module path; found automatically when None
    classes: list[str] | None = None  # class names in logit order
    classes_file: str | None = None  # a classes.txt, one name per line
    trust_checkpoint: bool = False  # allow unpickling a full model object (runs code from the file)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass
class DataConfig:
    """Where the images, labels and object masks come from, and how they are preprocessed."""

    root: str | None = None  # an ImageFolder tree root/<class>/<image>
    manifest: str | None = None  # CSV or Parquet with path,label[,id,mask,x0,y0,x1,y1]
    masks: str | None = None  # a folder mirroring the images' relative paths, PNG masks (nonzero = object)
    resize: int | list[int] | None = None  # shorter side to N pixels, or [height, width] exactly
    crop: int | None = None  # centre crop to a square of this many pixels
    grayscale: bool = False  # feed one channel instead of RGB
    # Unset (None): the model's own preprocessing (a timm pretrained_cfg, a Hugging Face image-processor config)
    # where it has one, else no resize and ImageNet's mean and std (`auditor.data.with_model_preprocessing`).
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None  # resize filter: bilinear (the default), bicubic or nearest
    limit: int | None = None  # audit only the first N samples (after sorting)
    follow_external_symlinks: bool = False  # audit symlinks under data.root that point outside it (by default
    # they are skipped, each listed in skipped.csv: a data folder should not read files from elsewhere unasked)

    def __post_init__(self):
        check_numbers(self, "data")
        if isinstance(self.resize, list) and len(self.resize) != 2:
            raise ConfigError(f"data.resize must be N (the shorter side) or [height, width], not {self.resize}.")
        sides = [*(self.resize if isinstance(self.resize, list) else [self.resize]), self.crop]
        if any(side is not None and side < 1 for side in sides):
            raise ConfigError(f"data.resize and data.crop must be 1 pixel or more, not {self.resize} and {self.crop}.")
        channels = 1 if self.grayscale else 3
        if any(values is not None and len(values) < channels for values in (self.mean, self.std)):
            raise ConfigError(f"data.mean and data.std need {channels} values each (one per input channel).")
        if self.interpolation not in (None, *INTERPOLATIONS):
            raise ConfigError(
                f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}."
            )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"data.std values must be above 0 (they divide the pixels), not {self.std}.")


@dataclass
class SweepConfig:
    """How the single pass over the dataset runs."""

    device: str = "auto"  # auto: cuda, then mps, then cpu
    batch_size: int = 32
    num_workers: int = 0  # DataLoader worker processes
    methods: list[str] = field(default_factory=lambda: ["gradcam"])  # the first one feeds the metrics
    map_size: int = 32  # stored low-resolution maps are map_size x map_size float16
    amp: bool = True  # on CUDA: bf16 autocast for the forward and backward (maps always in fp32)
    channels_last: bool = True  # on CUDA and the CPU: channels_last memory format for model and images
    decode_on_device: bool = False  # decode JPEGs in the main process on the sweep's device (nvJPEG on CUDA,
    # torchvision.io.decode_jpeg) instead of in the workers; off until measured faster (benchmarks/gpu.sh)
    shard_size: int = 1024  # images per shard written to disk as the sweep goes
    keep_images_px: int = 64  # keep the pixels the model saw, area-pooled to at most this side, as RUN_DIR/thumbs.npy
    # (uint8; 12 KiB an RGB image at 64): the repeated-mark search reads them instead of decoding every file
    # again (0: keep none, and the search decodes)
    keep_features: bool = True  # keep each image's pooled target-layer features as RUN_DIR/features.npy (float16,
    # at most 256 per image): the near-duplicate search (auditor.duplicates) reads them
    seed: int = 0
    faithfulness: bool = False  # deletion check per image (auditor.faithfulness): one more forward of 2x the batch
    faithfulness_top_percent: float = 10.0  # share of pixels removed: the primary map's top ones, and random ones

    def __post_init__(self):
        check_numbers(self, "sweep")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(
                f"sweep.device must be auto, cpu, cuda, cuda:N (a GPU's index) or mps, not {self.device!r}."
            )
        if not 0.0 < self.faithfulness_top_percent <= 100.0:
            raise ConfigError(
                f"sweep.faithfulness_top_percent must be above 0 and at most 100, not {self.faithfulness_top_percent}."
            )


@dataclass
class AttentionConfig:
    """How maps are compared with object masks."""

    pointing_tolerance_px: int = 0  # a pointing hit may fall this many pixels outside the mask
    iou_threshold: float = 0.5  # a map is binarised at iou_threshold * its maximum
    cam_box_threshold: float = 0.2  # CAM box: largest component of {map > cam_box_threshold * max} (the CAM paper)
    localisation_max_images: int = 2000  # MaxBoxAccV2 and PxAP per run: a seeded sample of this many images

    def __post_init__(self):
        check_numbers(self, "attention")


@dataclass
class ReportConfig:
    """What the HTML report shows and how large it may grow."""

    gallery_size: int = 8  # images per gallery (each image: photo, predicted-class map, true-class map)
    top_pairs: int = 10  # confused pairs shown, each with a gallery
    thumb_px: int = 96  # thumbnail side in pixels
    jpeg_quality: int = 80
    finding_galleries: int = 12  # findings (most severe first) that get an evidence gallery; the rest are text
    focus_classes: int = 40  # classes in the confusion heatmap, class-average maps and energy plot (most at issue)
    skipped_rows: int = 200  # skipped inputs listed by name (all are counted, and all are in skipped.csv)
    overlay_alpha: float = 0.6  # opacity of the heatmap where the map is at its maximum

    def __post_init__(self):
        check_numbers(self, "report")
        for name in ("gallery_size", "top_pairs", "finding_galleries", "focus_classes", "skipped_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"report.{name} must be 0 or more, not {getattr(self, name)}.")
        if not 16 <= self.thumb_px <= 512:
            raise ConfigError(f"report.thumb_px must be between 16 and 512 pixels, not {self.thumb_px}.")
        if not 1 <= self.jpeg_quality <= 95:
            raise ConfigError(f"report.jpeg_quality must be between 1 and 95, not {self.jpeg_quality}.")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError(f"report.overlay_alpha must be between 0 and 1, not {self.overlay_alpha}.")


@dataclass
class FindingsConfig:
    """Thresholds of the bias rules in the auditor.findings package (each rule's module says how it uses them)."""

    enabled: bool = True
    causal: str = "flagged"  # re-run the model with objects / flagged regions erased: flagged classes, all, or off
    # shared by the rules
    min_support: int = 10  # fewest correctly classified images (with masks, where needed) a class is judged on
    max_samples: int = 12  # evidence sample ids kept per finding, most telling first
    bootstrap: int = 1000  # bootstrap resamples behind every confidence interval
    ci_level: float = 0.95  # two-sided level of those intervals
    seed: int = 0  # seeds the bootstrap and the spectral clustering, so findings are reproducible
    max_mask_area: float = 0.9  # an object covering more of the image says nothing about background use
    uniform_score: float = 0.1  # object score (0 = map spread evenly, 1 = all on object) at or below this is chance
    on_object_score: float = 0.25  # at or above this a map is on the object (blur keeps small objects below 1)
    clear_object_score: float = 0.5  # maps alone give high severity only where the comparison classes reach this
    # model_health: a broken model's heatmaps explain nothing, so every other finding is capped at low
    health_broken_skill: float = 0.1  # balanced accuracy above chance, as a share of the way to 1, at or below
    # this: broken (0 = chance, 1 = perfect; 0.1 is 19 % on 10 classes)
    health_suspect_skill: float = 0.25  # ... at or below this: suspect (a medium finding, nothing capped)
    health_collapse_share: float = 0.5  # one class predicted for at least this share of the images ...
    health_collapse_excess: float = 0.3  # ... while its share of the labels is lower by this much: broken
    health_max_entropy: float = 0.9  # mean normalised entropy of the probabilities at or above this: broken
    health_max_bad_share: float = 0.5  # non-finite scores or empty maps on this share of the images: broken
    health_dead_recall: float = 0.05  # a class (of min_support images or more) recognised this rarely is dead:
    # suspect (a benchmark ResNet whose batch-norm statistics failed on the audit split named 3-4 of 10 classes
    # for almost none of their images, at 46-53 % accuracy and balanced accuracy well above chance)
    health_batch_norm_images: int = 256  # images the batch-norm check runs again with batch statistics (0: off),
    # at most a tenth of the audited images (64 at least: auditor.budget.RUN_SHARE)
    health_batch_norm_gain: float = 0.1  # accuracy gained with batch statistics at or above this: suspect (the
    # running statistics do not fit the data; that ResNet gained 0.35)
    # background_reliance
    background_max_energy: float = 0.5  # "most attention outside": the class's mean energy_in_mask below this
    background_min_gap: float = 0.2  # object score below the other classes' median by this (CI lower bound)
    # spatial_shortcut (and the "fixed place" test of strategy_cluster)
    region_threshold: float = 0.5  # a region is the connected cells of a mean map at >= this share of its peak
    region_pad_cells: int = 1  # a finding's region is those cells grown by this many map cells on each side
    max_region_area: float = 0.25  # a "place" covers at most this share of the image
    frame_band: float = 0.125  # ... or it is the border band, this share of the side wide, where the hot cells run
    # along three or four sides of the image (a frame, a vignette: `places.around_the_border`; 0: never)
    shortcut_min_hit_rate: float = 0.5  # share of the class's maps whose peak falls in the region
    shortcut_min_gap: float = 0.2  # attention share in the region above the other classes' median (CI lower bound)
    shortcut_min_share_gap: float = 0.1  # ... or, whatever the hit rate, this gap alone: a mark beside a large
    # object draws a steady share of every map without winning its peak
    shortcut_high_hit_rate: float = 0.8  # hit rate needed, with the gap below, for high severity
    shortcut_high_gap: float = 0.4  # gap (CI lower bound) needed for high severity
    place_max_on_object: float = 0.3  # with masks: a place whose attention is more on the object is the object
    place_follow_ratio: float = 0.75  # with masks: peaks scattering less around the object than in the image
    # (at most this ratio) follow the object, so their place is the object's, not a fixed one
    # place evidence (auditor.causal.place_check): is a flagged place the object? Needed without masks
    place_max_pixel_std_ratio: float = 0.1  # pixels varying at most this much (std across the finding's images over
    # std across other classes' images, weighted by how much the two differ), in the region's most distinctive
    # window, are the same thing every time: not an object (the 48 seen benchmark runs without masks: planted
    # watermarks and patches 0.000-0.044, every other place 0.37 and up; with masks, other places 0.23 and up)
    place_pixel_window: float = 0.25  # that window's side, as a share of the image's: a coarse feature grid makes a
    # region far larger than a small mark, and object pixels beside the mark would water its constancy down
    transplant_min_effect: float = 0.1  # pasting the region onto other classes' images must turn at least this
    # many more of them into the class than pasting a random same-size region does, before a finding without
    # masks rises above low (planted cues: 0.2-0.6; the real LeNet's clean digits: 0.03 at most)
    transplant_min_gap: float = 0.3  # ... and this many for high: the model uses what is there
    erasure_min_effect: float = 0.2  # ... or erasing the region from the finding's own images must lose the class
    # for this many more of them than erasing a random same-size region: a cue only part of a class carries is
    # needed where it is, yet too weak to turn other classes' images by itself
    place_check_images: int = 64  # other classes' images the pixels are compared with and the region pasted onto
    # repeated_mark (auditor.mark_search): the same pixels at one place in part of a class, found without maps
    mark_search: bool = True  # look for repeated marks in each class's images and test the model on them
    mark_images: int = 128  # images of each class searched (a seeded sample); its references: place_check_images
    mark_window: float = 0.125  # the window searched, as a share of the image's side (at most 64 px a side)
    mark_tolerance: float = 0.1  # "the same pixels": root-mean-square difference within this many times the
    # other classes' pixel std
    mark_min_share: float = 0.1  # a mark: this share of the class's images nearly match, beyond the others' share
    mark_max_per_class: int = 2  # marks tested per class, best first (a window overlapping a better one, or on
    # mostly its images, is the same mark)
    mark_max_classes: int = 32  # classes searched per run: those findings name first, then a seeded sample (the
    # search reads the sweep's thumbs.npy, so a class costs milliseconds; testing a mark costs forward passes)
    mark_max_tests: int = 8  # marks tested on the model per run: flagged classes' first, then the most repeated
    # property_shortcut (auditor.properties): a class departing from the others in a global image property
    property_min_effect: float = 1.0  # the effect's interval (class mean minus the others', in standard deviations
    # of the whole run) must lie this far from 0 (a large effect); 0 switches the rule off
    property_images: int = 16  # images of the class, and as many of other classes, the model check edits per class
    # (each is run about four times per property tested: 64 cost 1,015 forwards and 76 s on the 512-photo benchmark)
    # budget per run of the model checks after the sweep (auditor.budget): never per class
    check_max_classes: int = 16  # classes the place check and the causal check examine per run: those findings
    # name first, most severe first (the causal check adds as many unflagged control classes); findings beyond it
    # without masks stay low, unchecked, and the report says what was sampled
    # strategy_cluster (SpRAy)
    spray_min_support: int = 20  # fewest correctly classified images of a class before clustering it
    spray_size: int = 8  # maps are pooled (block sums) to spray_size x spray_size before clustering
    spray_neighbors: int = 10  # k of the symmetric k-nearest-neighbour affinity graph
    spray_max_clusters: int = 6  # the eigengap chooses the number of clusters up to this
    spray_max_images: int = 1000  # larger classes are subsampled: the eigen-solve is cubic in this
    spray_min_cluster_share: float = 0.1  # a cluster with a smaller share of its class is noise
    spray_max_cluster_share: float = 0.9  # a larger cluster is the class's own strategy (rules 1 and 2 judge it)
    spray_majority_share: float = 0.7  # a cluster above this share that rule 2 reports at the same place is
    # left to rule 2; below it, or where rule 2 misses it, it is reported here
    spray_min_gap: float = 0.3  # differs in kind: peak rate at its place above the rest and other classes, or
    # object score below the rest's, by at least this
    spray_min_focus: float = 0.6  # a "fixed place": the cluster's mean map keeps this share of its maps' peak
    spray_min_share_gap: float = 0.1  # ... or: attention share at the place above the rest of the class and the
    # other classes by at least this, when the place draws attention without winning every map's peak
    spray_merge_iou: float = 0.5  # clusters whose hot regions overlap this much are one strategy, merged
    # one cause, one card (auditor.one_cause): a class's place findings whose pixels look alike at their places
    group_min_contrast: float = 1.0  # each differs from other classes' images there by this x their pixel std
    group_max_difference: float = 0.5  # ... and from the other, up to a turn or flip, by at most this (0: off)
    # context_confusion
    pair_min_count: int = 5  # fewest misclassified images (with masks) a confused pair is judged on
    context_max_score: float = 0.2  # predicted maps' object score below this (CI upper bound): context confusion
    context_high_rate: float = 0.1  # share of the true class lost this way that makes a context confusion high
    # suspected_label_error (confident learning, by cleanlab on probs.npy)
    label_error_filter: str = "predicted_neq_given"  # cleanlab.filter.find_label_issues(filter_by=...): every
    # image the model gets wrong is a candidate and the ranking (label independence among confident predictions,
    # then sureness) sorts them; confident learning's per-class thresholds ("prune_by_noise_rate") drop the wrong
    # labels a less confident model predicts below them (a benchmark ResNet: 23 of 82 flipped 7s)
    label_error_min_count: int = 3  # fewest of the run's top-ranked suspects a pair needs to be reported
    label_error_min_object_score: float = 0.2  # with a mask, the predicted map must sit on the object this much
    label_error_object_weight: float = 0.5  # rank bonus within a pair per unit object score the predicted class's
    # map draws above the label's: suspects whose object speaks for the prediction rank first
    label_error_min_independence: float = 0.75  # a pair is high only when its images explain its labels this
    # little (1 - 2 x (AUC - 0.5) of p(label) among the images confidently predicted as the pair's class; 0.75 =
    # AUC 0.625), with the AUC one standard error higher too
    label_error_min_pair_sure: int = 8  # a pair's own evidence (the pair score) orders its suspects ahead of the
    # rest only when its labels are that independent and it holds this many sure mistakes; every other suspect goes
    # in cleanlab's self-confidence order. Pairs of few errors are what a real test set has (errors spread over
    # many pairs), where one image's probabilities say more than a pair of two (benchmarks/label_regimes.py)
    label_error_max_samples: int = 100  # suspects listed per finding (each is an image to relabel; all of
    # them are in label_errors.csv)
    label_error_medium_rate: float = 0.03  # share of the labelled class among the run's top-ranked suspects (as
    # many as cleanlab estimates wrong labels) predicted at least as surely as the predicted class's own images
    # (confident learning's threshold), for medium severity; in a labelling fault (labels surely independent of the
    # images, no shortcut class) every top-ranked suspect counts, sure or not
    label_error_high_rate: float = 0.1  # ... and for high severity
    label_error_min_p_pred: float = 0.5  # ... and only suspects whose predicted class has at least this
    # probability count toward those rates: a wrong label makes the model sure of the other class, more than of all
    # the rest together, while the threshold of a hard class (mean self-confidence of shirts, 0.4) is not sure
    # near-duplicates with different labels (findings.duplicate_conflict, auditor.duplicates)
    duplicate_min_similarity: float = 0.999  # cosine of two images' pooled features (centred on the run's mean)
    # at or above which they are near-duplicates. Measured (benchmarks/duplicates.py): exact copies 1.0; distinct
    # images' nearest other-label image up to 0.993 on the MNIST LeNet's 16 channels (0.94 on a resnet18's 512),
    # so 0.999 keeps precision >= 0.9 on both; JPEG re-encodes mostly pass, crops and brightness changes mostly
    # not. On a wide layer 0.95 finds most of them too.
    duplicate_min_dims: int = 16  # features of fewer dims (target-layer channels) are not searched: distinct
    # images come as close as copies (the smallest measured that works: the MNIST LeNet's 16)
    duplicate_neighbours: int = 5  # most similar other-label images kept per searched image
    duplicate_max_queries: int = 20000  # images searched from, per run (all of them up to this; beyond it those
    # with the lowest p_true): keeps the search linear in N (every image is still a neighbour)
    duplicate_max_pairs: int = 50  # pairs listed in the finding (all of them are in label_errors.csv)
    duplicate_medium_count: int = 3  # pixel-identical copies under two labels, holding duplicate_high_rate of the run, for
    # high severity (one copy is medium; pairs alike only in the features stay low: look-alikes in a narrow layer)
    duplicate_high_rate: float = 0.01  # share of the run's images in pixel-identical conflicting pairs for high severity
    # causal check (auditor.causal)
    causal_min_background_accuracy: float = 0.3  # object-erased accuracy above the baseline by this: high severity
    causal_min_shortcut_drop: float = 0.5  # accuracy lost by erasing the flagged region that makes it high
    causal_min_background_gap: float = 0.3  # accuracy lost when its objects are pasted onto other classes'
    # backgrounds instead of its own (Mixed-Same minus Mixed-Rand), beyond other classes' median, that makes it high
    causal_mixed_images: int = 128  # masked images per class pasted onto other backgrounds (0: off)
    causal_max_refuted: float = 0.1  # effects this small refute a whole-class heatmap finding: lowered to low
    causal_max_images: int = 1000  # the check reads at most this many images, spread evenly over the classes it
    # checks (a seeded sample of each); the report says when it was capped

    def __post_init__(self):
        check_numbers(self, "findings")
        if self.causal_max_images < 1:
            raise ConfigError(f"findings.causal_max_images must be 1 or more, not {self.causal_max_images}.")
        if self.causal_mixed_images < 0:
            raise ConfigError(f"findings.causal_mixed_images must be 0 (off) or more, not {self.causal_mixed_images}.")
        if self.health_batch_norm_images < 0:
            raise ConfigError(
                f"findings.health_batch_norm_images must be 0 (off) or more, not {self.health_batch_norm_images}."
            )
        if self.mark_images < 2 or self.mark_max_per_class < 0:
            raise ConfigError("findings.mark_images must be 2 or more and findings.mark_max_per_class 0 or more.")
        if not (0 < self.mark_window <= 1 and self.mark_tolerance > 0):
            raise ConfigError(f"findings.mark_window must be in (0, 1] (not {self.mark_window}) and "
                              f"findings.mark_tolerance above 0 (not {self.mark_tolerance}).")


@dataclass
class RunConfig:
    """Where the run directory goes and how a run behaves unattended."""

    out_dir: str = "reports/run"
    resume: bool = True  # reuse finished shards of an identical earlier run
    fail_on: str = "never"  # high | medium | low | never: exit 3 when such a finding exists
    baseline: str | None = None  # accepted findings (a file `auditor accept` writes): fail_on counts only the others


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    ("run", "fail_on"): ("high", "medium", "low", "never"),
    ("findings", "causal"): ("flagged", "all", "off"),
    ("findings", "label_error_filter"): ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                                         "predicted_neq_given"),
}


# Allowed values of the numeric settings, as intervals ("[1, inf)": 1 or more; "(0, 1]": above 0, at most 1). A
# number not named here must be 0 or more; every number must be finite. Each section checks its own as it is built.
_SHARES = (
    "max_mask_area", "uniform_score", "on_object_score", "clear_object_score", "health_broken_skill",
    "health_suspect_skill", "health_collapse_share", "health_collapse_excess", "health_max_entropy",
    "health_max_bad_share", "health_dead_recall", "health_batch_norm_gain", "background_max_energy",
    "background_min_gap", "region_threshold", "max_region_area", "frame_band", "shortcut_min_hit_rate",
    "shortcut_min_gap", "shortcut_min_share_gap", "shortcut_high_hit_rate", "shortcut_high_gap", "place_max_on_object",
    "transplant_min_effect", "transplant_min_gap", "erasure_min_effect", "mark_min_share", "spray_min_cluster_share",
    "spray_max_cluster_share", "spray_majority_share", "spray_min_gap", "spray_min_focus", "spray_min_share_gap",
    "context_max_score", "context_high_rate", "label_error_min_object_score",
    "label_error_min_independence", "label_error_medium_rate", "label_error_high_rate", "label_error_min_p_pred",
    "causal_min_background_accuracy", "causal_min_shortcut_drop", "causal_min_background_gap", "causal_max_refuted",
)  # fmt: skip
_COUNTS = ("min_support", "bootstrap", "pair_min_count", "label_error_min_count", "spray_min_support", "spray_size",
           "spray_neighbors", "spray_max_clusters", "spray_max_images", "place_check_images",
           "property_images", "label_error_min_pair_sure")  # 1 or more
_RANGES = {
    "data.limit": ("[1, inf)", "the number of samples to audit; leave it unset for all"),
    "sweep.batch_size": ("[1, inf)", "images per forward pass"),
    "sweep.num_workers": ("[0, inf)", "DataLoader worker processes; 0 decodes in the main process"),
    "sweep.map_size": ("[2, inf)", "the stored maps' side in cells: a map needs at least 2 x 2"),
    "sweep.shard_size": ("[1, inf)", "images per shard file"),
    "findings.duplicate_min_similarity": ("[-1, 1]", "a cosine similarity"),
    "findings.duplicate_neighbours": ("[1, inf)", "other-label images kept per searched image"),
    "findings.duplicate_high_rate": ("[0, 1]", "a share of the run's images"),
    "attention.iou_threshold": ("[0, 1]", "a share of the map's maximum"),
    "attention.cam_box_threshold": ("[0, 1)", "a share of the map's maximum"),
    "findings.ci_level": ("(0, 1)", "a confidence level"),
    "findings.place_pixel_window": ("(0, 1]", "a share of the image's side"),
    "findings.place_follow_ratio": ("[-inf, inf]", ""),  # below 0: no peaks follow the object (the test is off)
    "findings.spray_merge_iou": ("[0, inf)", "an overlap; above 1, clusters are never merged"),
    **{f"findings.{name}": ("[0, 1]", "a share") for name in _SHARES},
    **{f"findings.{name}": ("[1, inf)", "a count") for name in _COUNTS},
}


def check_numbers(settings, section: str) -> None:
    """Refuse, in one sentence, a number of the section that is not finite or lies outside its range (_RANGES)."""
    for item in dataclasses.fields(settings):
        key, value = f"{section}.{item.name}", getattr(settings, item.name)
        numbers = [v for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(not math.isfinite(v) for v in numbers):
            what = "hold finite numbers" if isinstance(value, list) else "be a finite number"
            raise ConfigError(f"{key} must {what}, not {value!r}.")
        if isinstance(value, list) or not numbers:
            continue
        interval, meaning = _RANGES.get(key, ("[0, inf)", ""))
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        above = value > low if interval[0] == "(" else value >= low
        below = value < high if interval[-1] == ")" else value <= high
        if not (above and below):
            why = f" ({meaning})" if meaning else ""
            raise ConfigError(f"{key} must be {_in_words(interval)}{why}, not {value!r}.")


def _in_words(interval: str) -> str:
    """"[1, inf)" -> "1 or more", "[0, 1]" -> "between 0 and 1", "(0, 1]" -> "above 0 and at most 1"."""
    low, high = (f"{float(bound):g}" for bound in interval[1:-1].split(","))
    if high == "inf":
        return f"above {low}" if interval[0] == "(" else f"{low} or more"
    if interval[0] == "[" and interval[-1] == "]":
        return f"between {low} and {high}"
    lower = f"above {low}" if interval[0] == "(" else f"at least {low}"
    return f"{lower} and {'below' if interval[-1] == ')' else 'at most'} {high}"


def check_device(name: str) -> None:
    """Refuse a device this machine lacks when the config is loaded, not at the first forward pass."""
    if name in ("auto", "cpu"):
        return
    import torch  # noqa: PLC0415 - only for a named device

    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(name.partition(":")[2] or 0) >= count:
            seen = f"{count} CUDA GPU(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU"
            raise ConfigError(f"sweep.device is {name!r}, but torch sees {seen} on this machine: use --device cpu, "
                              "or leave it unset (auto) for the best device there is.")
    elif not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("sweep.device is 'mps', but this machine has no Apple GPU torch can use: use --device cpu, "
                          "or leave it unset (auto) for the best device there is.")


MAX_YAML_BYTES = 1 << 20  # a config is a page of settings; anything larger is refused before it is parsed


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (*name): a config never needs them, and nested ones expand exponentially (a "billion
    laughs" file grows to gigabytes in memory), so the first one is refused before anything is expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"uses the YAML alias *{event.anchor} (line {event.start_mark.line + 1}); aliases are "
                              "refused (nested ones can expand without end): write the values out instead.")
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str):
    """YAML text, safely: bounded in size, no aliases, no Python objects; any fault is a ConfigError naming `where`."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_YAML_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_YAML_BYTES // 1024} KiB: that is no config; check the path.")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader
    except ConfigError as err:
        raise ConfigError(f"{where} {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests its values too deeply to be a config.") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults) and apply `section.key=value` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Pass an existing YAML file to --config.")
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"Config file {path} is larger than {MAX_YAML_BYTES // 1024} KiB: that is no config; "
                              "check the path.")
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ConfigError(f"Config file {path} is not UTF-8 text ({err.reason} at byte {err.start}).") from None
        raw = parse_yaml(text, f"Config file {path}") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of sections, not {type(raw).__name__}.")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"Override {item!r} must look like section.key=value, e.g. sweep.batch_size=64.")
        section, _, name = key.strip().partition(".")
        if raw.get(section) is None:  # absent, or an empty `section:` in the file
            raw[section] = {}
        if not isinstance(raw[section], dict):
            raise ConfigError(f"Section {section!r} must be a mapping.")
        raw[section][name] = parse_yaml(value, f"The value of {key.strip()}") if value.strip() else None
    cfg = config_from_dict(raw)
    check_device(cfg.sweep.device)
    return cfg


RETIRED = {  # keys an earlier version had, still in the manifests of its run directories: read and left out
    ("findings", "label_error_pair_pseudo_count"): "fault pairs are ordered by how surely their labels are "
    "independent (suspected_label_error.label_independence)",
}


def config_from_dict(raw: dict) -> Config:
    """Build a Config from nested dicts, naming any unknown key or wrongly typed value. A key that an earlier
    version had (RETIRED) is left out with a warning, so its run directories (manifest.json) still load."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built = {}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(_unknown("section", section, sections))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"Config section {section!r} must be a mapping of keys to values.")
        cls = typing.get_type_hints(Config)[section]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in values.items():
            if (section, name) in RETIRED:
                log.warning("config: %s.%s is no longer used (%s); ignored", section, name, RETIRED[section, name])
                continue
            if name not in hints:
                raise ConfigError(_unknown(f"key in section {section!r}", name, hints))
            kwargs[name] = _check_type(f"{section}.{name}", value, hints[name])
            choices = _CHOICES.get((section, name))
            if choices and kwargs[name] not in choices:
                raise ConfigError(f"{section}.{name} must be one of {', '.join(choices)}, not {value!r}.")
        built[section] = cls(**kwargs)
    return Config(**built)


def _unknown(what: str, name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown config {what}: {name!r}.{hint} Known: {', '.join(sorted(known))}."


def _check_type(key: str, value: Any, hint) -> Any:
    """Return value (ints widened to float where a float is expected) or raise a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, not {value!r}.")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, not {value!r}.")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # YAML reads `target_layer: 6` or class names 0, 1, ... as numbers
    raise ConfigError(f"{key} must be of type {getattr(hint, '__name__', hint)}, not {value!r}.")
