"""Knowledge distillation: the KD losses, a frozen teacher, teacher/student YOLOs of different backbones."""

from __future__ import annotations

import pytest
import torch

import vision
from vision.tasks.classification.distill import ClassifierDistiller, kd_loss
from vision.tasks.detection.distill import ADAPTERS, YoloDistiller, score_kd_loss


def test_kd_loss_matches_hinton_formula():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    T = 3.0
    p_t = (t / T).softmax(-1)
    reference = (p_t * (p_t.log() - (s / T).log_softmax(-1))).sum(-1).mean() * T * T
    torch.testing.assert_close(kd_loss(s, t, temperature=T), reference)
    assert float(kd_loss(t, t, temperature=T)) == pytest.approx(0.0, abs=1e-6)


def test_score_kd_loss_is_zero_for_equal_scores_and_masked():
    t = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert float(score_kd_loss(t, t, mask, temperature=2.0)) == pytest.approx(0.0, abs=1e-5)
    s = t.clone()
    s[~mask] += 5.0  # unmasked anchors do not count
    assert float(score_kd_loss(s, t, mask, temperature=2.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(score_kd_loss(torch.zeros_like(t), t, mask, temperature=2.0)) > 0


def test_score_kd_loss_with_weights_is_the_weighted_mean_of_per_anchor_terms():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(1, 4, 3, generator=g), torch.randn(1, 4, 3, generator=g)
    per_anchor = torch.stack(
        [score_kd_loss(s[:, i : i + 1], t[:, i : i + 1], torch.ones(1, 1, dtype=torch.bool), temperature=2.0)
         for i in range(4)]
    )  # fmt: skip
    w = torch.tensor([[1.0, 0.5, 0.0, 0.25]])
    expected = (per_anchor * w[0]).sum() / w.sum()
    assert float(score_kd_loss(s, t, w, temperature=2.0)) == pytest.approx(float(expected), rel=1e-5)
    assert float(score_kd_loss(s, t, w.bool(), temperature=2.0)) == pytest.approx(
        float(per_anchor[[0, 1, 3]].mean()), rel=1e-5
    )


def _classifier(seed: int, num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, num_classes),
    )  # fmt: skip


def test_classifier_kd_loss_decreases_and_teacher_gets_no_gradient():
    teacher = _classifier(1).eval().requires_grad_(False)
    with torch.no_grad():
        teacher[-1].weight.mul_(20.0)  # confident soft targets
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _classifier(2).train()
    distiller = ClassifierDistiller(teacher, alpha=1.0, temperature=4.0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    opt = torch.optim.Adam(student.parameters(), lr=0.02)
    kd = []
    for _ in range(30):
        losses = distiller.loss(student, (x, y))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        kd.append(float(losses["kd"].detach()))
    assert kd[-1] < 0.5 * kd[0], kd
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_classifier_teacher_with_other_classes_is_refused():
    distiller = ClassifierDistiller(_classifier(1).eval(), alpha=0.5, temperature=2.0)
    student = _classifier(2, num_classes=3)
    with pytest.raises(ValueError, match="same classes"):
        distiller.loss(student, (torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)))


def test_yolo_distillation_across_backbones_and_adapters_are_dropped(tmp_path):
    torch.manual_seed(0)
    teacher = vision.create_model("yolo", backbone="resnet18", size="s", num_classes=3).eval().requires_grad_(False)
    student = vision.create_model("yolo_n", num_classes=3).train()
    distiller = YoloDistiller(teacher, alpha=1.0, temperature=2.0, features=1.0)
    distiller.attach(student)
    adapters = getattr(student, ADAPTERS)
    assert [a.out_channels for a in adapters] == [s.channels for s in teacher.neck.specs]
    assert [a.in_channels for a in adapters] == [s.channels for s in student.neck.specs]
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    losses = distiller.loss(student, images, targets)
    assert set(losses) == {"box", "cls", "dfl", "kd", "feat"}
    assert float(losses["kd"].detach()) > 0 and float(losses["feat"].detach()) > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in adapters)
    # the trained student loads as a plain yolo_n: the adapters stay behind
    from vision.engine.checkpoint import save_weights

    path = save_weights(tmp_path / "student.safetensors", student.state_dict(),
                        {"model": "yolo_n", "task": "detection", "classes": ["a", "b", "c"]})  # fmt: skip
    loaded = vision.load_model(path)
    assert not hasattr(loaded, ADAPTERS)
    student.eval()
    torch.testing.assert_close(loaded.forward_raw(images)[1], student.forward_raw(images)[1])


