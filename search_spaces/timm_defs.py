"""Reference networks written as timm block strings (published architectures, as timm defines them).

They let users cost an existing network on any profile and let the tests prove that any timm MobileNetV2/V3
definition decodes, costs and builds exactly like the timm model of the same name.
"""
from __future__ import annotations

from search_spaces.blocks import NetworkDef

REFERENCE_NETWORKS: dict[str, NetworkDef] = {
    "mobilenetv2_100": NetworkDef(
        arch_def=(("ds_r1_k3_s1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r3_k3_s2_e6_c32",), ("ir_r4_k3_s2_e6_c64",),
                  ("ir_r3_k3_s1_e6_c96",), ("ir_r3_k3_s2_e6_c160",), ("ir_r1_k3_s1_e6_c320",)),
        family="efficientnet", stem_size=32, num_features=1280, act="relu6"),
    "mobilenetv3_large_100": NetworkDef(
        arch_def=(("ds_r1_k3_s1_e1_c16_nre",), ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
                  ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
                  ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
                  ("ir_r2_k3_s1_e6_c112_se0.25",), ("ir_r3_k5_s2_e6_c160_se0.25",), ("cn_r1_k1_s1_c960",)),
        family="mobilenetv3", stem_size=16, num_features=1280, act="hard_swish"),
    "mobilenetv3_small_100": NetworkDef(
        arch_def=(("ds_r1_k3_s2_e1_c16_se0.25_nre",), ("ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"),
                  ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"), ("ir_r2_k5_s1_e3_c48_se0.25",),
                  ("ir_r3_k5_s2_e6_c96_se0.25",), ("cn_r1_k1_s1_c576",)),
        family="mobilenetv3", stem_size=16, num_features=1024, act="hard_swish"),
    "tf_mobilenetv3_large_minimal_100": NetworkDef(
        arch_def=(("ds_r1_k3_s1_e1_c16",), ("ir_r1_k3_s2_e4_c24", "ir_r1_k3_s1_e3_c24"), ("ir_r3_k3_s2_e3_c40",),
                  ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"), ("ir_r2_k3_s1_e6_c112",),
                  ("ir_r3_k3_s2_e6_c160",), ("cn_r1_k1_s1_c960",)),
        family="mobilenetv3", stem_size=16, num_features=1280, act="relu", pad_type="same"),
}
