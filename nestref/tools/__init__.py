"""The tools around the algorithm: the study over seeds (and its Dask cluster), the conformance
vectors other ports check themselves against, and the paper's table."""
