"""`samo`: the console command on top of the core, the exporters, the gateway and the benchmarks."""
