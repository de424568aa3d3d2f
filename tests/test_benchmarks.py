"""The planted-bias benchmarks' pure parts: planting, cue removal, the cue-use check and the scoring (no training)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmarks import (
    bias_detection,
    bias_detection_colour,
    bias_detection_mnist,
    broken_model,
)
from benchmarks.planted import (
    NOISE,
    Cue,
    Family,
    Flip,
    build,
    centre_inside,
    compose,
    cue_status,
    cue_use,
    exact_share,
    holds_cue,
    iou,
    per_class_subset,
    plain,
    plant,
    precision_at_k,
    score,
    square,
)

SIZE = 16
OBJECT = (6, 6, 10, 10)  # x0, y0, x1, y1 of every tiny object


def place_squares(items, rng, size):
    """Every item is the same 4 x 4 square of gray 100 in the middle: drawn pixels = mask."""
    objects = np.zeros((len(items), size, size), dtype=np.uint8)
    x0, y0, x1, y1 = OBJECT
    objects[:, y0:y1, x0:x1] = 100
    return objects, objects > 0, objects > 0


TINY = Family(
    name="tiny", classes=["a", "b", "c", "d"], canvas=SIZE, mean=0.0, std=1.0,
    cues=(
        Cue("watermark", cls=0, share=0.5, box=(0, 0, 2, 2), pattern=square(2)),
        Cue("background", cls=1, share=1.0, texture=lambda rng, size: np.full((size, size), 200, dtype=np.uint8)),
    ),
    flip=Flip(src=2, dst=3, share=0.5), pool=None, place=place_squares, id_prefix="t",
)  # fmt: skip


@pytest.fixture
def tiny():
    labels = np.repeat(np.arange(4), 4)  # four images per class
    layers = plant(TINY, np.zeros((16, 1, 1)), labels, np.random.default_rng(0))
    return labels, layers


def test_exact_share_and_per_class_subset():
    rng = np.random.default_rng(0)
    picked = exact_share(np.arange(10, 20), 0.25, rng)
    assert len(picked) == 2 and len(set(picked)) == 2 and set(picked) <= set(range(10, 20))  # round(2.5) = 2
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    first = per_class_subset(labels, 2, rng)
    second = per_class_subset(labels, 2, rng, exclude=first)
    assert np.bincount(labels[first]).tolist() == [2, 2, 2]
    assert np.bincount(labels[second], minlength=3).tolist() == [1, 1, 0]  # only what the first left over
    assert not set(first) & set(second)


def test_plant_draws_exact_shares_and_flips(tiny):
    labels, layers = tiny
    assert layers["watermark"].tolist() == [*layers["watermark"][:4], *[False] * 12] and layers["watermark"].sum() == 2
    assert layers["background"].tolist() == [False] * 4 + [True] * 4 + [False] * 8
    assert layers["flipped"].sum() == 2 and set(np.flatnonzero(layers["flipped"])) <= {8, 9, 10, 11}
    assert (layers["labels"] == np.where(layers["flipped"], 3, labels)).all()
    assert (layers["true_labels"] == labels).all()


def test_compose_paints_cues_where_planted_and_removes_them(tiny):
    _, layers = tiny
    images = compose(TINY, layers)
    x0, y0, x1, y1 = OBJECT
    assert (images[:, y0:y1, x0:x1] == 100).all()  # the object covers the background
    marked, tinted = layers["watermark"], layers["background"]
    assert (images[marked, 0:2, 0:2] == 255).all()
    assert (images[~marked & ~tinted, 0:2, 0:2] < 16).all()  # noise only
    assert (images[tinted, 0, 5] == 200).all() and (images[~tinted, 0, 5] < 16).all()
    without = compose(TINY, layers, without="watermark")
    assert (without[~tinted, 0:2, 0:2] < 16).all()
    np.testing.assert_array_equal(without[:, 2:], images[:, 2:])  # nothing else changes
    plain_background = compose(TINY, layers, without="background")
    assert (plain_background[:, 0, 5] < 16).all() and (plain_background[marked, 0:2, 0:2] == 255).all()


class CornerReader(nn.Module):
    """Predicts class 1 when pixel (0, 5) is bright (a tinted background), else class 0 when the top-left pixel is
    (the watermark), else class 2."""

    def forward(self, x):
        logits = torch.zeros(len(x), 4)
        logits[:, 2] = 0.5
        logits[:, 0] = (x[:, 0, 0, 0] > 0.5).float()
        logits[:, 1] = 2 * (x[:, 0, 0, 5] > 0.5).float()
        return logits


def test_cue_use_compares_accuracy_with_the_cue_and_removed(tiny):
    _, layers = tiny
    uses = cue_use(TINY, CornerReader(), layers, compose(TINY, layers))
    assert uses["watermark"] == {"n": 2, "with_cue": 1.0, "cue_removed": 0.0, "used": True}
    assert uses["background"] == {"n": 4, "with_cue": 1.0, "cue_removed": 0.0, "used": True}


def test_golden_box_and_ranking_measures():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert centre_inside([0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.3, 0.3])
    assert not centre_inside([0.0, 0.0, 0.5, 0.5], [0.4, 0.4, 0.8, 0.8])  # centre 0.6
    assert precision_at_k(["a", "b", "c", "d"], {"a", "c"}, 2) == 0.5
    assert precision_at_k(["a"], {"a"}, 4) == 0.25  # a list shorter than k: the missing slots are misses
    assert math.isnan(precision_at_k(["a"], {"a"}, 0))


def test_cue_status():
    assert cue_status(found=True, used=True, background=False, with_masks=False) == "found"
    assert cue_status(found=False, used=True, background=False, with_masks=False) == "missed"
    assert cue_status(found=False, used=True, background=True, with_masks=True) == "missed"
    assert cue_status(found=False, used=True, background=True, with_masks=False) == "not applicable"
    assert cue_status(found=True, used=False, background=False, with_masks=True) == "not used"


def finding(id_, kind, severity, classes, region=None, pair=None, samples=()):
    return {"id": id_, "kind": kind, "severity": severity, "classes": classes, "region": region, "pair": pair,
            "samples": list(samples)}


def test_score_on_hand_made_findings():
    family = Family(
        name="hand", classes=["a", "b", "c", "d", "e", "f"], canvas=10, mean=0.0, std=1.0,
        cues=(Cue("watermark", cls=0, share=1.0, box=(0, 0, 2, 2), pattern=square(2)),
              Cue("partial", cls=1, share=0.5, box=(8, 8, 10, 10), pattern=square(2)),
              Cue("background", cls=2, share=1.0, texture=lambda rng, size: None)),
        flip=Flip(src=3, dst=4, share=0.5), pool=None, place=None, id_prefix="t",
    )  # fmt: skip
    used = {name: {"used": True} for name in ("watermark", "partial", "background")}
    findings = [
        finding("F001", "spatial_shortcut", "high", ["a"], region=[0.0, 0.0, 0.25, 0.25]),  # holds (0.1, 0.1)
        finding("F002", "strategy_cluster", "high", ["b"], region=[0.0, 0.0, 0.5, 0.5]),  # wrong place
        finding("F003", "strategy_cluster", "low", ["b"], region=[0.75, 0.75, 1.0, 1.0]),  # right place, low
        finding("F004", "suspected_label_error", "medium", ["e", "d"], pair={"true": "e", "pred": "d"},
                samples=["x1", "c1", "x2"]),
        finding("F005", "spatial_shortcut", "high", ["f"], region=[0.4, 0.4, 0.6, 0.6]),  # a false alarm
        finding("F006", "context_confusion", "high", ["f", "a"]),  # names a planted class: not counted
        finding("F007", "model_health", "high", []),  # run-level: no class
    ]
    flipped = {"x1", "x2", "x3", "x4"}
    result = score(family, findings, used, False, flipped, ["x1", "c1", "x2", "x3", "c2"], predicted_true=3)
    status = {row["bias"]: row["status"] for row in result["rows"]}
    assert status == {"watermark": "found", "partial": "missed", "background": "not applicable",
                      "label noise": "found"}
    assert result["rows"][0]["finding"]["id"] == "F001"
    assert result["rows"][0]["iou"] == pytest.approx(0.2**2 / 0.25**2)
    assert (result["found"], result["applicable"]) == (2, 3)
    assert [f["id"] for f in result["clean_high"]] == ["F005"]
    errors = result["label_errors"]
    assert errors["precision_at_k"] == pytest.approx(2 / 3)  # k = 3: x1, c1, x2
    assert errors["precision_at_20_findings"] == pytest.approx(2 / 4)  # k = min(20, 4 flipped); 3 listed
    assert errors["r_precision"] == pytest.approx(3 / 4) and errors["recall"] == pytest.approx(3 / 4)
    with_masks = score(family, findings, {**used, "partial": {"used": False}}, True, flipped, [], 0)
    status = {row["bias"]: row["status"] for row in with_masks["rows"]}
    assert status["background"] == "missed" and status["partial"] == "not used"
    assert math.isnan(with_masks["label_errors"]["precision_at_k"])
    assert plain(with_masks)["label_errors"]["precision_at_k"] is None


@pytest.mark.parametrize("module", [bias_detection, bias_detection_mnist])
def test_patches_never_cover_an_object(module):
    """The plan is sound: even the largest items, placed anywhere, stay clear of every patch cue."""
    family = module.FAMILY
    items = np.full((200, 28, 28), 255, dtype=np.uint8)  # the worst case: items bright edge to edge
    objects, drawn, masks = family.place(items, np.random.default_rng(0), family.canvas)
    for cue in family.cues:
        if cue.box is not None:
            x0, y0, x1, y1 = cue.box
            assert not drawn[:, y0:y1, x0:x1].any() and not masks[:, y0:y1, x0:x1].any(), cue.name
    assert family.clean and not set(family.clean) & {c.cls for c in family.cues}


def test_mnist_patterns_and_stroke_mask():
    assert bias_detection_mnist.checkerboard(4, 2).tolist() == [[255, 255, 0, 0], [255, 255, 0, 0],
                                                                [0, 0, 255, 255], [0, 0, 255, 255]]
    ring = bias_detection_mnist.hollow_square(4)
    assert ring.tolist() == [[255] * 4, [255, 0, 0, 255], [255, 0, 0, 255], [255] * 4]
    digit = np.zeros((2, 5, 5), dtype=np.uint8)
    digit[0, 2, 2] = 200  # a one-pixel stroke grows to its 3 x 3 neighbourhood, within its own image only
    digit[1, 0, 0] = 40  # below 0.2 of full scale: not stroke
    mask = bias_detection_mnist.stroke_mask(digit)
    assert mask[0].sum() == 9 and mask[0, 1:4, 1:4].all() and not mask[1].any()


@pytest.mark.parametrize("route", broken_model.ROUTES)
def test_each_route_loads_a_collapsed_model_that_differs_from_the_random_one_by_one_logit(tmp_path, route):
    """What the audit loads from each route's files: the collapsed model's logits are the random model's, with
    COLLAPSE_BIAS added to class 2 alone."""
    from auditor.config import ModelConfig
    from auditor.models import open_model

    classes = ["a", "b", "c", "d"]
    logits = {}
    for kind, onto in (("random", None), ("collapsed", 2)):
        section = broken_model.route_model(route, classes, seed=0, collapse_to=onto, folder=tmp_path / kind)
        loaded = open_model(ModelConfig(**section))
        assert (loaded.classes or section["classes"]) == classes
        with torch.no_grad():
            output = loaded.module.eval()(torch.linspace(-1, 1, 2 * 3 * 160 * 160).reshape(2, 3, 160, 160))
        logits[kind] = getattr(output, "logits", output)
    delta = logits["collapsed"] - logits["random"]
    expected = torch.tensor([0.0, 0.0, broken_model.COLLAPSE_BIAS, 0.0]).expand(2, 4)
    torch.testing.assert_close(delta, expected, atol=1e-3, rtol=0)


@pytest.mark.skipif(not broken_model.COCO.is_dir(), reason="../shared coco128-seg absent")
def test_coco_manifests_keep_the_most_frequent_classes(tmp_path):
    import pandas as pd

    manifests, classes = broken_model.coco_manifests(tmp_path)
    with_masks, without = pd.read_csv(manifests["masks"]), pd.read_csv(manifests["no-masks"])
    assert len(classes) == broken_model.N_CLASSES and set(with_masks["label"]) == set(classes)
    counts = with_masks["label"].value_counts()
    assert [counts[c] for c in classes] == sorted(counts, reverse=True)  # most frequent first
    assert "mask" in with_masks and "mask" not in without
    assert with_masks.drop(columns=["mask"]).equals(without)


def test_erasure_effects_and_bounding_boxes_by_hand():
    from benchmarks.erasure import bounding_boxes, effects

    # 3 classes, 2 erased images each: [true, called] counts
    counts = np.array([[2, 0, 0],   # a: both still a
                       [1, 1, 0],   # b: one called a, one b
                       [1, 0, 1]])  # fmt: skip
    accuracy, baseline = effects(counts)
    assert accuracy.tolist() == [1.0, 0.5, 0.5]
    # of the other classes' images no longer called their own class (b's one and c's one for a; c's one for b;
    # b's one for c): a gets both = 1.0; b and c none
    assert baseline.tolist() == [1.0, 0.0, 0.0]
    masks = torch.zeros(1, 4, 5, dtype=torch.bool)
    masks[0, 1, 1] = masks[0, 2, 3] = True
    assert bounding_boxes(masks)[0].nonzero().tolist() == [[r, c] for r in (1, 2) for c in (1, 2, 3)]


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_benchmark_architectures_give_class_scores_and_maps_the_audit_can_read(arch):
    """Both --arch models: logits per class, and a target layer the audit finds with 16 x 16 maps at 64 px."""
    from auditor.models import find_target_layer
    from benchmarks.planted import ARCHITECTURES

    torch.manual_seed(0)
    model = ARCHITECTURES[arch](10).eval()
    example = torch.zeros(2, 1, 64, 64)
    assert model(example).shape == (2, 10)
    name, layer = find_target_layer(model, example[:1], None)
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with torch.no_grad():
        model(example)
    handle.remove()
    assert seen[0][-2:] == (16, 16), name


def test_the_timm_benchmark_model_is_audited_as_trained(tmp_path):
    """--arch timm trains timm's resnet10t and audits it through model.timm: the audit must load the very net."""
    pytest.importorskip("timm")
    from auditor.config import ModelConfig
    from auditor.models import open_model
    from benchmarks import planted

    torch.manual_seed(0)
    trained = planted.timm_resnet(3).eval()
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    loaded = open_model(ModelConfig(**planted.model_section("timm", tmp_path / "model.pt", ["a", "b", "c"])))
    images = torch.linspace(0, 1, 2 * 64 * 64).reshape(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval()(images), trained(images))
        assert trained.forward_features(images).shape[-2:] == (8, 8)  # dilated: 8 x 8 maps at 64 px


