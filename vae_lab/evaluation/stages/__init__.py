"""The stages of the evaluation pipeline, one file each; a module's ``STAGE`` is its stage
(``vae_lab.evaluation.pipeline.registry`` finds them)."""
