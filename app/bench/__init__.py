"""Qt benchmarks: `tinyserve bench gui` and `bench scene-gui`, registered lazily by
`tinyserve_core.cli.bench` so the Qt-free library never imports them."""
