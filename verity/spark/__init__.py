"""SPARK (Rahman et al., arXiv:2512.03244) as a command: sample solutions, verify each several times, aggregate
step verdicts into training data, fine-tune a generative PRM, and use it as the RL reward (``verity spark``)."""
