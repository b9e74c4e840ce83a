"""The tools over the `ciaosr_arch` and `realsr` libraries: upscaling CLI, web app, benchmarks, reports, training.

Each module with a `main(argv=None)` is a console script (see pyproject.toml), called through `scripts` (which
imports it, so that an interrupt during the imports ends the command cleanly): `upscale` (ciaosr-upscale),
`train` (ciaosr-train, ciaosr-test), `benchmark`, `benchmark_speed`, `quality_report`, `convert`, `app`.
`pipeline` upscales pictures and files (the CLI, the web app and videos share its `Upscaler`); `cli` holds what
the command lines share (their exit statuses too), `reporting` what the benchmark and the quality report share;
`image_io` reads and writes the images people have.
"""
