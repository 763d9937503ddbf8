"""The hub (health data access body): catalogue, applications routed to the nodes in scope, permits
issued when every node has approved, the secure processing environment's releases, federated
aggregate queries merged under disclosure control. It never holds an identifier or a node key."""
