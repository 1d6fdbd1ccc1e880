"""Stage 7-8: drift and performance evidence, concept-drift detectors, the retraining policy."""
