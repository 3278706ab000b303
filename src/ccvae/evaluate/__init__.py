"""What the latent spaces hold: probes (classifiers, predictors), swap metrics and the evaluate command."""
