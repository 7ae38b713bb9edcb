"""The run skeleton shared by RL training and behaviour cloning, the RL trainer, the BC trainer, evaluation, and
the resolution of a run's config from defaults, presets, checkpoints, files and flags."""
