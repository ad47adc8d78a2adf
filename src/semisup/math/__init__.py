"""Pure functions: losses, pseudo-labels, mixing, priors, schedules (no state, no I/O)."""
