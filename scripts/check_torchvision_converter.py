#!/usr/bin/env python3
"""Checks `convert_weights.py torchvision NAME --input FILE.pth` on every torchvision variant,
offline: a torchvision model filled with the fvrng weights of tests/parity.rs is saved with
`torch.save(model.state_dict())`, converted, and every converted tensor must equal the fvrng
tensor bit for bit (auxiliary heads dropped, BN step counters dropped, metadata complete).
Since tests/parity.rs shows that those exact tensors give torchvision's logits within 1e-4,
this closes the loop .pth → converter → loader → logits. Needs torch + torchvision:

    pip install -r scripts/requirements-reference.txt
    python scripts/check_torchvision_converter.py [NAME ...]
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
import convert_weights as cw  # noqa: E402
from gen_parity_fixtures import SEED, fvrng  # noqa: E402


def check(name: str) -> None:
    import torch
    import torchvision

    kwargs = {"aux_logits": True, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    sd = model.state_dict()
    with torch.no_grad():
        for k, t in sd.items():
            if not k.endswith("num_batches_tracked"):
                t.copy_(torch.from_numpy(fvrng(SEED, k, list(t.shape))))
    with tempfile.TemporaryDirectory() as d:
        pth, out = Path(d) / f"{name}.pth", Path(d) / f"{name}.safetensors"
        torch.save(model.state_dict(), pth)
        assert cw.main(["torchvision", name, "--input", str(pth), "--out", str(out)]) == 0
        with safe_open(str(out), "np") as f:
            meta, keys = f.metadata(), set(f.keys())
            expected = {k for k in sd if not k.endswith("num_batches_tracked")
                        and not k.startswith(("AuxLogits.", "aux1.", "aux2."))}
            assert keys == expected, keys ^ expected
            for k in keys:
                assert np.array_equal(f.get_tensor(k), fvrng(SEED, k, list(sd[k].shape))), k
    assert meta["architecture"] == name and meta["num_classes"] == "1000", meta
    labels = json.loads(meta["labels"])
    pre = json.loads(meta["preprocessing"])
    print(f"{name}: {len(keys)} tensors identical; labels[281] = {labels[281]!r}; "
          f"resize {pre['resize_size']} crop {pre['crop_size']}; transform_input {meta['transform_input']}")


if __name__ == "__main__":
    for n in sys.argv[1:] or cw.TORCHVISION_ARCHS:
        check(n)
