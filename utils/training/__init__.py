"""Training: the one loop, its step, balancers (fixed, uncertainty, PCGrad, GradNorm), loss, checkpoints of a run, DDP."""
