"""Classic continual-learning baselines on full fine-tuning, adapted to sequence-to-sequence batches, one file per
strategy: replay (experience replay), ewc (online elastic weight consolidation), lwf (learning without
forgetting by token-level distillation) and joint (all experiences at once: the reference for intransigence).

Each is FFT plus an Avalanche plugin: replay keeps Avalanche's experience-balanced reservoir buffer and mixes it
into the training set; EWC adds its penalty and LwF its distillation term to the loss before backward."""
