"""The paper, one module per section: architectures and seed networks, the config, growth,
pruning, connectivity and accounting. Arrays in, arrays out; no files."""
