"""examples/panoptic/model.py: Panoptic FPN with CABB in torchvision's RPN and box head."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import MaskRCNN  # noqa: E402

from examples.panoptic.model import (  # noqa: E402
    PanopticFPN,
    build_backbone,
    build_panoptic_fpn,
    panoptic_fusion,
)

SIZE = 128
NUM_THINGS = 2
NUM_CLASSES = 4  # 0, 1 things; 2, 3 stuff
BUDGET = dict(
    min_size=SIZE,
    max_size=SIZE,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    rpn_batch_size_per_image=64,
    box_batch_size_per_image=64,
    box_detections_per_img=20,
)
MASKRCNN_LOSSES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def _model(box_loss: str = "cabb", norm: str = "group", seed: int = 0) -> PanopticFPN:
    torch.manual_seed(seed)
    return build_panoptic_fpn(NUM_THINGS, NUM_CLASSES, backbone="resnet18", norm=norm, box_loss=box_loss, **BUDGET)


def _stock(model: PanopticFPN, norm: str = "group") -> MaskRCNN:
    """torchvision's Mask R-CNN with the same architecture and weights as ``model``."""
    stock = MaskRCNN(build_backbone("resnet18", norm=norm), num_classes=NUM_THINGS + 1, **BUDGET)
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected and all(k.startswith("semantic_head.") for k in unexpected)
    return stock


