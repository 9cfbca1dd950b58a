"""`python -m fly64_train`: the fly64-train console script."""
from fly64_train.cli import main

main()
