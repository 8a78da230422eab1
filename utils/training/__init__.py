"""Training: the one loop, its step, balancers (fixed, uncertainty, PCGrad, GradNorm), loss, DDP, run files."""
