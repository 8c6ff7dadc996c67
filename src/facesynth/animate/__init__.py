"""Few-shot talking heads (Zakharov et al. 2019): meta-learning, fine-tuning, reenactment, evaluation."""
