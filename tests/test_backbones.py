from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dogbreed.backbones import REGISTRY, ResNet50, create_backbone, get_spec, load_state_dict


def test_registry_describes_each_backbone() -> None:
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50"):
        spec = get_spec(name)
        assert spec.input_size in (224, 240, 260) and spec.feature_dim in (1280, 2048) and spec.weights
    with pytest.raises(KeyError, match="unknown backbone"):
        get_spec("vgg99")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_lite_weights_know_imagenet(name: str) -> None:
    from PIL import Image
    from skimage import data as skdata

    from dogbreed.transforms import preprocess

    bb = create_backbone(name)
    cfg = REGISTRY[name].preprocess()
    x = torch.stack([preprocess(Image.fromarray(im), cfg) for im in (skdata.chelsea(), skdata.coffee())])
    with torch.inference_mode():
        f = bb(x)
        logits = bb.imagenet_head(f)
    assert f.shape == (2, 1280) and logits.shape == (2, 1000)
    top = logits.argmax(-1).tolist()
    assert 281 <= top[0] <= 285  # a domestic cat class: real pretrained weights and the right normalisation
    assert top[1] in (967, 968, 504)  # espresso / cup / coffee mug


def test_resnet50_loads_a_local_state_dict_in_both_formats(tmp_path: Path) -> None:
    ref = ResNet50()
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}  # DataParallel prefix is tolerated
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "r50.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "r50.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        want = ref.eval().features(x)
        for f in ("r50.safetensors", "r50.pth"):
            bb = create_backbone("resnet50", weights=tmp_path / f)
            assert torch.allclose(bb(x), want, atol=1e-5)
            assert bb.imagenet_head is not None  # the file carried a 1000-way fc


def test_resnet50_without_weights_trains_from_scratch() -> None:
    bb = create_backbone("resnet50")
    assert bb.imagenet_head is None
    assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)


class _Evil:
    def __reduce__(self):  # would run code on a plain pickle.load
        return (print, ("pwned",))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pth"
    with open(p, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(ValueError, match="refusing"):
        load_state_dict(p)


def test_wrong_architecture_weights_are_a_clear_error(tmp_path: Path) -> None:
    save_file({"conv.weight": torch.zeros(3, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not ResNet-50"):
        create_backbone("resnet50", weights=tmp_path / "x.safetensors")
