"""Head names: segmentation_head / classification_head, and the old names still load
(segtutor/models/renamed.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segtutor.models import MODEL_NAMES, build_model
from segtutor.train import checkpoint
from tests.test_models import SMALL, small

# what each model called its heads before the rename: new name -> old name
OLD_NAMES = {
    "deeplabv3": {"segmentation_head": "classifier"},
    "deeplabv3plus": {"segmentation_head": "classifier"},
    "pspnet": {"segmentation_head": "classifier"},
    "resunet34": {"segmentation_head": "head", "classification_head": "classifier"},
}
EXTRA = {"resunet34": {"classify": True}}


def _old_state(model: nn.Module, name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's state dict under the names it had before the rename (written out by hand)."""
    state = {}
    for key, value in model.state_dict().items():
        head, _, rest = key.partition(".")
        state[prefix + OLD_NAMES[name].get(head, head) + "." + rest] = value.clone()
    return state


@pytest.mark.parametrize("name", sorted(OLD_NAMES))
def test_a_state_dict_with_the_old_head_names_loads_into_the_new(name):
    torch.manual_seed(0)
    saved = small(name, **EXTRA.get(name, {})).eval()
    old = _old_state(saved, name)
    assert any(k.startswith("classifier.") for k in old)  # the old names are really there
    fresh = small(name, **EXTRA.get(name, {})).eval()
    fresh.load_state_dict(old)  # strict: every key found, none left over
    for (key, a), b in zip(saved.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(saved(x), fresh(x))


def test_old_names_load_inside_a_wrapper_and_from_a_trainer_checkpoint(tmp_path):
    from segtutor.train import Trainer

    torch.manual_seed(0)
    saved = small("resunet34", num_classes=1, classify=True)
    # a model nested in another (snapshot ensembles, DDP's "module.") has its prefix
    wrapped = nn.Sequential(small("resunet34", num_classes=1, classify=True))
    wrapped.load_state_dict(_old_state(saved, "resunet34", prefix="0."))
    assert torch.equal(
        wrapped[0].classification_head[2].weight, saved.classification_head[2].weight
    )
    # a checkpoint written before the rename resumes
    path = checkpoint.save_checkpoint(tmp_path / "old.pt", model=saved, epoch=2)
    state = checkpoint.load_checkpoint(path)
    state["model"] = _old_state(saved, "resunet34")
    torch.save(state, path)
    net = small("resunet34", num_classes=1, classify=True)
    tr = Trainer(
        net,
        nn.BCEWithLogitsLoss(),
        torch.optim.SGD(net.parameters(), lr=0.1),
        None,
        num_classes=1,
        device="cpu",
        progress=False,
        verbose=False,
    )
    tr.load_checkpoint(path)
    assert tr.epoch == 2
    assert torch.equal(net.segmentation_head[2].weight, saved.segmentation_head[2].weight)


def test_a_wrong_state_dict_is_still_refused():
    torch.manual_seed(0)
    model = small("pspnet")
    old = _old_state(model, "pspnet")
    old["classifier.extra.weight"] = torch.zeros(1)  # a key that is not the model's
    with pytest.raises(RuntimeError, match=r"segmentation_head\.extra\.weight"):
        small("pspnet").load_state_dict(old)


def test_old_attribute_names_answer_with_a_warning():
    model = small("deeplabv3")
    with pytest.warns(FutureWarning, match="classifier is now called segmentation_head"):
        assert model.classifier is model.segmentation_head
    res = small("resunet34", classify=True)
    with pytest.warns(FutureWarning, match="classification_head"):
        assert res.classifier is res.classification_head
    with pytest.raises(AttributeError, match="nope"):
        res.nope  # noqa: B018


def test_no_model_has_a_module_called_classifier():
    # one word, two meanings was the problem: segmentation head (DeepLab, PSPNet) or
    # empty-image head (ResNet34 U-Net)
    for name in MODEL_NAMES:
        with torch.device("meta"):
            model = build_model(name, num_classes=2, **SMALL[name], **EXTRA.get(name, {}))
        names = [n for n, _ in model.named_modules()]
        assert not any(n.split(".")[-1] == "classifier" for n in names), name
        if name in OLD_NAMES:
            assert set(OLD_NAMES[name]) <= set(names), name
