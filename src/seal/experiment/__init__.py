"""The experiment layer: the parts every recipe shares, written once (configs, the run folder, the self-edit
sampler, the evaluator of conditions, ReST-EM, the results), over the engine and the Domain protocol."""
