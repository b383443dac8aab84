"""pvit-pipeline: the offline data engine (source adapters -> WebDataset shards + Parquet manifest).

Torch-free by design: the trainer imports `pipeline.schema` and `pipeline.reader` without pulling
the data engine's heavy dependencies, and the engine runs on machines without torch.
"""

__version__ = "0.1.0"
