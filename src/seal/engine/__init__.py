"""The engine: what every experiment runs on, and knows no domain (models, generation, LoRA packs, training,
the inner loop, where trials run, the run store, metrics, seeds, statistics, and the Domain protocol)."""