def test_the_huggingface_benchmark_model_is_audited_as_trained(tmp_path):
    """--arch huggingface trains transformers' ResNet and audits it through model.huggingface, from the folder the
    benchmark writes with its labels named."""
    pytest.importorskip("transformers")
    from auditor.config import ModelConfig
    from auditor.models import open_model
    from benchmarks import planted

    torch.manual_seed(0)
    trained = planted.huggingface_resnet(3).eval()
    trained.model.config.id2label = {0: "a", 1: "b", 2: "c"}
    trained.model.save_pretrained(tmp_path / "huggingface")
    loaded = open_model(ModelConfig(**planted.model_section("huggingface", tmp_path / "model.pt", ["a", "b", "c"])))
    images = torch.linspace(0, 1, 2 * 64 * 64).reshape(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval()(images), trained(images))
    assert loaded.classes == ["a", "b", "c"]


def test_route_equivalence_compares_findings_and_the_label_ranking(tmp_path):
    from benchmarks.route_equivalence import compare

    def run(name, findings, ranking):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "findings.json").write_text(json.dumps({"findings": findings}))
        pd.DataFrame({"id": ranking}).to_csv(folder / "label_errors.csv", index=False)
        return folder

    shortcut = {"kind": "spatial_shortcut", "classes": ["coat"], "severity": "high", "region": [0.75, 0.75, 1, 1]}
    moved = dict(shortcut, region=[0.7, 0.75, 1, 1])
    label = {"kind": "suspected_label_error", "classes": ["dress", "trouser"], "severity": "high"}
    same = compare(run("a", [shortcut, label], ["x", "y"]), run("b", [shortcut, label], ["x", "y"]))
    assert same["same_order"] and same["same_ranking"] and not same["only_module"] and not same["only_exported"]
    differ = compare(run("c", [shortcut, label], ["x", "y"]), run("d", [label, moved], ["y", "x"]))
    assert not differ["same_order"] and not differ["same_ranking"]
    assert differ["only_module"] == [("spatial_shortcut", ("coat",), "high", (0.75, 0.75, 1, 1))]
    assert differ["only_exported"] == [("spatial_shortcut", ("coat",), "high", (0.7, 0.75, 1, 1))]


