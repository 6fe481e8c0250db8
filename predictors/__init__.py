"""Latency predictors: a LightGBM block model and network-level corrections over a profile's measured blocks, with
the FLOPs-linear and lookup-table baselines (`predictors.models`), their files (`predictors.io`), few-shot transfer
to a new device (`predictors.transfer`) and the train / predict / evaluate command lines.
"""
