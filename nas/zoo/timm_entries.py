"""timm entry points of the registered zoo networks: ``timm.create_model("hwnas_<name>", pretrained=True)``.

timm's `register_model` registers a function under its ``__name__`` and takes its pretrained configuration from
the ``default_cfgs`` of the module the function belongs to: each entry point is made here, belongs to this module,
and its configuration's ``file`` is the network's local weights file (timm never downloads it: the entry point loads
and checks the weights itself, through `nas.zoo.create_model`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

default_cfgs: dict[str, dict[str, Any]] = {}


def register(name: str, entry: dict[str, Any], create: Callable[..., Any]) -> str:
    """Register (or re-point, for a newer release) ``hwnas_<name>``; returns the timm name.

    Args:
        name: the zoo name.
        entry: the zoo index entry the name now resolves to, with its zoo folder under ``"zoo"``.
        create: what builds it, ``create(name, pretrained=..., **kwargs)`` (`nas.zoo.create_model`).
    """
    from timm.models import register_model

    from nas.zoo.folder import read_card

    timm_name = f"hwnas_{name}"
    folder = entry["zoo"] / entry["path"]
    card = read_card(folder)
    data = card["provenance"]["dataset"]
    default_cfgs[timm_name] = {
        "file": str(folder / "weights.safetensors"), "num_classes": card["space"]["num_classes"],
        "input_size": tuple(card["space"]["input_shape"][1:]), "description": card["title"],
        **({"mean": tuple(data["mean"]), "std": tuple(data["std"])} if data.get("mean") else {}),
        "notes": (f"hwnas zoo {entry['zoo']}, release {card['version']}",)}

    def entry_point(pretrained: bool = False, **kwargs: Any):
        model = create(name, pretrained=pretrained, **kwargs)
        cfg = kwargs.get("pretrained_cfg")
        model.pretrained_cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(default_cfgs[timm_name])
        return model

    entry_point.__name__ = entry_point.__qualname__ = timm_name
    entry_point.__module__ = __name__
    entry_point.__doc__ = f"{card['title']} (hwnas model zoo; weights checked against SHA256SUMS)"
    with warnings.catch_warnings():   # re-pointing a name at a newer release is expected, not a conflict
        warnings.simplefilter("ignore")
        register_model(entry_point)
    return timm_name
