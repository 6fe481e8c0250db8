"""The ground floor: what every package of the project may import, and which imports none of them.

- `core.errors`: `InputError` and its one-line reporting (`cli_entry`), SHA-256 checks of files.
- `core.io`: atomic file writes and SHA256SUMS.
- `core.registry`: the plug-in `Registry` and the base of every plug-in's typed options.
- `core.cli`: what every command line shares to check its flags and YAML files.
- `core.timing`: ONNX export and the project's onnxruntime timing protocol (measurement, calibration, export checks).

Layers, bottom up, each importing only those below it: `core` -> `search_spaces` -> `hardware_profiles` ->
`predictors` -> `nas` (`tests/test_layers.py` checks it).
"""
