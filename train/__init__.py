"""Streaming trainer for PViT.

    torchrun train/main.py --shards shards/ --real ssv2 --synthetic hypersim,surreact


Modules: `config` (TrainConfig, CLI and recipes), `sources` (opening builds and refusing mismatched ones),
`plan` (deterministic per-rank sample order), `data` (reading sample spans, augmentation, collate, the mixed
loader), `evaluate`, `checkpoint`, `logger`, `distributed`, `main` (the loop) and `bench` (loader benchmark).
"""
