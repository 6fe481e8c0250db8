"""16-bit float units inside an fp32 network: a compression policy's ``fp16`` and ``bf16`` units (`search_spaces.
policy`), as the GPU profiles time them and as the search scores them.

A network names them in ``fp16_modules`` and ``bf16_modules`` attributes (tuples of submodule names; ``""`` is the
whole network), as it names its int8 units in ``int8_modules`` (`core.quantize`), and its units left in fp32 in
``fp32_modules``. `apply_half` converts each 16-bit unit's parameters and buffers to its dtype, and gives every
named unit a forward pre-hook that casts its floating-point inputs into the unit's dtype (no work where they are
in it already) and the network a hook that returns float32. So a cast runs only where the precision changes
between units, as a hand-written mixed-precision graph would do it, and the units must cover every module with
parameters (they do in the spaces that offer units: `SearchSpace.unit_modules`).

A unit timed alone (a block table's row, `hardware_profiles.cuda`) runs wholly in its dtype on an input in it: no
cast. A network's figure includes the casts at its precision changes (two small elementwise kernels each), which
the networks table measures and the latency predictor's network correction learns beside the block sum.

On a CPU the same graph runs in PyTorch (its fp16/bf16 CPU kernels are slow but exact to the format), which is how
`nas.compression` scores a candidate's accuracy with its half units: the numerics are those of 16-bit storage and
arithmetic, not a simulation of them.
"""
from __future__ import annotations

from functools import partial

HALF_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}   # a unit's precision -> its torch dtype's name


def half_plan(module) -> dict[str, str]:
    """The 16-bit units `module` names: submodule name -> ``fp16`` or ``bf16`` ({} when it names none)."""
    return {name: precision for precision in HALF_DTYPES
            for name in getattr(module, f"{precision}_modules", ())}


def _cast_inputs(dtype, module, args):
    import torch

    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _to_float32(module, args, output):
    import torch

    return output.float() if isinstance(output, torch.Tensor) and output.is_floating_point() else output


def apply_half(module):
    """`module` with the 16-bit units it names (`half_plan`) running in their precision, converted in place (see
    the module): each unit's parameters and buffers in its dtype, each named unit's inputs cast into its dtype
    (its ``fp32_modules`` too), the network's output cast to float32. Call it on the fp32 network after moving it
    to its device; a network without 16-bit units is left as it is, and calling it again changes nothing.
    Returns `module`."""
    import torch

    plan = half_plan(module)
    if not plan or getattr(module, "_half_applied", False):
        return module
    dtypes = {**{name: torch.float32 for name in getattr(module, "fp32_modules", ())},
              **{name: getattr(torch, HALF_DTYPES[p]) for name, p in plan.items()}}
    for name, dtype in dtypes.items():
        unit = module.get_submodule(name)
        if dtype != torch.float32:
            unit.to(dtype)
        unit.register_forward_pre_hook(partial(_cast_inputs, dtype))
    module.register_forward_hook(_to_float32)
    module._half_applied = True
    return module


def whole_dtype(module):
    """The torch dtype `module` runs in wholly, when it is one 16-bit unit (a block timed alone), else None."""
    import torch

    plan = half_plan(module)
    return getattr(torch, HALF_DTYPES[plan[""]]) if list(plan) == [""] else None


def refuse_half_plan(module, engine: str) -> None:
    """Raise `InputError` when `module` names 16-bit units (`half_plan`) that `engine` does not time."""
    from core.errors import InputError

    units = [f"{name or 'the network'} in {precision}" for name, precision in half_plan(module).items()]
    if units:
        raise InputError(f"{engine} does not time a compression policy's 16-bit float units ({', '.join(units)}); "
                         "they run on the GPU profiles (torch-cuda at --precision fp32)")