def test_device_agreement_correlations_and_top_k_by_hand():
    from benchmarks.device_agreement import map_correlations, top_k_overlap

    a = np.array([[[[0, 1], [2, 3]], [[1, 1], [1, 1]]]], dtype=np.float32)  # [1 image, 2 maps, 2 x 2]
    b = np.array([[[[0, 2], [4, 6]], [[0, 1], [1, 0]]]], dtype=np.float32)
    correlation = map_correlations(a, b)
    assert correlation.shape == (1, 2)
    assert correlation[0, 0] == pytest.approx(1.0)  # a scaled map is the same map
    assert np.isnan(correlation[0, 1])  # a constant map has no correlation
    assert map_correlations(a[:, :1], -a[:, :1])[0, 0] == pytest.approx(-1.0)
    assert top_k_overlap(["x", "y", "z"], ["y", "x", "w"], 2) == 1.0  # the same two first, in another order
    assert top_k_overlap(["x", "y", "z"], ["y", "w", "x"], 2) == 0.5
    assert top_k_overlap(["x"], ["x", "y"], 10) == 1.0  # k is capped by the shorter list


def test_patch_shares_by_hand(tmp_path):
    from benchmarks.summarise import patch_shares

    # Three correct 4 x 4 maps: class "a" puts 3/4 of its attention in the top-left cell, class "b" 1/4 and 0; a
    # wrong prediction of class "b" with all its attention there is not counted.
    maps = np.zeros((4, 2, 4, 4), dtype=np.float16)
    maps[0, 0, 0, 0], maps[0, 0, 3, 3] = 3, 1
    maps[1, 0, 0, 0], maps[1, 0, 2, 2] = 1, 3
    maps[2, 0, 1, 1] = 1
    maps[3, 0, 0, 0] = 1
    np.save(tmp_path / "maps.npy", maps)
    pd.DataFrame({"row": [0, 1, 2, 3], "label": ["a", "b", "b", "b"], "correct": [True, True, True, False]}).to_parquet(
        tmp_path / "records.parquet")
    ((cls, own, other, area),) = patch_shares(tmp_path, {"a": [0.0, 0.0, 0.25, 0.25]})
    assert cls == "a" and own == pytest.approx(0.75) and other == pytest.approx(0.125) and area == 0.0625


