"""multinet: policy-based flow redirection for multihomed NEMO mobile networks."""
