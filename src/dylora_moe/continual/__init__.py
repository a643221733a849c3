"""Continual skill acquisition: skill embeddings, a skill library, novelty detection and a growing expert pool.

The model meets skills one after another; a novel skill gets a new immature expert (dense routing while it
learns), trained with earlier experts frozen, then marked mature so routing can go sparse again.
"""