# ------------------------------------------------------------------------------------------------ the colour family

COLOUR = bias_detection_colour.FAMILY


@pytest.fixture(scope="module")
def colour_layers():
    """Seed 0 of the colour family at 10 training and 20 audit images per class (no training)."""
    _, audit, ids = build(COLOUR, 0, 10, 20)
    return audit, compose(COLOUR, audit), ids


def test_colour_images_are_uint8_rgb_and_planted_shares_exact(colour_layers):
    layers, images, ids = colour_layers
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8
    assert len(set(ids)) == 200
    truth = layers["true_labels"]
    assert np.bincount(truth).tolist() == [20] * 10
    for cue in COLOUR.cues:
        assert layers[cue.name].sum() == round(cue.share * 20), cue.name
        assert set(truth[layers[cue.name]]) == {cue.cls}, cue.name
    flip = COLOUR.flip
    assert layers["flipped"].sum() == 5 and set(truth[layers["flipped"]]) == {flip.src}
    assert (layers["labels"] == np.where(layers["flipped"], flip.dst, truth)).all()
    assert COLOUR.clean == [0, 3, 4, 5]  # circle, star, cross, ring
    # the background is never one flat colour: every image's pixels vary within each channel
    assert (compose(COLOUR, layers, without="grass").reshape(200, -1, 3).std(axis=1) > 5).all()