def test_yolo_teacher_with_other_classes_is_refused():
    teacher = vision.create_model("yolo_n", num_classes=2).eval()
    with pytest.raises(ValueError, match="same classes"):
        YoloDistiller(teacher, alpha=0.5, temperature=1.0).attach(vision.create_model("yolo_n", num_classes=3))


def test_teacher_trained_on_other_class_names_is_one_error_line(tmp_path, capsys):
    from vision.cli.train import main as train_main
    from vision.engine.checkpoint import save_weights

    meta = {"model": "yolo_n", "task": "detection", "classes": ["rbc", "wbc", "platelets"]}
    teacher = save_weights(
        tmp_path / "teacher.safetensors", vision.create_model("yolo_n", num_classes=3).state_dict(), meta
    )
    argv = ["recipe=yolo_n_synthetic", f"teacher={teacher}", "synthetic.train=8", "device=cpu", "workers=0",
            "plots=false", "tensorboard=false", f"project={tmp_path / 'runs'}"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the teacher's classes ['rbc', 'wbc', 'platelets'] are not "
                                               "the data's ['circle', 'rectangle', 'triangle']"), err  # fmt: skip


def test_bad_teacher_names_itself():
    from vision.tasks._distill import distill_options, load_teacher

    with pytest.raises(ValueError, match="no_such_net"):
        load_teacher("no_such_net")
    with pytest.raises(ValueError, match=r"distill\.alpha"):
        distill_options({"distill": {"alpha": 2}})


def test_teacher_path_that_names_nothing_is_said_of_teacher(tmp_path):
    from vision.tasks._distill import load_teacher

    with pytest.raises(ValueError, match=r"^teacher=.*missing: no such file or folder"):
        load_teacher(str(tmp_path / "runs" / "missing"))


def test_teacher_file_that_holds_no_weights_is_not_called_a_weights_file(tmp_path):
    from vision.hub.download import WeightsFileError
    from vision.tasks._distill import load_teacher

    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(WeightsFileError, match=r"notes\.txt is not a weights file"):
        load_teacher(str(tmp_path / "notes.txt"))
    torch.save(vision.create_model("resnet18", num_classes=2).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"r18\.pt is a plain weights file: give its architecture"):
        load_teacher(str(tmp_path / "r18.pt"))


def test_detection_teacher_for_a_classifier_is_refused_naming_both_tasks(tmp_path):
    from vision.engine.checkpoint import save_weights
    from vision.tasks._distill import load_teacher

    meta = {"model": "yolo_n", "task": "detection", "classes": ["a", "b", "c"]}
    path = save_weights(tmp_path / "yolo.safetensors", vision.create_model("yolo_n", num_classes=3).state_dict(), meta)
    with pytest.raises(ValueError, match=r"is a detection model .*needs a classification teacher"):
        load_teacher(str(path), task="classification")
    assert load_teacher(str(path), task="detection").task == "detection"


def test_distill_keys_without_a_teacher_are_refused_not_ignored(tmp_path, capsys):
    from vision.cli.train import main as train_main

    argv = ["task=classification", "model=resnet18", "data=digits", "imgsz=16", "epochs=1", "workers=0",
            "distill.alpha=0.9", "distill.temperature=2", f"project={tmp_path}", "tensorboard=false"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: distill.alpha=, distill.temperature= apply to distillation, which needs teacher= (a run, "
                   "a weights file or NAME.TAG of the teacher)"], err  # fmt: skip
    assert not list(tmp_path.rglob("args.yaml")), "refused before a run folder is written"
