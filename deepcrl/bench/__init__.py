"""Benchmark machinery behind `deepcrl bench` and `benchmarks/`: kept out of the library's stages."""