def test_colour_masks_are_the_shapes_inside_the_margin(colour_layers):
    layers, images, _ = colour_layers
    masks, objects = layers["masks"], layers["objects"]
    assert masks.dtype == bool and masks.shape == (200, 64, 64)
    assert (layers["drawn"] == masks).all() and (masks.sum(axis=(1, 2)) >= 20).all()  # every shape is visible
    assert (objects[~masks] == 0).all() and (objects[masks].max(axis=-1) > 0).all()  # coloured where the mask is
    np.testing.assert_array_equal(images[masks], objects[masks])  # no cue covers a shape pixel
    m = bias_detection_colour.MARGIN
    inside = np.zeros((64, 64), dtype=bool)
    inside[m:-m, m:-m] = True
    assert not masks[:, ~inside].any()


@pytest.mark.parametrize("name", bias_detection_colour.CLASSES)
def test_colour_shapes_stay_inside_the_margin_at_their_largest(name):
    """The worst case: the largest radius at the extreme places, every rotation step."""
    high = bias_detection_colour.RADIUS[1]
    m = bias_detection_colour.MARGIN
    for angle in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        for cx in (m + high + 1, 64 - m - high - 1):
            coverage = bias_detection_colour.draw_shape(name, 64, cx, cx, high, angle)
            drawn = np.flatnonzero((coverage >= 0.5).any(axis=0))
            assert drawn.min() >= m and drawn.max() < 64 - m, (name, angle, cx)


