"""Latency predictors (LightGBM block model + network-level correction, FLOPs and lookup-table baselines).

Not implemented yet: until they land, recipes get latency from the live profiles in `hardware_profiles`, through
the same `profile.latency(space, arch)` interface the predictors will serve.
"""
