"""Diffusion maths: schedules, DDPM/DDIM steps, respacing, guidance and the scanned sampler (no jit here)."""