def test_colour_cues_never_reach_the_object_zone():
    """Every pixel any patch cue paints, at every place, lies outside the square where shapes are drawn."""
    m = bias_detection_colour.MARGIN
    for cue in COLOUR.cues:
        for x0, y0, x1, y1 in cue.boxes:
            painted = np.zeros((64, 64), dtype=bool)
            painted[y0:y1, x0:x1] = True if cue.stencil is None else cue.stencil
            assert painted.any() and not painted[m:-m, m:-m].any(), cue.name
    assert len(COLOUR.cues[2].places) == 4  # the sticker's four corners


def test_colour_cues_are_painted_where_planted_and_removed_alone(colour_layers):
    layers, images, _ = colour_layers
    for cue in COLOUR.cues:
        without = compose(COLOUR, layers, without=cue.name)
        changed = (without != images).any(axis=(1, 2, 3))
        assert not changed[~layers[cue.name]].any(), cue.name  # only the images carrying it change
        assert changed[layers[cue.name]].all(), cue.name
    frame, sticker, text = (next(c for c in COLOUR.cues if c.name == n) for n in ("frame", "sticker", "text"))
    framed = layers["frame"]
    assert (images[framed][:, frame.stencil] == frame.pattern).all()
    assert not (images[~framed][:, frame.stencil] == frame.pattern).all(axis=(1, 2)).any()
    x0, y0, x1, y1 = text.box
    assert (images[layers["text"], y0:y1, x0:x1][:, text.stencil] == text.pattern).all()
    where = layers["sticker place"]
    for i in np.flatnonzero(layers["sticker"]):  # the sticker at its image's corner and at no other
        for p, (x0, y0, x1, y1) in enumerate(sticker.places):
            red = (images[i, y0:y1, x0:x1][sticker.stencil] == sticker.pattern).all()
            assert red == (p == where[i])
    assert set(where[layers["sticker"]]) == {0, 1, 2, 3}


def test_colour_grass_replaces_the_background(colour_layers):
    layers, images, _ = colour_layers
    grassy, shapes = layers["grass"], layers["masks"]
    background = ~shapes[grassy]
    np.testing.assert_array_equal(images[grassy][background], layers["textures"][grassy][background])
    green = images[grassy][background].astype(int)
    assert (green[:, 1] > green[:, 0]).mean() > 0.9 and (green[:, 1] > green[:, 2]).mean() > 0.9


