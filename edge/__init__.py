"""The edge: where the platform meets people and schedulers.

The ``hdp`` command (``cli`` and the subcommands in ``commands/``), the stage functions the DAGs
call (``stages``), running the DAGs locally (``orchestrate``) and the end-to-end demo (``demo``).
This is the only layer that wires governance (who approved what) to the pipelines (what is
built) and to the access layer; nothing below imports it.
"""
