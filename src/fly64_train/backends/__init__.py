"""Training backends: the contract (base.py), the list (registry.py), one subpackage per framework.
Only the subpackages import their framework (registry.get_backend imports one on demand)."""