def test_text_stencil_is_the_default_font():
    stencil = bias_detection_colour.text_stencil("(c) STUDIO")
    assert stencil.dtype == bool and 6 <= stencil.shape[0] <= 12 and 30 <= stencil.shape[1] <= 62
    assert stencil[0].any() and stencil[-1].any() and stencil[:, 0].any() and stencil[:, -1].any()  # cropped


def test_region_rules_of_moving_marks_frames_and_text():
    sticker, frame, text = (next(c for c in COLOUR.cues if c.name == n) for n in ("sticker", "frame", "text"))
    for x0, y0, x1, y1 in sticker.places:  # any corner holds the moving sticker
        assert holds_cue([(x0 - 1) / 64, (y0 - 1) / 64, (x1 + 1) / 64, (y1 + 1) / 64], sticker, 64)
    assert not holds_cue([0.4, 0.0, 0.6, 0.2], sticker, 64)  # the top edge's middle: no sticker there
    assert holds_cue([0.0, 0.4, 0.1, 0.6], frame, 64) and holds_cue([0.9, 0.9, 1.0, 1.0], frame, 64)
    assert not holds_cue([0.25, 0.25, 0.75, 0.75], frame, 64)  # inside the band
    x0, y0, x1, y1 = text.box
    assert holds_cue([x0 / 64, 0.75, (x0 + 8) / 64, 1.0], text, 64)  # its first letters, not its centre
    assert not holds_cue([0.0, 0.0, 1.0, (y0 - 1) / 64], text, 64)  # above it
    assert not holds_cue([0.0, y0 / 64, (x0 - 1) / 64, 1.0], text, 64)  # left of it


def test_score_finds_a_moving_mark_at_any_of_its_places():
    used = {cue.name: {"used": True} for cue in COLOUR.cues}
    corner = [0.0, 0.75, 0.25, 1.0]  # the bottom-left corner: one of the sticker's four
    findings = [
        finding("F001", "repeated_mark", "medium", ["diamond"], region=corner),
        finding("F002", "spatial_shortcut", "high", ["square"], region=[0.3, 0.3, 0.7, 0.7]),  # not on the frame
        finding("F003", "repeated_mark", "medium", ["heart"], region=[0.25, 0.8, 0.4, 0.95]),  # part of the text
    ]
    rows = {r["bias"]: r for r in score(COLOUR, findings, used, False, set(), [], 0)["rows"]}
    assert rows["sticker"]["status"] == "found" and rows["sticker"]["finding"]["id"] == "F001"
    assert rows["sticker"]["box"] is None and len(rows["sticker"]["places"]) == 4
    assert rows["sticker"]["iou"] > 0  # against the corner it names
    assert rows["frame"]["status"] == "missed" and rows["text"]["status"] == "found"
    assert rows["grass"]["status"] == "not applicable"


def test_colour_model_and_audit_sections_take_three_channels(tmp_path):
    from auditor.config import ModelConfig
    from auditor.demo import model_input
    from auditor.models import open_model
    from benchmarks.planted import model_section, new_model, per_channel

    torch.manual_seed(0)
    trained = new_model(COLOUR, "cnn").eval()
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    loaded = open_model(ModelConfig(**model_section("cnn", tmp_path / "model.pt", COLOUR.classes, 3)))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    x = model_input(images, COLOUR.mean, COLOUR.std)
    assert x.shape == (2, 3, 64, 64)
    for c in range(3):  # per channel, laid out as [N, C, H, W]
        expected = (torch.from_numpy(images[..., c]).float() / 255.0 - COLOUR.mean[c]) / COLOUR.std[c]
        torch.testing.assert_close(x[:, c], expected)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval()(x), trained(x))
    assert per_channel(COLOUR.mean, 3) == list(COLOUR.mean) and per_channel(0.1, 1) == [0.1]
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    torch.testing.assert_close(model_input(gray, 0.1, 0.25),
                               (torch.from_numpy(gray).float()[:, None] / 255.0 - 0.1) / 0.25, rtol=0, atol=0)
    assert "factory_kwargs" not in model_section("cnn", tmp_path / "model.pt", ["a"])  # gray configs as before


# ------------------------------------------------------------------------------------------------ the gray families
# are drawn as before the colour family: the same rng draws in the same order, the same images


