"""Run monitoring: per-task run metrics, ``hdp status``, Prometheus metrics, failure alerts.

Public API:

* :mod:`pipelines.monitoring.callbacks` — ``CALLBACKS`` for a DAG's ``default_args``
* :func:`pipelines.monitoring.store.record`, ``latest_runs``, ``metrics_url``
* :func:`pipelines.monitoring.prometheus.families_from_runs` (pure) and ``PipelineCollector``
  (a prometheus_client collector over the store, served at the access layer's ``GET /metrics``)
* :func:`pipelines.monitoring.alerts.build_alert` / ``send_alert`` (``HDP_ALERT_WEBHOOK``)
* ``hdp status`` → :data:`edge.commands.status.status`

Nothing here imports Airflow: callbacks read the task context by attribute names.
"""
