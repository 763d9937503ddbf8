"""The ``hdp`` subcommands, one module per area; ``edge.cli`` loads them lazily by name."""