def plant_as_before(family, items, labels, rng):
    """planted.plant and compose as they were before the colour family (commit d389624), for gray families."""
    n, size = len(items), family.canvas
    noise = rng.integers(0, NOISE, size=(n, size, size), dtype=np.uint8)
    flags = {}
    for cue in family.cues:
        flags[cue.name] = np.zeros(n, dtype=bool)
        flags[cue.name][exact_share(np.flatnonzero(labels == cue.cls), cue.share, rng)] = True
    flipped = np.zeros(n, dtype=bool)
    flipped[exact_share(np.flatnonzero(labels == family.flip.src), family.flip.share, rng)] = True
    objects, drawn, masks = family.place(items, rng, size)
    textures = np.zeros_like(noise)
    for cue in family.cues:
        if cue.texture is not None:
            for i in np.flatnonzero(flags[cue.name]):
                textures[i] = cue.texture(rng, size)
    images = noise.copy()
    for cue in family.cues:
        if cue.texture is not None:
            images[flags[cue.name]] = np.maximum(images[flags[cue.name]], textures[flags[cue.name]])
    images[drawn] = objects[drawn]
    for cue in family.cues:
        if cue.box is not None:
            x0, y0, x1, y1 = cue.box
            images[flags[cue.name], y0:y1, x0:x1] = cue.pattern
    return images, masks, np.where(flipped, family.flip.dst, labels), rng.integers(2**32)


@pytest.mark.parametrize("module", [bias_detection, bias_detection_mnist])
def test_gray_families_draw_the_same_data_as_before(module):
    """Fake items (the real sets may be absent) through each gray family's own placing and cues: the same images,
    masks and labels as the code before, and the generator left in the same state."""
    family = module.FAMILY
    labels = np.repeat(np.arange(10), 12)
    items = np.random.default_rng(1).integers(0, 256, size=(120, 28, 28), dtype=np.uint8)
    rng_old, rng_new = np.random.default_rng(0), np.random.default_rng(0)
    images, masks, noisy, state = plant_as_before(family, items, labels, rng_old)
    layers = plant(family, items, labels, rng_new)
    new_images = compose(family, layers)
    assert new_images.shape == (120, 64, 64) and new_images.dtype == np.uint8
    np.testing.assert_array_equal(new_images, images)
    np.testing.assert_array_equal(layers["masks"], masks)
    np.testing.assert_array_equal(layers["labels"], noisy)
    assert rng_new.integers(2**32) == state
    assert family.channels == 1 and not any(c.places or c.stencil is not None for c in family.cues)


def seed_0_digest(family, train_per_class, audit_per_class) -> str:
    """A hash of a gray family's seed-0 data: both splits' images, masks, labels, every cue-removed version, ids."""
    import hashlib

    train, audit, ids = build(family, 0, train_per_class, audit_per_class)
    digest = hashlib.sha256()
    for layers in (train, audit):
        digest.update(compose(family, layers).tobytes())
        digest.update(np.ascontiguousarray(layers["masks"]).tobytes())
        digest.update(layers["labels"].tobytes())
        for cue in family.cues:
            digest.update(compose(family, layers, without=cue.name).tobytes())
    digest.update("".join(ids).encode())
    return digest.hexdigest()


# computed from the code before the colour family (commit d389624) on Debian's Fashion-MNIST and shared MNIST
SEED_0_DIGESTS = {
    "fashion": "7d29fb313017c2d4c5c9548dbd5f57064f96d7e4ccfd1887720724c4ec43c9df",
    "mnist": "f6023e1d30cd6b44070eb6160ce7887f90b01aed10fe08f80809681000cae83b",
}


@pytest.mark.parametrize("module", [bias_detection, bias_detection_mnist])
def test_gray_families_seed_0_data_is_unchanged(module):
    """Where the real data sets are here: seed 0 at 50 training and 20 audit images per class, hashed."""
    if module is bias_detection and not bias_detection.FASHION.is_dir():
        pytest.skip("Debian's Fashion-MNIST absent")
    if module is bias_detection_mnist and not bias_detection_mnist.MNIST.is_dir():
        pytest.skip("../shared MNIST absent")
    assert seed_0_digest(module.FAMILY, 50, 20) == SEED_0_DIGESTS[module.FAMILY.name]
