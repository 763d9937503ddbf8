"""A data holder's node: its own data home, stewards, keys and pipelines; it connects out to the hub,
takes only tasks a permit its own stewards approved backs, and controls disclosure of all it sends."""