def _data(truncate: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two fixed 128x128 crops: coloured rectangles (things) on two stuff backgrounds."""
    g = torch.Generator().manual_seed(1)
    # (x0, y0, x1, y1, label, truncated sides): boxes touching the crop border are cut there
    layouts = [
        [(0, 20, 50, 70, 1, (True, False, False, False)), (70, 60, 120, 110, 2, (False,) * 4),
         (30, 90, 64, 128, 1, (False, False, False, True))],
        [(10, 0, 60, 40, 2, (False, True, False, False)), (80, 30, 128, 100, 1, (False, False, True, False))],
    ]
    images, targets = [], []
    for layout in layouts:
        img = torch.rand(3, SIZE, SIZE, generator=g) * 0.1
        semantic = torch.full((SIZE, SIZE), 2, dtype=torch.int64)
        semantic[SIZE // 2 :] = 3
        img[0, SIZE // 2 :] += 0.3
        semantic[:4, -4:] = 255  # a few ignored pixels
        boxes, labels, masks, truncated = [], [], [], []
        for x0, y0, x1, y1, label, sides in layout:
            m = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
            m[y0:y1, x0:x1] = 1
            img[label, y0:y1, x0:x1] = 0.9
            semantic[y0:y1, x0:x1] = label - 1
            boxes.append([x0, y0, x1, y1])
            labels.append(label)
            masks.append(m)
            truncated.append(sides if truncate else (False,) * 4)
        images.append(img.clamp(0, 1))
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "masks": torch.stack(masks),
                "truncated": torch.tensor(truncated, dtype=torch.bool),
                "semantic": semantic,
            }
        )
    return images, targets


def _losses(model: torch.nn.Module, images, targets, seed: int = 123) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # torchvision samples anchors and proposals at random
    return model(images, targets)


def _backward(model: torch.nn.Module, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sum(losses[k] for k in MASKRCNN_LOSSES).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("box_loss,truncate", [("smooth_l1", True), ("cabb", False)])
def test_bit_identical_to_torchvision_without_cabb(box_loss: str, truncate: bool) -> None:
    model = _model(box_loss)
    stock = _stock(model)
    images, targets = _data(truncate)
    ours = _losses(model, images, targets)
    ref = _losses(stock, images, targets)
    assert set(ours) == set(MASKRCNN_LOSSES) | {"loss_semantic"}
    for k in MASKRCNN_LOSSES:
        assert torch.equal(ours[k], ref[k]), k
    assert torch.isfinite(ours["loss_semantic"]) and ours["loss_semantic"] > 0
    g_ours, g_ref = _backward(model, ours), _backward(stock, ref)
    assert g_ref and set(g_ours) == set(g_ref)  # the semantic head gets no gradient from these
    for n in g_ref:
        assert torch.equal(g_ours[n], g_ref[n]), n


def test_cabb_lowers_box_losses_on_truncated_crops() -> None:
    model = _model("cabb")
    stock = _stock(model)
    images, targets = _data(truncate=True)
    ours = _losses(model, images, targets)
    ref = _losses(stock, images, targets)
    for k in ("loss_objectness", "loss_classifier", "loss_mask"):
        assert torch.equal(ours[k], ref[k]), k
    for k in ("loss_rpn_box_reg", "loss_box_reg"):
        assert ours[k] < ref[k], (k, ours[k], ref[k])
    # the gradients flow through the CABB losses
    grads = _backward(model, ours)
    assert grads["rpn.head.bbox_pred.weight"].abs().sum() > 0
    assert grads["roi_heads.box_predictor.bbox_pred.weight"].abs().sum() > 0


def test_overfits_a_few_crops() -> None:
    model = _model("cabb")
    images, targets = _data(truncate=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    totals = []
    for step in range(16):
        losses = _losses(model, images, targets, seed=step)
        total = sum(losses.values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        totals.append(float(total.detach()))
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last / first < 0.5, totals


def test_train_with_empty_and_resized_images() -> None:
    model = _model("cabb")
    images, targets = _data(truncate=True)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 100, 90, dtype=torch.uint8),
        "truncated": torch.zeros(0, 4, dtype=torch.bool),
        "semantic": torch.full((100, 90), 255, dtype=torch.int64),
    }
    # a 256x256 image is resized to 128 by the transform: so must its semantic map be
    big = dict(targets[0])
    big["boxes"] = big["boxes"] * 2
    big["masks"] = big["masks"].repeat_interleave(2, 1).repeat_interleave(2, 2)
    big["semantic"] = big["semantic"].repeat_interleave(2, 0).repeat_interleave(2, 1)
    image = images[0].repeat_interleave(2, 1).repeat_interleave(2, 2)
    losses = _losses(model, [torch.rand(3, 100, 90), image], [empty, big])
    assert set(losses) == set(MASKRCNN_LOSSES) | {"loss_semantic"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # an all-ignored batch gives a zero (not nan) semantic loss
    losses = _losses(model, [torch.rand(3, 100, 90)], [empty])
    assert losses["loss_semantic"] == 0


def test_eval_outputs_in_original_size() -> None:
    model = _model("cabb", norm="frozen").eval()
    # one image not a multiple of 32 (padded), one larger than max_size (resized)
    images = [torch.rand(3, 100, 90), torch.rand(3, 150, 256)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for res, img in zip(out, images):
        h, w = img.shape[-2:]
        n = res["boxes"].shape[0]
        assert res["boxes"].shape == (n, 4) and res["labels"].shape == (n,) and res["scores"].shape == (n,)
        assert res["masks"].shape == (n, 1, h, w)
        assert res["semantic_logits"].shape == (NUM_CLASSES, h, w)
        category, instance = panoptic_fusion(res, [0, 1], [2, 3], score_thresh=0.0)
        assert category.shape == instance.shape == (h, w)
        assert category.dtype == instance.dtype == torch.int64


def test_state_dict_keys_match_torchvision() -> None:
    model = _model("cabb", norm="frozen")
    stock = _stock(model, norm="frozen")
    extra = set(model.state_dict()) - set(stock.state_dict())
    assert set(stock.state_dict()) <= set(model.state_dict())
    assert extra and all(k.startswith("semantic_head.") for k in extra)


def test_panoptic_fusion_hand_made() -> None:
    h, w = 6, 8
    logits = torch.zeros(4, h, w)
    logits[2, :3] = 1.0  # top: stuff 2
    logits[3, 3:] = 1.0  # bottom: stuff 3
    logits[3, 5, 7] = -1.0
    logits[0, 5, 7] = 5.0  # a thing class in the semantic map: never pasted as stuff
    masks = torch.zeros(4, 1, h, w)
    masks[0, 0, 1:4, 1:4] = 0.9  # A, score 0.9, label 2 -> class 1
    masks[1, 0, 2:5, 2:5] = 0.8  # B, score 0.8: 5 of its 9 pixels free (>= 0.5) -> kept
    masks[2, 0, 1:3, 1:3] = 0.9  # C, score 0.7: inside A -> dropped
    masks[3, 0, 0:2, 6:8] = 0.9  # D, score 0.3 < score_thresh -> ignored
    result = {
        "boxes": torch.zeros(4, 4),
        "labels": torch.tensor([2, 1, 1, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.3]),
        "masks": masks,
        "semantic_logits": logits,
    }
    category, instance = panoptic_fusion(result, thing_ids=[0, 1], stuff_ids=[2, 3], stuff_area=5)

    exp_cat = torch.full((h, w), -1, dtype=torch.int64)
    exp_inst = torch.zeros((h, w), dtype=torch.int64)
    exp_cat[:3] = 2
    exp_cat[3:] = 3
    exp_cat[5, 7] = -1  # semantic argmax is a thing class
    exp_cat[2:5, 2:5] = 0
    exp_inst[2:5, 2:5] = 2
    exp_cat[1:4, 1:4] = 1
    exp_inst[1:4, 1:4] = 1
    assert torch.equal(category, exp_cat)
    assert torch.equal(instance, exp_inst)

    # stuff_area: a stuff region smaller than it stays void
    category, _ = panoptic_fusion(result, [0, 1], [2, 3], stuff_area=17)  # free areas: stuff 2: 17, 3: 16
    assert (category == 2).sum() == 17 and (category == 3).sum() == 0
    # an empty result: only stuff
    empty = {k: v[:0] for k, v in result.items() if k != "semantic_logits"}
    empty["semantic_logits"] = logits
    category, instance = panoptic_fusion(empty, [0, 1], [2, 3], stuff_area=1)
    assert (instance == 0).all() and (category[:3] == 2).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "vgg16"}, "expects 'resnet18' or 'resnet50'; got 'vgg16'"),
        ({"norm": "batch"}, "norm="),
        ({"box_loss": "giou"}, "box_loss="),
        ({"trainable_backbone_layers": 6}, "trainable_backbone_layers="),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_panoptic_fpn(NUM_THINGS, NUM_CLASSES, **kwargs)


def test_bad_class_counts() -> None:
    with pytest.raises(ValueError, match="num_classes="):
        build_panoptic_fpn(3, 2)
    with pytest.raises(ValueError, match="num_thing_classes="):
        build_panoptic_fpn(0, 2)


def test_backbone_weights_file(tmp_path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    for norm in ("frozen", "group", "sync"):
        model = build_panoptic_fpn(NUM_THINGS, NUM_CLASSES, backbone_weights=str(path), norm=norm, **BUDGET)
        assert torch.equal(model.backbone.body.conv1.weight, net.conv1.weight)
        assert torch.equal(model.backbone.body.layer1[0].bn1.weight, net.layer1[0].bn1.weight)
    with pytest.raises(ValueError, match="not a torchvision resnet50"):
        build_panoptic_fpn(NUM_THINGS, NUM_CLASSES, backbone="resnet50", backbone_weights=str(path), **BUDGET)


class _Oracle(torch.nn.Module):
    """A stand-in for PanopticFPN that outputs each image's ground truth (images in order, at
    ``scale`` times their size): its non-crowd thing instances as detections with score 1,
    and one-hot semantic logits."""

    def __init__(self, ds, labels, scale: int) -> None:
        super().__init__()
        self.transform = types.SimpleNamespace(min_size=(SIZE,), max_size=SIZE)
        self.ds, self.labels, self.scale, self.next = ds, labels, scale, 0

    def forward(self, images):
        (x,) = images
        gt = self.ds.load_panoptic(self.next)
        self.next += 1
        ids = np.repeat(np.repeat(gt.ids, self.scale, 0), self.scale, 1)
        assert tuple(x.shape[-2:]) == ids.shape
        train = {c.id: k for k, c in enumerate(self.ds.categories)}
        label_of = {t: k + 1 for k, t in enumerate(self.labels.thing_train_ids)}
        logits = torch.zeros(self.labels.num_classes, *ids.shape)
        boxes, det_labels, masks = [], [], []
        for s in gt.segments:
            m = ids == s["id"]
            t = train[int(s["category_id"])]
            logits[t][torch.from_numpy(m)] = 1.0
            if t in label_of and not s["iscrowd"] and m.any():
                ys, xs = np.nonzero(m)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                det_labels.append(label_of[t])
                masks.append(m)
        n = len(boxes)
        return [{"boxes": torch.tensor(np.array(boxes, np.float32).reshape(n, 4)),
                 "labels": torch.tensor(det_labels, dtype=torch.int64), "scores": torch.ones(n),
                 "masks": torch.from_numpy(np.array(masks, np.float32).reshape(n, 1, *ids.shape)),
                 "semantic_logits": logits}]


@pytest.mark.parametrize("scale", [1, 2])
def test_evaluate_writes_and_scores_a_perfect_model(synth_root, tmp_path, scale: int) -> None:
    """examples/panoptic/evaluate.py end to end with the ground truth as the model's output: the
    label map, the rescaling of boxes and masks to the original size (the model sees the image at
    ``scale`` times its size), the COCO files and AP = 100 % exactly."""
    import isus
    from examples.panoptic.data import LabelMap
    from examples.panoptic.evaluate import evaluate
    from isus.eval import PanopticEvaluator, PanopticPredictions, read_instances

    ds = isus.open_dataset("mvd", synth_root("mvd"))
    labels = LabelMap.from_dataset(ds)
    h = ds.image_info(0).height
    res = evaluate(_Oracle(ds, labels, scale), ds, labels, shortest_side=h * scale if scale != 1 else None,
                   device=torch.device("cpu"), out=tmp_path / "predictions", max_images=5)
    assert res.images == 5
    assert res.ap_box == 1.0 and res.ap_mask == 1.0  # every non-crowd GT instance, exactly
    assert all(v == 1.0 for v in res.buckets["box"] + res.buckets["mask"])
    assert res.pq_th == 1.0 and res.sq == 1.0  # stuff below the fusion's stuff_area is missed
    # the written files hold the same predictions
    preds = PanopticPredictions(tmp_path / "predictions" / "panoptic.json")
    dets = read_instances(tmp_path / "predictions" / "instances.json")
    ev = PanopticEvaluator(ds.categories)
    for i in range(5):
        image_id = ds.image_info(i).image_id
        ev.add(ds.load_panoptic(i), preds.load(image_id), dets[str(image_id)])
    assert ev.result().to_dict() == res.to_dict()


def test_lr_schedule_is_continuous_after_warmup():
    from examples.train_panoptic import lr_lambda

    f = lr_lambda(100, 700)
    lrs = np.array([f(i) for i in range(701)])
    assert lrs[0] == 0 and lrs[100] == 1.0 and lrs[700] == 0.0
    # no jump anywhere: the largest step is the warm-up's slope
    assert np.abs(np.diff(lrs)).max() <= 1 / 100 + 1e-12
    assert (np.diff(lrs[100:]) < 0).all()
