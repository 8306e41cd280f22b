"""transforms.py: the fast resize and tensor conversion match a plain reference implementation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dogbreed.transforms import Preprocess, preprocess_image, to_tensor


def test_fast_resize_and_to_tensor_match_the_reference() -> None:
    from skimage import data

    cfg = Preprocess(size=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for arr in (data.chelsea(), data.coffee(), data.astronaut()):
        img = Image.fromarray(arr)
        w, h = img.size
        s = (cfg.size / cfg.crop_pct) / min(w, h)
        nw, nh = max(224, round(w * s)), max(224, round(h * s))
        left, top = (nw - 224) // 2, (nh - 224) // 2
        ref = img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224))
        got = preprocess_image(img, cfg)
        assert got.size == (224, 224)
        assert np.abs(np.asarray(got, np.int16) - np.asarray(ref, np.int16)).max() <= 1
        t = to_tensor(got, cfg.mean, cfg.std)
        want = (np.asarray(got, np.float32) / 255 - np.array(cfg.mean, np.float32)) / np.array(cfg.std, np.float32)
        assert t.shape == (3, 224, 224) and t.is_contiguous()
        assert np.abs(t.numpy() - want.transpose(2, 0, 1)).max() < 1e-5
