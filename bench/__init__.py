"""Benchmarks of policy enforcement: install time (the paper's Figure 8) and forwarding cost."""
