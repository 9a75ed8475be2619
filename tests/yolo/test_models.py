"""YOLO models: published sizes, any backbone trains and predicts, the inference contract, fast paths agree."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vision
from vision.models.detection.yolo.postprocess import letterbox, unletterbox
from vision.registry import MODELS

# Published YOLOv8 sizes (80 classes, 640 px), from Ultralytics' yolov8.yaml model summaries and its README table:
# parameters 3,157,200 / 11,166,560 / 25,902,640 / 43,691,520 for n / s / m / l; GFLOPs 8.7 / 28.6 / 78.9 / 165.2.
# Their parameter count includes the DFL's fixed projection, a 1x1 convolution with reg_max = 16 weights (0..15) that
# never trains (the same summaries list exactly 16 fewer "gradients"); ours computes that expectation without a
# parameter, so ours must be the published number minus 16.
PUBLISHED_PARAMS = {"n": 3_157_200, "s": 11_166_560, "m": 25_902_640, "l": 43_691_520}
PUBLISHED_GFLOPS = {"n": 8.7, "s": 28.6, "m": 78.9, "l": 165.2}
DFL_PROJECTION = 16


@pytest.mark.parametrize("size", list(PUBLISHED_PARAMS))
def test_parameters_and_flops_match_the_published_sizes(size):
    """Counted on the meta device (no compute): FLOPs = 2 x multiply-adds of convolutions and matmuls, as
    ``torch.utils.flop_counter`` counts them (norms, activations and the box decoding are not counted)."""
    with torch.device("meta"):
        model = vision.create_model(f"yolo_{size}", num_classes=80).eval()
        x = torch.zeros(1, 3, 640, 640)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_raw(x)
    gflops = counter.get_total_flops() / 1e9
    assert params == PUBLISHED_PARAMS[size] - DFL_PROJECTION, f"yolo_{size}: {params} parameters"
    want = PUBLISHED_GFLOPS[size]
    assert abs(gflops / want - 1) < 0.01, f"yolo_{size}: {gflops:.2f} GFLOPs vs {want}"


def test_registry_entries():
    for name in ("yolo_n", "yolo_s", "yolo_m", "yolo_l", "yolo"):
        entry = MODELS.get(name)
        assert entry.task == "detection" and "background_class" not in entry.tags
    assert {f"csp_darknet_{s}" for s in "nsml"} <= set(vision.BACKBONES.names("csp_darknet_*"))


def _targets(n: int, size: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    out = []
    for i in range(n):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = 8 + torch.rand(3, 2, generator=g) * size * 0.3
        out.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size), "labels": torch.tensor([0, 1, 2])[: i + 2]})
        out[-1]["boxes"] = out[-1]["boxes"][: i + 2]
    return out


def _check_detections(dets, sizes, num_classes):
    assert len(dets) == len(sizes)
    for det, (H, W) in zip(dets, sizes):
        assert set(det) >= {"boxes", "scores", "labels"}
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == (n,) and det["labels"].shape == (n,) and det["labels"].dtype == torch.int64
        if n:
            b = det["boxes"]
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 3] <= H).all()
            assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
            assert (det["labels"] >= 0).all() and (det["labels"] < num_classes).all()
            assert (det["scores"][:-1] >= det["scores"][1:]).all()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("yolo_n", {}),
        ("yolo", {"backbone": "resnet50"}),
        ("yolo", {"backbone": "efficientnet_b0"}),
        ("yolo", {"backbone": "vgg16"}),
    ],
    ids=["csp_darknet_n", "resnet50", "efficientnet_b0", "vgg16"],
)
def test_trains_two_steps_and_predicts(name, kwargs):
    torch.manual_seed(0)
    model = vision.create_model(name, num_classes=3, imgsz=96, **kwargs)
    assert model.strides == [8, 16, 32]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.rand(2, 3, 96, 96)
    model.train()
    for _ in range(2):
        losses = model.loss(images, _targets(2, 96))
        assert set(losses) == {"box", "cls", "dfl"}
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # every part learned: at least one trainable parameter of the backbone, the neck and each head branch changed
    changed = {n for (n, p), b in zip(model.named_parameters(), before) if not torch.equal(p, b)}
    parts = ("backbone.", "neck.", "head.box.", "head.cls.")
    for part in parts:
        assert any(n.startswith(part) and p.requires_grad for n, p in model.named_parameters()), part
        assert any(n.startswith(part) for n in changed), f"no parameter of {part} changed"
    assert all(n.startswith(parts) for n, _ in model.named_parameters())  # the parts cover the model
    model.eval()
    dets = model([torch.rand(3, 70, 100), torch.rand(3, 96, 64)])
    _check_detections(dets, [(70, 100), (96, 64)], 3)


def test_padded_targets_give_the_same_loss():
    from vision.data import pad_targets

    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3).eval()  # eval: batch norm independent of the batch
    images, targets = torch.rand(2, 3, 64, 64), _targets(2, 64)
    a = model.loss(images, targets)
    b = model.loss(images, pad_targets(targets, max_boxes=7))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_images_without_objects_train():
    model = vision.create_model("yolo_n", num_classes=2)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model.loss(torch.rand(2, 3, 64, 64), [empty, empty])
    assert losses["box"].item() == 0 and losses["dfl"].item() == 0 and losses["cls"].item() > 0
    sum(losses.values()).backward()


def test_letterbox_round_trip():
    images = [torch.rand(3, 50, 100), torch.rand(3, 120, 60)]
    batch, info, sizes = letterbox(images, size=64, stride=32)
    assert batch.shape == (2, 3, 64, 64)  # 50x100 -> 32x64; 120x60 -> 64x32; canvas 64x64
    assert info[0].tolist() == pytest.approx([0.64, 0.64, 0.0, 16.0])
    assert info[1].tolist() == pytest.approx([32 / 60, 64 / 120, 16.0, 0.0])
    boxes = torch.tensor([[[10.0, 5.0, 90.0, 45.0]], [[0.0, 0.0, 60.0, 120.0]]])
    mapped = boxes * info[:, None, :2].repeat(1, 1, 2) + info[:, None, 2:].repeat(1, 1, 2)
    assert torch.allclose(unletterbox(mapped, info, sizes), boxes, atol=1e-4)
    fixed, _, _ = letterbox(torch.rand(2, 3, 30, 40), size=100, stride=32, fixed=True)
    assert fixed.shape == (2, 3, 128, 128)


def test_predict_contract_and_equivalent_inputs():
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=128, score_threshold=0.0).eval()
    images = torch.rand(2, 3, 90, 120)
    as_tensor = model(images)
    as_list = model.predict(list(images))
    quantized = (images * 255).round().to(torch.uint8)
    as_uint8 = model.predict(quantized)
    as_float64 = model.predict(images.double())
    _check_detections(as_tensor, [(90, 120)] * 2, 3)
    assert [len(d["boxes"]) for d in as_tensor] == [300, 300]  # score_threshold=0: max_det detections per image
    for a, b, c in zip(as_tensor, as_list, as_float64):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
        assert torch.allclose(a["scores"], c["scores"], atol=1e-6) and torch.equal(a["labels"], c["labels"])
    # uint8 is the same image scaled by 1 / 255: identical detections to the float version of the quantised pixels
    as_scaled = model.predict(quantized.float() / 255)
    for a, b in zip(as_uint8, as_scaled):
        assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])
        assert torch.equal(a["labels"], b["labels"])
    # cuda_graph is a CUDA fast path; on the CPU it is ignored
    graph = model.predict(images, cuda_graph=True)
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(as_tensor, graph))
    few = model.predict(images, max_det=5, score_threshold=0.01)
    assert all(len(d["boxes"]) <= 5 for d in few)
    assert model.training is False
    model.train()
    model.predict(images[:1])
    assert model.training is True  # predict restores the mode


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(1, 3, 0, 64), ValueError, "empty side"),
        ([torch.rand(3, 32, 32), torch.rand(3, 40, 0)], ValueError, "image 1 is empty"),
        ([], ValueError, "empty list"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.int32), TypeError, "int32"),
        ([torch.rand(4, 32, 32)], ValueError, "image 0"),
        (torch.rand(2, 4, 32, 32), ValueError, r"\[B, 3, H, W\]"),
    ],
    ids=["empty-tensor", "empty-list-item", "empty-list", "int32", "4-channel-item", "4-channel-batch"],
)
def test_bad_images_raise_a_clear_error(images, error, match):
    model = vision.create_model("yolo_n", num_classes=3, imgsz=64).eval()
    with pytest.raises(error, match=match):
        model.predict(images)
    with pytest.raises(error, match=match):
        model.train().loss(images, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_float64_images_train():
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3).eval()
    images = torch.rand(2, 3, 64, 64)
    a = model.loss(images, _targets(2, 64))
    b = model.loss(images.double(), _targets(2, 64))
    c = model.loss(list(images.double()), _targets(2, 64))
    for k in a:
        assert b[k].dtype == torch.float32 and torch.allclose(a[k], b[k], atol=1e-5) and torch.allclose(a[k], c[k])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"labels": torch.tensor([0, 3, 1])}, r"target 1: labels \[3\] are outside \[0, 3\)"),
        ({"labels": torch.tensor([-1, 2, 0])}, r"target 1: labels \[-1\] are outside"),
        ({"labels": torch.tensor([0, 1])}, "target 1: 3 boxes but 2 labels"),
        ({"boxes": None}, "target 1 needs 'boxes'"),
    ],
    ids=["too-large", "negative", "count-mismatch", "missing-key"],
)
def test_bad_targets_raise_naming_the_target(bad, match):
    model = vision.create_model("yolo_n", num_classes=3)
    targets = _targets(2, 64)  # 2 and 3 boxes
    targets[1] = {k: v for k, v in {**targets[1], **bad}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        model.loss(torch.rand(2, 3, 64, 64), targets)
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        model.loss(torch.rand(2, 3, 64, 64), targets[:1])


def test_bad_padded_targets_raise():
    from vision.data import pad_targets

    model = vision.create_model("yolo_n", num_classes=3)
    images = torch.rand(2, 3, 64, 64)
    padded = pad_targets(_targets(2, 64), max_boxes=5)
    with pytest.raises(ValueError, match=r"miss the keys \['valid'\]"):
        model.loss(images, {"boxes": padded["boxes"], "labels": padded["labels"]})
    with pytest.raises(ValueError, match=r"'labels' must be \[B=2, M=5\]"):
        model.loss(images, {**padded, "labels": padded["labels"][:, :4]})
    with pytest.raises(ValueError, match=r"'boxes' must be \[B=1, M, 4\]"):
        model.loss(images[:1], padded)
    wrong = padded["labels"].clone()
    wrong[0, 1] = 7
    with pytest.raises(ValueError, match=r"target 0: labels \[7\] are outside \[0, 3\)"):
        model.loss(images, {**padded, "labels": wrong})
    wrong = padded["labels"].clone()
    wrong[1, 4] = 7  # a padding row: ignored
    assert not padded["valid"][1, 4]
    model.eval()
    a, b = model.loss(images, padded), model.loss(images, {**padded, "labels": wrong})
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_assigner_ignores_padding_labels_only():
    from vision.models.detection.yolo.assigner import task_aligned_assign

    scores = torch.full((1, 4, 2), 0.5)
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]] * 4])
    points = torch.tensor([[2.0, 2.0], [6.0, 6.0], [20.0, 20.0], [30.0, 30.0]])
    gt_boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, False]])
    t = task_aligned_assign(scores, boxes, points, torch.tensor([[1, 99]]), gt_boxes, valid)
    assert t.foreground.tolist() == [[True, True, False, False]] and t.labels[0, :2].tolist() == [1, 1]
    with pytest.raises((IndexError, RuntimeError)):  # a real row with an impossible class is not mapped to another
        task_aligned_assign(scores, boxes, points, torch.tensor([[5, 0]]), gt_boxes, valid)


def test_caches_are_bounded_and_follow_the_memory_format():
    from vision.models.detection.yolo.postprocess import CACHE_SIZE

    model = vision.create_model("yolo_n", num_classes=2, imgsz=64).eval()
    for k in range(CACHE_SIZE + 3):
        model.predict(torch.rand(1, 3, 32, 32 * (k + 1)), imgsz=32 * (k + 1))
    assert len(model._anchors) == CACHE_SIZE
    assert not model._channels_last()
    model.to(memory_format=torch.channels_last)
    assert model._channels_last()  # the cached answer is forgotten when the weights change


def test_builders_keep_the_card():
    """``create_model`` hands the card of the weights it loads to the builder, which keeps it as ``model.card``."""
    from vision.hub.cards import WeightsCard

    card = WeightsCard(url="", sha256=None, num_params=0, num_classes=2, categories=("a", "b"))
    assert MODELS.get("yolo_n").builder(num_classes=2, card=card).card is card
    assert MODELS.get("yolo").builder(backbone="resnet18", num_classes=2, card=card).card is card
    assert vision.create_model("yolo_n", num_classes=2).card is None


def _raw(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    box, cls, _ = model.forward_raw(x)
    return box, cls


@torch.no_grad()
def test_fused_model_gives_the_same_outputs():
    """Folding y = gamma (conv(x) - mean) / sqrt(var + eps) + beta into the convolution changes nothing but rounding.

    Every batch norm gets random gamma and beta, running statistics near those of real activations (so the outputs
    stay in a sane range) shifted by random offsets and scaled by random factors; the comparison runs in float64 so
    the tolerance can be tight. The same model with batch norm dropped, or with its eps ignored, differs by orders of
    magnitude more (checked below), so the comparison sees both mistakes."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=96)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    for m in norms:
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        m.reset_running_stats()
        m.momentum = None  # the statistics of one batch
    model.train().forward_raw(torch.rand(2, 3, 96, 96))
    for m in norms:
        m.running_mean.add_(torch.randn(m.num_features, generator=g) * m.running_var.sqrt() * 0.1)
        m.running_var.mul_(torch.rand(m.num_features, generator=g) * 0.45 + 0.8)  # stays positive
    model.eval().double()
    x = letterbox(torch.rand(1, 3, 96, 96), size=96)[0].double()
    raw = _raw(model, x)
    fused = copy.deepcopy(model).fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    for a, b in zip(raw, _raw(fused, x)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    # the mistakes the comparison must see: batch norm dropped, or folded with eps = 0
    dropped = copy.deepcopy(model)
    for m in dropped.modules():
        for name, child in m.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(m, name, torch.nn.Identity())
    no_eps = copy.deepcopy(model)
    for m in no_eps.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 0.0
    for wrong in (dropped, no_eps.fuse()):
        assert all((a - b).abs().max() > 1.0 for a, b in zip(raw, _raw(wrong, x)))


def test_deepcopy_and_state_dict_round_trip():
    model = vision.create_model("yolo_n", num_classes=4).eval()
    model.predict(torch.rand(1, 3, 64, 64))  # fills the anchor cache
    twin = copy.deepcopy(model)
    assert twin._anchors == {} and twin._graphs == {}
    other = vision.create_model("yolo_n", num_classes=4).eval()
    other.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(model.forward_raw(x)[1], other.forward_raw(x)[1])


def _same_top_detections(a: dict, b: dict, k: int = 20, *, score_atol: float, box_atol: float) -> None:
    """Every one of ``a``'s ``k`` best detections is in ``b`` (same label, box and score within the tolerances), and
    the two score lists agree (sorted values, so near-ties may swap places)."""
    n = min(len(a["scores"]), len(b["scores"]))
    assert len(a["scores"]) == len(b["scores"])
    assert torch.allclose(a["scores"][:n], b["scores"][:n], rtol=0, atol=score_atol)
    for box, score, label in zip(a["boxes"][:k], a["scores"][:k], a["labels"][:k]):
        close = (
            (b["labels"] == label)
            & ((b["scores"] - score).abs() <= score_atol)
            & ((b["boxes"] - box).abs().amax(1) <= box_atol)
        )
        assert close.any(), f"detection {box.tolist()} ({label.item()}, {score.item():.5f}) missing"


@pytest.mark.gpu
def test_cuda_graph_and_bf16_paths_agree_with_eager():
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=320).cuda()
    with torch.no_grad():
        for branch in model.head.cls:  # input-dependent, well-spread class scores (the prior makes them all ~equal)
            torch.nn.init.normal_(branch[-1].weight, std=0.2)
        for m in model.modules():  # running statistics = those of one training batch
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()  # loss in train mode: batch statistics, which the running statistics record
        images = torch.rand(4, 3, 320, 320, device="cuda")  # square: the eager and the fixed canvas are the same
        model.loss(images, [{k: v.cuda() for k, v in t.items()} for t in _targets(4, 320)])
    model.eval()  # normalised by the statistics of these very images: unsaturated, spread scores
    images2 = torch.rand_like(images)  # other images of the same kind, for the replay
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
    try:
        eager = model.predict(images, amp=False)
        eager2 = model.predict(images2, amp=False)
        assert len(model._graphs) == 0
        graphed = model.predict(images, amp=False, cuda_graph=True)  # capture
        assert len(model._graphs) == 1
        replayed = model.predict(images2, amp=False, cuda_graph=True)  # replay on new inputs: no second capture
        assert len(model._graphs) == 1
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    for a, b in [*zip(eager, graphed), *zip(eager2, replayed)]:
        assert len(a["scores"]) >= 20 and len(b["scores"]) >= 20
        assert a["scores"][0] - a["scores"][19] > 0.03, "scores too flat for the comparison to mean anything"
        _same_top_detections(a, b, score_atol=1e-5, box_atol=1e-3)
    # the replay computed the new images, not the captured ones again
    assert any(not torch.equal(b["scores"], c["scores"]) for b, c in zip(graphed, replayed))
    bf16 = model.predict(images, amp=True, cuda_graph=True)  # other options: a second graph
    assert len(model._graphs) == 2
    for a, b in zip(eager, bf16):
        assert b["boxes"].dtype == torch.float32 and b["scores"].dtype == torch.float32
        assert len(a["scores"]) >= 5 and len(b["scores"]) >= 5
        # bf16 network, float32 decoding: not the float32 numbers bit for bit, but the same top detections
        assert len(a["scores"]) != len(b["scores"]) or not torch.equal(a["scores"], b["scores"])
        for box, score, label in zip(a["boxes"][:5], a["scores"][:5], a["labels"][:5]):
            close = (
                (b["labels"] == label)
                & ((b["scores"] - score).abs() <= 0.02)
                & ((b["boxes"] - box).abs().amax(1) <= 2.0)
            )
            assert close.any(), f"bf16 lost detection {box.tolist()} ({label.item()}, {score.item():.4f})"
