"""Training backends. Only the subpackages import their framework (see base.get_backend)."""
