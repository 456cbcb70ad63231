"""From a loaded model to video latents: schedules and solvers, dual guidance, conditioning, segments (planning,
stitching, colour matching) and ``generate`` / ``decode``."""
