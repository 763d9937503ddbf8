"""The privacy core: what decides whether a person can be recognised, and nothing else.

Identifier parsing (``personnummer``), keyed pseudonyms (``pseudonym``) and their key domains
(``domains``), the encrypted key store (``keys``, ``audit_key``), the release quasi-identifier
policy (``policy``), k-anonymity (``disclosure``) and cell-key perturbation (``cellkey``).

Every layer above may import it; it imports only ``hdp`` (settings, paths) and libraries for
arrays and cryptography. It never imports Airflow, FastAPI or SQLAlchemy, so that the rules can
be read, tested and reused (a federated node, the hub's secure environment) on their own.
"""
