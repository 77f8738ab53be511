"""The lab: experiments, oracles, imitation and benchmarks built on the library. Nothing in the
library imports it; the CLI and bench/ scripts do."""
